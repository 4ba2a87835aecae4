"""How well a model does on the user's own data: zero-shot and few-shot classification, and retrieval.

A labelled dataset (a folder per class, or a CSV/JSONL of ``path,label``) is embedded once (the vectors
are cached, see :mod:`cliplens.eval_cache`) and scored with every requested template set. The first set
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

from .calibration import expected_calibration_error
from .datasets import read_labelled_images
from .errors import DataError, ImageLoadError, UsageError
from .eval_cache import embed_cached
from .models import Encoder, as_encoder
from .pairs import read_pairs
from .prompts import DEFAULT_TEMPLATE, VERBATIM, label_embeddings, read_text_file, resolve_templates, warn_unreadable
from .scores import cosine, label_probabilities

FORMAT = "cliplens-eval/1"
TOP_K = 5
RECALL_KS = (1, 5, 10)
ECE_BINS = 15  # as calibration.expected_calibration_error
#: Compared when no --templates are given: the default prompt, the CLIP notebook's 7 templates, labels verbatim.
DEFAULT_TEMPLATE_SETS = ("default", "imagenet-7", VERBATIM)
PROBE_C_GRID = (0.1, 1.0, 10.0, 100.0)
TASKS = ("auto", "classification", "retrieval")


# --- inputs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TemplateSet:
    """A named prompt set; ``templates`` None means class names are used verbatim."""

    name: str
    templates: list[str] | None


def parse_template_sets(spec: str | Sequence[str] | None = None) -> list[TemplateSet]:
    """Template sets from ``"a,b,..."`` or a list: ``default`` ("a photo of a {}."), a template with ``{}``,
    a named set (``imagenet``, ``imagenet-7``), ``none`` (verbatim) or a file of templates."""
    items = DEFAULT_TEMPLATE_SETS if spec is None else spec.split(",") if isinstance(spec, str) else list(spec)
    sets: list[TemplateSet] = []
    for item in items:
        item = str(item).strip()
        if not item or any(s.name == item for s in sets):
            continue
        if item == "default":
            sets.append(TemplateSet(DEFAULT_TEMPLATE, [DEFAULT_TEMPLATE]))
        elif "{}" in item and not Path(item).is_file():
            sets.append(TemplateSet(item, [item]))
        else:
            sets.append(TemplateSet(item, resolve_templates(item)))
    if not sets:
        raise UsageError("--templates: give at least one template set (e.g. default,imagenet-7,none)")
    return sets


def read_label_names(path: str | os.PathLike) -> dict[str, str]:
    """A labels file: one class per line, ``LABEL`` or ``LABEL = display name`` (or LABEL<TAB>name); ``#``
    comments. The file's classes, in its order, are the classes scored (extra ones are distractors)."""
    path = Path(path)
    names: dict[str, str] = {}
    for number, raw in enumerate(read_text_file(path, "--labels").splitlines(), 1):
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


@dataclass
class CaptionedSet:
    """Image–caption pairs for retrieval (an image may have several captions, a caption several images)."""

    source: str
    paths: list[Path]
    captions: list[str]


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
        raise UsageError(f"--task {task!r}: use one of {', '.join(TASKS)}")
    if task != "auto":
        return task
    source = Path(source)
    if source.is_dir():
        return "classification"
    if not source.is_file():
        raise UsageError(f"{source}: no such dataset (give a folder of class folders, or a CSV of path,label "
                         "or path,caption)")
    try:
        columns = _columns(source)
    except UnicodeDecodeError:
        raise DataError(f"{source}: not UTF-8 text") from None
    if "path" not in columns:
        raise DataError(f"{source}:1: header lacks column 'path' (found: {', '.join(columns) or 'nothing'})")
    if column is not None:
        if column not in columns:
            raise DataError(f"{source}:1: no column {column!r} (found: {', '.join(columns)})")
        return "retrieval" if column == "caption" and "label" not in columns else "classification"
    if "label" in columns:
        return "classification"
    if "caption" in columns:
        return "retrieval"
    raise DataError(f"{source}:1: no 'label' or 'caption' column (found: {', '.join(columns)}); "
                    "name the label column with --column")


def read_labelled_set(source: str | os.PathLike, *, labels_file: str | os.PathLike | None = None,
                      column: str | None = None) -> LabelledSet:
    """A classification dataset, with classes (and their display names) from ``labels_file`` when given."""
    data = read_labelled_images(source, label_column=column or "label")
    if labels_file is None:  # sorted, so that the confusion matrix and tables read in a stable order
        classes = sorted(data.classes)
        return LabelledSet(str(source), data.paths, data.labels, classes, classes)
    names = read_label_names(labels_file)
    missing = [c for c in data.classes if c not in names]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{labels_file}: no line for {len(missing)} label(s) of {source}: {shown}")
    return LabelledSet(str(source), data.paths, data.labels, list(names), list(names.values()))


def read_captioned_set(source: str | os.PathLike, column: str | None = None) -> CaptionedSet:
    pairs = read_pairs(source, caption_column=column or "caption")
    return CaptionedSet(str(source), [p.path for p in pairs], [p.caption for p in pairs])


# --- metrics --------------------------------------------------------------------------------------------

def ranked(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row, best first (ties: the earlier class first)."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")


def top_k_accuracy(order: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of rows whose true class is among the first k of ``order`` (from :func:`ranked`)."""
    return float((order[:, :k] == np.asarray(truth)[:, None]).any(axis=1).mean())


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth), np.asarray(predicted)), 1)
    return matrix


def reliability_bins(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """The top-1 reliability curve, in the bins :func:`expected_calibration_error` uses: per bin its edges,
    image count, mean confidence and accuracy (None when empty)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else None,
                     "accuracy": float(correct[mask].mean()) if mask.any() else None})
    return rows


def classification_metrics(probabilities: np.ndarray, truth: Sequence[int], names: Sequence[str]) -> dict:
    """Top-1, top-5 (None with 5 classes or fewer), mean per-class accuracy, ECE, per-class figures,
    the confusion matrix and the most frequent confusions."""
    truth = np.asarray(truth)
    order = ranked(probabilities)
    predicted = order[:, 0]
    count = len(names)
    matrix = confusion_matrix(truth, predicted, count)
    support, hits, made = matrix.sum(axis=1), np.diag(matrix), matrix.sum(axis=0)
    per_class = [{"name": names[c], "images": int(support[c]),
                  "accuracy": float(hits[c] / support[c]) if support[c] else None,
                  "precision": float(hits[c] / made[c]) if made[c] else None,
                  "predicted": int(made[c])} for c in range(count)]
    off = [(int(matrix[i, j]), i, j) for i in range(count) for j in range(count) if i != j and matrix[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    confused = [{"true": names[i], "predicted": names[j], "count": n, "share": float(n / support[i])}
                for n, i, j in off[:10]]
    present = support > 0
    return {
        "top1": float((predicted == truth).mean()),
        "top5": top_k_accuracy(order, truth, TOP_K) if count > TOP_K else None,
        "mean_per_class_accuracy": float((hits[present] / support[present]).mean()),
        "ece": expected_calibration_error(probabilities, truth, ECE_BINS),
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "most_confused": confused,
        "reliability": reliability_bins(probabilities, truth),
    }


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
        raise UsageError("--few-shot needs scikit-learn: pip install 'cliplens[eval]'") from None

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
            raise UsageError(f"--few-shot {k}: give a number of examples per class of at least 1")
        if k >= counts[smallest]:
            raise UsageError(f"--few-shot {k}: class {names[smallest]!r} has only {counts[smallest]} image(s); "
                             f"K must be smaller than every class's count so that some are left to test on")


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


def best_relevant_ranks(queries: np.ndarray, items: np.ndarray, relevant: Sequence[Sequence[int]],
                        chunk: int = 1024) -> np.ndarray:
    """0-based rank of each query's best-scoring relevant item: how many items score strictly higher."""
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        sims = cosine(queries[start:start + chunk], items)
        for row, q in enumerate(range(start, min(start + chunk, len(queries)))):
            best = sims[row, list(relevant[q])].max()
            ranks[q] = int((sims[row] > best).sum())
    return ranks


def recall_summary(ranks: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict:
    summary = {f"recall@{k}": float((ranks < k).mean()) for k in ks}
    summary["median_rank"] = float(np.median(ranks + 1))
    return summary


def retrieval_metrics(image_vectors: np.ndarray, image_of_pair: Sequence[int], text_vectors: np.ndarray,
                      text_of_pair: Sequence[int], ks: Sequence[int] = RECALL_KS) -> dict:
    """Image→text and text→image recall@k over unique images and unique captions: an image's relevant
    texts are every caption paired with it, a caption's relevant images every image paired with it."""
    texts_of = [set() for _ in range(len(image_vectors))]
    images_of = [set() for _ in range(len(text_vectors))]
    for i, t in zip(image_of_pair, text_of_pair):
        texts_of[i].add(t)
        images_of[t].add(i)
    return {"image_to_text": recall_summary(best_relevant_ranks(image_vectors, text_vectors, texts_of), ks),
            "text_to_image": recall_summary(best_relevant_ranks(text_vectors, image_vectors, images_of), ks)}


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
            "precision": encoder.info.precision, "dataset": source,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "images": len(embedded.indices), "images_listed": total,
            "images_encoded": embedded.encoded, "images_cached": embedded.cached,
            "skipped": [{"path": e.source, "reason": e.reason} for e in embedded.errors]}


def _embed(paths: list[Path], encoder: Encoder, **kwargs):
    embedded = embed_cached(paths, encoder, **kwargs)
    if not embedded.indices:
        raise DataError(f"none of the {len(paths)} images could be read (first: {embedded.errors[0]})")
    return embedded


def evaluate(dataset: str | os.PathLike, model: Encoder | str | None = None, *,
             labels_file: str | os.PathLike | None = None, templates: str | Sequence[str] | None = None,
             few_shot: int | Sequence[int] | None = None, column: str | None = None, task: str = "auto",
             seed: int = 0, device: str | None = None, batch_size: int | None = None, workers: int | None = None,
             on_progress: Callable[[int, int], None] | None = None, use_cache: bool = True) -> EvalResult:
    """Evaluate a model on a labelled dataset (zero-shot, template sets, few-shot) or on image–caption
    pairs (retrieval). Image embeddings are cached, so a run with other templates encodes no images."""
    task = detect_task(dataset, column, task)
    shots = [] if few_shot is None else [few_shot] if isinstance(few_shot, int) else list(few_shot)
    if task == "retrieval":
        if shots or labels_file is not None:
            raise UsageError("--few-shot and --labels are for classification datasets (path,label), "
                             "not retrieval ones (path,caption)")
        data = read_captioned_set(dataset, column)
        encoder = as_encoder(model, device)
        return _evaluate_retrieval(data, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                                   use_cache=use_cache)
    data = read_labelled_set(dataset, labels_file=labels_file, column=column)
    index = {label: i for i, label in enumerate(data.classes)}
    check_shots(shots, np.array([index[label] for label in data.labels]), data.names)  # before encoding anything
    sets = parse_template_sets(templates)
    encoder = as_encoder(model, device)
    warn_unreadable(encoder, data.names)
    embedded = _embed(data.paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                      use_cache=use_cache)
    truth = np.array([index[data.labels[i]] for i in embedded.indices])
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
        predictions.append({"path": str(data.paths[i]), "label": data.labels[i], "prediction": data.classes[best],
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
