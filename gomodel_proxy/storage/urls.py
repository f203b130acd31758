"""Database URLs read without SQLAlchemy (importing it costs ~170 ms and ~17 MB, too much for start-up).

``parse_url`` follows ``sqlalchemy.engine.make_url`` (the same pattern, the same unquoting), and
``DbUrl.render`` follows ``URL.render_as_string``, so that a URL means and prints the same whichever
reads it; ``tests/unit/storage/test_raw_start.py`` compares them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote

#: File name of the default SQLite database, inside ``cache.dir``.
DEFAULT_SQLITE_FILE = "gomodel.db"

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

# sqlalchemy.engine.url._parse_url's pattern.
_PATTERN = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
        """,
    re.X,
)


class UrlError(ValueError):
    """Not a database URL."""


@dataclass(frozen=True, slots=True)
class DbUrl:
    drivername: str
    username: str | None = None
    password: str | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    #: The query parameters, in order (a name given twice keeps both values).
    query: tuple[tuple[str, str], ...] = field(default=())

    @property
    def backend_name(self) -> str:
        return self.drivername.partition("+")[0]

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return "sqlite" if self.backend_name == "sqlite" else "postgresql"

    def render(self, *, hide_password: bool = True) -> str:
        """As ``URL.render_as_string`` writes it."""
        s = self.drivername + "://"
        if self.username is not None:
            s += quote(self.username, safe=" +")
            if self.password is not None:
                s += ":" + ("***" if hide_password else quote(self.password, safe=" +"))
            s += "@"
        if self.host is not None:
            s += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            s += f":{self.port}"
        if self.database is not None:
            s += "/" + quote(self.database, safe=" +/")
        if self.query:
            s += "?" + "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(self.query, key=lambda kv: kv[0]))
        return s


def parse_url(url: str) -> DbUrl:
    """``url`` as ``sqlalchemy.engine.make_url`` reads it; ``UrlError`` when it is not a database URL."""
    m = _PATTERN.match(url)
    if m is None:
        raise UrlError("Could not parse the database URL")
    parts = m.groupdict()
    port: int | None = None
    if parts["port"]:
        try:
            port = int(parts["port"])
        except ValueError:
            raise UrlError("the port is not a number") from None
    query = tuple(parse_qsl(parts["query"])) if parts["query"] is not None else ()
    return DbUrl(
        drivername=parts["name"],
        username=None if parts["username"] is None else unquote(parts["username"]),
        password=None if parts["password"] is None else unquote(parts["password"]),
        host=parts["ipv4host"] or parts["ipv6host"],
        port=port,
        database=None if parts["database"] is None else unquote(parts["database"]),
        query=query,
    )


def default_url(cache_dir: str) -> str:
    return f"sqlite+aiosqlite:///{Path(cache_dir) / DEFAULT_SQLITE_FILE}"


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be used (a message that never shows its password), or ``None``."""
    try:
        parsed = parse_url(url)
    except UrlError:
        return (
            "not a database URL; write sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host:5432/dbname"
        )
    backend = parsed.backend_name
    driver = _DRIVERS.get(backend)
    if driver is None:
        return (
            f"unsupported database '{backend}'; use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host:5432/dbname"
        )
    if parsed.drivername != driver:
        return f"'{parsed.drivername}' is not an async driver; write the URL as {driver}://..."
    if backend == "postgresql" and not parsed.database:
        return "no database name; write it as postgresql+asyncpg://user:password@host:5432/dbname"
    return None


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and messages)."""
    try:
        return parse_url(url).render(hide_password=True)
    except UrlError:
        return "<not a database URL>"
