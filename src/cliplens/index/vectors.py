"""The FAISS index beside an index's SQLite store: one L2-normalised float32 vector per image, found by
inner product (cosine), under the image's int64 row id.

SQLite stays the source of truth; this index is derived from it and can always be rebuilt.
:func:`choose_spec` picks the kind of index for a collection's size and memory budget, as autofaiss
does; :class:`VectorIndex` builds it (training on a sample and tuning its search parameters for
recall), updates it in place as images come and go, searches it, and saves it atomically.

Kinds, measured on this machine (2 cores; 1M × 512 clustered vectors from
``cliplens.bench.search.clustered_vectors``, whose 10 nearest neighbours lie within 0.05 of cosine
of each other; single queries; recall@10 against exact search; MB = 2^20 bytes):

==============================  =======  ======  ==========================================
index                           build    memory  recall@10, p50 of one query
==============================  =======  ======  ==========================================
Flat (exact)                    ~1 s     1,961   1.00, 190–200 ms (IndexFlatIP, or numpy
                                                 matmul + argpartition)
IVF4096,SQ8                     107 s    504     0.93, 4.0 ms (nprobe 256);
                                                 0.97, 7.8 ms (nprobe 512)
HNSW32,SQ8 (cannot delete)      205 s    ~760    0.90, 1.7 ms (efSearch 256)
IVF2048,PQ128x4fs,Refine(SQ8)   45 s     569     0.96, 1.7 ms as build() tunes it (nprobe
                                                 256, k_factor 64; build includes training on
                                                 102k vectors and tuning)
==============================  =======  ======  ==========================================

So above ``exact_below`` vectors cliplens uses an IVF whose first stage scans 4-bit PQ codes with
SIMD (fast scan) and whose candidates are re-ranked with 8-bit codes of the whole vector: the
fastest to build and to search of the kinds that meet the recall target within 1 GB.

A search restricted to some ids (``allowed``: the photos a filter keeps) cannot trust the
approximate first stage, whose probed lists may hold none of them. Kinds that keep a code of every
whole vector beside their first stage (the Refine's 8-bit codes, HNSW's storage, flat vectors) score
exactly those codes of the allowed rows: the rows are found through an id-to-position table, their
codes gathered into a small index of the same kind, and that searched (1% of 1M × 512 in a few
milliseconds; see ``cliplens bench search --filter-fraction``). IVF kinds without such codes scan
every list, checking each row against the allowed set before scoring it (a FAISS ``IDSelector``).
Either way a filter's own best matches are found, whatever its share of the collection.
"""

from __future__ import annotations

import json
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UsageError
from ..files import atomic_path, atomic_write_json

EXACT_BELOW = 100_000  # below this many vectors exact search is fast enough (≈ 20 ms a query at 100k × 512)
TARGET_RECALL = 0.95  # recall@10 against exact search that tuning guarantees on its sample ...
TUNE_MARGIN = 0.01  # ... plus this margin, so that queries from outside the index stay above the target
TUNE_QUERIES = 400  # vectors of the collection used as queries when tuning
TUNE_K = 10
TRAIN_PER_LIST = 50  # training vectors per IVF list (FAISS asks for at least 39)
K_FACTOR = 64  # candidates per result re-ranked with the 8-bit codes (k = 10: the best 640)
TOMBSTONE_LIMIT = 0.2  # a rebuild is worth it when more than this share of stored vectors are dead
GROWTH_LIMIT = 4.0  # ... or when the collection is this many times what the IVF was trained for
ADD_CHUNK = 65_536
SINGLE_THREAD_BELOW = 16  # searches of fewer queries run on one thread (see _threads)

StatusFn = Callable[[str], None]

_IVF = re.compile(r"^IVF(\d+),")


class StaleIndexError(UsageError):
    """A saved vector index cannot be used as it is (missing, damaged, out of step): rebuild it."""


def _require_faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is installed with the index extra
        raise UsageError("the photo index needs FAISS: pip install faiss-cpu") from None
    return faiss


@contextmanager
def _threads(count: int | None):
    """Run FAISS on ``count`` OpenMP threads (this thread's setting only; None: leave it).

    A few queries gain nothing from FAISS's threads, which parallelise over queries, and lose much
    when another process holds the cores: each parallel region then waits for a descheduled thread
    (measured on 2 busy cores: a 20k build 12 s against 1 s, single queries 16 ms against 0.2 ms).
    """
    if count is None:
        yield
        return
    faiss = _require_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest 2·√n, with ≥ TRAIN_PER_LIST vectors per list."""
    ideal = 2 ** round(math.log2(max(2 * math.sqrt(max(n, 1)), 1)))
    cap = 2 ** int(math.log2(max(n // TRAIN_PER_LIST, 1)))
    return max(1, min(ideal, cap))


def _pq_m(dim: int, per: int) -> int:
    """Sub-quantizers for a PQ over ``dim``: the largest divisor of ``dim`` that is at most dim / per."""
    for m in range(max(dim // per, 1), 0, -1):
        if dim % m == 0:
            return m
    return 1


def approximate_specs(n: int, dim: int) -> list[str]:
    """The approximate kinds for ``n`` vectors, most accurate (and largest) first."""
    nlist = _nlist(n)
    m4, m8 = _pq_m(dim, 4), _pq_m(dim, 8)
    return [f"IVF{nlist},PQ{m4}x4fs,Refine(SQ8)", f"IVF{nlist},PQ{m4}x4fs,Refine(SQ6)",
            f"IVF{nlist},PQ{m4}x4fs,Refine(SQ4)", f"IVF{nlist},PQ{m4}x4fs", f"IVF{nlist},PQ{m8}x4fs"]


def estimate_bytes(spec: str, n: int, dim: int) -> int:
    """Memory of ``n`` vectors of ``dim`` in an index of kind ``spec`` (the kinds :func:`choose_spec` picks)."""
    per_vector, fixed = 8, 0  # every kind keeps an int64 id per vector ...
    parts = spec.split(",")
    if "Refine(" in spec or len(parts) > 1 and parts[1].endswith("fs"):
        per_vector += 8  # ... and these keep an IDMap too (see VectorIndex)
    if spec == "Flat":
        return n * (4 * dim + 8)
    match = _IVF.match(spec)
    if not match:
        raise UsageError(f"cannot estimate the memory of a {spec!r} index")
    nlist = int(match.group(1))
    fixed += nlist * dim * 4  # the coarse quantizer's centroids
    for part in parts[1:]:
        refine = re.fullmatch(r"Refine\((\w+)\)", part)
        code = refine.group(1) if refine else part
        if pq := re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs)?", code):
            m, bits = int(pq.group(1)), int(pq.group(2) or 8)
            per_vector += math.ceil(m * bits / 8)
            fixed += dim * (2 ** bits) * 4  # PQ centroids
            if pq.group(3):
                fixed += nlist * 16 * math.ceil(m * bits / 8)  # fast scan stores blocks of 32: half a block a list
        elif sq := re.fullmatch(r"SQ(\d+)", code):
            per_vector += math.ceil(dim * int(sq.group(1)) / 8)
        elif code == "SQfp16":
            per_vector += 2 * dim
        elif code == "Flat":
            per_vector += 4 * dim
        else:
            raise UsageError(f"cannot estimate the memory of a {spec!r} index")
    return n * per_vector + fixed


def choose_spec(n: int, dim: int, *, memory_budget_mb: float | None = None, exact_below: int = EXACT_BELOW) -> str:
    """The kind of FAISS index cliplens uses for ``n`` vectors of ``dim`` dimensions (inner product).

    The rule, as autofaiss chooses by size and memory:

    - fewer than ``exact_below`` vectors, and their float32 copy fits the budget: ``"Flat"``, exact
      search (at 100k × 512 a query costs about 20 ms and there is nothing to train or tune);
    - otherwise an IVF with 2·√n lists (a power of two, at least 50 vectors per list for training)
      and, of these code sizes, the most accurate that fits ``memory_budget_mb``:

      1. ``IVF…,PQ{d/4}x4fs,Refine(SQ8)``: a 4-bit PQ scanned with SIMD ("fast scan") picks
         candidates that are re-ranked with 8-bit codes of the whole vector: d/8 + d + 16 bytes a
         vector, 569 MB at 1M × 512;
      2. the same re-ranked with 6-bit codes (d/8 + 3d/4 + 16 bytes);
      3. ... with 4-bit codes (d/8 + d/2 + 16 bytes);
      4. the 4-bit PQ alone (d/8 + 16 bytes);
      5. a 4-bit PQ half that size (d/16 + 16 bytes).

      Smaller codes lose recall that no search setting buys back. Recall@10 at 200k × 512
      (IVF1024, nprobe 256, re-ranking the best 640): 0.98, 0.95, 0.84, 0.49, 0.29. The recall a
      build reached is :attr:`VectorIndex.recall`.

    No budget means no limit, and kind 1. It beats the other kinds that fit 1 GB at 1M × 512 (see
    the module's table): IVF with 8-bit codes alone needs ~8 ms a query for recall 0.97, and HNSW
    takes ~3.5 min to build, cannot delete vectors and reached 0.90 at 1.7 ms. Budgets are in MB of
    2^20 bytes, as :meth:`VectorIndex.memory_bytes` counts them.
    Raises :class:`UsageError` if even the smallest kind does not fit the budget.
    """
    if n < 0 or dim < 1:
        raise UsageError(f"choose_spec: need n ≥ 0 and dim ≥ 1, got n={n}, dim={dim}")
    budget = None if memory_budget_mb is None else memory_budget_mb * 2**20
    if n < exact_below and (budget is None or estimate_bytes("Flat", n, dim) <= budget):
        return "Flat"
    specs = approximate_specs(n, dim)
    for spec in specs:
        if budget is None or estimate_bytes(spec, n, dim) <= budget:
            return spec
    smallest = estimate_bytes(specs[-1], n, dim) / 2**20
    raise UsageError(f"a memory budget of {memory_budget_mb:g} MB cannot hold {n} vectors of {dim} dimensions "
                     f"(the smallest index needs {smallest:.0f} MB)", parameter="memory_budget_mb")


def _as_vectors(vectors, dim: int, what: str) -> np.ndarray:
    array = np.asarray(vectors)
    if array.size == 0 and array.ndim <= 2:  # no vectors, whatever shape an empty query gave them
        return np.zeros((0, dim), np.float32)
    if array.ndim == 1 and array.size == dim:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise UsageError(f"{what}: expected shape (n, {dim}), got {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number):
        raise UsageError(f"{what}: expected numbers, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise UsageError(f"{what}: contains NaN or infinite values")
    return array


def _as_ids(ids, n: int, what: str) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1 or array.shape[0] != n:
        raise UsageError(f"{what}: expected {n} ids, got shape {tuple(array.shape)}")
    if n and not np.issubdtype(array.dtype, np.integer):
        raise UsageError(f"{what}: ids must be integers, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    if n and array.min() < 0:
        raise UsageError(f"{what}: ids must be ≥ 0")
    if len(np.unique(array)) != n:
        raise UsageError(f"{what}: the same id appears twice")
    return array


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, row numbers) of the ``k`` largest inner products of each query, best first (a matmul in
    chunks of ~32M scores, so that 400 queries over 1M vectors need ~0.5 GB at a time, not 5)."""
    k = min(k, len(vectors))
    chunk = int(np.clip(2**25 // max(len(queries), 1), 4_096, 1 << 20))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        kk = min(k, scores.shape[1])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` found in the same row of ``found`` (ids of -1 never count)."""
    hits = sum(len(np.intersect1d(f[f >= 0], t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(sum(int((t >= 0).sum()) for t in truth), 1)


class VectorIndex:
    """A FAISS index of int64 ids, searched by inner product, updated in place.

    Flat and IVF with plain codes delete vectors. The other kinds keep *tombstones*, the internal
    labels of dead vectors, which every search filters out: HNSW and ``Refine`` cannot delete, and
    IVF fast-scan lists can, but in FAISS 1.15 vectors added after a deletion are then lost from
    them (seen here: 92 of 200 new vectors not found after 300 deletions). Their ids live in an
    IDMap beside the inner index, so an id can come back with a new vector. :attr:`needs_rebuild`
    says when a rebuild from the store is worth it.
    """

    def __init__(self, index, spec: str, dim: int, *, params: dict | None = None, dead: np.ndarray | None = None,
                 recall: float | None = None, built_for: int = 0, info: dict | None = None):
        self._spec = spec
        self._dim = dim
        self.info: dict = dict(info or {})  # the caller's own notes, saved with the index (e.g. a generation)
        self._attach(index, params=params, dead=dead, recall=recall, built_for=built_for)

    def _attach(self, index, *, params: dict | None = None, dead: np.ndarray | None = None,
                recall: float | None = None, built_for: int = 0) -> None:
        faiss = _require_faiss()
        self._index = index
        self.params: dict = dict(params or {})  # tuned search parameters: nprobe, k_factor, efSearch
        self.recall = recall  # recall@10 measured when the parameters were tuned (None: not tuned)
        self.built_for = built_for  # how many vectors the index was built (and trained) for
        self._dead = np.zeros(0, np.int64) if dead is None else np.unique(np.asarray(dead, np.int64))
        self._selector = None
        self._positions: np.ndarray | None = None  # external id -> internal label (-1: none), made when needed
        # IVF kinds keep the ids in their lists; the others sit in an IDMap that keeps them beside
        self._idmap = index if isinstance(index, faiss.IndexIDMap) else None
        self._inner = faiss.downcast_index(index.index) if self._idmap is not None else index
        self._refine = self._inner if isinstance(self._inner, faiss.IndexRefine) else None
        first_stage = faiss.downcast_index(self._refine.base_index) if self._refine is not None else self._inner
        self._ivf = faiss.try_extract_index_ivf(first_stage)
        self._hnsw = self._inner if isinstance(self._inner, faiss.IndexHNSW) else None
        # Flat and IVF delete vectors; Refine and HNSW cannot, and keep tombstones instead
        self._removable = self._refine is None and (
            self._idmap is None and self._ivf is not None or isinstance(self._inner, faiss.IndexFlatCodes))

    # --- making ----------------------------------------------------------------------------------

    @staticmethod
    def _new_faiss(spec: str, dim: int):
        faiss = _require_faiss()
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise UsageError(f"dimension must be a positive integer, got {dim!r}")
        if not isinstance(spec, str) or not spec or spec.startswith("IDMap"):
            raise UsageError(f"{spec!r} is not a FAISS index kind cliplens can build")
        try:
            index = faiss.index_factory(int(dim), spec, faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is None or isinstance(index, faiss.IndexRefine) or isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):
                index = faiss.index_factory(int(dim), "IDMap," + spec, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown"
            raise UsageError(f"{spec!r} is not a FAISS index kind cliplens can build: {reason}") from None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.cp.min_points_per_centroid = 1  # build() sizes the training sample: no FAISS warnings
        return index

    @classmethod
    def create(cls, spec: str, dim: int) -> VectorIndex:
        """An empty index of kind ``spec`` (a FAISS factory string such as ``choose_spec`` returns)."""
        return cls(cls._new_faiss(spec, dim), spec, int(dim))

    def build(self, vectors, ids, *, on_status: StatusFn | None = None, seed: int = 0) -> VectorIndex:
        """Fill the index with ``vectors`` (n × dim float32, L2-normalised) under ``ids`` from scratch:
        train on a sample when the kind needs it, add, and tune the search parameters for recall.
        ``on_status`` gets a line for each step. Returns the index."""
        vectors = _as_vectors(vectors, self._dim, "build: vectors")
        ids = _as_ids(ids, len(vectors), "build: ids")
        status = on_status or (lambda message: None)
        self._attach(self._new_faiss(self._spec, self._dim))
        if not self._index.is_trained:
            lists = self._ivf.nlist if self._ivf is not None else 1
            if len(vectors) < lists:
                raise UsageError(f"build: a {self._spec} index needs at least {lists} vectors, got {len(vectors)}")
            size = min(len(vectors), max(TRAIN_PER_LIST * lists, 10_000))
            rng = np.random.default_rng(seed)
            sample = vectors[np.sort(rng.choice(len(vectors), size, replace=False))] if size < len(vectors) else vectors
            status(f"training {self._spec} on {len(sample):,} vectors")
            self._index.train(sample)
        for start in range(0, len(vectors), ADD_CHUNK):
            status(f"adding vectors: {start:,} of {len(vectors):,}")
            self._add(vectors[start : start + ADD_CHUNK], ids[start : start + ADD_CHUNK])
        self.built_for = len(vectors)
        self.tune(vectors, ids, on_status=status, seed=seed)
        return self

    # --- tuning ----------------------------------------------------------------------------------

    def _knob(self) -> str | None:
        return "nprobe" if self._ivf is not None else "efSearch" if self._hnsw is not None else None

    def _knob_range(self) -> tuple[int, int]:
        if self._ivf is not None:
            return 1, int(self._ivf.nlist)
        return 16, 2048

    def tune(self, vectors, ids, *, target: float = TARGET_RECALL, on_status: StatusFn | None = None,
             seed: int = 0) -> float:
        """Set the search parameter (nprobe or efSearch) to the smallest value whose recall@10 against exact
        search reaches ``target`` + margin, on a sample of ``vectors`` (with ``ids``, the indexed ones) as
        queries, each query's own vector left out of the answers. Returns the recall reached."""
        vectors = _as_vectors(vectors, self._dim, "tune: vectors")
        ids = _as_ids(ids, len(vectors), "tune: ids")
        knob = self._knob()
        if self._refine is not None:
            self.params["k_factor"] = K_FACTOR
        if knob is None or len(vectors) < 2:
            self.recall = 1.0 if knob is None else None
            return self.recall
        status = on_status or (lambda message: None)
        rng = np.random.default_rng(seed + 1)
        rows = rng.choice(len(vectors), min(TUNE_QUERIES, len(vectors)), replace=False)
        queries = vectors[rows]
        k = min(TUNE_K, len(vectors) - 1)
        status(f"exact neighbours of {len(rows)} sample queries")
        _, truth = exact_top_k(vectors, queries, k + 1)
        truth = ids[_drop_self(truth, rows, k)]

        def measure(value: int) -> float:
            self.params[knob] = value
            _, found = self.search(queries, k + 1)
            return recall_at(_drop_self(found, ids[rows], k), truth)

        low, high = self._knob_range()
        goal = min(target + TUNE_MARGIN, 1.0)
        tried: dict[int, float] = {}
        value = low
        while True:
            status(f"tuning {knob}: {value}")
            tried[value] = measure(value)
            if tried[value] >= goal or value >= high:
                break
            value = min(value * 2, high)
        if tried[value] >= goal:
            fail = max([v for v, r in tried.items() if r < goal], default=None)
            passing = value
            while fail is not None and passing - fail > max(1, passing // 8):  # bisect to within 1/8
                middle = (fail + passing) // 2
                status(f"tuning {knob}: {middle}")
                tried[middle] = measure(middle)
                fail, passing = (fail, middle) if tried[middle] >= goal else (middle, passing)
            value = passing
        else:  # the codes cap recall below the goal: the smallest value within 0.005 of the best
            best = max(tried.values())
            value = min(v for v, r in tried.items() if r >= best - 0.005)
        self.params[knob] = value
        self.recall = tried[value]
        return self.recall

    # --- updating --------------------------------------------------------------------------------

    def _internal_ids(self) -> np.ndarray:
        """The ids the IDMap keeps, by internal label (a view, valid until the next add)."""
        faiss = _require_faiss()
        n = self._idmap.id_map.size()
        if n == 0:
            return np.zeros(0, np.int64)
        return faiss.rev_swig_ptr(self._idmap.id_map.data(), n).view(np.int64)

    def _live_labels(self, ids: np.ndarray) -> np.ndarray:
        labels = np.flatnonzero(np.isin(self._internal_ids(), ids))
        return labels[~np.isin(labels, self._dead)]

    def add(self, vectors, ids) -> None:
        """Add ``vectors`` under ``ids`` without a rebuild; an id already present gets its new vector."""
        vectors = _as_vectors(vectors, self._dim, "add: vectors")
        ids = _as_ids(ids, len(vectors), "add: ids")
        if not len(ids):
            return
        if not self._index.is_trained:
            raise UsageError(f"add: this {self._spec} index has not been built; call build() first")
        self.remove(ids)
        for start in range(0, len(vectors), ADD_CHUNK):
            self._add(vectors[start : start + ADD_CHUNK], ids[start : start + ADD_CHUNK])

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        # inner indexes of an IDMap never delete, so the labels they give new vectors (their count so
        # far) are the positions of the ids in the IDMap
        self._index.add_with_ids(vectors, ids)
        self._positions = None

    def remove(self, ids) -> int:
        """Remove the vectors of ``ids`` (ids not present are ignored) without a rebuild; returns how many."""
        array = np.asarray(ids)
        ids = _as_ids(np.unique(array), len(np.unique(array)), "remove: ids") if array.size else np.zeros(0, np.int64)
        if not len(ids) or self._index.ntotal == 0:
            return 0
        self._positions = None
        if self._removable:
            return int(self._index.remove_ids(ids))
        labels = self._live_labels(ids)
        if len(labels):
            self._dead = np.union1d(self._dead, labels)
            self._selector = None
        return len(labels)

    # --- searching -------------------------------------------------------------------------------

    def _search_params(self):
        faiss = _require_faiss()
        selector = None
        if len(self._dead):
            if self._selector is None:
                batch = faiss.IDSelectorBatch(self._dead)
                self._selector = (faiss.IDSelectorNot(batch), batch)  # keep the batch alive with its wrapper
            selector = self._selector[0]
        if self._ivf is not None:
            ivf_params = faiss.SearchParametersIVF(nprobe=int(self.params.get("nprobe", 1)), sel=selector)
            if self._refine is not None:
                return faiss.IndexRefineSearchParameters(k_factor=float(self.params.get("k_factor", K_FACTOR)),
                                                         base_index_params=ivf_params), ivf_params
            return ivf_params, None
        if self._hnsw is not None:
            return faiss.SearchParametersHNSW(efSearch=int(self.params.get("efSearch", 64)), sel=selector), None
        return (faiss.SearchParameters(sel=selector) if selector is not None else None), None

    def _restricted(self, allowed: np.ndarray):
        """(index to search, its parameters, whether its labels are internal, objects to keep alive) for a search
        among ``allowed`` ids only: every stored code scanned, each row checked against the set first."""
        faiss = _require_faiss()
        batch = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
        keep: list = [batch]
        exhaustive = self._refine.refine_index if self._refine is not None else \
            self._hnsw.storage if self._hnsw is not None else None
        if self._idmap is not None:  # the codes scanned are under internal labels: translate, drop the dead
            selector = faiss.IDSelectorTranslated(self._idmap.id_map, batch)
            keep.append(selector)
            if len(self._dead):
                dead = faiss.IDSelectorBatch(self._dead)
                alive = faiss.IDSelectorNot(dead)
                selector = faiss.IDSelectorAnd(selector, alive)
                keep += [dead, alive, selector]
            target = faiss.downcast_index(exhaustive) if exhaustive is not None else self._inner
            return target, faiss.SearchParameters(sel=selector), True, keep
        if self._ivf is not None:  # ids live in the lists: probe them all
            return self._index, faiss.SearchParametersIVF(nprobe=int(self._ivf.nlist), sel=batch), False, keep
        return self._index, faiss.SearchParameters(sel=batch), False, keep

    def _whole_codes(self):
        """The flat index of whole-vector codes under internal labels (Refine's, HNSW's storage, or the flat
        index itself) when it is one a small copy can be made of, else None."""
        faiss = _require_faiss()
        if self._idmap is None:
            return None
        codes = self._refine.refine_index if self._refine is not None else \
            self._hnsw.storage if self._hnsw is not None else self._inner
        codes = faiss.downcast_index(codes)
        return codes if isinstance(codes, (faiss.IndexScalarQuantizer, faiss.IndexFlat)) else None

    def _labels(self, ids: np.ndarray) -> np.ndarray:
        """The internal labels of the live ``ids`` (those not stored, or dead, left out)."""
        if self._positions is None:
            stored = self._internal_ids()
            table = np.full(int(stored.max(initial=-1)) + 1, -1, np.int64)
            table[stored] = np.arange(len(stored), dtype=np.int64)
            self._positions = table
        ids = ids[(ids >= 0) & (ids < len(self._positions))]
        labels = self._positions[ids]
        labels = labels[labels >= 0]
        return labels[~np.isin(labels, self._dead)] if len(self._dead) else labels

    def _subset_search(self, codes, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of the allowed rows' whole-vector codes: copied into a small index of the same kind."""
        faiss = _require_faiss()
        labels = np.sort(self._labels(allowed))
        if isinstance(codes, faiss.IndexScalarQuantizer):
            small = faiss.IndexScalarQuantizer(codes.d, codes.sq.qtype, codes.metric_type)
            small.sq = codes.sq
            small.is_trained = True
        else:
            small = faiss.IndexFlat(codes.d, codes.metric_type)
        if len(labels):
            stored = faiss.rev_swig_ptr(codes.codes.data(), codes.ntotal * codes.code_size)
            small.add_sa_codes(np.take(stored.reshape(codes.ntotal, codes.code_size), labels, axis=0))
        with _threads(1 if len(queries) < SINGLE_THREAD_BELOW else None):
            scores, found = small.search(queries, k)
        ids = np.where(found >= 0, self._internal_ids()[labels[np.maximum(found, 0)]] if len(labels) else -1, -1)
        return scores, ids

    def search(self, queries, k: int, *, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float32, ids (Q, k) int64) of the ``k`` best matches of each query, best first;
        rows with fewer than ``k`` matches end in id -1 with score -inf. ``allowed``: the only ids that may be
        found (see the module's docstring)."""
        queries = _as_vectors(queries, self._dim, "search: queries")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f"search: k must be a positive integer, got {k!r}")
        k = int(k)
        if self._index.ntotal == 0 or not len(queries) or (allowed is not None and not len(allowed)):
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        if allowed is not None and (codes := self._whole_codes()) is not None:
            scores, ids = self._subset_search(codes, queries, k, np.asarray(allowed, np.int64))
            scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32, copy=False)
            return scores, ids.astype(np.int64, copy=False)
        if allowed is not None:
            target, params, internal, keep = self._restricted(np.asarray(allowed, np.int64))
            with _threads(1 if len(queries) < SINGLE_THREAD_BELOW else None):
                scores, ids = target.search(queries, k, params=params)
            if internal:
                ids = np.where(ids >= 0, self._internal_ids()[np.maximum(ids, 0)], -1)
            del keep
            scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32, copy=False)
            return scores, ids.astype(np.int64, copy=False)
        params, keep = self._search_params()
        with _threads(1 if len(queries) < SINGLE_THREAD_BELOW else None):
            if self._idmap is not None and not self._removable:  # filter internal labels, then translate
                scores, labels = self._inner.search(queries, k, params=params)
                ids = np.where(labels >= 0, self._internal_ids()[np.maximum(labels, 0)], -1)
            else:
                scores, ids = self._index.search(queries, k, params=params)
        del keep
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32, copy=False)
        return scores, ids.astype(np.int64, copy=False)

    # --- state -----------------------------------------------------------------------------------

    @property
    def spec(self) -> str:
        return self._spec

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def tombstones(self) -> int:
        """Dead vectors still stored (kinds that cannot delete)."""
        return len(self._dead)

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._dead)

    @property
    def rebuild_reason(self) -> str | None:
        """Why a rebuild from the store would be worth it now, or None; see :attr:`needs_rebuild`."""
        stored = int(self._index.ntotal)
        if stored and len(self._dead) > TOMBSTONE_LIMIT * stored:
            return f"{len(self._dead):,} of {stored:,} stored vectors are removed ones"
        grown = len(self) > GROWTH_LIMIT * max(self.built_for, 1)
        if self._spec == "Flat":
            if len(self) >= EXACT_BELOW and (self.built_for < EXACT_BELOW or grown):
                return f"{len(self):,} vectors are many for exact search"
        elif grown:
            return f"the index was built for {self.built_for:,} vectors and holds {len(self):,}"
        return None

    @property
    def needs_rebuild(self) -> bool:
        """Whether rebuilding from the store (``choose_spec`` for the current size, then ``build``) is worth
        it: more than 20% of the stored vectors are tombstones; an approximate index holds more than 4× the
        vectors it was trained and tuned for; or a Flat index has reached ``EXACT_BELOW`` vectors (having
        been built for fewer, or grown 4× since)."""
        return self.rebuild_reason is not None

    def memory_bytes(self) -> int:
        """Bytes the index holds in memory: codes, ids, centroids and graph (not FAISS's small buffers)."""
        faiss = _require_faiss()
        total = 8 * (self._idmap.id_map.size() if self._idmap is not None else 0) + 8 * len(self._dead)
        stages = [self._refine.base_index, self._refine.refine_index] if self._refine is not None else [self._inner]
        for stage in stages:
            stage = faiss.downcast_index(stage)
            ivf = faiss.try_extract_index_ivf(stage)
            if ivf is not None:
                lists = ivf.invlists
                bbs = getattr(ivf, "bbs", 0)  # fast scan stores codes in blocks of bbs vectors
                for i in range(ivf.nlist):
                    size = lists.list_size(i)
                    stored = -(-size // bbs) * bbs if bbs else size
                    total += stored * ivf.code_size + size * 8
                total += ivf.nlist * self._dim * 4
                pq = getattr(ivf, "pq", None)
                if pq is not None:
                    total += pq.M * pq.ksub * pq.dsub * 4
            elif isinstance(stage, faiss.IndexFlatCodes):
                total += stage.ntotal * stage.code_size
            elif "HNSW" in type(stage).__name__:
                total += stage.storage.ntotal * stage.storage.sa_code_size() + stage.hnsw.neighbors.size() * 4
                total += stage.hnsw.offsets.size() * 8 + stage.hnsw.levels.size() * 4
            else:
                total += faiss.serialize_index(stage).nbytes
        return int(total)

    # --- saving ----------------------------------------------------------------------------------

    @staticmethod
    def meta_path(path: Path) -> Path:
        """The JSON file saved beside a FAISS file (kind, parameters, tombstones)."""
        return path.with_name(path.name + ".json")

    def save(self, path: str | os.PathLike) -> None:
        """Write the FAISS file at ``path`` and ``path``.json beside it (kind, tuned parameters,
        tombstones, sizes), each to a temporary file first and renamed, the JSON last."""
        faiss = _require_faiss()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:  # opened by Python: FAISS takes file names as UTF-8 only
                faiss.write_index(self._index, faiss.PyCallbackIOWriter(fh.write))
            meta = {"format": 1, "spec": self._spec, "dim": self._dim, "params": self.params, "recall": self.recall,
                    "built_for": self.built_for, "stored": int(self._index.ntotal), "faiss_bytes": tmp.stat().st_size,
                    "tombstones": self._dead.tolist(), "info": self.info}
        atomic_write_json(self.meta_path(path), meta, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VectorIndex:
        """An index saved with :meth:`save`; raises :class:`StaleIndexError` when it cannot be used."""
        faiss = _require_faiss()
        path = Path(path)
        try:
            meta = json.loads(cls.meta_path(path).read_text())
            size = path.stat().st_size
        except (OSError, ValueError) as exc:
            raise StaleIndexError(f"{path}: no usable vector index here ({type(exc).__name__}); rebuild it") from None
        if meta.get("format") != 1 or size != meta.get("faiss_bytes"):
            raise StaleIndexError(f"{path}: the FAISS file and {cls.meta_path(path).name} do not match; rebuild it")
        try:
            with open(path, "rb") as fh:  # opened by Python: a folder named in bytes that are not UTF-8 works
                index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        except (OSError, RuntimeError):
            raise StaleIndexError(f"{path}: FAISS cannot read this file; rebuild it") from None
        if index.ntotal != meta["stored"] or index.d != meta["dim"]:
            raise StaleIndexError(f"{path}: the FAISS file and {cls.meta_path(path).name} do not match; rebuild it")
        return cls(index, meta["spec"], int(meta["dim"]), params=meta["params"], dead=np.asarray(meta["tombstones"], np.int64),
                   recall=meta["recall"], built_for=int(meta["built_for"]), info=meta.get("info"))


def _drop_self(found: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` columns of each row of ``found`` other than the row's own entry ``own[row]``."""
    rows = []
    for row, me in zip(found, own):
        rest = row[row != me]
        rows.append(rest[:k] if len(rest) >= k else np.concatenate([rest, np.full(k - len(rest), -1, row.dtype)]))
    return np.stack(rows)
