"""Where a client sends its requests: scheme, host, port and path prefix, parsed once from a base URL."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    #: The base URL's path without its trailing slash ("/v1"), prefixed to every request path.
    base_path: bytes

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> bytes:
        """The Host header's value: the port only when it is not the scheme's default, IPv6 in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != _DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        return host.encode("idna") if not host.isascii() else host.encode("ascii")

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError("the base URL must be http(s)://host[:port][/path]")
        if parts.query or parts.fragment:
            raise ValueError("the base URL must not have a query or a fragment")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError:
            raise ValueError("the base URL's port is not a number from 1 to 65535") from None
        path = parts.path.rstrip("/")
        return cls(scheme=scheme, host=parts.hostname, port=port, base_path=path.encode("ascii"))
