"""Label banks: named sets of labels with the sentence each one makes in a caption.

A bank file is plain text, one label per line, after a small ``#`` header::

    # name: objects
    # description: Everyday objects, plants and animals that can appear in an image.
    # template: Image with {} in it.
    # prompts: a photo of {}. | a picture of {}.     (optional: what is scored; the template by default)
    # top_k: 3                                         (optional: keep at most this many labels; 1)
    # threshold: 0.5                                   (optional: the least probability of fitting to keep)
    # calibration: -1.2 0.8 40                         (optional: fitted by `cliplens banks calibrate`)
    a dog
    a cat

The ``template`` writes the caption's sentence; ``prompts`` (``|``-separated) are the texts scored
against the image, averaged per label as a prompt ensemble. cliplens ships banks for everyday use
and for the demo model's domain; each model can name its default banks in a ``cliplens_banks.txt``
beside its weights (the demo model does), and other models use :data:`GENERAL_BANKS`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

from ..errors import DataError, UsageError
from ..inputs.wordlists import read_text_file

#: The default banks of models that name none: what a chatbot wants to know about a photo.
GENERAL_BANKS = ("objects", "places", "mediums", "styles", "people", "time_weather", "colours")
DEFAULT_BANKS_FILE = "cliplens_banks.txt"  # beside a model's weights: its default banks, one per line
_HEADER_KEYS = ("name", "description", "template", "prompts", "top_k", "threshold", "calibration")


@dataclass(frozen=True)
class LabelBank:
    """One bank: its labels, the sentence template, the scored prompts, top-k and threshold."""

    name: str
    labels: tuple[str, ...]
    template: str = "This image depicts {}."
    prompts: tuple[str, ...] = ()  # empty: the template is the prompt
    top_k: int = 1
    threshold: float = 0.5
    # P(fits) = sigmoid(a + b · the detector's log-odds + c · the label's similarity margin over the rest of the bank)
    calibration: tuple[float, float, float] = (0.0, 1.0, 0.0)
    description: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self):
        where = self.source or f"bank {self.name!r}"
        for text in (self.template, *self.prompts):
            if "{}" not in text:
                raise DataError(f"{where}: template {text!r} needs a {{}} where the label goes")
        if not self.labels:
            raise DataError(f"{where}: the bank holds no labels")
        if self.top_k < 1:
            raise DataError(f"{where}: top_k must be at least 1 (got {self.top_k})")
        if not 0.0 <= self.threshold <= 1.0:
            raise DataError(f"{where}: threshold is a probability between 0 and 1 (got {self.threshold})")

    @property
    def scored_prompts(self) -> tuple[str, ...]:
        return self.prompts or (self.template,)

    @property
    def content_hash(self) -> str:
        """Changes when the labels or the scored prompts change (not the sentence template or top-k)."""
        text = "\x1f".join(self.scored_prompts) + "\x1e" + "\n".join(self.labels)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_text(self) -> str:
        """The bank as a bank file (what :func:`parse_bank` reads)."""
        header = [f"# name: {self.name}"]
        if self.description:
            header.append(f"# description: {self.description}")
        header.append(f"# template: {self.template}")
        if self.prompts:
            header.append(f"# prompts: {' | '.join(self.prompts)}")
        header += [f"# top_k: {self.top_k}", f"# threshold: {self.threshold:g}"]
        if self.calibration != (0.0, 1.0, 0.0):
            header.append("# calibration: " + " ".join(str(round(v, 6)) for v in self.calibration))
        return "\n".join(header + list(self.labels)) + "\n"

    def sentence(self, labels: Sequence[str]) -> str:
        """The caption's sentence for the kept labels: "Image with a sheep and a dog in it."."""
        if not labels:
            return ""
        joined = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        text = self.template.replace("{}", joined)
        return text[:1].upper() + text[1:]


def parse_bank(text: str, *, name: str | None = None, source: str = "") -> LabelBank:
    """A bank from a file's text; ``name`` overrides the header's (and is needed when it has none)."""
    header: dict[str, str] = {}
    labels: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            key = key.strip().lower()
            if sep and key in _HEADER_KEYS and not labels:
                header[key] = value.strip()
            continue  # other comments are notes
        if stripped not in labels:
            labels.append(stripped)
    where = source or "bank"
    bank_name = name or header.get("name") or (Path(source).stem if source else "")
    if not bank_name:
        raise DataError(f"{where}: the bank has no name (add '# name: ...' or name it as NAME=FILE)")
    try:
        top_k = int(header.get("top_k", 1))
        threshold = float(header.get("threshold", 0.5))
        calibration = tuple(float(v) for v in header.get("calibration", "0 1 0").replace(",", " ").split())
        if len(calibration) != 3:
            raise ValueError(f"calibration needs three numbers, a b c (got {header['calibration']!r})")
    except ValueError as exc:
        raise DataError(f"{where}: bad header value ({exc})") from None
    prompts = tuple(p.strip() for p in header["prompts"].split("|") if p.strip()) if "prompts" in header else ()
    return LabelBank(name=bank_name, labels=tuple(labels), template=header.get("template", LabelBank.template),
                     prompts=prompts, top_k=top_k, threshold=threshold, calibration=calibration,
                     description=header.get("description", ""),
                     source=source)


def read_bank(path: str | Path, name: str | None = None) -> LabelBank:
    """A bank file from disk."""
    return parse_bank(read_text_file(path, "banks"), name=name, source=str(path))


def builtin_bank_names() -> list[str]:
    """The banks shipped with cliplens."""
    folder = resources.files("cliplens").joinpath("data", "banks")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def builtin_bank(name: str) -> LabelBank:
    if name not in builtin_bank_names():
        raise UsageError(f"unknown bank {name!r}: use one of {', '.join(builtin_bank_names())}, "
                         "NAME=FILE, a bank file or a folder of them", parameter="banks")
    text = resources.files("cliplens").joinpath("data", "banks", f"{name}.txt").read_text(encoding="utf-8")
    return parse_bank(text, name=name, source=f"builtin:{name}")


def default_bank_names(model_path: str | Path | None) -> list[str]:
    """The banks a model names in its ``cliplens_banks.txt``, else :data:`GENERAL_BANKS`."""
    if model_path is not None:
        listing = Path(model_path) / DEFAULT_BANKS_FILE
        if listing.is_file():
            names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines()
                     if line.strip() and not line.startswith("#")]
            if names:
                return names
    return list(GENERAL_BANKS)


def resolve_banks(specs: Sequence[str | LabelBank] | None, model_path: str | Path | None = None) -> list[LabelBank]:
    """Banks from specs: a built-in name, ``NAME=FILE``, a bank file, a folder of ``*.txt`` banks, or a
    :class:`LabelBank`; comma-separated lists are split. None or empty: the model's default banks."""
    items: list[str | LabelBank] = []
    for spec in specs or []:
        items.extend([s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else [spec])
    if not items:
        items = list(default_bank_names(model_path))
    banks: list[LabelBank] = []
    for item in items:
        if isinstance(item, LabelBank):
            banks.append(item)
        elif "=" in item:
            name, _, file = item.partition("=")
            banks.append(read_bank(file.strip(), name=name.strip()))
        elif Path(item).is_dir():
            files = sorted(Path(item).glob("*.txt"))
            if not files:
                raise UsageError(f"bank folder {item}: holds no .txt bank files", parameter="banks")
            banks.extend(read_bank(f) for f in files)
        elif Path(item).suffix == ".txt" or Path(item).is_file():
            banks.append(read_bank(item))
        else:
            banks.append(builtin_bank(item))
    seen: dict[str, str] = {}
    for bank in banks:
        if bank.name in seen:
            raise UsageError(f"two banks are named {bank.name!r} ({seen[bank.name]} and {bank.source}); "
                             "rename one with NAME=FILE", parameter="banks")
        seen[bank.name] = bank.source
    return banks
