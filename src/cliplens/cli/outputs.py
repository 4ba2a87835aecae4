"""Writing results of many images as CSV or JSONL, one row per image as it is scored.

Rows are flushed as they are written: on stdout an interrupted run keeps every row it printed; a file is
written under a temporary name (:func:`cliplens.atomic_write`) and appears, whole, when the run ends.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Sequence

from cliplens import Classification, ImageLoadError, UsageError

FORMATS = ("csv", "jsonl")


def format_for(path: str | Path) -> str:
    """The output format a file name asks for (``.csv``, ``.jsonl``/``.ndjson``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise UsageError("use a .csv or .jsonl file name", value=str(path), parameter="output")


class ResultWriter:
    """Writes one row per image: the result, or the reason the image could not be read."""

    def __init__(self, stream: IO[str], fmt: str, labels: Sequence[str], with_sets: bool = False):
        if fmt not in FORMATS:
            raise UsageError("use csv or jsonl", value=str(fmt), parameter="fmt")
        self.stream = stream
        self.fmt = fmt
        self.labels = list(labels)
        self.with_sets = with_sets
        self._csv = None
        if fmt == "csv":
            fields = ["image", "prediction", "probability", "similarity", "none_of_these", "looks_like"]
            fields += ["prediction_set"] if with_sets else []
            fields += [f"p:{label}" for label in self.labels] + ["error"]
            self._csv = csv.DictWriter(stream, fieldnames=fields)
            self._csv.writeheader()

    def write(self, item: Classification | ImageLoadError) -> None:
        if self.fmt == "jsonl":
            data = ({"image": item.source, "error": item.reason} if isinstance(item, ImageLoadError)
                    else item.to_dict())
            self.stream.write(json.dumps(data) + "\n")
        elif isinstance(item, ImageLoadError):
            self._csv.writerow({"image": item.source, "error": item.reason})
        else:
            row = {"image": item.image, "prediction": item.top.label, "probability": f"{item.top.probability:.6f}",
                   "similarity": f"{item.top.similarity:.6f}", "none_of_these": f"{item.none_of_these:.6f}",
                   "looks_like": item.looks_like or ""}
            if self.with_sets:
                row["prediction_set"] = "|".join(item.prediction_set or [])
            row.update({f"p:{s.label}": f"{s.probability:.6f}" for s in item.labels})
            self._csv.writerow(row)
        self.stream.flush()
