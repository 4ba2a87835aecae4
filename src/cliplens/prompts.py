"""Turning labels into prompts, and prompts into one text embedding per label.

A single template ("a photo of a {}.") fills each label in once; a template *ensemble* (the CLIP
paper's 80 ImageNet templates) averages each label's normalised embeddings over all templates, as
that paper's prompt-engineering notebook does; ``None`` uses each label verbatim.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import DataError, UsageError
from .models import Encoder
from .models.base import l2_normalize

DEFAULT_TEMPLATE = "a photo of a {}."

#: Template sets shipped with cliplens, by name (``--templates NAME``).
TEMPLATE_SETS = {"imagenet": "imagenet-80.txt", "imagenet-80": "imagenet-80.txt"}
# The 7-template subset the CLIP notebook found as good as all 80 on ImageNet.
_IMAGENET_7 = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
               "a {} in a video game.", "art of the {}.", "a photo of the small {}.")
VERBATIM = "none"


class LabelWarning(UserWarning):
    """A label was dropped (empty or repeated) or cannot be scored the usual way."""


def read_data_lines(name: str) -> list[str]:
    """Non-comment lines of a text file shipped in ``cliplens/data``."""
    text = resources.files("cliplens").joinpath("data", name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _check_template(template: str, where: str) -> str:
    if "{}" not in template:
        raise UsageError(f"{where}: template {template!r} needs a {{}} where the label goes")
    return template


def resolve_templates(templates: str | Sequence[str] | None = None,
                      template: str | None = DEFAULT_TEMPLATE) -> list[str] | None:
    """The prompt templates to use: a named set, a file of templates, a list, or the single ``template``.

    ``None`` as the result means labels are used verbatim (``templates="none"`` or ``template=None``).
    """
    if templates is None:
        if template is None or template == VERBATIM:
            return None
        return [_check_template(template, "--template")]
    if isinstance(templates, str):
        if templates == VERBATIM:
            return None
        if templates == "imagenet-7":
            return list(_IMAGENET_7)
        if templates in TEMPLATE_SETS:
            return read_data_lines(TEMPLATE_SETS[templates])
        path = Path(templates)
        if not path.is_file():
            names = ", ".join([*TEMPLATE_SETS, "imagenet-7", VERBATIM])
            raise UsageError(f"unknown template set {templates!r}: use one of {names} or a file with one template per line")
        lines = path.read_text(encoding="utf-8").splitlines()
        found = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "{}" not in line:
                raise DataError(f"{path}:{number}: template {line!r} needs a {{}} where the label goes")
            found.append(line)
        if not found:
            raise DataError(f"{path}: no templates in the file")
        return found
    found = [_check_template(t, "templates") for t in templates]
    if not found:
        raise UsageError("give at least one template")
    return found


def clean_labels(labels: Sequence[str], where: str = "labels") -> list[str]:
    """Labels stripped, with empty and repeated ones dropped (each with a :class:`LabelWarning`)."""
    kept: list[str] = []
    notes: list[str] = []
    empty = 0
    for label in labels:
        text = str(label).strip()
        if not text:
            empty += 1
        elif text in kept:
            notes.append(f"{where}: dropped repeated label {text!r}")
        else:
            kept.append(text)
    if not kept:
        raise UsageError(f"{where}: no labels to score; give at least one (two or more to compare)")
    if empty:
        notes.append(f"{where}: dropped {empty} empty label{'s' if empty > 1 else ''}")
    for note in notes:
        warnings.warn(note, LabelWarning, stacklevel=3)
    return kept


def warn_unreadable(encoder: Encoder, labels: Sequence[str]) -> None:
    """Warn about labels with words a word-level model does not know (it reads them as <unk>)."""
    unreadable = [label for label, ok in zip(labels, encoder.readable(labels)) if not ok]
    if unreadable:
        shown = ", ".join(repr(label) for label in unreadable[:3]) + (", ..." if len(unreadable) > 3 else "")
        warnings.warn(f"{encoder.name} does not know every word of {len(unreadable)} label(s) ({shown}); "
                      "it reads unknown words as <unk>, so their scores mean little", LabelWarning, stacklevel=3)


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's contents; ``what`` names it in the error when it is missing ("--labels-file")."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_labels_file(path: str | Path) -> list[str]:
    """Labels from a text file, one per line (``#`` comments and blank lines skipped)."""
    text = read_text_file(path, "--labels-file")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def prompts_for(labels: Sequence[str], templates: Sequence[str] | None) -> list[str]:
    """Every prompt, label-major: label 0 in each template, then label 1, ... (verbatim when ``None``)."""
    if templates is None:
        return list(labels)
    return [t.replace("{}", label) for label in labels for t in templates]


def label_embeddings(encoder: Encoder, labels: Sequence[str], templates: Sequence[str] | None) -> np.ndarray:
    """One L2-normalised text embedding per label: the mean of its normalised prompt embeddings."""
    vectors = encoder.encode_texts(prompts_for(labels, templates))
    per_label = 1 if templates is None else len(templates)
    if per_label == 1:
        return vectors
    return l2_normalize(vectors.reshape(len(labels), per_label, -1).mean(axis=1))


@lru_cache(maxsize=4)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names as cleaned for CLIP zero-shot evaluation."""
    return tuple(read_data_lines("imagenet-classes.txt"))
