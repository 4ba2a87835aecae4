"""Typed errors. Library code raises these; only the CLI prints them and exits with their code."""

from __future__ import annotations


class CliplensError(Exception):
    """Base of every error cliplens raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(CliplensError):
    """The caller asked for something that cannot be done as asked (bad option, bad file)."""


class ModelNotFoundError(CliplensError):
    """A model is neither in the local cache nor reachable on the hub."""

    def __init__(self, name: str, reason: str = ""):
        hint = (
            f"model {name!r} is not available offline{': ' + reason if reason else ''}. "
            f"Get it with `cliplens models pull {name}` on a connected machine (or copy its Hugging Face "
            f"cache dir), or pass a local directory with --model PATH"
        )
        super().__init__(hint)
        self.name = name


class ModelLoadError(CliplensError):
    """A model was found but is not a checkpoint cliplens can use."""


class ImageLoadError(CliplensError):
    """One image could not be turned into model input; ``source`` names it and ``reason`` says why."""

    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class DataError(CliplensError):
    """A data file (pairs CSV/JSONL, labels file) is malformed; the message names the file and line."""
