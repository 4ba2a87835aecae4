"""Text in images: where it is and what it says, through a real OCR engine, and covering it.

The engine is RapidOCR (``rapidocr-onnxruntime``, the ``ocr`` extra): PP-OCRv4 detection and
recognition as ONNX models shipped inside its wheel, run by ONNX Runtime, so it works offline. Images
are read at their own size (up to 960 px on the long side) rather than upscaled, which keeps a
224 px image at about 0.1 s here.

:func:`cover_text` paints over the regions that read as words (two different letters, or two digits: the
recogniser also "reads" shapes, a cross as "+" or "XX", a star as "★") with the colour around each, so that a
model sees the picture without its words: the typographic defence of ``--ignore-text``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import UsageError

MIN_CONFIDENCE = 0.5  # recognitions below this are not trusted as text
MIN_SIDE = 8  # images smaller than this on a side, or more elongated than MAX_ASPECT, are not read
MAX_ASPECT = 50
_LIMIT_SIDE = 960
_MARGIN = 0.4  # a region is covered with this share of its height added around it (glyph edges, the sign's border)
_RING = 4  # pixels around the covered region whose dominant colour fills it

_engine = None
_engine_lock = threading.Lock()


class OcrUnavailable(ImportError):
    """``rapidocr-onnxruntime`` is not installed."""


@dataclass(frozen=True)
class TextRegion:
    """Text found in an image: its four corners (x, y) clockwise from top left, the text, and the
    recogniser's confidence."""

    box: tuple[tuple[float, float], ...]
    text: str
    confidence: float

    @property
    def is_text(self) -> bool:
        """Whether it reads as text: at least two different letters, or two digits. The recogniser also reads
        shapes ("+", "X", "XX", "O", "★" for crosses, circles and stars), which are not text; a sign of one
        letter is the price of that."""
        if self.confidence < MIN_CONFIDENCE:
            return False
        letters = {ch.lower() for ch in self.text if ch.isalpha()}
        return len(letters) >= 2 or sum(ch.isdigit() for ch in self.text) >= 2

    def to_dict(self) -> dict:
        return {"text": self.text, "confidence": round(self.confidence, 4),
                "box": [[round(x, 1), round(y, 1)] for x, y in self.box]}


def _ocr():
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR  # type: ignore[import-not-found]
            except ImportError:
                raise OcrUnavailable("rapidocr-onnxruntime") from None
            _engine = RapidOCR(det_limit_type="max", det_limit_side_len=_LIMIT_SIDE, use_angle_cls=False)
        return _engine


def ocr_available() -> bool:
    try:
        _ocr()
    except OcrUnavailable:
        return False
    return True


def read_text(image: Image.Image) -> list[TextRegion]:
    """The text regions of an RGB picture (see :func:`cliplens.inputs.images.load_image`), top to bottom.

    Raises :class:`OcrUnavailable` without the ``ocr`` extra.
    """
    engine = _ocr()
    width, height = image.size
    if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
        return []  # a dot or a sliver holds no readable text (and the engine cannot resize it)
    from rapidocr_onnxruntime.utils.process_img import ResizeImgError  # type: ignore[import-not-found]

    scale = min(1.0, _LIMIT_SIDE / max(width, height))  # the engine would shrink it anyway: do it cheaply first
    small = image.convert("RGB")
    if scale < 1.0:
        small = small.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
    with _engine_lock:  # one inference at a time: the engine keeps per-call state
        try:
            found, _ = engine(np.asarray(small))
        except ResizeImgError:  # a shape its detector cannot scale: nothing it can read
            return []
    regions = [TextRegion(tuple((float(x) / scale, float(y) / scale) for x, y in box), str(text), float(score))
               for box, text, score in (found or [])]
    return sorted(regions, key=lambda r: (min(y for _, y in r.box), min(x for x, _ in r.box)))


def _grown(box, margin: float) -> list[tuple[float, float]]:
    """The box grown around its centre by ``margin`` of its height on every side."""
    points = np.asarray(box, np.float64)
    centre = points.mean(axis=0)
    height = max(np.linalg.norm(points[3] - points[0]), np.linalg.norm(points[2] - points[1]), 1.0)
    direction = points - centre
    length = np.linalg.norm(direction, axis=1, keepdims=True)
    grown = points + direction / np.maximum(length, 1e-6) * margin * height * np.sqrt(2)
    return [(float(x), float(y)) for x, y in grown]


def cover_text(image: Image.Image, regions: list[TextRegion]) -> tuple[Image.Image, list[TextRegion]]:
    """``image`` with every text region (:attr:`TextRegion.is_text`), grown by a margin, filled with the dominant
    colour of a thin ring around it, and the regions covered."""
    covered = [r for r in regions if r.is_text]
    if not covered:
        return image, []
    out = image.convert("RGB").copy()
    pixels = np.asarray(out)
    draw = ImageDraw.Draw(out)
    for region in covered:
        inner = _grown(region.box, _MARGIN)
        mask = Image.new("L", out.size, 0)
        ImageDraw.Draw(mask).polygon(_grown(region.box, _MARGIN + _RING / max(_height(region.box), 1.0)), fill=255)
        ImageDraw.Draw(mask).polygon(inner, fill=0)
        draw.polygon(inner, fill=_dominant(pixels[np.asarray(mask) > 0]))
    return out, covered


def _dominant(ring: np.ndarray) -> tuple[int, int, int]:
    """The most common colour of a ring of pixels (the mean of its most frequent coarse colour), so that a ring
    half on a sign and half on the wall around it takes the wall's colour, not a grey between them."""
    if not len(ring):
        return (128, 128, 128)
    coarse = (ring // 32).astype(np.int64)
    keys = coarse[:, 0] * 64 + coarse[:, 1] * 8 + coarse[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    return tuple(int(c) for c in ring[keys == values[np.argmax(counts)]].mean(axis=0))


def _height(box) -> float:
    points = np.asarray(box, np.float64)
    return float(max(np.linalg.norm(points[3] - points[0]), np.linalg.norm(points[2] - points[1])))


class TextCover:
    """Covers the text in images before they are encoded (``--ignore-text``), remembering what it covered in
    each image, by its source (a path, or the bytes or picture object given)."""

    def __init__(self):
        _ocr()  # fail now, with the extra to install, rather than at the first image
        self._covered: dict[object, list[TextRegion]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(source) -> object:
        return os.fspath(source) if isinstance(source, (str, os.PathLike)) else id(source)

    def __call__(self, source, image: Image.Image) -> Image.Image:
        clean, covered = cover_text(image, read_text(image))
        with self._lock:
            self._covered[self._key(source)] = covered
        return clean

    def read(self, source, image: Image.Image) -> Image.Image:
        """Read the text of ``image`` (kept, as for covering) and return the image untouched."""
        found = [r for r in read_text(image) if r.is_text]
        with self._lock:
            self._covered[self._key(source)] = found
        return image

    def covered(self, source) -> list[TextRegion]:
        """The regions covered in the image of ``source`` (none if it was not seen), forgotten once asked for
        (a long run keeps nothing it has reported)."""
        with self._lock:
            return self._covered.pop(self._key(source), [])


_NEEDS_EXTRA = "reading the text in images needs the ocr extra: pip install 'cliplens[ocr]'"


def text_cover(parameter: str = "ignore_text") -> TextCover:
    """A :class:`TextCover`, or the :class:`~cliplens.errors.UsageError` naming the extra to install."""
    try:
        return TextCover()
    except OcrUnavailable:
        raise UsageError(_NEEDS_EXTRA, parameter=parameter) from None


def cover_image_text(image: Image.Image, parameter: str = "ignore_text") -> tuple[Image.Image, list[TextRegion]]:
    """:func:`cover_text` of the text :func:`read_text` finds, or the UsageError naming the extra to install."""
    try:
        return cover_text(image, read_text(image))
    except OcrUnavailable:
        raise UsageError(_NEEDS_EXTRA, parameter=parameter) from None


def normalised(text: str) -> str:
    """Text as the OCR search compares it: lower case, letters and digits only (OCR drops and adds spaces)."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def allowed_errors(needle: str) -> int:
    """Character errors forgiven when searching for ``needle``: one per six characters (OCR misreads a letter
    here and there), none below four."""
    return len(needle) // 6 if len(needle) >= 4 else 0


def text_contains(needle: str, haystack: str, errors: int | None = None) -> bool:
    """Whether ``haystack`` holds ``needle`` with at most ``errors`` insertions, deletions or substitutions
    (both :func:`normalised` first; default :func:`allowed_errors`): approximate substring matching (Sellers)."""
    needle, haystack = normalised(needle), normalised(haystack)
    if not needle:
        return False
    limit = allowed_errors(needle) if errors is None else errors
    if needle in haystack:
        return True
    if limit == 0:
        return False
    previous = list(range(len(needle) + 1))  # cost of matching needle[:i] ending anywhere (free start)
    for ch in haystack:
        current = [0]
        for i, wanted in enumerate(needle, 1):
            current.append(min(previous[i] + 1, current[i - 1] + 1, previous[i - 1] + (ch != wanted)))
        if current[-1] <= limit:
            return True
        previous = current
    return False
