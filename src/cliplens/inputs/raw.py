"""Camera RAW files (CR2, CR3, NEF, ARW, RAF, ORF, RW2, DNG and LibRaw's other formats), through ``rawpy``.

A RAW file is recognised by its first bytes, not its name (the indexer decodes from bytes): Canon,
Fujifilm, Olympus and Panasonic have signatures of their own; the TIFF-based ones (DNG, NEF, ARW, PEF,
SRW…) are TIFF files whose first directory names a DNG version, has sub-directories or is a reduced
preview, which no ordinary TIFF does. Pillow would otherwise open such a file and return its
160-pixel thumbnail as if it were the photo.

Decoding takes the camera's embedded JPEG preview when it is large enough for the use (it is the
camera's own rendering, and decoding it is ~100× cheaper than demosaicing), else a half-size
demosaic with the camera's white balance. Either way the picture is turned upright as the camera
recorded. ``rawpy`` is the ``raw`` extra; without it a RAW file is a bad file whose reason names the
extra to install.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps

RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf",
                            ".rw2", ".dng", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc", ".mef",
                            ".mos", ".mrw"})

#: the shorter side a preview must have to be used when no size is asked for (a classify, a thumbnail)
PREVIEW_MIN_SIDE = 1024

_SIGNATURES = (  # (offset, bytes, format)
    (0, b"FUJIFILMCCD-RAW", "RAF"), (4, b"ftypcrx ", "CR3"), (0, b"IIRO", "ORF"), (0, b"IIRS", "ORF"),
    (0, b"MMOR", "ORF"), (0, b"IIU\x00", "RW2"), (8, b"CR\x02\x00", "CR2"),
)
_DNG_VERSION, _SUB_IFDS, _NEW_SUBFILE_TYPE = 50706, 330, 254

# LibRaw's flip codes as Pillow transposes (0: as stored)
_FLIPS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


class RawUnavailable(ImportError):
    """``rawpy`` is not installed."""


class RawDecodeError(ValueError):
    """LibRaw could not read the file (damaged, truncated, or a variant it does not know)."""


def _rawpy():
    try:
        import rawpy  # type: ignore[import-not-found]
    except ImportError:
        raise RawUnavailable("rawpy") from None
    return rawpy


def raw_format(data: bytes) -> str | None:
    """The RAW format ``data`` starts like ("DNG", "CR2", "RAW" for another TIFF-based one…), or None."""
    for offset, signature, name in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return name
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    tags = _first_ifd_tags(data)
    if _DNG_VERSION in tags:
        return "DNG"
    if _SUB_IFDS in tags or tags.get(_NEW_SUBFILE_TYPE) == 1:
        return "RAW"
    return None


def _first_ifd_tags(data: bytes) -> dict[int, int | None]:
    """Tag ids of a TIFF's first directory (with the value of short/long single-valued ones)."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        tags: dict[int, int | None] = {}
        for i in range(min(count, 512)):
            tag, kind, n = struct.unpack_from(order + "HHI", data, offset + 2 + 12 * i)
            value = None
            if n == 1 and kind in (3, 4):
                value = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, offset + 10 + 12 * i)[0]
            tags[tag] = value
        return tags
    except struct.error:
        return {}


def decode_raw(data: bytes, *, min_side: int | None = None) -> Image.Image:
    """An upright RGB picture of a RAW file's bytes: its embedded preview when the shorter side is at least
    ``min_side`` (default :data:`PREVIEW_MIN_SIDE`), else a half-size demosaic.

    Raises :class:`RawUnavailable` without ``rawpy`` and :class:`RawDecodeError` for a file LibRaw cannot read.
    """
    rawpy = _rawpy()
    need = min_side or PREVIEW_MIN_SIDE
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            flip = raw.sizes.flip
            preview = _preview(raw, rawpy)
            if preview is not None and min(preview.size) >= need:
                oriented = preview.getexif().get(0x0112, 1) != 1
                upright = ImageOps.exif_transpose(preview) if oriented else _flipped(preview, flip)
                return upright.convert("RGB")
            pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)  # LibRaw applies the flip
    except (rawpy.LibRawError, rawpy.NotSupportedError) as exc:
        raise RawDecodeError(str(exc) or type(exc).__name__) from None
    return Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB")


def raw_size(data: bytes) -> tuple[int, int]:
    """Width and height of a RAW file's picture, upright (header only; no demosaic)."""
    rawpy = _rawpy()
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
    except rawpy.LibRawError as exc:
        raise RawDecodeError(str(exc) or type(exc).__name__) from None
    return (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)


def _preview(raw, rawpy) -> Image.Image | None:
    """The embedded preview as a loaded Pillow image, or None when the file has none usable."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            image = Image.open(io.BytesIO(thumb.data))
            image.load()
            return image
        except (OSError, SyntaxError, ValueError):
            return None  # a damaged preview: demosaic instead
    return Image.fromarray(np.ascontiguousarray(thumb.data[..., :3]), "RGB")


def _flipped(image: Image.Image, flip: int) -> Image.Image:
    method = _FLIPS.get(flip)
    return image.transpose(method) if method is not None else image
