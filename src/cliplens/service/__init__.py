"""``cliplens serve``: the HTTP API and the web page over one loaded model (FastAPI on uvicorn)."""

from .app import create_app, open_index
from .config import ServiceConfig

__all__ = ["ServiceConfig", "create_app", "open_index"]
