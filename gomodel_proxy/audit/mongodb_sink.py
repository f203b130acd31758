"""The ``mongodb`` audit sink: each batch is one ``insert_many`` into a MongoDB collection.

Written with the official driver's asyncio API (``pymongo.AsyncMongoClient``, pymongo >= 4.10), imported
only when this sink is built. ``audit.url`` is the connection string (``mongodb://user:pass@host/db?...``;
the database is the one it names, ``gomodel`` if none), ``audit.index`` the collection, and
``audit.timeout_s`` bounds every operation (server selection, connect, socket and pymongo's client-side
operation timeout, ``timeoutMS``), so a server that is down or stuck makes ``write`` raise within it.

Each entry becomes a document whose ``_id`` is the entry's ``id``, inserted with ``ordered=False``: when
the pipeline replays a batch that was in fact stored, the entries already there fail with duplicate-key
errors (E11000), which count as success, while the rest of the batch is still inserted.

Errors are raised as ``MongoDBSinkError`` with the connection string's password and the URL itself
masked out of the message (and the driver's exception not chained, so it cannot leak them either).

Tested against a fake MongoDB server (tests/unit/audit/test_mongodb_sink.py): an asyncio TCP server on a
loopback port that speaks the documented wire protocol (OP_MSG, opcode 2013, with BSON documents and
kind-1 document sequences) to the real pymongo driver; no real MongoDB server runs in the test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient
    from pymongo.asynchronous.collection import AsyncCollection

    from gomodel_proxy.config.schema import AuditConfig

#: MongoDB's duplicate-key error codes (11001 and 12582: what older servers and mongos answered).
_DUPLICATE_KEY_CODES = frozenset({11000, 11001, 12582})
_DEFAULT_DATABASE = "gomodel"
_MAX_MESSAGE_CHARS = 500


class MongoDBSinkError(RuntimeError):
    """A batch could not be stored (or the server reached); the message holds no credential."""


class MongoDBAuditSink:
    """Audit entries as documents of a MongoDB collection (``audit.backend: mongodb``)."""

    name = "mongodb"

    def __init__(
        self, *, url: str, index: str = "gomodel_audit", timeout_s: float = 5.0, database: str = _DEFAULT_DATABASE
    ) -> None:
        if not url:
            raise ValueError("audit.url is required for the mongodb backend (mongodb://host:27017/db)")
        self.index = index
        self.timeout_s = timeout_s
        self._url = url
        self._default_database = database
        self._secrets = _url_secrets(url)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._collection: AsyncCollection[dict[str, Any]] | None = None

    @classmethod
    def from_config(cls, config: AuditConfig) -> MongoDBAuditSink:
        return cls(url=config.url, index=config.index, timeout_s=config.timeout_s)

    @property
    def namespace(self) -> str:
        """``database.collection`` once started ("" before)."""
        return self._collection.full_name if self._collection is not None else ""

    async def start(self) -> None:
        """Create the client (it connects in the background) and check the server answers a ``ping``."""
        collection = self._ensure_collection()
        from pymongo.errors import PyMongoError  # noqa: PLC0415 - pymongo only when this sink is used

        try:
            await collection.database.client.admin.command("ping")
        except PyMongoError as exc:
            raise MongoDBSinkError(f"mongodb: the server did not answer a ping: {self._describe(exc)}") from None

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        collection = self._ensure_collection()
        from pymongo.errors import BulkWriteError, PyMongoError  # noqa: PLC0415

        documents = [_document(entry) for entry in entries]
        try:
            await collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            details = exc.details
            failed = [err for err in details.get("writeErrors", []) if err.get("code") not in _DUPLICATE_KEY_CODES]
            concern = details.get("writeConcernErrors") or []
            if failed or concern:
                first = (failed or concern)[0]
                raise MongoDBSinkError(
                    f"mongodb: {len(failed)} of {len(entries)} entries not written to {self.namespace}"
                    f"{' (write concern not satisfied)' if concern else ''}: "
                    f"code {first.get('code')}: {self._redact(str(first.get('errmsg', '')))}"
                ) from None
            # Only duplicate keys: those entries were stored by an earlier attempt of this batch.
        except PyMongoError as exc:
            raise MongoDBSinkError(
                f"mongodb: writing {len(entries)} entries to {self.namespace} failed: {self._describe(exc)}"
            ) from None

    async def close(self) -> None:
        client, self._client, self._collection = self._client, None, None
        if client is not None:
            await client.close()

    def _ensure_collection(self) -> AsyncCollection[dict[str, Any]]:
        if self._collection is not None:
            return self._collection
        from pymongo import AsyncMongoClient  # noqa: PLC0415
        from pymongo.errors import PyMongoError  # noqa: PLC0415

        timeout_ms = max(1, round(self.timeout_s * 1000))
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                self._url,
                appname="gomodel-proxy",
                timeoutMS=timeout_ms,
                serverSelectionTimeoutMS=timeout_ms,
                connectTimeoutMS=timeout_ms,
                socketTimeoutMS=timeout_ms,
            )
            database = client.get_default_database(self._default_database)
        except (PyMongoError, ValueError, TypeError) as exc:  # a malformed connection string or option
            raise MongoDBSinkError(f"mongodb: invalid audit.url: {self._describe(exc)}") from None
        self._client = client
        self._collection = database.get_collection(self.index)
        return self._collection

    def _describe(self, exc: BaseException) -> str:
        text = self._redact(str(exc))
        if len(text) > _MAX_MESSAGE_CHARS:
            text = text[:_MAX_MESSAGE_CHARS] + "..."
        return f"{type(exc).__name__}: {text}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _document(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as a document; its ``id`` is the document's ``_id`` (a new dict: the driver adds to it)."""
    document = dict(entry)
    entry_id = entry.get("id")
    if entry_id is not None:
        document["_id"] = entry_id
    return document


def _url_secrets(url: str) -> list[str]:
    """What must never appear in a message: the whole URL and its password (raw and decoded), longest first."""
    secrets = {url}
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        secrets.update({password, unquote(password)})
    return sorted((s for s in secrets if s), key=len, reverse=True)
