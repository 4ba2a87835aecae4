"""Turning labels into prompts, and prompts into one text embedding per label.

A single template ("a photo of a {}.") fills each label in once; a template *ensemble* (the CLIP
paper's 80 ImageNet templates) averages each label's normalised embeddings over all templates, as
that paper's prompt-engineering notebook does; ``None`` uses each label verbatim.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, UsageError, printable
from ..inputs.wordlists import read_data_lines, read_text_file
from ..models import Encoder, l2_normalize

DEFAULT_TEMPLATE = "a photo of a {}."

#: Template sets shipped with cliplens, by name.
TEMPLATE_SETS = {"imagenet": "imagenet-80.txt", "imagenet-80": "imagenet-80.txt"}
# The 7-template subset the CLIP notebook found as good as all 80 on ImageNet.
_IMAGENET_7 = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
               "a {} in a video game.", "art of the {}.", "a photo of the small {}.")
VERBATIM = "none"


class LabelWarning(UserWarning):
    """A label was dropped (empty or repeated) or cannot be scored the usual way."""


def template_set_names() -> list[str]:
    """The names of the template sets shipped with cliplens (and ``none``, labels verbatim)."""
    return [*TEMPLATE_SETS, "imagenet-7", VERBATIM]


def _check_template(template: str, parameter: str) -> str:
    if "{}" not in template:
        raise UsageError(f"template {template!r} needs a {{}} where the label goes", parameter=parameter)
    return template


def _read_template_file(path: Path) -> list[str]:
    found = []
    for number, line in enumerate(read_text_file(path, "templates").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{}" not in line:
            raise DataError(f"{path}:{number}: template {line!r} needs a {{}} where the label goes")
        found.append(line)
    if not found:
        raise DataError(f"{path}: no templates in the file")
    return found


def _one_set(spec: str) -> list[str] | None:
    """One template set named by ``spec``: a shipped set, ``none``, a file of templates, or one template."""
    if spec == VERBATIM:
        return None
    if spec == "imagenet-7":
        return list(_IMAGENET_7)
    if spec in TEMPLATE_SETS:
        return read_data_lines(TEMPLATE_SETS[spec])
    if Path(spec).is_file():
        return _read_template_file(Path(spec))
    if "{}" in spec:
        return [spec]
    raise UsageError(f"unknown template set {spec!r}: use one of {', '.join(template_set_names())}, a file with "
                     "one template per line, or a template with {} where the label goes", parameter="templates")


def resolve_templates(templates: str | Sequence[str] | None = None,
                      template: str | None = DEFAULT_TEMPLATE) -> list[str] | None:
    """The prompt templates to use: ``templates`` (a set's name, a file of templates, a template with ``{}``, or
    a list of templates), else the single ``template``.

    ``None`` as the result means labels are used verbatim (``templates="none"`` or ``template=None``).
    """
    if templates is None:
        if template is None or template == VERBATIM:
            return None
        return [_check_template(template, "template")]
    if isinstance(templates, str):
        return _one_set(templates.strip())
    found = [_check_template(t, "templates") for t in templates]
    if not found:
        raise UsageError("give at least one template", parameter="templates")
    return found


@dataclass(frozen=True)
class TemplateSet:
    """A named prompt set; ``templates`` None means labels are used verbatim."""

    name: str
    templates: list[str] | None


def parse_template_sets(specs: str | Sequence[str] | None = None, *, template: str | None = DEFAULT_TEMPLATE,
                        default: Sequence[str] = ()) -> list[TemplateSet]:
    """Template sets from ``specs``: comma-separated or listed, each a set's name, ``default`` (the single
    ``template``), a template with ``{}``, ``none`` (verbatim) or a file of templates. Without ``specs``:
    the sets named in ``default``, else the single ``template``."""
    if specs is None:
        items = list(default) or ["default"]
    else:
        items = [part for spec in ([specs] if isinstance(specs, str) else specs) for part in str(spec).split(",")]
    sets: list[TemplateSet] = []
    for item in items:
        item = item.strip()
        if not item or any(s.name == item for s in sets):
            continue
        if item == "default":
            found = resolve_templates(None, template)
            sets.append(TemplateSet(template if found is not None else VERBATIM, found))
        else:
            sets.append(TemplateSet(item, _one_set(item)))
    if not sets:
        raise UsageError("give at least one template set (e.g. default,imagenet-7,none)", parameter="templates")
    return sets


def clean_labels(labels: Sequence[str], parameter: str = "labels") -> list[str]:
    """Labels stripped, with empty and repeated ones dropped (each with a :class:`LabelWarning`); bytes that are
    not UTF-8 (a label typed in another encoding) escaped, as labels are prompted, printed and written as text."""
    kept: list[str] = []
    notes: list[str] = []
    empty = 0
    for label in labels:
        text = printable(str(label)).strip()
        if not text:
            empty += 1
        elif text in kept:
            notes.append(f"{parameter}: dropped repeated label {text!r}")
        else:
            kept.append(text)
    if not kept:
        raise UsageError("no labels to score; give at least one (two or more to compare)", parameter=parameter)
    if empty:
        notes.append(f"{parameter}: dropped {empty} empty label{'s' if empty > 1 else ''}")
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
