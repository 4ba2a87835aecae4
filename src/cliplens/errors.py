"""Typed errors. Library code raises these; only the CLI and the service turn them into messages and exits.

An error about one argument carries its name in ``parameter`` (the Python keyword, e.g. ``coverage``),
the offending ``value`` when showing it helps, and says what is wrong in ``message`` without naming
the parameter, so that each interface names it its own way: the CLI as its flag (``--coverage 1.5:
...``), the service as its field (``coverage 1.5: ...``), and ``str(error)`` as the keyword. Library
messages never name command-line flags.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` as it can be printed and written as UTF-8: bytes of a file name that are not UTF-8 (kept by
    Python as lone surrogates) become ``\\xNN`` escapes, as git and ls print them."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes (from JSON, say): escape the code points
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class CliplensError(Exception):
    """Base of every error cliplens raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code = 2

    def __init__(self, message: str, *, parameter: str | None = None, value: str | None = None,
                 remedy: str | None = None):
        # everything an error says is shown to a person: a file name that is not UTF-8 comes out escaped
        message = printable(message)
        value = None if value is None else printable(str(value))
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.value = value
        self.remedy = remedy  # a parameter that resolves the error (``overwrite``, ``reindex``), if there is one

    def describe(self, name: str | None = None, *, named: bool = True) -> str:
        """The one-line message, with the parameter called ``name`` (default: its Python keyword); with
        ``named`` False only the value is shown (as for a command's positional argument)."""
        where = (name or self.parameter) if named else None
        head = " ".join(part for part in (where, self.value) if part)
        return f"{head}: {self.message}" if head else self.message

    def __str__(self) -> str:
        return self.describe()


class UsageError(CliplensError):
    """The caller asked for something that cannot be done as asked (bad option, bad file)."""


class ModelNotFoundError(CliplensError):
    """A model is neither in the local cache nor reachable on the hub."""

    def __init__(self, name: str, reason: str = ""):
        hint = (
            f"{name!r} is not available offline{': ' + reason if reason else ''}. Get it with "
            f"`cliplens models pull {name}` on a connected machine (or copy its Hugging Face cache dir), "
            "or give a local folder in Hugging Face format"
        )
        super().__init__(hint, parameter="model")
        self.name = name


class ModelLoadError(CliplensError):
    """A model was found but is not a checkpoint cliplens can use."""


class ImageLoadError(CliplensError):
    """One image (or folder of images) could not be turned into model input: ``source`` names it, printably,
    ``reason`` says why, and ``path`` is the file or folder itself when it is one."""

    def __init__(self, source: str, reason: str, *, path: str | None = None):
        source = printable(source)
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.path = path


class DataError(CliplensError):
    """A data file (pairs CSV/JSONL, labels file) is malformed; the message names the file and line."""


class OutputError(UsageError):
    """An output cannot be written where it was asked for (checked before any work starts); ``exists`` says
    that it is only refused because it exists and replacing it was not asked for."""

    def __init__(self, message: str, *, parameter: str | None = None, value: str | None = None,
                 exists: bool = False):
        super().__init__(message, parameter=parameter, value=value, remedy="overwrite" if exists else None)
        self.exists = exists
