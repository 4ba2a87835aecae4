"""Labelled image datasets: an ImageFolder tree (one folder per class) or a CSV/JSONL of path,label."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, UsageError, printable
from ..files import display_path
from .images import IMAGE_EXTENSIONS
from .pairs import read_pairs


@dataclass
class LabelledImages:
    """Image paths with one class label each; ``classes`` in first-seen (CSV) or sorted (folder) order."""

    paths: list[Path]
    labels: list[str]
    classes: list[str]


def class_name(folder: str) -> str:
    """A folder name as a label: ``golden_retriever`` → ``golden retriever``; bytes of a name that is not
    UTF-8 are escaped (``caf\\xff``), as a label is prompted, printed and written as text."""
    return printable(folder).replace("_", " ").strip()


def read_labelled_images(source: str | Path, label_column: str = "label") -> LabelledImages:
    """Read a dataset: a folder whose sub-folders are the classes, or a CSV/JSONL with path and label columns."""
    source = Path(source)
    if source.is_dir():
        paths, labels = [], []
        folders = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise DataError(f"{source}: no class folders (expected one sub-folder of images per class)")
        for folder in folders:
            label = class_name(folder.name)
            found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            paths += found
            labels += [label] * len(found)
        classes = list(dict.fromkeys(labels))
    elif source.is_file():
        pairs = read_pairs(source, caption_column=label_column)
        paths = [p.path for p in pairs]
        labels = [p.caption for p in pairs]
        classes = list(dict.fromkeys(labels))
    else:
        raise UsageError("no such dataset (give a folder of class folders or a CSV of path,label)",
                         value=display_path(source), parameter="dataset")
    if len(classes) < 2:
        raise DataError(f"{source}: found {len(classes)} class(es) with images; at least two are needed")
    return LabelledImages(paths, labels, classes)
