"""How well a model does on the user's own data: zero-shot and few-shot classification, and retrieval.

A labelled dataset (a folder per class, or a CSV/JSONL of ``path,label``) is embedded once (the vectors
are cached, see :mod:`cliplens.vectors.cache`) and scored with every requested template set. The first set
gets the full treatment: top-1 and top-5, per-class accuracy, the confusion matrix, expected calibration
error and a reliability curve; the others are compared by top-1, top-5 and ECE. ``few_shot`` trains a
logistic-regression probe on K image embeddings per class and tests it on the rest, beside zero-shot on
the same test images, as the CLIP paper compares them. A CSV of ``path,caption`` is a retrieval dataset:
image→text and text→image recall@1/5/10.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError, ImageLoadError, UsageError
from .files import display_path
from .inputs.datasets import read_labelled_images
from .inputs.pairs import read_pairs
from .inputs.wordlists import read_text_file
from .models import Encoder, as_encoder
from .scores.metrics import TOP_K, classification_metrics, ranked, retrieval_metrics
from .scores.probabilities import cosine, label_probabilities
from .text.prompts import DEFAULT_TEMPLATE, VERBATIM, label_embeddings, parse_template_sets, warn_unreadable
from .vectors.cache import embed_cached

FORMAT = "cliplens-eval/1"
#: Compared when no template sets are given: the default prompt, the CLIP notebook's 7 templates, labels verbatim.
DEFAULT_TEMPLATE_SETS = ("default", "imagenet-7", VERBATIM)
PROBE_C_GRID = (0.1, 1.0, 10.0, 100.0)
TASKS = ("auto", "classification", "retrieval")


# --- inputs ---------------------------------------------------------------------------------------------

def read_label_names(path: str | os.PathLike) -> dict[str, str]:
    """A labels file: one class per line, ``LABEL`` or ``LABEL = display name`` (or LABEL<TAB>name); ``#``
    comments. The file's classes, in its order, are the classes scored (extra ones are distractors)."""
    path = Path(path)
    names: dict[str, str] = {}
    for number, raw in enumerate(read_text_file(path, "labels_file").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = "\t" if "\t" in line else "=" if "=" in line else None
        label, name = (part.strip() for part in line.split(sep, 1)) if sep else (line, line)
        if not label or not name:
            raise DataError(f"{path}:{number}: expected LABEL or LABEL = display name, got {raw.strip()!r}")
        if label in names:
            raise DataError(f"{path}:{number}: label {label!r} is listed twice")
        if name in names.values():
            raise DataError(f"{path}:{number}: display name {name!r} is used twice")
        names[label] = name
    if not names:
        raise DataError(f"{path}: no labels in the file")
    return names


@dataclass
class LabelledSet:
    """Images with a class each; ``classes`` are the dataset labels scored, ``names`` what is prompted."""

    source: str
    paths: list[Path]
    labels: list[str]
    classes: list[str]
    names: list[str]
    task = "classification"

    def truth(self) -> np.ndarray:
        """Each image's class index."""
        index = {label: i for i, label in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels])

    def check_shots(self, shots: Sequence[int]) -> None:
        """Raise unless every K leaves each class at least one image to test on (see :func:`check_shots`)."""
        check_shots(shots, self.truth(), self.names)


@dataclass
class CaptionedSet:
    """Image–caption pairs for retrieval (an image may have several captions, a caption several images)."""

    source: str
    paths: list[Path]
    captions: list[str]
    task = "retrieval"


def _columns(source: Path) -> list[str]:
    if source.suffix.lower() in (".jsonl", ".ndjson"):
        with source.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        return []
                    return list(row) if isinstance(row, dict) else []
        return []
    with source.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), [])


def detect_task(source: str | os.PathLike, column: str | None = None, task: str = "auto") -> str:
    """``classification`` for a folder or a file with a label column, ``retrieval`` for a ``caption`` column."""
    if task not in TASKS:
        raise UsageError(f"choose from {', '.join(TASKS)}", value=task, parameter="task")
    if task != "auto":
        return task
    source = Path(source)
    if source.is_dir():
        return "classification"
    if not source.is_file():
        raise UsageError("no such dataset (give a folder of class folders, or a CSV of path,label "
                         "or path,caption)", value=display_path(source), parameter="dataset")
    try:
        columns = _columns(source)
    except UnicodeDecodeError:
        raise DataError(f"{source}: not UTF-8 text") from None
    if "path" not in columns:
        raise DataError(f"{source}:1: header lacks column 'path' (found: {', '.join(columns) or 'nothing'})")
    if column is not None:
        if column not in columns:
            raise UsageError(f"{source} has no column {column!r} (found: {', '.join(columns)})",
                             parameter="column")
        return "retrieval" if column == "caption" and "label" not in columns else "classification"
    if "label" in columns:
        return "classification"
    if "caption" in columns:
        return "retrieval"
    raise DataError(f"{source}:1: no 'label' or 'caption' column (found: {', '.join(columns)}); "
                    "name the label column")


def read_labelled_set(source: str | os.PathLike, *, labels_file: str | os.PathLike | None = None,
                      column: str | None = None) -> LabelledSet:
    """A classification dataset, with classes (and their display names) from ``labels_file`` when given."""
    data = read_labelled_images(source, label_column=column or "label")
    if labels_file is None:  # sorted, so that the confusion matrix and tables read in a stable order
        classes = sorted(data.classes)
        return LabelledSet(display_path(source), data.paths, data.labels, classes, classes)
    names = read_label_names(labels_file)
    missing = [c for c in data.classes if c not in names]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{labels_file}: no line for {len(missing)} label(s) of {source}: {shown}")
    return LabelledSet(display_path(source), data.paths, data.labels, list(names), list(names.values()))


def read_captioned_set(source: str | os.PathLike, column: str | None = None) -> CaptionedSet:
    """A retrieval dataset: a CSV/JSONL of path and caption (``column`` names the caption column)."""
    pairs = read_pairs(source, caption_column=column or "caption")
    return CaptionedSet(display_path(source), [p.path for p in pairs], [p.caption for p in pairs])


def read_eval_dataset(dataset: str | os.PathLike, *, labels_file: str | os.PathLike | None = None,
                      column: str | None = None, task: str = "auto") -> LabelledSet | CaptionedSet:
    """Read (and check) a dataset for :func:`evaluate` without a model: a :class:`LabelledSet` for
    classification (a folder per class, or a CSV/JSONL of path,label), a :class:`CaptionedSet` for retrieval
    (path,caption); ``task`` auto tells them apart by the columns."""
    task = detect_task(dataset, column, task)
    if task == "retrieval":
        if labels_file is not None:
            raise UsageError("a labels file is for classification datasets (path,label), not retrieval ones "
                             "(path,caption)", parameter="labels_file")
        return read_captioned_set(dataset, column)
    return read_labelled_set(dataset, labels_file=labels_file, column=column)


# --- few-shot -----------------------------------------------------------------------------------------

def few_shot_split(truth: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """K random images of each class that has images to train on; every other image to test on."""
    train = np.concatenate([rng.choice(np.flatnonzero(truth == c), k, replace=False)
                            for c in np.unique(truth)])
    test = np.setdiff1d(np.arange(len(truth)), train)
    return np.sort(train), test


def _probe(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression  # checked by linear_probe

    return LogisticRegression(C=c, max_iter=2000, random_state=seed)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0
                 ) -> tuple[np.ndarray, float]:
    """Logistic regression on image embeddings (the CLIP paper's linear probe): predictions for ``test_x``
    and the regularisation C, picked from a small grid by stratified cross-validation on the training
    shots (C = 10 with one shot per class)."""
    try:
        from sklearn.model_selection import StratifiedKFold, cross_val_score
    except ImportError:
        raise UsageError("few-shot probes need scikit-learn: pip install 'cliplens[eval]'", parameter="few_shot") from None

    shots = int(np.bincount(train_y)[np.unique(train_y)].min())
    best = 10.0
    with warnings.catch_warnings():  # few samples per class: sklearn's notes about that are expected here
        warnings.filterwarnings("ignore", module=r"sklearn\.")
        if shots >= 2:
            folds = StratifiedKFold(n_splits=min(shots, 3), shuffle=True, random_state=seed)
            scores = [cross_val_score(_probe(c, seed), train_x, train_y, cv=folds).mean() for c in PROBE_C_GRID]
            best = PROBE_C_GRID[int(np.argmax(scores))]
        model = _probe(best, seed).fit(train_x, train_y)
    return model.predict(test_x), best


def check_shots(shots: Sequence[int], truth: np.ndarray, names: Sequence[str]) -> None:
    """K must be at least 1 and leave every class with images at least one to test on."""
    counts = np.bincount(truth, minlength=len(names))
    present = np.flatnonzero(counts)
    smallest = int(present[np.argmin(counts[present])])
    for k in shots:
        if k < 1:
            raise UsageError("give a number of examples per class of at least 1", value=str(k), parameter="few_shot")
        if k >= counts[smallest]:
            raise UsageError(f"class {names[smallest]!r} has only {counts[smallest]} image(s); K must be "
                             "smaller than every class's count so that some are left to test on", value=str(k), parameter="few_shot")


def few_shot_results(vectors: np.ndarray, truth: np.ndarray, zero_shot_predicted: np.ndarray, shots: Sequence[int],
                     names: Sequence[str], seed: int = 0) -> list[dict]:
    """For each K: a linear probe on K shots per class, and zero-shot accuracy on the same test images."""
    check_shots(shots, truth, names)
    rows = []
    for k in shots:
        train, test = few_shot_split(truth, k, np.random.default_rng(seed))
        predicted, c = linear_probe(vectors[train], truth[train], vectors[test], seed)
        rows.append({"k": int(k), "train": int(len(train)), "test": int(len(test)),
                     "accuracy": float((predicted == truth[test]).mean()),
                     "zero_shot_accuracy": float((zero_shot_predicted[test] == truth[test]).mean()),
                     "C": float(c)})
    return rows


# --- the run --------------------------------------------------------------------------------------------

@dataclass
class EvalResult:
    """``report`` is what report.json holds; ``predictions`` one row per image (classification);
    ``errors`` the images that could not be read."""

    report: dict
    predictions: list[dict] = field(default_factory=list)
    errors: list[ImageLoadError] = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.report["task"]

    @property
    def images_encoded(self) -> int:
        return self.report["images_encoded"]

    def to_dict(self) -> dict:
        return self.report


def _header(encoder: Encoder, source: str, task: str, embedded, total: int) -> dict:
    return {"format": FORMAT, "task": task, "model": encoder.name, "backend": encoder.info.backend,
            "precision": encoder.info.precision, "dataset": display_path(source),
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "images": len(embedded.indices), "images_listed": total,
            "images_encoded": embedded.encoded, "images_cached": embedded.cached,
            "skipped": [{"path": e.source, "reason": e.reason} for e in embedded.errors]}


def _embed(paths: list[Path], encoder: Encoder, **kwargs):
    embedded = embed_cached(paths, encoder, **kwargs)
    if not embedded.indices:
        raise DataError(f"none of the {len(paths)} images could be read (first: {embedded.errors[0]})")
    return embedded


def evaluate(dataset: str | os.PathLike | LabelledSet | CaptionedSet, model: Encoder | str | None = None, *,
             labels_file: str | os.PathLike | None = None, templates: str | Sequence[str] | None = None,
             template: str = DEFAULT_TEMPLATE, few_shot: int | Sequence[int] | None = None,
             column: str | None = None, task: str = "auto", seed: int = 0, device: str | None = None,
             batch_size: int | None = None, workers: int | None = None,
             on_progress: Callable[[int, int], None] | None = None, use_cache: bool = True) -> EvalResult:
    """Evaluate a model on a labelled dataset (zero-shot, template sets, few-shot) or on image–caption
    pairs (retrieval). Image embeddings are cached, so a run with other templates encodes no images.

    ``dataset`` is a path, or what :func:`read_eval_dataset` read. ``templates``: the template sets to
    compare (see :func:`~cliplens.text.prompts.parse_template_sets`); without them, ``template`` alone when
    it is not the default, else the default prompt, the CLIP notebook's 7 templates and labels verbatim.
    """
    data = (dataset if isinstance(dataset, (LabelledSet, CaptionedSet))
            else read_eval_dataset(dataset, labels_file=labels_file, column=column, task=task))
    shots = [] if few_shot is None else [few_shot] if isinstance(few_shot, int) else list(few_shot)
    if isinstance(data, CaptionedSet):
        if shots:
            raise UsageError("few-shot probes are for classification datasets (path,label), not retrieval ones "
                             "(path,caption)", parameter="few_shot")
        encoder = as_encoder(model, device)
        return _evaluate_retrieval(data, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                                   use_cache=use_cache)
    data.check_shots(shots)  # before encoding anything
    sets = parse_template_sets(templates, template=template,
                               default=DEFAULT_TEMPLATE_SETS if template == DEFAULT_TEMPLATE else ())
    encoder = as_encoder(model, device)
    warn_unreadable(encoder, data.names)
    embedded = _embed(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                      use_cache=use_cache)
    truth = data.truth()[embedded.indices]
    vectors = embedded.vectors
    compared, primary, primary_probs = [], None, None
    for number, template_set in enumerate(sets):
        probs = label_probabilities(cosine(vectors, label_embeddings(encoder, data.names, template_set.templates)),
                                    encoder)
        metrics = classification_metrics(probs, truth, data.names)
        compared.append({"name": template_set.name,
                         "templates": len(template_set.templates) if template_set.templates else 0,
                         **{k: metrics[k] for k in ("top1", "top5", "mean_per_class_accuracy", "ece")}})
        if number == 0:
            primary, primary_probs = metrics, probs
    order = ranked(primary_probs)
    counts = np.bincount(truth, minlength=len(data.classes))
    report = _header(encoder, data.source, "classification", embedded, len(data.paths))
    report.update({
        "classes": [{"label": c, "name": n, "images": int(k)} for c, n, k in zip(data.classes, data.names, counts)],
        "chance": 1.0 / len(data.classes),
        "score": "sigmoid" if encoder.score_kind == "sigmoid" else "softmax",
        "zero_shot": {"templates": sets[0].name, "prompts": sets[0].templates, **primary},
        "template_sets": compared,
        "few_shot": few_shot_results(vectors, truth, order[:, 0], shots, data.names, seed) if shots else [],
        "seed": seed,
    })
    for row, label in zip(report["zero_shot"]["per_class"], data.classes):
        row["label"] = label
    predictions = []
    for row, i in enumerate(embedded.indices):
        best = order[row, 0]
        predictions.append({"path": display_path(data.paths[i]), "label": data.labels[i], "prediction": data.classes[best],
                            "correct": bool(best == truth[row]), "confidence": float(primary_probs[row, best]),
                            "top5": "|".join(data.classes[j] for j in order[row, :TOP_K])})
    return EvalResult(report, predictions, embedded.errors)


def _evaluate_retrieval(data: CaptionedSet, encoder: Encoder, **kwargs) -> EvalResult:
    unique_paths = list(dict.fromkeys(data.paths))
    embedded = _embed(unique_paths, encoder, **kwargs)
    row_of = {unique_paths[i]: row for row, i in enumerate(embedded.indices)}
    kept = [(row_of[p], c) for p, c in zip(data.paths, data.captions) if p in row_of]
    captions = list(dict.fromkeys(c for _, c in kept))
    text_of = {c: t for t, c in enumerate(captions)}
    with warnings.catch_warnings():  # long captions are cut to the context; one note is enough
        warnings.simplefilter("once")
        text_vectors = encoder.encode_texts(captions)
    metrics = retrieval_metrics(embedded.vectors, [i for i, _ in kept], text_vectors, [text_of[c] for _, c in kept])
    report = _header(encoder, data.source, "retrieval", embedded, len(unique_paths))
    report.update({"texts": len(captions), "pairs": len(kept), **metrics})
    return EvalResult(report, [], embedded.errors)
