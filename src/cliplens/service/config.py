"""What a running service was asked to be: its model, index, limits and security settings."""

from __future__ import annotations

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

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.api_key = self.api_key or None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
