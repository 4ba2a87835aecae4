"""Searching an index in words, by example image, or by arithmetic on queries; finding near-duplicates.

A query is one or more terms, each a text or an image, added or subtracted
(``"horse" + "stripes" - "brown"``): the sum of their normalised embeddings, normalised again, as
rclip and the CLIP retrieval demos do. Scores are cosine similarities.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..images import IMAGE_EXTENSIONS
from ..models import Encoder, l2_normalize
from ..reference import reference_best, reranking_vocabulary
from .store import IndexStore
from .sync import sync_vector_index, writer_lock


@dataclass(frozen=True)
class QueryTerm:
    text: str
    sign: int = 1  # +1 or -1
    is_image: bool = False


@dataclass
class SearchHit:
    path: str
    score: float
    id: int | None = None  # the file's id in the index (the service names thumbnails by it, never by path)


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"query": self.query, "results": [{"path": h.path, "score": h.score} for h in self.hits]}


@dataclass
class DuplicateGroup:
    """Files whose vectors are all within the threshold of the group's first file."""

    paths: list[str]
    score: float  # the lowest similarity between the first file and another in the group

    def to_dict(self) -> dict:
        return {"paths": self.paths, "score": self.score}


RERANK_POOL = 200  # candidates by cosine that re-ranking reorders
_OPERATOR = re.compile(r"\s+([+-])\s+")


def _term(text: str, sign: int, files: bool = True) -> QueryTerm:
    path = Path(text).expanduser()
    is_image = files and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    return QueryTerm(str(path) if is_image else text, sign, is_image)


def parse_query(query: str, *, files: bool = True) -> list[QueryTerm]:
    """Split ``"horse" + "stripes" - "brown"`` (or ``horse + stripes - brown``) into signed terms.

    Operators need spaces around them, so "black-and-white photo" stays one term. A term that names an
    image file is an image query, unless ``files`` is False (queries from the HTTP service, whose clients
    must never name the server's files): then every term is text.
    """
    query = query.strip()
    if not query:
        raise UsageError("empty query: give text, an image (--image), or terms to add")
    if '"' in query or "'" in query:
        try:
            tokens = shlex.split(query)
        except ValueError as exc:
            raise UsageError(f"query {query!r}: {exc}") from None
    else:
        tokens = [t for t in _OPERATOR.split(query) if t]
    terms, sign, expect_term = [], 1, True
    for token in tokens:
        if token in "+-" and token:
            if expect_term and terms:
                raise UsageError(f"query {query!r}: two operators in a row")
            sign, expect_term = (1 if token == "+" else -1), True
            continue
        if not expect_term:
            raise UsageError(f"query {query!r}: put + or - between terms (quote multi-word terms)")
        terms.append(_term(token, sign, files))
        sign, expect_term = 1, False
    if expect_term:
        raise UsageError(f"query {query!r}: ends with an operator")
    return terms


class PhotoIndex:
    """An index opened for searching (and for finding duplicates)."""

    def __init__(self, index: str | Path | None = None, model: str | None = None, *, device: str | None = None,
                 backend: str | None = None, precision: str | None = None):
        self.store = IndexStore(index)
        bound = self.store.model
        if bound is None or self.store.count() == 0:
            raise UsageError(f"{self.store.folder}: the index is empty; add images with `cliplens index DIR`")
        self.bound = bound
        self._model_request = (model, device, backend, precision)
        self._encoder: Encoder | None = None
        if model is not None:
            from ..cache import model_content_hash
            from ..models import resolve_model_dir

            self.store.check_model(model, model_content_hash(resolve_model_dir(model)), action="search it")
        from filelock import Timeout

        lock = writer_lock(self.store)
        try:  # save the caught-up vector index only when no indexing run is writing it
            lock.acquire()
            saving = True
        except Timeout:
            saving = False
        try:
            self.vectors = sync_vector_index(self.store, save=saving)
        finally:
            if saving:
                lock.release()

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded on first use (finding duplicates needs none)."""
        if self._encoder is None:
            from ..models import load_model

            model, device, backend, precision = self._model_request
            self._encoder = load_model(model or self.bound.name, device=device, backend=backend, precision=precision)
        return self._encoder

    def __len__(self) -> int:
        return len(self.vectors)

    def query_vector(self, terms: Sequence[QueryTerm]) -> np.ndarray:
        """The normalised signed sum of the terms' embeddings."""
        if not terms:
            raise UsageError("empty query: give text, an image (--image), or terms to add")
        texts = [t for t in terms if not t.is_image]
        images = [t for t in terms if t.is_image]
        total = np.zeros(self.bound.dim, np.float32)
        if texts:
            total += np.sum(self.encoder.encode_texts([t.text for t in texts]) * [[t.sign] for t in texts], axis=0)
        if images:
            total += np.sum(self.encoder.encode_images([t.text for t in images]) * [[t.sign] for t in images], axis=0)
        if not np.any(total):
            raise UsageError("the query's terms cancel out")
        return l2_normalize(total[None])[0]

    def search(self, query: str | None = None, *, image: str | Path | None = None, add: Sequence[str] = (),
               subtract: Sequence[str] = (), k: int = 10, threshold: float | None = None,
               rerank: bool | None = None, files: bool = True) -> SearchResult:
        """The ``k`` files best matching the query (those scoring at least ``threshold``), best first.

        Scores are cosine similarities. With re-ranking (``rerank``; see
        :func:`cliplens.reference.reranking_vocabulary`, on by default for models that ship a calibration) the
        best candidates by cosine of a text query are ordered by how much better the query fits each image
        than the image's best reference caption does; the score is then that difference (0: the query
        fits as well as the image's own best description). With ``files`` False no term is read as a file.
        """
        terms = parse_query(query, files=files) if query else []
        if image is not None:
            if not Path(image).is_file():
                raise UsageError(f"--image {image}: no such file")
            terms.append(QueryTerm(str(image), 1, True))
        terms += [_term(t, 1, files) for t in add] + [_term(t, -1, files) for t in subtract]
        shown = " ".join(filter(None, [query, str(image) if image else None]))
        shown += "".join(f" + {t}" for t in add) + "".join(f" - {t}" for t in subtract)
        text_only = not any(t.is_image for t in terms)  # an example image needs no re-ranking
        return self.search_vector(self.query_vector(terms), shown.strip(), k=k, threshold=threshold,
                                  rerank=rerank if text_only else False)

    def search_vector(self, vector: np.ndarray, shown: str = "", *, k: int = 10, threshold: float | None = None,
                      rerank: bool | None = None) -> SearchResult:
        """The ``k`` files best matching an already-embedded query (normalised), re-ranked as :meth:`search`
        explains unless ``rerank`` is False (as it should be for image queries)."""
        if k < 1:
            raise UsageError(f"-k {k}: must be at least 1")
        reference = reranking_vocabulary(self.encoder, rerank)
        pool = k if reference is None else max(10 * k, RERANK_POOL)
        scores, ids = self.vectors.search(vector[None], min(pool, len(self.vectors)))
        scores, ids = scores[0][ids[0] >= 0], ids[0][ids[0] >= 0]
        if reference is not None and len(ids):
            found, candidates = self.store.vectors(ids)
            best = dict(zip(found.tolist(), reference_best(candidates, reference)))
            keep = np.array([int(i) in best for i in ids])
            scores, ids = scores[keep], ids[keep]
            scores = scores - np.array([best[int(i)] for i in ids], np.float32)
            order = np.argsort(-scores, kind="stable")[:k]
            scores, ids = scores[order], ids[order]
        paths = self.store.paths(ids)
        hits = [SearchHit(paths[int(i)], float(s), int(i)) for s, i in zip(scores[:k], ids[:k])
                if int(i) in paths and (threshold is None or float(s) >= threshold)]
        return SearchResult(shown, hits)

    def dedupe(self, threshold: float = 0.95, neighbours: int = 10) -> list[DuplicateGroup]:
        """Groups of near-duplicates: files linked by similarity ≥ ``threshold`` (each to a nearest neighbour)."""
        if not 0 < threshold <= 1:
            raise UsageError(f"--threshold {threshold}: must be in (0, 1]")
        ids, vectors = self.store.vectors()
        if len(ids) < 2:
            return []
        scores, found = self.vectors.search(vectors, min(neighbours + 1, len(ids)))
        parent = {int(i): int(i) for i in ids}

        def root(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for row, own in enumerate(ids):
            for score, other in zip(scores[row], found[row]):
                if other >= 0 and other != own and score >= threshold and int(other) in parent:
                    parent[root(int(own))] = root(int(other))
        members: dict[int, list[int]] = {}
        for i in ids:
            members.setdefault(root(int(i)), []).append(int(i))
        position = {int(i): n for n, i in enumerate(ids)}
        paths = self.store.paths(i for group in members.values() if len(group) > 1 for i in group)
        groups = []
        for group in members.values():
            if len(group) < 2:
                continue
            group.sort(key=lambda i: paths[i])
            first = vectors[position[group[0]]]
            lowest = min(float(vectors[position[i]] @ first) for i in group[1:])
            groups.append(DuplicateGroup([paths[i] for i in group], lowest))
        return sorted(groups, key=lambda g: (-len(g.paths), g.paths[0]))

    def close(self) -> None:
        self.store.close()
