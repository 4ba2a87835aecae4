"""CLIP as curator: ranking many images for one prompt, and scoring image–caption pairs with CLIPScore.

Ranking is what OpenAI did to rerank DALL·E samples: the images' cosine similarity to the prompt,
best first. With negative prompts, each image's score is its similarity to the prompt minus its
highest similarity to a negative, so an image that matches what is unwanted drops.

CLIPScore (Hessel et al., 2021) is ``w · max(cos(image, "A photo depicts " + caption), 0)`` with
``w = 2.5``; RefCLIPScore is the harmonic mean of CLIPScore and ``w · max(max_r cos(caption, r), 0)``
over the reference captions ``r``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import ImageLoadError, UsageError
from .files import atomic_path, display_path
from .inputs.images import ImageSource
from .inputs.ocr import text_cover
from .inputs.thumbnails import figure_html, thumbnail_uri
from .inputs.pairs import Pair
from .models import Encoder, as_encoder
from .text.reference import reference_best, reranking_vocabulary
from .vectors.batches import ProgressFn, embed_images

CLIPSCORE_W = 2.5
CLIPSCORE_PREFIX = "A photo depicts "


@dataclass
class Scored:
    """One ranked image: its ``score`` (what it is ranked by), its cosine ``similarity`` with the prompt, and
    ``index``, its position among the images given."""

    path: str
    score: float
    similarity: float = 0.0
    index: int = 0
    text_covered: list[str] | None = None  # with ignore_text: the texts covered before encoding


@dataclass
class Ranking:
    """Images best first for a prompt, and the ones that could not be read.

    ``score_kind`` says what the scores are: ``similarity`` (the cosine with the prompt) or ``margin`` (that
    cosine less the image's best cosine with a negative prompt and/or with its best reference caption).
    """

    prompt: str
    results: list[Scored]
    errors: list[ImageLoadError] = field(default_factory=list)
    score_kind: str = "similarity"

    def _repr_html_(self) -> str:
        """A thumbnail grid, best first, with the scores (how a notebook shows a ranking)."""
        from html import escape

        cells = "".join(figure_html(thumbnail_uri(r.path), os.path.basename(str(r.path)),
                                    [f"#{n} score {r.score:.3f}"]) for n, r in enumerate(self.results, 1))
        return (f'<div class="cliplens-ranking"><div>{escape(self.prompt)} ({escape(self.score_kind)})</div>'
                f"{cells}</div>")

    def to_dict(self) -> dict:
        """The JSON form (``--json`` and the HTTP API)."""
        return {"prompt": self.prompt, "score_kind": self.score_kind,
                "results": [{"path": display_path(r.path), "index": r.index, "score": r.score,
                             "similarity": r.similarity}
                            | ({} if r.text_covered is None else {"text_covered": len(r.text_covered),
                                                                  "text_found": r.text_covered})
                            for r in self.results]}


def _check_ranking(prompt: str, top: int | None) -> None:
    if not prompt.strip():
        raise UsageError("the prompt is empty", parameter="prompt")
    if top is not None and top < 1:
        raise UsageError(f"must be at least 1 (got {top})", parameter="top")


def rank_images(prompt: str, images: Iterable[ImageSource], model: Encoder | str | None = None, *,
                negative: Sequence[str] = (), top: int | None = None, batch_size: int | None = None,
                workers: int | None = None, on_progress: ProgressFn | None = None,
                rerank: bool | None = None, ignore_text: bool = False) -> Ranking:
    """Order ``images`` by how well they match ``prompt``, best first (see :class:`Ranking` for the scores).

    With ``negative`` prompts each score is less the image's best match to one of them; with re-ranking
    (see :func:`cliplens.text.reference.reranking_vocabulary`; by default on for models that ship a
    calibration) it is further less the image's best reference cosine. ``ignore_text`` covers the text an OCR
    engine finds in each image before it is encoded (the ``ocr`` extra); each result says how much it covered.
    """
    _check_ranking(prompt, top)
    encoder = as_encoder(model)
    images = list(images)
    cover = text_cover() if ignore_text else None
    embedded = embed_images(images, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                            transform=cover)
    names = [os.fspath(images[i]) if isinstance(images[i], (str, os.PathLike)) else embedded.sources[row]
             for row, i in enumerate(embedded.indices)]  # paths as they are, so the files can be copied
    ranking = rank_vectors(prompt, embedded.vectors, names, encoder, negative=negative, top=top,
                           rerank=rerank, indices=embedded.indices)
    ranking.errors = embedded.errors
    if cover is not None:
        for result in ranking.results:
            result.text_covered = [r.text for r in cover.covered(images[result.index])]
    return ranking


def rank_vectors(prompt: str, vectors: np.ndarray, names: Sequence[str], model: Encoder, *,
                 negative: Sequence[str] = (), top: int | None = None, rerank: bool | None = None,
                 indices: Sequence[int] | None = None) -> Ranking:
    """:func:`rank_images` for images already embedded (rows of normalised ``vectors``, named by ``names``;
    ``indices`` are their positions among the images given, by default their row numbers)."""
    _check_ranking(prompt, top)
    reference = reranking_vocabulary(model, rerank)
    kind = "margin" if negative or reference is not None else "similarity"
    if not len(names):
        return Ranking(prompt, [], score_kind=kind)
    texts = model.encode_texts([prompt, *negative])
    similarity = vectors @ texts[0]
    scores = similarity
    if negative:
        scores = scores - (vectors @ texts[1:].T).max(axis=1)
    if reference is not None:
        scores = scores - reference_best(vectors, reference)
    positions = list(indices) if indices is not None else list(range(len(names)))
    order = np.argsort(-scores, kind="stable")[:top]
    return Ranking(prompt, [Scored(str(names[i]), float(scores[i]), float(similarity[i]), int(positions[i]))
                            for i in order], score_kind=kind)


def copy_ranked(ranking: Ranking, out: str | Path) -> list[Path]:
    """Copy the ranked files into ``out`` as ``001_name.ext``, ``002_…`` (rank first, so names never clash)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for rank, result in enumerate(ranking.results, 1):
        source = Path(result.path)
        if not source.is_file():
            raise UsageError(f"{display_path(result.path)} is not a file that can be copied", parameter="copy_to")
        target = out / f"{rank:03d}_{source.name}"
        with atomic_path(target) as tmp:  # a reader of the folder never sees half a copy
            shutil.copy2(source, tmp)
        copied.append(target)
    return copied


@dataclass
class PairScore:
    path: str
    caption: str
    clip_score: float
    ref_clip_score: float | None = None
    text_covered: list[str] | None = None  # with ignore_text: the texts covered before encoding

    def to_dict(self) -> dict:
        row = {"path": self.path, "caption": self.caption, "clip_score": self.clip_score}
        if self.ref_clip_score is not None:
            row["ref_clip_score"] = self.ref_clip_score
        if self.text_covered is not None:
            row["text_covered"] = len(self.text_covered)
            row["text_found"] = self.text_covered
        return row


@dataclass
class PairScores:
    model: str
    results: list[PairScore]
    errors: list[ImageLoadError] = field(default_factory=list)

    @property
    def clip_score(self) -> float:
        return float(np.mean([r.clip_score for r in self.results])) if self.results else float("nan")

    @property
    def ref_clip_score(self) -> float | None:
        refs = [r.ref_clip_score for r in self.results if r.ref_clip_score is not None]
        return float(np.mean(refs)) if refs else None

    def to_dict(self) -> dict:
        return {"model": self.model, "pairs": len(self.results), "failed": len(self.errors),
                "clip_score": self.clip_score, "ref_clip_score": self.ref_clip_score,
                "results": [r.to_dict() for r in self.results]}


def clip_scores(pairs: Sequence[Pair], model: Encoder | str | None = None, *, w: float = CLIPSCORE_W,
                prefix: str = CLIPSCORE_PREFIX, batch_size: int | None = None, workers: int | None = None,
                on_progress: ProgressFn | None = None, ignore_text: bool = False) -> PairScores:
    """CLIPScore per pair (and RefCLIPScore for pairs with reference captions); unreadable images are skipped.
    ``ignore_text`` covers the text an OCR engine finds in each image before it is encoded (the ``ocr`` extra)."""
    encoder = as_encoder(model)
    cover = text_cover() if ignore_text else None
    paths = [p.path for p in pairs]
    embedded = embed_images(paths, encoder, batch_size=batch_size, workers=workers, on_progress=on_progress,
                            transform=cover)
    kept = [pairs[i] for i in embedded.indices]
    if not kept:
        return PairScores(encoder.name, [], embedded.errors)
    images = embedded.vectors
    captions = encoder.encode_texts([prefix + p.caption for p in kept])
    scores = w * np.maximum(np.sum(images * captions, axis=1), 0)
    references = [r for p in kept for r in p.references]
    ref_vectors = encoder.encode_texts([prefix + r for r in references]) if references else None
    results, start = [], 0
    for i, pair in enumerate(kept):
        ref = None
        if pair.references:
            block = ref_vectors[start : start + len(pair.references)]
            start += len(pair.references)
            text_score = w * max(float(np.max(block @ captions[i])), 0.0)
            ref = 0.0 if scores[i] + text_score == 0 else float(2 * scores[i] * text_score / (scores[i] + text_score))
        covered = None if cover is None else [r.text for r in cover.covered(pair.path)]
        results.append(PairScore(display_path(pair.path), pair.caption, float(scores[i]), ref, covered))
    return PairScores(encoder.name, results, embedded.errors)
