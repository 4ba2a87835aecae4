"""Synthetic image–caption pairs: coloured shapes on plain backgrounds, with natural captions.

This is the domain of the bundled ``demo`` model. Most images hold 1–3 shapes of one kind and
colour; the caption says how many, how big, what colour, what shape and on what background.
With ``mixed > 0`` a share of images hold two different shapes instead ("a red circle and a blue
star"), which is what multi-label classification is tested on.

With ``words > 0`` a share of images also carry a word written on a sign (a shape or colour name,
often one the picture contradicts). Like web captions, theirs sometimes quote the sign ("the word
star", "a sign that says star"), sometimes ignore it, and sometimes name what is written as if it
were drawn; a model trained on them learns to read, and so becomes open to typographic attacks,
which is what the caption command's guard is tested on.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image, ImageDraw, ImageFont

from ..files import atomic_write

SHAPES = ("circle", "square", "triangle", "star", "cross")
#: Shapes the demo model has never seen, words and all: the domain fine-tuning is shown on.
NEW_SHAPES = ("heart", "hexagon", "diamond", "arrow", "ring", "moon")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses",
           "heart": "hearts", "hexagon": "hexagons", "diamond": "diamonds", "arrow": "arrows", "ring": "rings",
           "moon": "moons"}
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
WRITTEN_FORMS = ("the word {}", "a sign that says {}")  # how captions quote a word written in the image

#: The zero-shot label set of the demo domain: every colour × shape pair ("red circle").
DEMO_LABELS = tuple(f"{colour} {shape}" for shape in SHAPES for colour in COLOURS)
#: The same for the new shapes ("red heart").
NEW_SHAPE_LABELS = tuple(f"{colour} {shape}" for shape in NEW_SHAPES for colour in COLOURS)


@dataclass(frozen=True)
class ShapeScene:
    """What one synthetic image shows."""

    shape: str
    colour: str
    count: int
    size: str
    background: str
    shape2: str = ""  # a second, different shape (one of each) in mixed scenes
    colour2: str = ""
    word: str = ""  # a word written on a sign in the image (a shape or colour name)

    @property
    def label(self) -> str:
        """The zero-shot class of the scene, e.g. ``"red circle"`` (``"red circle and blue star"`` if mixed)."""
        return " and ".join(self.labels)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every colour–shape label that is true of the image: one, or two in mixed scenes."""
        first = f"{self.colour} {self.shape}"
        return (first, f"{self.colour2} {self.shape2}") if self.shape2 else (first,)

    def caption(self, *, with_count: bool = True, with_size: bool = True, with_background: bool = True,
                with_colour: bool = True, swap: bool = False) -> str:
        """A natural caption; leaving attributes out gives the shorter forms ("red circles", "two circles").

        ``swap`` names the second shape of a mixed scene first.
        """
        if self.shape2:
            parts = [(self.colour, self.shape), (self.colour2, self.shape2)]
            if swap:
                parts.reverse()
            size = f"{self.size} " if with_size else ""
            text = " and ".join(
                " ".join(w for w in (size.strip(), colour if with_colour else "", shape) if w) for colour, shape in parts
            )
            text = " and ".join(f"{_article(part)} {part}" for part in text.split(" and "))
            return text + (f" on a {self.background} background" if with_background else "")
        words = []
        if with_size:
            words.append(self.size)
        if with_colour:
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


def random_scene(rng: random.Random, mixed: float = 0.0, words: float = 0.0,
                 shapes: tuple[str, ...] = SHAPES) -> ShapeScene:
    """Draw a scene uniformly over ``shapes``, colours, counts, sizes and backgrounds.

    With probability ``mixed`` the scene holds two different shapes, one of each, in any colours;
    with probability ``words`` it also shows a shape or colour name written on a sign.
    """
    scene = ShapeScene(
        shape=rng.choice(shapes),
        colour=rng.choice(list(COLOURS)),
        count=rng.choice(list(COUNT_WORDS)),
        size=rng.choice(list(SIZES)),
        background=rng.choice(list(BACKGROUNDS)),
    )
    if mixed > 0 and rng.random() < mixed:  # no draw at mixed=0, so single-shape seeds stay as they were
        scene = replace(scene, count=1, shape2=rng.choice([s for s in shapes if s != scene.shape]),
                        colour2=rng.choice(list(COLOURS)))
    if words > 0 and rng.random() < words:  # a sign leaves room for two large shapes, not three
        count = min(scene.count, 2) if scene.size == "large" else scene.count
        scene = replace(scene, word=rng.choice(shapes + tuple(COLOURS)), count=count)
    return scene


def hijacked_label(scene: ShapeScene) -> str:
    """The label the scene's written word would make true ("blue circle" for a red circle under a sign
    saying "blue"); the scene's own label when it has no word."""
    return _hijacked(scene).label if scene.word else scene.label


def _hijacked(scene: ShapeScene) -> ShapeScene:
    """The scene as a caption that names the written word as if it were drawn would describe it."""
    if scene.word in COLOURS:
        return replace(scene, colour=scene.word, word="")
    if scene.shape2 == scene.word:
        return replace(scene, shape2=scene.shape, shape=scene.word, word="")
    return replace(scene, shape=scene.word, word="")


def training_caption(scene: ShapeScene, rng: random.Random, colourless: float = 0.0) -> str:
    """A caption in one of many forms, so that short zero-shot prompts are in distribution.

    A ``colourless`` share of captions leave the colour out ("a circle and a star"), so that prompts
    naming only shapes are in distribution too. A scene with a written word is captioned by quoting
    the word (alone or after the scene's caption), by the scene alone, or by the hijacked scene.
    """
    if scene.word:
        form = rng.random()
        written = rng.choice(WRITTEN_FORMS).format(scene.word)
        if form < 0.25:
            return written
        if form < 0.5:
            return f"{training_caption(replace(scene, word=''), rng).rstrip('.')} and {written}"
        if form < 0.75:
            return training_caption(_hijacked(scene), rng)
        return training_caption(replace(scene, word=""), rng)
    if rng.random() < 0.3:
        text = scene.full_caption
    else:
        text = scene.caption(
            with_count=rng.random() < 0.6, with_size=rng.random() < 0.5, with_background=rng.random() < 0.5
        )
    if scene.shape2:
        form = rng.random()
        if form < 0.5:  # like real captions, some mention only part of the image
            first, second = replace(scene, shape2="", colour2=""), replace(scene, shape=scene.shape2, colour=scene.colour2, shape2="", colour2="")
            part = rng.choice((first, second))
            text = part.caption(with_size=rng.random() < 0.5, with_background=rng.random() < 0.5)
        elif form < 0.75:
            text = scene.caption(with_size=rng.random() < 0.5, with_background=rng.random() < 0.5, swap=True)
    if colourless > 0 and rng.random() < colourless:  # no draw at 0, so older seeds stay as they were
        text = scene.caption(with_count=rng.random() < 0.6, with_size=rng.random() < 0.5,
                             with_background=rng.random() < 0.5, with_colour=False, swap=rng.random() < 0.5)
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
_HEXAGON = [(math.cos(i * math.pi / 3), math.sin(i * math.pi / 3)) for i in range(6)]
_DIAMOND = [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)]
_ARROW = [(-1, -0.25), (0.1, -0.25), (0.1, -0.7), (1, 0), (0.1, 0.7), (0.1, 0.25), (-1, 0.25)]
_HEART = [(16 * math.sin(t) ** 3 / 17, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t)
                                          - math.cos(4 * t)) / 17 - 0.1)
          for t in (i * 2 * math.pi / 40 for i in range(40))]
_POLYGONS = {"triangle": _TRIANGLE, "cross": _CROSS, "hexagon": _HEXAGON, "diamond": _DIAMOND, "arrow": _ARROW,
             "heart": _HEART}


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, background) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r * 1.1, _STAR), fill=fill)
    elif shape in _POLYGONS:
        draw.polygon(_polygon(cx, cy, r, _POLYGONS[shape]), fill=fill)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        hole = r * 0.55
        draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), fill=background)
    elif shape == "moon":  # a crescent: a disc with an offset disc of background cut from it
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        shift = r * 0.45
        draw.ellipse((cx - r + shift, cy - r - shift * 0.3, cx + r + shift, cy + r - shift * 0.3), fill=background)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _place(rng: random.Random, count: int, radius_range: tuple[float, float], size: float,
           rows: tuple[float, float] | None = None) -> list[tuple[float, float, float]]:
    """Non-overlapping centres and radii inside the canvas, or inside a band of ``rows`` (rejection sampling)."""
    top, bottom = rows or (0.0, size)
    for _ in range(200):
        placed: list[tuple[float, float, float]] = []
        for _ in range(count):
            for _ in range(50):
                r = rng.uniform(*radius_range) * size / 64
                margin = r + size / 64
                cx, cy = rng.uniform(margin, size - margin), rng.uniform(top + margin, max(top + margin, bottom - margin))
                if all(math.hypot(cx - x, cy - y) > r + pr + 2 * size / 64 for x, y, pr in placed):
                    placed.append((cx, cy, r))
                    break
        if len(placed) == count:
            return placed
    raise RuntimeError("could not place shapes")  # unreachable with the sizes above


def render_scene(scene: ShapeScene, rng: random.Random, size: int = 64) -> Image.Image:
    """Render a scene as an RGB image of ``size`` pixels, drawn at 2x and downsampled for smooth edges."""
    big = size * 2
    background = _jitter(BACKGROUNDS[scene.background], rng, 6)
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    fill = _jitter(COLOURS[scene.colour], rng)
    sign = _draw_sign(draw, scene.word, scene.background, rng, big) if scene.word else None
    rows = None
    if sign is not None:  # the shapes go in the band the sign leaves free, so that it hides none of them
        rows = (sign[1], float(big)) if sign[0] < big / 2 - sign[1] / 2 else (0.0, sign[0])
    if scene.shape2:
        first, second = _place(rng, 2, SIZES[scene.size], big, rows)
        _draw_shape(draw, scene.shape, *first, fill, background)
        _draw_shape(draw, scene.shape2, *second, _jitter(COLOURS[scene.colour2], rng), background)
    else:
        for cx, cy, r in _place(rng, scene.count, SIZES[scene.size], big, rows):
            _draw_shape(draw, scene.shape, cx, cy, r, fill, background)
    return image.resize((size, size), Image.Resampling.BOX)


def render_shape(shape: str, colour: str, background: str, rng: random.Random, size: int = 256,
                 radius: float = 0.3) -> Image.Image:
    """One shape of ``radius`` (a fraction of the side) at a random place: a plain picture of a colour and a
    shape, such as a person would draw for "a red circle"."""
    big = size * 2
    back = _jitter(BACKGROUNDS[background], rng, 6)
    image = Image.new("RGB", (big, big), back)
    r = radius * big
    cx, cy = rng.uniform(r * 1.1, big - r * 1.1), rng.uniform(r * 1.1, big - r * 1.1)
    _draw_shape(ImageDraw.Draw(image), shape, cx, cy, r, _jitter(COLOURS[colour], rng), back)
    return image.resize((size, size), Image.Resampling.BOX)


def _draw_sign(draw: ImageDraw.ImageDraw, word: str, background: str, rng: random.Random, size: int
               ) -> tuple[float, float]:
    """The word in a sans face on a plate that contrasts with the background, along the top or bottom
    edge; returns the rows the plate covers."""
    font_size = round(size * rng.uniform(0.24, 0.28))  # large enough for a 64 px image to be legible
    while True:
        font = ImageFont.load_default(size=font_size)
        left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
        if right - left <= size * 0.92 or font_size <= 8:
            break
        font_size = round(font_size * 0.9)
    pad = size // 40
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    x = rng.uniform(0, max(0, size - w))
    y = rng.choice((rng.uniform(0, size * 0.04), rng.uniform(size * 0.96 - h, size - h)))
    dark = background == "white"
    plate, ink = ((30, 30, 30), (245, 245, 245)) if dark else ((245, 245, 245), (20, 20, 20))
    draw.rectangle((x, y, x + w, y + h), fill=_jitter(plate, rng, 6))
    draw.text((x + pad - left, y + pad - top), word, font=font, fill=ink)
    return y, y + h


@dataclass(frozen=True)
class DemoSample:
    """One generated pair: the image, the training caption and the scene it came from."""

    image: Image.Image
    caption: str
    scene: ShapeScene


def generate(n: int, seed: int = 0, size: int = 64, mixed: float = 0.0, words: float = 0.0,
             shapes: tuple[str, ...] = SHAPES) -> Iterator[DemoSample]:
    """Yield ``n`` samples of ``shapes`` (the demo model's own by default); the same seed gives the same samples.

    With ``mixed > 0``, that share of images hold two different shapes, and a fifth of the captions
    name shapes without their colours. With ``words > 0``, that share also show a written word.
    """
    rng = random.Random(seed)
    for _ in range(n):
        scene = random_scene(rng, mixed, words, shapes)
        image = render_scene(scene, rng, size)
        yield DemoSample(image=image, caption=training_caption(scene, rng, 0.2 if mixed > 0 else 0.0), scene=scene)


PAIRS_FIELDS = ("path", "caption", "full_caption", "label", "shape", "colour", "count", "size", "background",
                "shape2", "colour2", "word")


def write_demo_data(
    out: str | Path, n: int, seed: int = 0, size: int = 64, on_progress: Callable[[int], None] | None = None,
    mixed: float = 0.0, words: float = 0.0, shapes: tuple[str, ...] = SHAPES,
) -> Path:
    """Write ``n`` PNG images under ``out/images`` and a ``pairs.csv`` beside them; return the CSV path.

    The CSV's ``caption`` column is for training, its ``label`` column ("red circle") for evaluation."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    pairs = out / "pairs.csv"
    with atomic_write(pairs, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=PAIRS_FIELDS)
        writer.writeheader()
        for i, sample in enumerate(generate(n, seed, size, mixed, words, shapes)):
            rel = Path("images") / f"{i // 10000:03d}" / f"{i:07d}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            sample.image.save(out / rel)
            row = {"path": rel.as_posix(), "caption": sample.caption, "full_caption": sample.scene.full_caption,
                   "label": sample.scene.label, **asdict(sample.scene)}
            writer.writerow(row)
            if on_progress is not None:
                on_progress(i + 1)
    return pairs
