"""Builders of test images and the corpus of odd and broken image files, shared by the image and service tests."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# ---------------------------------------------------------------- builders


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def quadrants(size=(32, 24)) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    w, h = size
    image = Image.new("RGB", size, WHITE)
    for box, colour in (((0, 0, w // 2, h // 2), RED), ((w // 2, 0, w, h // 2), GREEN), ((0, h // 2, w // 2, h), BLUE)):
        image.paste(colour, box)
    return image


def strip(mode: str, values, palette=None) -> Image.Image:
    """A one-row image holding ``values`` in ``mode``."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    if palette:
        image.putpalette(palette)
    return image


def frames(fmt: str, colours=(RED, GREEN), **options) -> bytes:
    first, *rest = (Image.new("RGB", (8, 8), c) for c in colours)
    return encode(first, fmt, save_all=True, append_images=rest, **options)


def with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def png_claiming_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header (with a correct CRC) claims another size."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def corrupt_idat(png: bytes) -> bytes:
    data = bytearray(png)
    start = data.index(b"IDAT") + 14
    data[start:start + 40] = bytes(b ^ 0x5A for b in data[start:start + 40])
    return bytes(data)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def noise(size=(48, 40), seed=0) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


JPEG = encode(noise(), "JPEG", quality=85)


def grey(*values) -> list[tuple[int, int, int]]:
    return [(v, v, v) for v in values]


def array(values, dtype) -> Image.Image:
    return Image.fromarray(np.array([values], dtype))




# ---------------------------------------------------------------- corpus of odd and broken files


CORPUS = [  # (filename, builder, expected: "ok" or a substring of the reason)
    ("plain.jpg", lambda: JPEG, "ok"),
    ("progressive.jpg", lambda: encode(noise(), "JPEG", progressive=True), "ok"),
    ("grey.jpg", lambda: encode(noise().convert("L"), "JPEG"), "ok"),
    ("cmyk.jpg", lambda: encode(noise().convert("CMYK"), "JPEG"), "ok"),
    ("rotated.jpg", lambda: with_exif_orientation(noise(), 6), "ok"),
    ("trailing-garbage.jpg", lambda: JPEG + b"GARBAGE" * 50, "ok"),
    ("SHOUTING.JPG", lambda: JPEG, "ok"),
    ("jpeg-named.png", lambda: JPEG, "ok"),
    ("one-pixel.png", lambda: encode(Image.new("RGB", (1, 1), RED), "PNG"), "ok"),
    ("sliver.png", lambda: encode(Image.new("RGB", (1, 600), BLUE), "PNG"), "ok"),
    ("palette.png", lambda: encode(noise().convert("P"), "PNG", transparency=3), "ok"),
    ("la.png", lambda: encode(noise().convert("LA"), "PNG"), "ok"),
    ("grey16.png", lambda: encode(array([40_000] * 9, np.uint16), "PNG"), "ok"),
    ("bilevel.png", lambda: encode(noise().convert("1"), "PNG"), "ok"),
    ("no-iend.png", lambda: encode(noise(), "PNG")[:-12], "ok"),
    ("animated.gif", lambda: frames("GIF"), "ok"),
    ("animated.webp", lambda: frames("WEBP", lossless=True), "ok"),
    ("float.tif", lambda: encode(array(np.linspace(0, 1, 64), np.float32), "TIFF"), "ok"),
    ("multipage.tif", lambda: frames("TIFF"), "ok"),
    ("palette.bmp", lambda: encode(noise().convert("P"), "BMP"), "ok"),
    ("empty.jpg", lambda: b"", "empty"),
    ("zero-bytes.png", lambda: b"", "empty"),
    ("half.jpg", lambda: half(JPEG), "truncated"),
    ("header-only.jpg", lambda: JPEG[: JPEG.index(b"\xff\xda")], "truncated"),
    ("first-bytes.jpg", lambda: JPEG[:20], "truncated"),
    ("signature-only.png", lambda: encode(noise(), "PNG")[:8], "truncated"),
    ("half.png", lambda: half(encode(noise(), "PNG")), "truncated"),
    ("corrupt-idat.png", lambda: corrupt_idat(encode(noise(), "PNG")), "corrupt"),
    ("half.gif", lambda: half(encode(noise().convert("P"), "GIF")), "truncated"),
    ("bogus-header.bmp", lambda: b"BM" + b"\xff" * 52 + encode(noise(), "BMP")[54:], "corrupt"),
    ("half.webp", lambda: half(encode(noise(), "WEBP")), "truncated"),
    ("half.tif", lambda: half(encode(noise(), "TIFF")), "truncated"),
    ("notes.txt", lambda: b"just some words\n", "not an image"),
    ("text-named.jpg", lambda: b"this is not a photo\n" * 10, "not an image"),
    ("random.png", lambda: np.random.default_rng(7).bytes(4096), "not an image"),
    ("page.html", lambda: b"<!DOCTYPE html>\n<html><body><svg></svg></body></html>", "HTML"),
    ("photo.heic", lambda: b"\x00\x00\x00\x18ftypheic" + bytes(200), "HEIC"),
    ("drawing.svg", lambda: b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
    ("doctype.svg", lambda: b'\xef\xbb\xbf<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n<svg/>', "SVG"),
    ("scan.pdf", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
    ("bomb.png", lambda: png_claiming_size(100_000, 100_000), "decompression bomb"),
]
