"""Searching an index in words, by example image, or by arithmetic on queries; finding near-duplicates.

A query is one or more terms, each a text or an image, added or subtracted
(``"horse" + "stripes" - "brown"``): the sum of their normalised embeddings, normalised again, as
rclip and the CLIP retrieval demos do. A hit's ``similarity`` is its cosine with that query; its
``score`` (what results are ranked by) is the same cosine, or with re-ranking the margin over the
image's best reference caption (see :meth:`PhotoIndex.search`).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from ..files import display_path
from ..inputs.images import IMAGE_EXTENSIONS
from ..inputs.thumbnails import figure_html, thumbnail_uri
from ..models import Encoder, l2_normalize, load_model, resolve_model_dir
from ..models.keys import checkpoint_key
from ..text.match import TextMatch
from ..text.reference import reference_best, reranking_vocabulary
from ..inputs.metadata import PhotoMetadata
from .filters import SearchFilter
from .store import IndexStore
from .sync import sync_vector_index, writer_lock


@dataclass(frozen=True)
class QueryTerm:
    text: str
    sign: int = 1  # +1 or -1
    is_image: bool = False


@dataclass
class SearchHit:
    """One result: ``score`` ranks it (see :class:`SearchResult`), ``similarity`` is its cosine with the query."""

    path: str
    score: float
    id: int | None = None  # the file's id in the index (the service names thumbnails by it, never by path)
    similarity: float | None = None
    match: float | None = None  # P(the image shows the query's text), for queries of one text
    meta: PhotoMetadata | None = None
    time: float | None = None  # a video's scene: when it starts, in seconds (the hit is the file and the moment)
    until: float | None = None
    text: str | None = None  # with a text filter: the text OCR read in it

    @property
    def kind(self) -> str:
        return "photo" if self.time is None else "video"

    @property
    def shown(self) -> str:
        """The file as a person reads it: ``clip.mp4 @ 1:23`` for a video's moment."""
        return display_path(self.path) + ("" if self.time is None else f" @ {clock(self.time)}")

    def to_dict(self) -> dict:
        meta = self.meta or PhotoMetadata()
        return {"path": display_path(self.path), "id": self.id, "kind": self.kind, "time": self.time,
                "until": self.until, "score": self.score, "similarity": self.similarity, "match": self.match,
                "taken": meta.taken, "taken_source": meta.taken_source, "camera": meta.camera, "lat": meta.lat,
                "lon": meta.lon, "text": self.text}


def clock(seconds: float) -> str:
    """Seconds as a video player shows them: ``1:23``, ``1:02:03``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class SearchResult:
    """Hits best first; ``score_kind`` is ``similarity`` (scores are cosines with the query), ``margin``
    (re-ranked: each cosine less the image's best cosine with a reference caption) or ``none`` (filters
    alone, no query: newest first)."""

    query: str
    hits: list[SearchHit] = field(default_factory=list)
    score_kind: str = "similarity"
    near_miss: SearchHit | None = None  # with a minimum match that nothing met: the candidate that came closest

    def _repr_html_(self) -> str:
        """A thumbnail grid with scores and match probabilities (how a notebook shows a search)."""
        from html import escape

        cells = []
        for hit in self.hits:
            lines = [] if self.score_kind == "none" else [f"score {hit.score:.3f}"]
            if hit.match is not None:
                lines.append(f"match {hit.match:.0%}")
            if hit.meta is not None and hit.meta.taken:
                lines.append(hit.meta.taken[:10])
            name = os.path.basename(hit.path) + ("" if hit.time is None else f" @ {clock(hit.time)}")
            cells.append(figure_html(thumbnail_uri(hit.path, time=hit.time), name, lines))
        empty = "" if self.hits else "<div>no results</div>"
        return (f'<div class="cliplens-search"><div>{escape(self.query)} ({escape(self.score_kind)})</div>{empty}'
                f"{''.join(cells)}</div>")

    def to_dict(self) -> dict:
        """The JSON form (``--json``; the HTTP API adds each hit's thumbnail URL)."""
        return {"query": self.query, "score_kind": self.score_kind, "results": [h.to_dict() for h in self.hits],
                "near_miss": self.near_miss.to_dict() if self.near_miss else None}


@dataclass
class DuplicateGroup:
    """Files that are all near-duplicates of one another."""

    paths: list[str]
    score: float  # the lowest similarity between any two files of the group
    times: list[float | None] = field(default_factory=list)  # a video's scene: when it starts (else None)

    @property
    def shown(self) -> list[str]:
        """The members as a person reads them (``clip.mp4 @ 1:23`` for a video's scene)."""
        times = self.times or [None] * len(self.paths)
        return [display_path(p) + ("" if t is None else f" @ {clock(t)}") for p, t in zip(self.paths, times)]

    def to_dict(self) -> dict:
        return {"paths": [display_path(p) for p in self.paths], "times": self.times or [None] * len(self.paths),
                "score": self.score}


RERANK_POOL = 200  # candidates by cosine that re-ranking reorders
EXACT_FILTERED = 2_000  # filters keeping at most this many photos search their float vectors from the store
EXACT_LINKAGE_UP_TO = 1000  # linked candidates grouped by exact complete linkage; past this, greedy cliques
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
        raise UsageError("empty query: give text, an example image, or terms to add", parameter="query")
    if '"' in query or "'" in query:
        try:
            tokens = shlex.split(query)
        except ValueError as exc:
            raise UsageError(f"{exc}", value=repr(query), parameter="query") from None
    else:
        tokens = [t for t in _OPERATOR.split(query) if t]
    terms, sign, expect_term = [], 1, True
    for token in tokens:
        if token in "+-" and token:
            if expect_term and terms:
                raise UsageError("two operators in a row", value=repr(query), parameter="query")
            sign, expect_term = (1 if token == "+" else -1), True
            continue
        if not expect_term:
            raise UsageError("put + or - between terms (quote multi-word terms)", value=repr(query), parameter="query")
        terms.append(_term(token, sign, files))
        sign, expect_term = 1, False
    if expect_term:
        raise UsageError("ends with an operator", value=repr(query), parameter="query")
    return terms


class PhotoIndex:
    """An index opened for searching (and for finding duplicates).

    ``model``: the index's own model by default (loaded on first use); a name or folder, or a loaded
    :class:`~cliplens.Encoder`, must be the model the index was built with (any copy of it).
    """

    def __init__(self, index: str | Path | None = None, model: Encoder | str | None = None, *,
                 device: str | None = None, backend: str | None = None, precision: str | None = None):
        self.store = IndexStore(index)
        try:
            self._open(model, device, backend, precision)
        except BaseException:  # a store left open would hold the database (and its lock) until exit
            self.store.close()
            raise

    def _open(self, model, device, backend, precision) -> None:
        """Check the model asked for against the index's, and catch the vector index up with the database."""
        bound = self.store.model
        if bound is None or self.store.count() == 0:
            raise UsageError("the index is empty; add images with `cliplens index DIR`",
                             value=display_path(self.store.folder), parameter="index")
        self.bound = bound
        self._model_request = (model, device, backend, precision)
        self._encoder: Encoder | None = None
        if isinstance(model, Encoder):
            self.use_encoder(model)
        elif model is not None:
            self.store.check_model(model, checkpoint_key(resolve_model_dir(model)), action="search it")
        from filelock import Timeout

        lock = writer_lock(self.store)
        saving = False
        if not self.store.read_only:  # save the caught-up vector index only when no indexing run is writing it
            try:
                lock.acquire()
                saving = True
            except Timeout:
                pass
        try:
            self.vectors = sync_vector_index(self.store, save=saving)
        finally:
            if saving:
                lock.release()

    def use_encoder(self, encoder: Encoder) -> None:
        """Search with this loaded model (one copy in memory), which must be the index's own (any copy of it)."""
        self.store.check_model(encoder.name, checkpoint_key(encoder.info.path), action="search it")
        self._encoder = encoder

    @property
    def model_name(self) -> str:
        """The name (or folder) of the model the index was built with."""
        return self.bound.name

    def relative_path(self, path: str) -> str:
        """``path`` relative to the indexed folder holding it, starting with that folder's name
        (``Photos/2019/beach.jpg``), so that a client is never shown where the folder is; a file from no
        indexed folder is shown by its name alone."""
        for root in sorted(self.store.roots, key=len, reverse=True):
            if path.startswith(root.rstrip(os.sep) + os.sep):
                return os.path.join(os.path.basename(root.rstrip(os.sep)), os.path.relpath(path, root))
        return os.path.basename(path)

    def path_of(self, file_id: int) -> str | None:
        """The path of the indexed file with this id (as search hits name it; a video's scene: the video), or None."""
        return self.store.paths([file_id]).get(file_id)

    def moment_of(self, file_id: int) -> float | None:
        """When the video scene with this id starts (seconds), or None for a photo."""
        found = self.store.moments([file_id]).get(file_id)
        return None if found is None else found[0]

    @property
    def encoder(self) -> Encoder:
        """The index's model, loaded on first use (finding duplicates needs none)."""
        if self._encoder is None:
            model, device, backend, precision = self._model_request
            self._encoder = load_model(model or self.bound.name, device=device, backend=backend, precision=precision,
                                       purpose="rankings")
        return self._encoder

    def __len__(self) -> int:
        return len(self.vectors)

    def query_vector(self, terms: Sequence[QueryTerm]) -> np.ndarray:
        """The normalised signed sum of the terms' embeddings."""
        if not terms:
            raise UsageError("empty query: give text, an example image, or terms to add", parameter="query")
        texts = [t for t in terms if not t.is_image]
        images = [t for t in terms if t.is_image]
        total = np.zeros(self.bound.dim, np.float32)
        if texts:
            total += np.sum(self.encoder.encode_texts([t.text for t in texts]) * [[t.sign] for t in texts], axis=0)
        if images:
            total += np.sum(self.encoder.encode_images([t.text for t in images]) * [[t.sign] for t in images], axis=0)
        if not np.any(total):
            raise UsageError("the query's terms cancel out", parameter="query")
        return l2_normalize(total[None])[0]

    def search(self, query: str | None = None, *, image: str | Path | None = None, add: Sequence[str] = (),
               subtract: Sequence[str] = (), top: int = 10, threshold: float | None = None,
               rerank: bool | None = None, files: bool = True, image_vector: np.ndarray | None = None,
               min_match: float | None = None, filters: SearchFilter | None = None,
               like: str | os.PathLike | int | None = None) -> SearchResult:
        """The ``top`` files best matching the query (those scoring at least ``threshold``), best first.

        The query is the normalised sum of its terms: ``query`` (text, or arithmetic on terms), an example
        ``image`` file, ``add`` and ``subtract`` terms, and ``image_vector``, an example image already
        embedded. With re-ranking (``rerank``; see :func:`cliplens.text.reference.reranking_vocabulary`, on by
        default for models that ship a calibration) the best candidates of a text query are ordered by how much
        better the query fits each image than the image's best reference caption does, and the score is that
        margin (0: the query fits as well as the image's own best description). With ``files`` False no term
        is read as a file (queries from clients that must never name the server's files).

        A query of one text gives each hit ``match``, the probability that the image shows that text (see
        :class:`cliplens.text.match.TextMatch`); ``min_match`` keeps only hits whose match is at least that,
        so a query that no image shows has no results (and the result names its ``near_miss``).

        ``filters`` (:class:`~cliplens.index.filters.SearchFilter`: date taken, camera, place, path, kind, words
        written in the photo) narrow the candidates before the vector search, so ``top`` results come back
        whenever that many pass; without any query term they list the photos that pass, newest first. With
        words, each hit carries the text OCR read in it.

        ``like``: an indexed file (its path, or its id as hits give it) whose stored vector is the example
        image, without reading or encoding the file again ("more like this"); the file itself is not a result.
        """
        terms = parse_query(query, files=files) if query else []
        if image is not None:
            if not Path(image).is_file():
                raise UsageError("no such file", value=display_path(image), parameter="image")
            terms.append(QueryTerm(str(image), 1, True))
        terms += [_term(t, 1, files) for t in add] + [_term(t, -1, files) for t in subtract]
        shown = " ".join(filter(None, [query, str(image) if image else None]))
        shown += "".join(f" + {t}" for t in add) + "".join(f" - {t}" for t in subtract)
        alone = not terms and image_vector is None and like is None  # filters alone list the newest first
        allowed = self._allowed(filters, newest_first=alone)
        with_text = filters is not None and filters.text is not None
        exclude = None
        if like is not None:
            exclude, image_vector = self._like(like, image_vector)
            shown = " ".join(filter(None, [f"like {self.path_of(exclude)}", shown]))
        if not terms and image_vector is None and allowed is not None:  # filters alone
            if min_match is not None:
                raise UsageError("a minimum match needs a query of one text", value=min_match, parameter="min_match")
            if top < 1:
                raise UsageError(f"must be at least 1 (got {top})", parameter="top")
            ids = allowed[:top]
            return SearchResult("", self._hits(np.zeros(len(ids), np.float32), ids, np.full(len(ids), np.nan), None,
                                               with_text), "none")
        if image_vector is None:
            vector = self.query_vector(terms)
        else:  # an example image with optional text terms
            total = np.asarray(image_vector, np.float32).reshape(-1)
            if terms:
                total = total + self.query_vector(terms)
            if not np.any(total):
                raise UsageError("the query's terms cancel out", parameter="query")
            vector = l2_normalize(total[None])[0]
        text_only = image_vector is None and not any(t.is_image for t in terms)  # example images: no re-ranking
        one_text = text_only and len(terms) == 1 and terms[0].sign == 1
        if min_match is not None and not one_text:
            raise UsageError("a minimum match needs a query of one text (no example image, no terms added or "
                             "subtracted)", value=min_match, parameter="min_match")
        return self.search_vector(vector, shown.strip(), top=top, threshold=threshold,
                                  rerank=rerank if text_only else False,
                                  match_text=terms[0].text if one_text else None, min_match=min_match,
                                  allowed=allowed, exclude=exclude, with_text=with_text)

    def search_vector(self, vector: np.ndarray, shown: str = "", *, top: int = 10, threshold: float | None = None,
                      rerank: bool | None = None, match_text: str | None = None, min_match: float | None = None,
                      allowed: np.ndarray | None = None, exclude: int | None = None,
                      with_text: bool = False) -> SearchResult:
        """The ``top`` files best matching an already-embedded query (normalised), re-ranked as :meth:`search`
        explains unless ``rerank`` is False (as it should be for image queries). ``match_text``: the query's
        text, whose match each hit gets; ``min_match`` (needs it) keeps the hits matching at least that;
        ``allowed``: the only ids that may be returned (from :meth:`_allowed`); ``exclude``: an id that may not;
        ``with_text``: hits carry the text OCR read in them."""
        if top < 1:
            raise UsageError(f"must be at least 1 (got {top})", parameter="top")
        if min_match is not None and not 0.0 <= min_match <= 1.0:
            raise UsageError(f"must be a probability in [0, 1] (got {min_match})", parameter="min_match")
        reference = None if rerank is False else reranking_vocabulary(self.encoder, rerank)  # no model otherwise
        pool = top if reference is None and min_match is None else max(10 * top, RERANK_POOL)
        scores, ids = self._candidates(vector, pool + (exclude is not None), allowed)
        if exclude is not None:
            scores, ids = scores[ids != exclude], ids[ids != exclude]
        similarities = scores
        if reference is not None and len(ids):
            found, candidates = self.store.vectors(ids)
            best = dict(zip(found.tolist(), reference_best(candidates, reference)))
            keep = np.array([int(i) in best for i in ids])
            similarities, ids = similarities[keep], ids[keep]
            scores = similarities - np.array([best[int(i)] for i in ids], np.float32)
            order = np.argsort(-scores, kind="stable")
            scores, ids, similarities = scores[order], ids[order], similarities[order]
        near_miss = None
        if min_match is not None and len(ids):  # judge the whole pool, so that the top is the best that match
            matches = self._matches(match_text, ids)
            if not (matches >= min_match).any():
                closest = [int(np.argmax(matches))]
                near_miss = self._hits(scores[closest], ids[closest], similarities[closest], matches[closest],
                                       with_text)[0]
            keep = matches >= min_match
            scores, ids, similarities, matches = scores[keep], ids[keep], similarities[keep], matches[keep]
        else:
            matches = self._matches(match_text, ids[:top])
        hits = [h for h in self._hits(scores[:top], ids[:top], similarities[:top],
                                      None if matches is None else matches[:top], with_text)
                if threshold is None or h.score >= threshold]
        return SearchResult(display_path(shown), hits, "similarity" if reference is None else "margin", near_miss)

    def _like(self, like: str | os.PathLike | int, image_vector: np.ndarray | None) -> tuple[int, np.ndarray]:
        """The id of the indexed file ``like`` names and its stored vector (added to ``image_vector``, if any)."""
        if isinstance(like, (int, np.integer)) and not isinstance(like, bool):
            file_id = int(like) if self.path_of(int(like)) is not None else None
        else:
            resolved = Path(like).expanduser().resolve()
            file_id = self.store.id_of(resolved)
            if file_id is None and self.store.kind_of(resolved) is not None:
                raise UsageError("a video holds one vector per scene: give the id of a scene (as search results "
                                 "give it) instead of the file", value=display_path(like), parameter="like")
        found = self.store.vectors([file_id])[1] if file_id is not None else np.zeros((0, 0))
        if not len(found):
            raise UsageError("not in the index (give a file it holds, as search results name it)",
                             value=like if isinstance(like, int) else display_path(like), parameter="like")
        vector = found[0] if image_vector is None else found[0] + np.asarray(image_vector, np.float32).reshape(-1)
        return file_id, vector

    def _allowed(self, filters: SearchFilter | None, newest_first: bool) -> np.ndarray | None:
        """The ids that pass ``filters`` (newest first if asked), or None without filters."""
        if filters is None or not filters.active:
            return None
        return filters.select(self.store, newest_first=newest_first)

    def _candidates(self, vector: np.ndarray, pool: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the ``pool`` best matches among ``allowed`` (all when None), best first: a filter's
        photos are searched among themselves (in the vector index, every stored code checked against them, or
        for a few, exactly from the store), never by filtering the unfiltered top."""
        if allowed is None or len(allowed) > EXACT_FILTERED:
            scores, ids = self.vectors.search(vector[None], min(len(self.vectors), pool), allowed=allowed)
            return scores[0][ids[0] >= 0], ids[0][ids[0] >= 0]
        ids, vectors = self.store.vectors(allowed)  # a narrow filter: exact search among the photos that pass
        scores = vectors @ np.asarray(vector, np.float32)
        order = np.argsort(-scores, kind="stable")[:pool]
        return scores[order].astype(np.float32), ids[order]

    def _matches(self, text: str | None, ids: np.ndarray) -> np.ndarray | None:
        """P(each image shows ``text``), or None without a text."""
        if text is None:
            return None
        found, vectors = self.store.vectors(ids)
        by_id = dict(zip(found.tolist(), TextMatch(self.encoder, text).probability(vectors)))
        return np.array([by_id.get(int(i), 0.0) for i in ids])

    def _hits(self, scores, ids, similarities, matches, with_text: bool = False) -> list[SearchHit]:
        paths = self.store.paths(ids)
        metadata = self.store.metadata(ids)
        moments = self.store.moments(ids)
        texts = self.store.texts(ids) if with_text else {}
        rows = zip(scores, ids, similarities, matches if matches is not None else [None] * len(ids))
        return [SearchHit(paths[int(i)], float(s), int(i), None if np.isnan(c) else float(c),
                          None if m is None else float(m), metadata.get(int(i)), *moments.get(int(i), (None, None)),
                          texts.get(int(i)))
                for s, i, c, m in rows if int(i) in paths]

    def dedupe(self, threshold: float = 0.95, neighbours: int = 10) -> list[DuplicateGroup]:
        """Groups of near-duplicates in which *every* pair of files has similarity ≥ ``threshold`` (complete
        linkage: a chain of look-alikes is not one group), with the group's true least similarity. Two scenes of
        one video are never duplicates of each other (a scene can be one of a photo or of another video's).

        Candidates come from each file's ``neighbours`` nearest files; groups are formed within each set of
        linked candidates from their exact pairwise similarities."""
        if not 0 < threshold <= 1:
            raise UsageError(f"must be in (0, 1] (got {threshold})", parameter="threshold")
        ids, vectors = self.store.vectors()
        if len(ids) < 2:
            return []
        scores, found = self.vectors.search(vectors, min(neighbours + 1, len(ids)))
        position = {int(i): n for n, i in enumerate(ids)}
        parents = self.store.parents()
        video = np.array([parents.get(int(i), -1) for i in ids], np.int64)  # each row's video (-1: a photo)
        links = [(row, position[int(other)]) for row in range(len(ids)) for score, other in zip(scores[row], found[row])
                 if other >= 0 and int(other) in position and position[int(other)] != row and score >= threshold
                 and (video[row] < 0 or video[row] != video[position[int(other)]])]
        groups = []
        for component in _components(len(ids), links):
            for rows in complete_linkage(vectors[component], threshold, apart=video[component]):
                members = [component[r] for r in rows]
                sims = vectors[members] @ vectors[members].T
                lowest = float(sims[np.triu_indices(len(members), 1)].min())
                member_ids = [int(ids[m]) for m in members]
                paths, moments = self.store.paths(member_ids), self.store.moments(member_ids)
                named = sorted((paths[i], moments.get(i, (None,))[0]) for i in member_ids)
                groups.append(DuplicateGroup([p for p, _ in named], lowest, [t for _, t in named]))
        return sorted(groups, key=lambda g: (-len(g.paths), g.paths[0]))

    def close(self) -> None:
        self.store.close()


def _components(count: int, links: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The connected sets of more than one row under ``links`` (union-find)."""
    parent = list(range(count))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[root(a)] = root(b)
    members: dict[int, list[int]] = {}
    for row in range(count):
        members.setdefault(root(row), []).append(row)
    return [group for group in members.values() if len(group) > 1]


def complete_linkage(vectors: np.ndarray, threshold: float, apart: np.ndarray | None = None) -> list[list[int]]:
    """Groups of two or more rows of ``vectors`` in which every pair has cosine ≥ ``threshold``; rows with the
    same non-negative label in ``apart`` are never in one group.

    Up to :data:`EXACT_LINKAGE_UP_TO` rows: agglomerative complete linkage (the two groups whose least similar
    pair is the most similar merge first, while it clears the threshold). Past it: greedy cliques (each row in
    turn, by its number of look-alikes, takes those that clear the threshold with every member so far).
    """
    sims = np.asarray(vectors, np.float32) @ np.asarray(vectors, np.float32).T
    if apart is not None:
        apart = np.asarray(apart)
        sims[(apart[:, None] == apart[None, :]) & (apart[:, None] >= 0)] = -2.0  # below any threshold
    n = len(sims)
    if n > EXACT_LINKAGE_UP_TO:
        return _greedy_cliques(sims, threshold)
    linkage = sims.astype(np.float64)
    np.fill_diagonal(linkage, -np.inf)
    members = {i: [i] for i in range(n)}
    while len(members) > 1:
        flat = int(np.argmax(linkage))
        a, b = divmod(flat, n)
        if linkage[a, b] < threshold:
            break
        members[a] += members.pop(b)
        linkage[a, :] = np.minimum(linkage[a, :], linkage[b, :])  # complete linkage: the least similar pair
        linkage[:, a] = linkage[a, :]
        linkage[a, a] = -np.inf
        linkage[b, :] = -np.inf
        linkage[:, b] = -np.inf
    return [sorted(group) for group in members.values() if len(group) > 1]


def _greedy_cliques(sims: np.ndarray, threshold: float) -> list[list[int]]:
    close = sims >= threshold
    np.fill_diagonal(close, False)
    unassigned = np.ones(len(sims), bool)
    groups = []
    for seed in np.argsort(-close.sum(axis=1), kind="stable"):
        if not unassigned[seed]:
            continue
        group = [int(seed)]
        unassigned[seed] = False
        for other in np.argsort(-sims[seed], kind="stable"):
            if unassigned[other] and close[other, group].all():
                group.append(int(other))
                unassigned[other] = False
        if len(group) > 1:
            groups.append(sorted(group))
    return groups
