"""The one place images are opened, checked and turned into RGB pictures.

Every capability goes through :func:`load_image`, so every odd or broken file gets the same
typed error (:class:`~cliplens.errors.ImageLoadError`) naming the file and the reason.
"""

from __future__ import annotations

import glob
import io
import os
import re
import struct
import threading
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError, UsageError, printable
from .raw import RAW_EXTENSIONS, RawDecodeError, RawUnavailable, decode_raw, raw_format, raw_size

ImageSource = Union[str, os.PathLike, bytes, Image.Image]

#: Pixel count over which a file is refused as a likely decompression bomb (``CLIPLENS_MAX_PIXELS``).
DEFAULT_MAX_PIXELS = 150_000_000

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp", ".heic", ".heif", ".avif"}
) | RAW_EXTENSIONS

_SIGNATURES = {  # formats we can name even when Pillow cannot read them
    b"ftypheic": "HEIC", b"ftypheix": "HEIC", b"ftyphevc": "HEIC", b"ftypmif1": "HEIF", b"ftypmsf1": "HEIF",
    b"ftypavif": "AVIF", b"ftypavis": "AVIF",
}

_RASTER_SIGNATURES = (  # formats Pillow reads; a file that starts like one but cannot be opened is damaged
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)

_heif_registered: bool | None = None


def _register_heif() -> bool:
    """Teach Pillow HEIC/AVIF when the optional ``pillow-heif`` extra is installed."""
    global _heif_registered
    if _heif_registered is None:
        try:
            import pillow_heif  # type: ignore[import-not-found]

            pillow_heif.register_heif_opener()
            if hasattr(pillow_heif, "register_avif_opener"):
                pillow_heif.register_avif_opener()
            _heif_registered = True
        except ImportError:
            _heif_registered = False
    return _heif_registered


def max_pixels() -> int:
    """The decompression-bomb limit in force: ``CLIPLENS_MAX_PIXELS`` or the default."""
    value = os.environ.get("CLIPLENS_MAX_PIXELS")
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"must be a whole number, not {value!r}", parameter="CLIPLENS_MAX_PIXELS") from None


def source_name(source: ImageSource) -> str:
    """A short human name for an image source, used in messages and results: a path as it prints (a file name
    that is not UTF-8 has its odd bytes escaped, see :func:`cliplens.errors.printable`)."""
    if isinstance(source, (str, os.PathLike)):
        return printable(os.fspath(source))
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return "<PIL image>"


def _read_bytes(source: ImageSource, name: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.exists():
            raise ImageLoadError(name, "no such file", path=os.fspath(path))
        if path.is_dir():
            raise ImageLoadError(name, "is a directory, not an image file", path=os.fspath(path))
        try:
            data = path.read_bytes()
        except PermissionError:
            raise ImageLoadError(name, "permission denied", path=os.fspath(path)) from None
        except OSError as exc:
            raise ImageLoadError(name, f"unreadable ({exc.strerror or exc})", path=os.fspath(path)) from None
    if not data:
        raise ImageLoadError(name, "empty file")
    return data


def _raster_format(data: bytes) -> str | None:
    """The readable format a file's first bytes claim, if any."""
    for signature, fmt in _RASTER_SIGNATURES:
        if data.startswith(signature):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[:2] == b"BM" and data[6:10] == b"\x00\x00\x00\x00":  # reserved header bytes are zero
        return "BMP"
    return None


def _unidentified_reason(data: bytes) -> str:
    head = data[:32]
    for signature, fmt in _SIGNATURES.items():
        if signature in head:
            return f"unsupported format {fmt} (install the extra: pip install 'cliplens[heif]')"
    fmt = _raster_format(data)
    if fmt:
        return f"truncated or corrupt {fmt} file"
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # BOM, whitespace
    if text.startswith(b"<"):
        if b"<html" in text or text.startswith(b"<!doctype html"):
            return "not an image (an HTML page)"
        if b"<svg" in text:
            return "unsupported format SVG (vector images must be rasterised first)"
    if head.startswith(b"%PDF"):
        return "unsupported format PDF"
    return "not an image (unknown or unsupported format)"


def _looks_truncated(data: bytes) -> bool:
    """Whether a file that failed to decode lacks the end its format requires."""
    fmt, tail = _raster_format(data), data.rstrip(b"\x00")
    if fmt == "JPEG":
        return not tail.endswith(b"\xff\xd9")
    if fmt == "PNG":
        return b"IEND" not in data[-16:]
    if fmt == "GIF":
        return not tail.endswith(b";")
    if fmt in ("WebP", "BMP"):  # both headers declare the file's length
        declared = int.from_bytes(data[4:8] if fmt == "WebP" else data[2:6], "little") + (8 if fmt == "WebP" else 0)
        return len(data) < declared
    return False


def _decode_reason(exc: BaseException, data: bytes | None) -> str:
    text = str(exc)
    lowered = text.lower()
    if (
        isinstance(exc, EOFError) or "truncated" in lowered or "broken data stream" in lowered
        or (data is not None and _looks_truncated(data))
    ):
        return "truncated or corrupt file"
    return f"cannot decode ({text or type(exc).__name__})"


def _bomb_reason(exc: Image.DecompressionBombError, limit: int) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)):,} pixels" if found else "the image"
    return f"decompression bomb: {size} is over the limit of {limit:,} (set CLIPLENS_MAX_PIXELS to raise it)"


_open_lock = threading.Lock()


def _pillow_open(data: bytes) -> Image.Image:
    """``Image.open`` on bytes with Pillow's own decompression-bomb check off for this call only.

    cliplens applies its own pixel limit (per call, see :func:`load_image`), so Pillow's process-wide
    ``MAX_IMAGE_PIXELS`` (which warns above 89M pixels and refuses above twice that) must not get in its
    way; it is switched off while the header is read, under a lock, and restored before anyone else opens
    an image here. Decoding the pixels happens after the lock is released.
    """
    with _open_lock:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = image.mode
    if "transparency" in image.info and mode in ("1", "L", "RGB"):  # PNG tRNS colour key
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0
        elif mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageSource, *, draft_size: int | None = None, pixel_limit: int | None = None) -> Image.Image:
    """Open a path, bytes or PIL image as an upright 8-bit RGB picture, or raise :class:`ImageLoadError`.

    ``draft_size`` lets large JPEGs decode at reduced scale while both sides stay at least that size;
    ``pixel_limit`` (default ``CLIPLENS_MAX_PIXELS``) refuses larger images as decompression bombs.
    """
    name = source_name(source)
    limit = pixel_limit if pixel_limit is not None else max_pixels()
    data = None
    try:
        if isinstance(source, Image.Image):  # a PIL image may still be lazy
            image = source
        else:
            data = _read_bytes(source, name)
            if (raw := raw_format(data)) is not None:
                image = _decode_raw(data, raw, name, draft_size)
                _check_pixels(image, name, limit)
                return image
            _register_heif()
            image = _pillow_open(data)
        _check_pixels(image, name, limit)
        if draft_size and data is not None and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # GIF, WebP and TIFF stop at their first frame
        upright = ImageOps.exif_transpose(image) or image
        return _to_rgb(upright)
    except _DECODE_ERRORS as exc:
        raise _load_error(exc, name, data, limit) from None


def _decode_raw(data: bytes, fmt: str, name: str, draft_size: int | None) -> Image.Image:
    try:
        return decode_raw(data, min_side=draft_size)
    except RawUnavailable:
        label = "camera RAW" if fmt == "RAW" else f"{fmt} camera RAW"
        raise ImageLoadError(name, f"{label} file needs the raw extra: pip install 'cliplens[raw]'") from None
    except RawDecodeError as exc:
        raise ImageLoadError(name, f"truncated or corrupt RAW file ({exc})") from None


_DECODE_ERRORS = (ImageLoadError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError,
                  IndexError, TypeError, struct.error, MemoryError)


def _load_error(exc: BaseException, name: str, data: bytes | None, limit: int) -> ImageLoadError:
    """The :class:`ImageLoadError` saying why an image failed to open or decode."""
    if isinstance(exc, ImageLoadError):
        return exc
    if isinstance(exc, UnidentifiedImageError):
        return ImageLoadError(name, _unidentified_reason(data or b""))
    if isinstance(exc, Image.DecompressionBombError):  # a decoder's own guard (ours is checked first)
        return ImageLoadError(name, _bomb_reason(exc, limit))
    if isinstance(exc, MemoryError):
        return ImageLoadError(name, "too large to decode in memory")
    return ImageLoadError(name, _decode_reason(exc, data))


def _check_pixels(image: Image.Image, name: str, limit: int) -> None:
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(name, f"invalid size {width}x{height}")
    if width * height > limit:
        raise ImageLoadError(
            name, f"decompression bomb: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{limit:,} (set CLIPLENS_MAX_PIXELS to raise it)"
        )


def image_size(source: ImageSource) -> tuple[int, int]:
    """Width and height of an image without decoding its pixels (orientation applied)."""
    if isinstance(source, Image.Image):
        return load_image(source).size
    name = source_name(source)
    data = _read_bytes(source, name)
    if (raw := raw_format(data)) is not None:
        try:
            return raw_size(data)
        except (RawUnavailable, RawDecodeError):
            return _decode_raw(data, raw, name, None).size  # raises the reason
    _register_heif()
    try:
        im = _pillow_open(data)
        _check_pixels(im, name, max_pixels())
        width, height = im.size
        # a PNG's getexif() decodes every pixel to look for an eXIf chunk after the image data
        late_png_exif = im.format == "PNG" and "exif" not in im.info
        orientation = 1 if late_png_exif else im.getexif().get(0x0112, 1)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the size cannot be known
        raise _load_error(exc, name, data, max_pixels()) from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def expand_paths(inputs: Iterable[str | os.PathLike], *, recursive: bool = True, exclude: Iterable[str] = (),
                 problems: list[ImageLoadError] | None = None,
                 extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Turn files, folders and glob patterns into a sorted list of image paths.

    Folders contribute files with one of ``extensions`` (an image's, by default); explicit files are kept whatever their
    extension so that a bad one is reported rather than silently dropped. A folder that cannot be read
    is added to ``problems`` as an :class:`ImageLoadError` (whose ``path`` is the folder), like a bad
    file, or raised when no ``problems`` list is given.
    """
    patterns = list(exclude)
    found: dict[Path, None] = {}

    def keep(path: Path) -> bool:
        return not any(fnmatch(path.as_posix(), p) or fnmatch(path.name, p) for p in patterns)

    def unreadable(problem: ImageLoadError) -> None:
        if problems is None:
            raise problem
        problems.append(problem)

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            for child in _walk(path, recursive, unreadable):
                if child.suffix.lower() in extensions and keep(child):
                    found[child] = None
        elif path.exists():
            if keep(path):
                found[path] = None
        elif glob.has_magic(text):
            for match in sorted(glob.glob(text, recursive=True)):
                child = Path(match)
                if child.is_file() and keep(child):
                    found[child] = None
        else:
            raise UsageError("no such file, folder or matching glob", value=printable(text), parameter="paths")
    return list(found)


def _walk(folder: Path, recursive: bool, unreadable) -> Iterator[Path]:
    """The files under ``folder`` in sorted order (as sorting their paths would give), not entering linked
    folders; a folder that cannot be listed goes to ``unreadable`` instead of being skipped in silence."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        unreadable(ImageLoadError(os.fspath(folder), f"folder unreadable ({exc.strerror or exc})",
                                  path=os.fspath(folder)))
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and entry.is_file()
        except OSError:
            continue  # it went away while we looked
        if is_dir and recursive:
            yield from _walk(Path(entry.path), recursive, unreadable)
        elif is_file:
            yield Path(entry.path)


def iter_loaded(sources: Iterable[ImageSource], *, draft_size: int | None = None) -> Iterator[tuple[ImageSource, Image.Image | ImageLoadError]]:
    """Load each source in turn, yielding the picture or the error so batch work can go on."""
    for source in sources:
        try:
            yield source, load_image(source, draft_size=draft_size)
        except ImageLoadError as exc:
            yield source, exc
