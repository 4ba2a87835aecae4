"""What ``cliplens dream`` costs and reaches, judged twice: by the model that made each image (does it rank
the prompt's label first, and how surely) and by plain pixel statistics that do not use it (does the named
colour dominate and form one object of the named shape, see :mod:`.pixel_judge`)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..models import Encoder
from .pixel_judge import HUES, SHAPES, judge


@dataclass(frozen=True)
class DreamRun:
    """One generation from noise: its prompt and label, time, the model's verdict and the pixels' verdict."""

    label: str
    prompt: str
    seconds: float
    steps: int
    probability: float  # of ``label`` among the labels, for the generated image
    top: str  # the label the model gives the generated image
    start_similarity: float
    similarity: float
    curve_start: float
    curve_end: float
    pixels: dict = field(default_factory=dict)  # the pixel judge's verdict (colour × shape labels only)
    referee_top: str = ""  # a second model's top label for the image ("" without a referee)
    referee_probability: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DreamBench:
    runs: list[DreamRun]
    labels: int
    threshold: float
    size: tuple[int, int] = (0, 0)
    guidance: str = ""
    referee: str = ""  # the second model's name
    contrast: bool = False  # each prompt dreamed against the other labels' prompts

    @property
    def referee_first(self) -> int:
        return sum(run.referee_top == run.label for run in self.runs)

    @property
    def passed(self) -> int:
        return sum(run.probability >= self.threshold and run.top == run.label for run in self.runs)

    @property
    def ranked_first(self) -> int:
        return sum(run.top == run.label for run in self.runs)

    def _judged(self) -> list[dict]:
        return [run.pixels for run in self.runs if run.pixels]

    def to_dict(self) -> dict:
        seconds = [r.seconds for r in self.runs]
        probabilities = [r.probability for r in self.runs]
        judged = self._judged()
        pixels = ({"judged": len(judged),
                   "colour_dominates": int(sum(v["colour_dominates"] for v in judged)),
                   "one_object": int(sum(v["one_object"] for v in judged)),
                   "recognisable": int(sum(v["recognisable"] for v in judged)),
                   "right_shape": int(sum(v["right_shape"] for v in judged))} if judged else None)
        return {"labels": self.labels, "prompts": len(self.runs), "threshold": self.threshold,
                "size": list(self.size), "guidance": self.guidance, "contrast": self.contrast, "passed": self.passed,
                "ranked_first": self.ranked_first, "pixels": pixels, "referee": self.referee or None,
                "referee_ranked_first": self.referee_first if self.referee else None,
                "median_probability": statistics.median(probabilities),
                "min_probability": min(probabilities), "median_seconds": statistics.median(seconds),
                "max_seconds": max(seconds), "runs": [r.to_dict() for r in self.runs]}


def colour_and_shape(label: str) -> tuple[str, str] | None:
    """("red", "circle") for a colour × shape label the pixel judge can read, else None."""
    words = label.split()
    if len(words) == 2 and words[0] in HUES and words[1] in SHAPES:
        return words[0], words[1]
    return None


def bench_dream(encoder: Encoder, labels: Sequence[str], *, prompts: Sequence[str] | None = None,
                template: str | None = None, steps: int | None = None, seed: int = 0, threshold: float = 0.9,
                on_progress: Callable[[int, int], None] | None = None,
                on_image: Callable[[str, Image.Image], None] | None = None, referee: Encoder | None = None,
                contrast: bool = True, **options) -> DreamBench:
    """Dream ``template.format(label)`` (default "a {}" or "an {}") for each of ``prompts`` (labels; default all
    ``labels``) from noise, timing each generation (the model is already loaded), then classify the image
    among ``labels`` and judge its pixels. ``referee``: a second model that classifies each image too (the
    plain model, when a robust one dreams). ``contrast``: each prompt is dreamed against the other labels'
    prompts (``dream(against=...)``), as a classifier's class is synthesised. ``options`` go to
    :func:`cliplens.dream` (``size``, ``guidance``); ``on_image(label, image)`` gets each image."""
    from ..classify import Classifier
    from ..dream import DEFAULT_STEPS, dream

    classifier = Classifier(labels, encoder)
    second = Classifier(labels, referee) if referee is not None else None
    chosen = list(prompts) if prompts else list(labels)

    def prompt_of(label: str) -> str:
        return template.format(label) if template else f"{'an' if label[:1] in 'aeiou' else 'a'} {label}"

    runs = []
    size, guidance = (0, 0), ""
    for i, label in enumerate(chosen):
        prompt = prompt_of(label)
        rivals = [prompt_of(other) for other in labels if other != label] if contrast else []
        started = time.perf_counter()
        result = dream(prompt, encoder, steps=steps or DEFAULT_STEPS, seed=seed, against=rivals, **options)
        seconds = time.perf_counter() - started
        size, guidance = result.size, result.settings["guidance"]
        classification = classifier.classify(result.image)
        probability = next((s.probability for s in classification.labels if s.label == label), float("nan"))
        named = colour_and_shape(label)
        pixels = judge(result.image, *named).to_dict() if named else {}
        refereed = second.classify(result.image) if second is not None else None
        runs.append(DreamRun(label, prompt, seconds, result.steps, probability, classification.top.label,
                             result.start_similarity, result.similarity, result.similarities[0],
                             result.similarities[-1], pixels,
                             refereed.top.label if refereed is not None else "",
                             next(s.probability for s in refereed.labels if s.label == label)
                             if refereed is not None else None))
        if on_image is not None:
            on_image(label, result.image)
        if on_progress is not None:
            on_progress(i + 1, len(chosen))
    return DreamBench(runs, len(labels), threshold, size, guidance, referee.name if referee is not None else "",
                      contrast)


def contact_sheet(images: Sequence[tuple[str, Image.Image]], runs: Sequence[DreamRun], columns: int = 6,
                  tile: int = 160) -> Image.Image:
    """The dreams in a grid, each captioned with its label, the model's top label and the pixels' verdict
    (colour and one object, and the shape it sees)."""
    rows = (len(images) + columns - 1) // columns
    caption = 48
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for n, ((label, image), run) in enumerate(zip(images, runs)):
        x, y = (n % columns) * tile, (n // columns) * (tile + caption)
        sheet.paste(image.convert("RGB").resize((tile - 4, tile - 4), Image.Resampling.LANCZOS), (x + 2, y + 2))
        verdict = run.pixels
        marks = (f"pixels {'ok' if verdict.get('recognisable') else 'no'}, {verdict.get('seen_shape') or 'no shape'}"
                 if verdict else "")
        model_mark = "model: ok" if run.top == run.label else f"model: {run.top}"
        draw.text((x + 4, y + tile), label, fill=(0, 0, 0), font=font)
        draw.text((x + 4, y + tile + 15), marks, fill=(90, 90, 90), font=font)
        draw.text((x + 4, y + tile + 30), model_mark, fill=(90, 90, 90), font=font)
    return sheet
