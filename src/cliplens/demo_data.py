"""Synthetic image–caption pairs: coloured shapes on plain backgrounds, with natural captions.

This is the domain of the bundled ``demo`` model. Every image holds 1–3 shapes of one kind and
colour; the caption says how many, how big, what colour, what shape and on what background.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 205, 40),
    "purple": (135, 55, 180),
    "orange": (245, 135, 25),
}
BACKGROUNDS = {"white": (250, 250, 250), "black": (18, 18, 18), "gray": (128, 128, 128)}
SIZES = {"small": (5.0, 7.0), "large": (9.5, 12.0)}  # radius range in pixels at 64 px
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
PREFIXES = ("", "a photo of ", "an image of ", "a picture of ", "a drawing of ")

#: The zero-shot label set of the demo domain: every colour × shape pair ("red circle").
DEMO_LABELS = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)


@dataclass(frozen=True)
class ShapeScene:
    """What one synthetic image shows."""

    shape: str
    colour: str
    count: int
    size: str
    background: str

    @property
    def label(self) -> str:
        """The zero-shot class of the scene, e.g. ``"red circle"``."""
        return f"{self.colour} {self.shape}"

    def caption(self, *, with_count: bool = True, with_size: bool = True, with_background: bool = True) -> str:
        """A natural caption; leaving attributes out gives the shorter forms ("red circles")."""
        words = []
        if with_size:
            words.append(self.size)
        words.append(self.colour)
        words.append(self.shape if self.count == 1 else PLURALS[self.shape])
        if self.count == 1:
            words.insert(0, _article(words[0]))
        elif with_count:
            words.insert(0, COUNT_WORDS[self.count])
        text = " ".join(words)
        if with_background:
            text += f" on a {self.background} background"
        return text

    @property
    def full_caption(self) -> str:
        """The canonical caption with every attribute, used for retrieval evaluation."""
        return self.caption()


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def random_scene(rng: random.Random) -> ShapeScene:
    """Draw a scene uniformly over shapes, colours, counts, sizes and backgrounds."""
    return ShapeScene(
        shape=rng.choice(SHAPES),
        colour=rng.choice(list(COLOURS)),
        count=rng.choice(list(COUNT_WORDS)),
        size=rng.choice(list(SIZES)),
        background=rng.choice(list(BACKGROUNDS)),
    )


def training_caption(scene: ShapeScene, rng: random.Random) -> str:
    """A caption in one of many forms, so that short zero-shot prompts are in distribution."""
    if rng.random() < 0.3:
        text = scene.full_caption
    else:
        text = scene.caption(
            with_count=rng.random() < 0.6, with_size=rng.random() < 0.5, with_background=rng.random() < 0.5
        )
    text = rng.choice(PREFIXES) + text
    if rng.random() < 0.5:
        text += "."
    return text


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int = 14) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _polygon(cx: float, cy: float, r: float, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(cx + r * x, cy + r * y) for x, y in points]


def _star_points() -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        radius = 1.0 if i % 2 == 0 else 0.42
        angle = -math.pi / 2 + i * math.pi / 5
        pts.append((radius * math.cos(angle), radius * math.sin(angle)))
    return pts


_TRIANGLE = [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
_STAR = _star_points()
_CROSS = [(-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33), (0.33, 1),
          (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, _TRIANGLE), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r * 1.1, _STAR), fill=fill)
    elif shape == "cross":
        draw.polygon(_polygon(cx, cy, r, _CROSS), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _place(rng: random.Random, count: int, radius_range: tuple[float, float], size: float) -> list[tuple[float, float, float]]:
    """Non-overlapping centres and radii inside the canvas (rejection sampling)."""
    for _ in range(200):
        placed: list[tuple[float, float, float]] = []
        for _ in range(count):
            for _ in range(50):
                r = rng.uniform(*radius_range) * size / 64
                margin = r + size / 64
                cx, cy = rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)
                if all(math.hypot(cx - x, cy - y) > r + pr + 2 * size / 64 for x, y, pr in placed):
                    placed.append((cx, cy, r))
                    break
        if len(placed) == count:
            return placed
    raise RuntimeError("could not place shapes")  # unreachable with the sizes above


def render_scene(scene: ShapeScene, rng: random.Random, size: int = 64) -> Image.Image:
    """Render a scene as an RGB image of ``size`` pixels, drawn at 2x and downsampled for smooth edges."""
    big = size * 2
    image = Image.new("RGB", (big, big), _jitter(BACKGROUNDS[scene.background], rng, 6))
    draw = ImageDraw.Draw(image)
    fill = _jitter(COLOURS[scene.colour], rng)
    for cx, cy, r in _place(rng, scene.count, SIZES[scene.size], big):
        _draw_shape(draw, scene.shape, cx, cy, r, fill)
    return image.resize((size, size), Image.Resampling.BOX)


@dataclass(frozen=True)
class DemoSample:
    """One generated pair: the image, the training caption and the scene it came from."""

    image: Image.Image
    caption: str
    scene: ShapeScene


def generate(n: int, seed: int = 0, size: int = 64) -> Iterator[DemoSample]:
    """Yield ``n`` samples; the same seed always gives the same samples."""
    rng = random.Random(seed)
    for _ in range(n):
        scene = random_scene(rng)
        image = render_scene(scene, rng, size)
        yield DemoSample(image=image, caption=training_caption(scene, rng), scene=scene)


PAIRS_FIELDS = ("path", "caption", "full_caption", "label", "shape", "colour", "count", "size", "background")


def write_demo_data(
    out: str | Path, n: int, seed: int = 0, size: int = 64, on_progress: Callable[[int], None] | None = None
) -> Path:
    """Write ``n`` PNG images under ``out/images`` and a ``pairs.csv`` beside them; return the CSV path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    pairs = out / "pairs.csv"
    tmp = pairs.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PAIRS_FIELDS)
        writer.writeheader()
        for i, sample in enumerate(generate(n, seed, size)):
            rel = Path("images") / f"{i // 10000:03d}" / f"{i:07d}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sample.image.save(out / rel)
            row = {"path": rel.as_posix(), "caption": sample.caption, "full_caption": sample.scene.full_caption,
                   "label": sample.scene.label, **asdict(sample.scene)}
            writer.writerow(row)
            if on_progress is not None:
                on_progress(i + 1)
    tmp.replace(pairs)
    return pairs
