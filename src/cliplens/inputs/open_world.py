"""Images from outside any label set's world, generated: what "none of these" must also catch.

Blanks, noise, textures and collages stand for what users really send a classifier that fits none
of its labels (an empty frame, a sensor glitch, a wall, a screenshot). ``cliplens calibrate`` fits the
open-set detector on them as out-of-distribution examples; ``cliplens bench open-set`` draws other
seeds of them, plus kinds the calibration never saw, to measure the detector.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

KINDS = ("blank", "noise", "texture", "collage")


def _blank(rng: np.random.Generator, size: int) -> Image.Image:
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.random() < 0.3:  # pure white, black or grey frames are what cameras and screenshots give most
        grey = int(rng.choice([0, 128, 255]))
        colour = (grey, grey, grey)
    return Image.new("RGB", (size, size), colour)


def _noise(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(0, 3)
    if kind == 0:  # uniform RGB noise
        pixels = rng.integers(0, 256, (size, size, 3))
    elif kind == 1:  # Gaussian noise around a colour
        pixels = rng.normal(rng.integers(40, 216, 3), rng.uniform(10, 60), (size, size, 3))
    else:  # salt and pepper on grey
        pixels = np.full((size, size, 3), int(rng.integers(60, 200)), dtype=np.int64)
        mask = rng.random((size, size))
        pixels[mask < 0.1], pixels[mask > 0.9] = 0, 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _texture(rng: np.random.Generator, size: int) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    kind = rng.integers(0, 4)
    if kind == 0:  # stripes at an angle
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, size / 4)
        field = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    elif kind == 1:  # checkerboard
        cell = int(rng.integers(2, max(3, size // 6)))
        field = ((x // cell + y // cell) % 2) * 2 - 1
    elif kind == 2:  # smooth random field (clouds, stains)
        small = rng.normal(size=(int(rng.integers(3, 9)),) * 2)
        field = np.asarray(Image.fromarray(small.astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC))
        field = field / max(np.abs(field).max(), 1e-9)
    else:  # dots on a grid
        cell = int(rng.integers(4, max(5, size // 5)))
        field = np.where(np.hypot(x % cell - cell / 2, y % cell - cell / 2) < cell / 4, 1.0, -1.0)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    mix = (field[..., None] + 1) / 2
    return Image.fromarray((a * mix + b * (1 - mix)).astype(np.uint8))


def _collage(rng: np.random.Generator, size: int) -> Image.Image:
    """Rectangles of the other kinds pasted together, with a few scribbled lines: busy but about nothing."""
    canvas = _texture(rng, size)
    for _ in range(int(rng.integers(3, 8))):
        w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
        patch = [_blank, _noise, _texture][int(rng.integers(0, 3))](rng, max(w, h)).crop((0, 0, w, h))
        canvas.paste(patch, (int(rng.integers(0, size - w)), int(rng.integers(0, size - h))))
    draw = ImageDraw.Draw(canvas)
    pick = random.Random(int(rng.integers(0, 2**31)))
    for _ in range(pick.randint(2, 6)):
        points = [(pick.randrange(size), pick.randrange(size)) for _ in range(pick.randint(2, 5))]
        draw.line(points, fill=tuple(pick.randrange(256) for _ in range(3)), width=pick.randint(1, 4))
    return canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1))))


_MAKERS = {"blank": _blank, "noise": _noise, "texture": _texture, "collage": _collage}


def open_world_images(n: int, seed: int = 0, size: int = 128, kinds: tuple[str, ...] = KINDS
                      ) -> Iterator[tuple[str, Image.Image]]:
    """``n`` generated images outside any label set's world, cycling through ``kinds``: (kind, image)."""
    unknown = [kind for kind in kinds if kind not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; choose from {', '.join(KINDS)}")
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        yield kind, _MAKERS[kind](rng, size)
