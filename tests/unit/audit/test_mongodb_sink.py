"""The ``mongodb`` audit sink, driven through the real pymongo driver against a fake MongoDB server.

No MongoDB server can run here: ``FakeMongo`` is an asyncio TCP server on a loopback port speaking the
documented wire protocol (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/): OP_MSG
(opcode 2013) requests and replies made of BSON documents (a kind-0 body and kind-1 document sequences,
e.g. an ``insert``'s ``documents``), plus OP_QUERY/OP_REPLY for a legacy handshake. It answers
``hello``/``isMaster``/``ismaster`` as a standalone MongoDB 7.0 (wire version 21), ``ping``, ``insert``
(duplicate ``_id`` -> write error E11000, as the server does) and ``endSessions``, and records documents.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import bson
import pytest

from gomodel_proxy.audit.mongodb_sink import MongoDBAuditSink, MongoDBSinkError, _url_secrets
from gomodel_proxy.audit.sink import AuditSink
from gomodel_proxy.config.schema import AuditConfig

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
_HEADER = struct.Struct("<iiii")


class FakeMongo:
    """A standalone MongoDB as the driver sees it on the wire; documents kept per (db, collection)."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], dict[Any, dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.opcodes: set[int] = set()
        #: The identifiers of the kind-1 document sequences received (an insert's ``documents``).
        self.sequences: set[str] = set()
        #: ``insert`` answers: "ok", "hang" (never), "validation" (a non-duplicate write error on every
        #: document), "write_concern" (stored, but a writeConcernError), "command_error" (ok: 0).
        self.insert_mode = "ok"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._request_id = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/auditdb?directConnection=true"

    async def start(self, port: int = 0) -> FakeMongo:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def stored(self, db: str, coll: str) -> dict[Any, dict[str, Any]]:
        return self.docs.get((db, coll), {})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(_HEADER.size)
                length, request_id, _, opcode = _HEADER.unpack(header)
                payload = await reader.readexactly(length - _HEADER.size)
                self.opcodes.add(opcode)
                if opcode == OP_MSG:
                    flags, body, sequences = _parse_op_msg(payload)
                    self.sequences.update(sequences)
                    reply = await self._command(body)
                    if reply is None or flags & 0b10:  # moreToCome: the client expects no answer
                        continue
                    writer.write(self._op_msg_reply(request_id, reply))
                elif opcode == OP_QUERY:
                    body = _parse_op_query(payload)
                    reply = await self._command(body)
                    assert reply is not None
                    writer.write(self._op_reply(request_id, reply))
                else:  # pragma: no cover - nothing else is sent by a modern driver
                    raise AssertionError(f"unexpected opcode {opcode}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _command(self, body: dict[str, Any]) -> dict[str, Any] | None:
        self.commands.append(body)
        name = next(iter(body))
        if name in ("hello", "isMaster", "ismaster"):
            return {
                "helloOk": True, "isWritablePrimary": True, "ismaster": True,
                "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000, "localTime": datetime.datetime.now(datetime.UTC),
                "logicalSessionTimeoutMinutes": 30, "connectionId": 1, "minWireVersion": 0, "maxWireVersion": 21,
                "readOnly": False, "ok": 1.0,
            }
        if name in ("ping", "endSessions"):
            return {"ok": 1.0}
        if name == "insert":
            return await self._insert(body)
        return {"ok": 0.0, "errmsg": f"no such command: '{name}'", "code": 59, "codeName": "CommandNotFound"}

    async def _insert(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.insert_mode == "hang":
            await asyncio.Event().wait()
        if self.insert_mode == "command_error":
            return {"ok": 0.0, "errmsg": "not authorized on auditdb to execute command", "code": 13,
                    "codeName": "Unauthorized"}
        db, coll = body["$db"], body["insert"]
        store = self.docs.setdefault((db, coll), {})
        errors: list[dict[str, Any]] = []
        inserted = 0
        for index, doc in enumerate(body["documents"]):
            if self.insert_mode == "validation":
                errors.append({"index": index, "code": 121, "errmsg": "Document failed validation"})
            elif doc["_id"] in store:
                errors.append({"index": index, "code": 11000, "keyPattern": {"_id": 1}, "keyValue": {"_id": doc["_id"]},
                               "errmsg": f"E11000 duplicate key error collection: {db}.{coll} index: _id_ dup key: "
                                         f"{{ _id: \"{doc['_id']}\" }}"})
            else:
                store[doc["_id"]] = doc
                inserted += 1
                continue
            if body.get("ordered", True):
                break
        reply: dict[str, Any] = {"n": inserted, "ok": 1.0}
        if errors:
            reply["writeErrors"] = errors
        if self.insert_mode == "write_concern":
            reply["writeConcernError"] = {"code": 64, "codeName": "WriteConcernFailed",
                                          "errmsg": "waiting for replication timed out"}
        return reply

    def _next_id(self) -> int:
        self._request_id += 1
        return self._request_id

    def _op_msg_reply(self, response_to: int, doc: dict[str, Any]) -> bytes:
        body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
        return _HEADER.pack(_HEADER.size + len(body), self._next_id(), response_to, OP_MSG) + body

    def _op_reply(self, response_to: int, doc: dict[str, Any]) -> bytes:
        body = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(doc)
        return _HEADER.pack(_HEADER.size + len(body), self._next_id(), response_to, OP_REPLY) + body


def _parse_op_msg(payload: bytes) -> tuple[int, dict[str, Any], list[str]]:
    """flagBits, then sections: kind 0 is the command body, kind 1 a named sequence of documents."""
    (flags,) = struct.unpack_from("<I", payload)
    end = len(payload) - (4 if flags & 1 else 0)  # checksumPresent
    pos = 4
    body: dict[str, Any] = {}
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            (size,) = struct.unpack_from("<i", payload, pos)
            body = bson.decode(payload[pos:pos + size])
            pos += size
        else:
            assert kind == 1, kind
            (size,) = struct.unpack_from("<i", payload, pos)
            section_end = pos + size
            name_end = payload.index(b"\x00", pos + 4)
            name = payload[pos + 4:name_end].decode()
            sequences[name] = bson.decode_all(payload[name_end + 1:section_end])
            pos = section_end
    body.update(sequences)
    return flags, body, list(sequences)


def _parse_op_query(payload: bytes) -> dict[str, Any]:  # pragma: no cover - only older drivers handshake so
    pos = payload.index(b"\x00", 4) + 1 + 8  # flags, fullCollectionName, numberToSkip, numberToReturn
    (size,) = struct.unpack_from("<i", payload, pos)
    return bson.decode(payload[pos:pos + size])


@pytest.fixture
async def mongo() -> AsyncIterator[FakeMongo]:
    fake = await FakeMongo().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def sink(mongo: FakeMongo) -> AsyncIterator[MongoDBAuditSink]:
    s = MongoDBAuditSink(url=mongo.url, index="audit_entries", timeout_s=2.0)
    yield s
    await s.close()


def entry(i: int) -> dict[str, Any]:
    return {"id": f"e-{i}", "request_id": f"req-{i}", "step": "guardrails", "decision": "allow", "latency_ms": i,
            "tags": ["a", "b"], "meta": {"model": "up/gpt"}}


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_is_an_audit_sink(sink: MongoDBAuditSink) -> None:
    as_protocol: AuditSink = sink
    assert as_protocol.name == "mongodb"
    assert sink.namespace == ""


async def test_batch_lands_in_the_database_and_collection_with_ids(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    await sink.start()
    assert sink.namespace == "auditdb.audit_entries"
    batch = [entry(i) for i in range(5)]
    await sink.write(batch)
    stored = mongo.stored("auditdb", "audit_entries")
    assert sorted(stored) == [f"e-{i}" for i in range(5)]
    for original in batch:
        assert stored[original["id"]] == {"_id": original["id"], **original}
    assert batch[0] == entry(0)  # the caller's entries are not modified
    inserts = [c for c in mongo.commands if "insert" in c]
    assert len(inserts) == 1 and inserts[0]["ordered"] is False
    assert OP_MSG in mongo.opcodes and "documents" in mongo.sequences
    assert any(next(iter(c)) in ("hello", "isMaster", "ismaster") for c in mongo.commands)
    assert any("ping" in c for c in mongo.commands)


async def test_write_before_start_connects(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    await sink.write([entry(1)])
    assert list(mongo.stored("auditdb", "audit_entries")) == ["e-1"]


async def test_empty_batch_sends_nothing(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    await sink.write([])
    assert not any("insert" in c for c in mongo.commands)


async def test_replayed_batch_with_duplicate_ids_passes(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    await sink.start()
    await sink.write([entry(1), entry(2)])
    # The pipeline could not tell the first write succeeded: the same batch, plus one new entry, again.
    await sink.write([entry(1), entry(2), entry(3)])
    assert sorted(mongo.stored("auditdb", "audit_entries")) == ["e-1", "e-2", "e-3"]


async def test_entry_without_id_gets_a_generated_one(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    await sink.write([{"step": "x"}])
    (doc,) = mongo.stored("auditdb", "audit_entries").values()
    assert isinstance(doc["_id"], bson.ObjectId) and doc["step"] == "x"


async def test_database_defaults_when_the_url_names_none(mongo: FakeMongo) -> None:
    config = AuditConfig(backend="mongodb", url=f"mongodb://127.0.0.1:{mongo.port}/?directConnection=true",
                         index="trail", timeout_s=2.0)
    s = MongoDBAuditSink.from_config(config)
    try:
        await s.write([entry(1)])
    finally:
        await s.close()
    assert list(mongo.stored("gomodel", "trail")) == ["e-1"]


async def test_other_write_errors_raise(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    mongo.insert_mode = "validation"
    with pytest.raises(MongoDBSinkError, match=r"2 of 2 entries not written to auditdb.audit_entries: code 121"):
        await sink.write([entry(1), entry(2)])


async def test_write_concern_error_raises(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    mongo.insert_mode = "write_concern"
    with pytest.raises(MongoDBSinkError, match="write concern not satisfied"):
        await sink.write([entry(1)])


async def test_command_error_raises(mongo: FakeMongo, sink: MongoDBAuditSink) -> None:
    mongo.insert_mode = "command_error"
    with pytest.raises(MongoDBSinkError, match=r"Unauthorized|not authorized"):
        await sink.write([entry(1)])


async def test_server_down_raises_within_timeout(mongo: FakeMongo) -> None:
    s = MongoDBAuditSink(url=mongo.url, index="audit_entries", timeout_s=0.5)
    try:
        await s.write([entry(1)])
        await mongo.stop()
        started = time.monotonic()
        with pytest.raises(MongoDBSinkError, match=r"writing 1 entries to auditdb\.audit_entries failed"):
            await s.write([entry(2)])
        assert time.monotonic() - started < 0.5 + 1
    finally:
        await s.close()


async def test_start_against_no_server_raises_within_timeout() -> None:
    s = MongoDBAuditSink(url=f"mongodb://127.0.0.1:{free_port()}/db", timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(MongoDBSinkError, match="did not answer a ping"):
            await s.start()
    finally:
        await s.close()
    assert time.monotonic() - started < 0.3 + 1


async def test_stuck_server_raises_within_timeout(mongo: FakeMongo) -> None:
    mongo.insert_mode = "hang"
    s = MongoDBAuditSink(url=mongo.url, timeout_s=0.4)
    await s.start()
    started = time.monotonic()
    try:
        with pytest.raises(MongoDBSinkError, match="failed"):
            await s.write([entry(1)])
    finally:
        await s.close()
    assert time.monotonic() - started < 0.4 + 1


async def test_recovers_when_the_server_comes_back(mongo: FakeMongo) -> None:
    port = mongo.port
    s = MongoDBAuditSink(url=mongo.url, timeout_s=0.5)
    try:
        await s.write([entry(1)])
        await mongo.stop()
        with pytest.raises(MongoDBSinkError):
            await s.write([entry(2)])
        again = await FakeMongo().start(port)
        try:
            # The pipeline retries a failed batch later: the driver notices the server is back meanwhile.
            for _ in range(10):
                try:
                    await s.write([entry(2)])
                    break
                except MongoDBSinkError:
                    await asyncio.sleep(0.2)
            assert list(again.stored("auditdb", "gomodel_audit")) == ["e-2"]
        finally:
            await again.stop()
    finally:
        await s.close()


async def test_messages_never_hold_the_password() -> None:
    url = f"mongodb://auditor:s3cr%3Ft@127.0.0.1:{free_port()}/db?authSource=admin"
    s = MongoDBAuditSink(url=url, timeout_s=0.2)
    try:
        with pytest.raises(MongoDBSinkError) as info:
            await s.write([entry(1)])
    finally:
        await s.close()
    text = str(info.value)
    assert "s3cr" not in text and url not in text
    assert text.endswith("...")  # the driver's topology description, cut
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_invalid_url_raises() -> None:
    for url in ("mongodb://user:hunter2@127.0.0.1:notaport/db", "mongodb://user:hun:ter2@127.0.0.1/db",
                "http://user:hunter2@127.0.0.1/db"):
        s = MongoDBAuditSink(url=url)
        with pytest.raises(MongoDBSinkError, match=r"invalid audit\.url") as info:
            await s.start()
        assert "hunter2" not in str(info.value) and "ter2" not in str(info.value)


def test_url_is_required() -> None:
    with pytest.raises(ValueError, match=r"audit\.url"):
        MongoDBAuditSink(url="")


def test_url_secrets() -> None:
    assert _url_secrets("mongodb://u:p%40ss@h/db") == ["mongodb://u:p%40ss@h/db", "p%40ss", "p@ss"]
    assert _url_secrets("mongodb://h/db") == ["mongodb://h/db"]
    assert _url_secrets("mongodb://[::1/db") == ["mongodb://[::1/db"]  # unparsable: the whole URL only


async def test_close_is_idempotent(sink: MongoDBAuditSink) -> None:
    await sink.close()
    await sink.close()

