"""What a running service was asked to be: its model, index, limits and security settings."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 40_000_000  # below the library's decompression-bomb limit: a server decodes for others
DEFAULT_MAX_BATCH = 32
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_REQUEST_TIMEOUT = 60.0
API_KEY_ENV = "CLIPLENS_API_KEY"


@dataclass
class ServiceConfig:
    """Settings of :func:`cliplens.service.create_app`; ``cliplens serve`` fills them from its flags.

    ``model`` None means the index's model when an index is configured, else the default model.
    ``api_key`` None reads ``CLIPLENS_API_KEY``; an empty key means no key is needed.
    """

    model: str | None = None
    device: str | None = None
    backend: str | None = None
    precision: str | None = None
    index: str | None = None
    api_key: str | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    cors_origins: list[str] = field(default_factory=list)
    max_images: int = 64  # per rank or embed request
    max_labels: int = 1000  # per classify request
    host: str = "127.0.0.1"  # the address it listens on: requests must name it (or an allowed host)
    allowed_hosts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.api_key = self.api_key or None

    def accepted_hosts(self) -> HostRule:
        """Which ``Host`` headers requests may carry (see :class:`HostRule`)."""
        return HostRule.for_address(self.host, self.allowed_hosts)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class HostRule:
    """The ``Host`` names a request may use. A service bound to loopback answers to its loopback names; one
    bound to every interface also to any IP address; both to the names allowed. A DNS name of someone else's
    that points at this machine (DNS rebinding, a web page reaching a local service through the browser) is
    none of these."""

    names: frozenset[str]
    any_ip: bool

    @classmethod
    def for_address(cls, host: str, allowed=()) -> "HostRule":
        names = {host.strip("[]").lower(), *(name.lower() for name in allowed)}
        unspecified = host in ("0.0.0.0", "::", "")
        if unspecified or _is_loopback(host):
            names |= set(LOOPBACK_NAMES)
        return cls(frozenset(names), unspecified)

    def accepts(self, header: str) -> bool:
        host = header.strip().lower()
        if host.startswith("["):  # [v6]:port
            host = host[1:].partition("]")[0]
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        if host in self.names:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(host)
                return True
            except ValueError:
                return False
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
