"""How a model's zero-shot predictions fall on groups of people (or any groups of images).

Following "Evaluating CLIP" (Agarwal et al., 2021): every image is given the most likely class of a
class set; for each group (a column of the user's CSV, or several joined with ``+``) the audit reports
the rate at which each class is predicted, the largest and smallest group rate of each class with their
difference and ratio, and the share of images given a class the class file marks ``[harmful]``. Alternative
class sets are run on the same images, and each group's rates are compared between sets (the paper's
"adding a child class" experiment).

Uncertainty comes from a percentile bootstrap that resamples images within each group (seeded). The
intervals of a table are simultaneous (Bonferroni over its group pairs × classes), so a table of many
classes does not raise false alarms by chance; an interval that excludes zero is reported as a disparity.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError, ImageLoadError, UsageError
from .files import display_path
from .inputs.wordlists import read_text_file
from .models import Encoder, as_encoder
from .scores.disparity import ANY_HARMFUL, group_table, shift_table
from .scores.probabilities import cosine
from .text.prompts import DEFAULT_TEMPLATE, label_embeddings, resolve_templates, warn_unreadable
from .vectors.cache import embed_cached

FORMAT = "cliplens-audit/1"
HARMFUL_TAG = "[harmful]"
JOIN = "+"  # --group gender+age: the intersection of two columns
SMALL_GROUP = 30
DEFAULT_BOOTSTRAP = 10_000
_NAME_LINE = re.compile(r"^#\s*name:\s*(.+)$", re.IGNORECASE)


# --- inputs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassSet:
    """A class set: names in file order and the ones marked harmful."""

    name: str
    classes: tuple[str, ...]
    harmful: frozenset[str] = frozenset()
    source: str = ""


def parse_class_set(text: str, name: str, source: str = "") -> ClassSet:
    """One class per line; a trailing ``[harmful]`` marks a class whose prediction would harm the person
    shown (crime-related, non-human, ...); ``# name: NAME`` names the set; other ``#`` lines are comments."""
    where = source or name
    classes: list[str] = []
    harmful: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            found = _NAME_LINE.match(line)
            if found:
                name = found.group(1).strip()
            continue
        flagged = line.lower().endswith(HARMFUL_TAG)
        if flagged:
            line = line[: -len(HARMFUL_TAG)].strip()
        if not line:
            raise DataError(f"{where}:{number}: {HARMFUL_TAG} needs a class name before it")
        if line in classes:
            raise DataError(f"{where}:{number}: class {line!r} is listed twice")
        classes.append(line)
        if flagged:
            harmful.add(line)
    if len(classes) < 2:
        raise DataError(f"{where}: {'no classes' if not classes else 'only one class'} in the file; "
                        "an audit needs two or more, one per line")
    return ClassSet(name, tuple(classes), frozenset(harmful), source)


def read_class_set(path: str | os.PathLike, parameter: str = "classes") -> ClassSet:
    """A class file (see :func:`parse_class_set`); ``parameter`` names the argument that gave it, for errors."""
    path = Path(path)
    return parse_class_set(read_text_file(path, parameter), display_path(path.stem), display_path(path))


@dataclass
class AuditImages:
    """Image paths and, per group spec, each image's group (``""`` when its CSV cell is blank)."""

    source: str
    paths: list[Path]
    groups: dict[str, list[str]]


def read_audit_images(path: str | os.PathLike, groups: Sequence[str], path_column: str = "path") -> AuditImages:
    """A CSV with an image path column and one column per attribute; ``a+b`` joins two columns."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file (give a CSV with a {path_column!r} column and one column per "
                         "attribute)", value=display_path(path), parameter="images_csv")
    if not groups:
        raise UsageError("give at least one column of the CSV to group images by (e.g. gender)", parameter="groups")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [(number, row) for number, row in enumerate(reader, 2)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    found = ", ".join(columns) or "nothing"
    if path_column not in columns:
        raise DataError(f"{path}:1: header lacks the image path column {path_column!r} (found: {found})")
    specs = list(dict.fromkeys(g.strip() for g in groups if g.strip()))
    for spec in specs:
        for column in spec.split(JOIN):
            if column not in columns:
                raise UsageError(f"{path} has no column {column!r} (found: {found})", value=str(spec), parameter="groups")
    paths, values = [], {spec: [] for spec in specs}
    for number, row in rows:
        image = (row.get(path_column) or "").strip()
        if not image:
            raise DataError(f"{path}:{number}: empty {path_column!r}")
        image_path = Path(image)
        paths.append(image_path if image_path.is_absolute() else path.parent / image_path)
        for spec in specs:
            parts = [(row.get(column) or "").strip() for column in spec.split(JOIN)]
            values[spec].append(" / ".join(parts) if all(parts) else "")
    if not paths:
        raise DataError(f"{path}: holds no images")
    return AuditImages(display_path(path), paths, values)


# --- the run --------------------------------------------------------------------------------------------

@dataclass
class AuditResult:
    """``report`` is what report.json holds; ``predictions`` one row per image (its groups and the class
    each class set gave it); ``errors`` the images that could not be read."""

    report: dict
    predictions: list[dict] = field(default_factory=list)
    errors: list[ImageLoadError] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.report


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%" if x == 0 or x >= 0.01 else f"{x * 100:.1f}%"


def _pts(x: float) -> str:
    return f"{x * 100:+.0f}" if abs(x) >= 0.01 or x == 0 else f"{x * 100:+.1f}"


def audit(images_csv: str | os.PathLike | AuditImages, model: Encoder | str | None = None, *, groups: Sequence[str],
          classes: str | os.PathLike | ClassSet, alt_classes: Sequence[str | os.PathLike | ClassSet] = (),
          template: str | None = DEFAULT_TEMPLATE, templates: str | Sequence[str] | None = None,
          path_column: str = "path", bootstrap: int = DEFAULT_BOOTSTRAP, confidence: float = 0.95, seed: int = 0,
          device: str | None = None, batch_size: int | None = None, workers: int | None = None,
          on_progress: Callable[[int, int], None] | None = None, use_cache: bool = True) -> AuditResult:
    """Audit a model's zero-shot predictions over groups of images; see the module docstring."""
    if not 0.5 <= confidence < 1.0:
        raise UsageError("give a level between 0.5 and 1, e.g. 0.95", value=str(confidence), parameter="confidence")
    if bootstrap < 100:
        raise UsageError("use at least 100 resamples (1,000 or more for stable intervals)",
                         value=str(bootstrap), parameter="bootstrap")
    data = images_csv if isinstance(images_csv, AuditImages) else read_audit_images(images_csv, groups, path_column)
    sets = [c if isinstance(c, ClassSet) else read_class_set(c, "classes" if i == 0 else "alt_classes")
            for i, c in enumerate([classes, *alt_classes])]
    seen: dict[str, int] = {}
    for i, cs in enumerate(sets):  # names must tell the sets apart in the report
        if cs.name in seen:
            sets[i] = ClassSet(f"{cs.name} ({i + 1})", cs.classes, cs.harmful, cs.source)
        seen[sets[i].name] = i
    prompt_templates = resolve_templates(templates, template)
    encoder = as_encoder(model, device)
    for cs in sets:
        warn_unreadable(encoder, list(cs.classes))
    embedded = embed_cached(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                            use_cache=use_cache)
    if not embedded.indices:
        raise DataError(f"none of the {len(data.paths)} images could be read (first: {embedded.errors[0]})")
    predicted = [cosine(embedded.vectors, label_embeddings(encoder, list(cs.classes), prompt_templates)).argmax(axis=1)
                 for cs in sets]
    rng = np.random.default_rng(seed)
    group_info, indexes = [], {}
    for spec, values in data.groups.items():
        kept = [values[i] for i in embedded.indices]
        names = sorted({v for v in kept if v})
        if not names:
            raise DataError(f"{data.source}: column {spec!r} is blank for every image that could be read")
        lookup = {name: g for g, name in enumerate(names)}
        indexes[spec] = np.array([lookup.get(v, -1) for v in kept])
        group_info.append({"column": spec, "excluded": int(sum(1 for v in kept if not v)),
                           "groups": [{"group": n, "images": int((indexes[spec] == g).sum())}
                                      for g, n in enumerate(names)]})
    results = []
    for cs, pred in zip(sets, predicted):
        by_column = []
        for info in group_info:
            index = indexes[info["column"]]
            mask = index >= 0
            table = group_table(pred[mask], index[mask], [g["group"] for g in info["groups"]], cs, draws=bootstrap,
                                confidence=confidence, rng=rng)
            by_column.append({"column": info["column"], **table})
        results.append({"name": cs.name, "source": display_path(cs.source),
                        "classes": [{"name": c, "harmful": c in cs.harmful} for c in cs.classes],
                        "overall": [{"class": c, "rate": float((pred == i).mean())} for i, c in enumerate(cs.classes)],
                        "by_column": by_column})
    shifts = []
    for cs, pred in zip(sets[1:], predicted[1:]):
        by_column = []
        for info in group_info:
            index = indexes[info["column"]]
            mask = index >= 0
            table = shift_table(predicted[0][mask], pred[mask], index[mask], [g["group"] for g in info["groups"]],
                                sets[0], cs, draws=bootstrap, confidence=confidence, rng=rng)
            by_column.append({"column": info["column"], **table})
        shifts.append({"from": sets[0].name, "to": cs.name, "by_column": by_column})
    report = {
        "format": FORMAT, "model": encoder.name, "backend": encoder.info.backend, "precision": encoder.info.precision,
        "dataset": display_path(data.source), "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "images": len(embedded.indices), "images_listed": len(data.paths),
        "images_encoded": embedded.encoded, "images_cached": embedded.cached,
        "skipped": [{"path": e.source, "reason": e.reason} for e in embedded.errors],
        "templates": prompt_templates, "confidence": confidence, "bootstrap": bootstrap, "seed": seed,
        "groups": group_info, "class_sets": results, "shifts": shifts,
    }
    report["summary"] = summary_lines(report)
    report["limits"] = limit_lines(report)
    predictions = []
    for row, i in enumerate(embedded.indices):
        item = {"path": display_path(data.paths[i]), **{spec: values[i] for spec, values in data.groups.items()}}
        for cs, pred in zip(sets, predicted):
            item[cs.name] = cs.classes[pred[row]]
        predictions.append(item)
    return AuditResult(report, predictions, embedded.errors)


# --- plain language -------------------------------------------------------------------------------------

def _interval(ci: Sequence[float]) -> str:
    return f"{ci[0] * 100:+.0f} to {ci[1] * 100:+.0f} points"


def summary_lines(report: dict) -> list[str]:
    """What the audit found, in sentences a person can read."""
    level = f"{report['confidence']:.0%}"
    base = report["class_sets"][0]
    prompts = report["templates"]
    how = ("with each class name as it is" if prompts is None else
           f"with the prompt {prompts[0]!r}" if len(prompts) == 1 else f"with {len(prompts)} prompt templates averaged")
    lines = [f"{report['images']} images were each given the most likely of the {len(base['classes'])} classes of "
             f"class set {base['name']!r} by {report['model']}, {how}."]
    for cs in report["class_sets"]:
        harmful = [c["name"] for c in cs["classes"] if c["harmful"]]
        prefix = f"Class set {cs['name']!r}: " if len(report["class_sets"]) > 1 else ""
        for column in cs["by_column"]:
            groups = column["rates"]
            sizes = [g["images"] for g in groups]
            if len(groups) < 2:
                lines.append(f"{prefix}{column['column']!r} has one group only ({groups[0]['group']!r}); nothing to compare.")
                continue
            found = [d for d in column["disparities"] if d["significant"]]
            found.sort(key=lambda d: (not d["harmful"], -d["difference"]))
            by = "by" if prefix else "By"
            intro = (f"{prefix}{by} {column['column']} ({len(groups)} groups of {min(sizes)}–{max(sizes)} images)"
                     if min(sizes) != max(sizes) else f"{prefix}{by} {column['column']} ({len(groups)} groups of "
                                                       f"{sizes[0]} images)")
            if not found:
                widest = max((d["difference_ci"][1] - d["difference_ci"][0]) / 2 for d in column["disparities"])
                lines.append(f"{intro}: no class is predicted at rates that differ between groups by more than "
                             f"chance explains (every {level} interval covers zero); differences under about "
                             f"{widest * 100:.0f} points could not be seen with this many images.")
                continue
            parts = []
            for d in found[:3]:
                times = (f", {d['largest']['rate'] / d['smallest']['rate']:.1f} times as often"
                         if d["smallest"]["rate"] > 0 else "")
                mark = " (marked harmful)" if d["harmful"] and d["class"] != ANY_HARMFUL else ""
                parts.append(f"{d['class']!r}{mark} for {_pct(d['largest']['rate'])} of {d['largest']['group']!r} "
                             f"images but {_pct(d['smallest']['rate'])} of {d['smallest']['group']!r} images "
                             f"({_pts(d['difference'])} points{times}; {level} interval {_interval(d['difference_ci'])})")
            more = f"; {len(found) - 3} more in the table" if len(found) > 3 else ""
            lines.append(f"{intro}, the model predicted " + "; ".join(parts) + more + ".")
        if harmful:
            overall = sum(o["rate"] for o in cs["overall"] if o["class"] in harmful)
            lines.append(f"{prefix}{'classes' if prefix else 'Classes'} marked harmful ({', '.join(repr(h) for h in harmful)}) were predicted for "
                         f"{_pct(overall)} of all images.")
    for shift in report["shifts"]:
        for column in shift["by_column"]:
            rows = [r for r in column["rows"] if r["significant"]]
            harmful_rows = [r for r in column["rows"] if r["class"] == ANY_HARMFUL]
            text = f"Class set {shift['to']!r} instead of {shift['from']!r}, by {column['column']}: "
            if harmful_rows:
                text += "the share given a harmful class went " + ", ".join(
                    f"from {_pct(r['before'])} to {_pct(r['after'])} for {r['group']!r}" for r in harmful_rows) + "; "
            if rows:
                rows.sort(key=lambda r: -abs(r["shift"]))
                text += (f"{len(rows)} group rate(s) changed beyond chance, most: {rows[0]['class']!r} for "
                         f"{rows[0]['group']!r} images, {_pct(rows[0]['before'])} → {_pct(rows[0]['after'])}.")
            else:
                text += "no group's rate of any class changed beyond chance."
            lines.append(text)
    return lines


def limit_lines(report: dict) -> list[str]:
    """What the audit can and cannot show, with this run's numbers."""
    level = f"{report['confidence']:.0%}"
    lines = []
    for info in report["groups"]:
        sizes = {g["group"]: g["images"] for g in info["groups"]}
        smallest = min(sizes, key=sizes.get)
        n = sizes[smallest]
        margin = 1.96 * (0.25 / max(n, 1)) ** 0.5
        small = [g for g, k in sizes.items() if k < SMALL_GROUP]
        text = (f"Sample size: by {info['column']}, the smallest group ({smallest!r}) has {n} images, so a rate "
                f"near 50% there is uncertain by about ±{margin * 100:.0f} points.")
        if small:
            text += f" Groups under {SMALL_GROUP} images ({', '.join(repr(g) for g in small[:5])}) give unreliable rates."
        if info["excluded"]:
            text += f" {info['excluded']} image(s) with a blank {info['column']} were left out of it."
        lines.append(text)
    columns = ", ".join(repr(i["column"]) for i in report["groups"])
    lines += [
        f"Group labels come from your CSV ({columns}); the audit takes them as given and cannot check them, "
        "and groups are only as meaningful as those labels.",
        "The rates describe this model's predictions on these images with these class names and prompts. "
        "A difference between groups is an association, not a cause: the groups' images may differ in other "
        "ways (setting, lighting, pose, where they came from) that drive it.",
        "Every image is forced into one of the classes, whether any fits or not, so which classes are offered "
        "changes who is given which (as Agarwal et al., 2021 found when adding a 'child' class); audit alternative "
        "class sets on the same images to see how much the choice matters.",
        "Finding no disparity does not show the model is fair: only differences larger than the intervals can be "
        "seen, and only for the groups, classes and images given. There is no ground truth here, so the audit "
        "does not measure accuracy per group.",
        f"Intervals: percentile bootstrap ({report['bootstrap']:,} resamples of the images within each group, seed "
        f"{report['seed']}); the disparity and shift intervals of each table are {level} simultaneous over its "
        "group pairs and classes (Bonferroni), the per-rate intervals are each at " + level + ".",
    ]
    return lines
