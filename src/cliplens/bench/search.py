"""Photo search speed: the vector index cliplens chooses against numpy brute force (what rclip does),
on synthetic CLIP-like vectors, one query at a time as a user's searches arrive.

The vectors are clustered the way photo embeddings are, with neighbourhoods that run on across
clusters rather than well-separated blobs (which any IVF finds trivially): 50 topics, each a
random 64-dimensional subspace of 256 shared directions; 20 cluster centres per topic around a
topic centre, clusters of Pareto-distributed sizes; each vector is its cluster's centre plus a
Gaussian in its topic's subspace plus isotropic noise, L2-normalised. At 1M × 512 a query's 10
nearest neighbours lie between cosine ≈ 0.70 and ≈ 0.65, 0.002 apart on average, and an
``IVF4096,SQ8`` needs nprobe 512 for recall@10 0.97. Queries are drawn from the same distribution
and are not in the index.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..index.vectors import EXACT_BELOW, VectorIndex, choose_spec, exact_top_k, recall_at

K = 10
WARMUP_QUERIES = 5
BRUTEFORCE_QUERIES = 20  # ≈ 200 ms each at 1M × 512: enough for a steady rate

StatusFn = Callable[[str], None]


@dataclass
class SearchBench:
    """Figures of one run; ``qps`` and ``bruteforce_qps`` come from single queries in sequence."""

    vectors: int
    dim: int
    index: str
    p50_ms: float
    p99_ms: float
    recall_at_10: float
    memory_mb: float
    qps: float
    bruteforce_qps: float
    queries: int
    build_s: float
    params: dict = field(default_factory=dict)
    tuned_recall: float | None = None
    filtered: dict | None = None  # with a filter fraction: see :func:`filtered_search`

    @property
    def ratio(self) -> float:
        return self.qps / self.bruteforce_qps

    def to_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


def clustered_vectors(n: int, dim: int, *, seed: int = 0, topics: int = 50, clusters: int = 1000,
                      subspace: int = 64, atoms: int = 256, chunk: int = 65_536) -> np.ndarray:
    """``n`` L2-normalised float32 vectors of ``dim``, clustered as described in this module's docstring
    (the same seed, the same vectors)."""
    rng = np.random.default_rng(seed)
    clusters = max(1, min(clusters, n // 20))
    topics = max(1, min(topics, clusters))
    subspace = min(subspace, atoms)
    topic_centres = _unit(rng.standard_normal((topics, dim), dtype=np.float32))
    topic_of = rng.integers(0, topics, clusters)
    centres = _unit(topic_centres[topic_of] + 0.7 * rng.standard_normal((clusters, dim), dtype=np.float32) / np.sqrt(dim))
    directions = rng.standard_normal((atoms, dim), dtype=np.float32) / np.sqrt(dim)
    masks = np.zeros((topics, atoms), np.float32)
    for t in range(topics):
        masks[t, rng.choice(atoms, subspace, replace=False)] = 1.0
    weights = rng.pareto(1.5, clusters) + 1.0
    spread = rng.uniform(0.7, 1.3, clusters).astype(np.float32) * 1.2 / np.sqrt(subspace)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        label = rng.choice(clusters, m, p=weights / weights.sum())
        local = rng.standard_normal((m, atoms), dtype=np.float32) * masks[topic_of[label]] * spread[label][:, None]
        x = local @ directions
        x += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(0.3 / np.sqrt(dim))
        x += centres[label]
        out[start : start + m] = _unit(x)
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def bruteforce_top_k(vectors: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """What rclip does for one query: a matrix-vector product, argpartition, then sort the k best."""
    scores = vectors @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def single_query_seconds(search: Callable[[np.ndarray], object], queries: np.ndarray) -> np.ndarray:
    """Wall seconds of each query searched on its own, in sequence (after a few untimed ones)."""
    for query in queries[:WARMUP_QUERIES]:
        search(query)
    seconds = np.empty(len(queries))
    for i, query in enumerate(queries):
        start = time.perf_counter()
        search(query)
        seconds[i] = time.perf_counter() - start
    return seconds


def search_benchmark(n: int, dim: int, *, queries: int = 200, memory_budget_mb: float | None = None,
                     exact_below: int = EXACT_BELOW, seed: int = 0, filter_fraction: float | None = None,
                     on_status: StatusFn | None = None) -> SearchBench:
    """Build the index cliplens chooses for ``n`` vectors of ``dim`` and time single queries against it and
    against numpy brute force; recall@10 is against exact search, on queries not in the index. With
    ``filter_fraction``, also time searches restricted to that share of the collection
    (:func:`filtered_search`)."""
    status = on_status or (lambda message: None)
    spec = choose_spec(n, dim, memory_budget_mb=memory_budget_mb, exact_below=exact_below)
    status(f"generating {n:,} + {queries} clustered vectors of {dim} dimensions")
    data = clustered_vectors(n + queries, dim, seed=seed)
    vectors, held_out = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)

    start = time.perf_counter()
    index = VectorIndex.create(spec, dim).build(vectors, ids, on_status=lambda m: status(f"building {spec}: {m}"))
    build_s = time.perf_counter() - start

    status(f"timing {queries} single queries on {spec}")
    seconds = single_query_seconds(lambda q: index.search(q[None, :], K), held_out)
    _, found = index.search(held_out, K)
    status(f"exact neighbours of {queries} queries")
    _, truth = exact_top_k(vectors, held_out, K)

    brute = held_out[: min(BRUTEFORCE_QUERIES, queries)]
    status(f"timing {len(brute)} single queries by numpy brute force")
    brute_seconds = single_query_seconds(lambda q: bruteforce_top_k(vectors, q), brute)

    filtered = None
    if filter_fraction is not None:
        filtered = filtered_search(index, vectors, ids, held_out, filter_fraction, seed=seed, on_status=status)
    return SearchBench(vectors=n, dim=dim, index=spec, p50_ms=float(np.median(seconds) * 1000),
                       p99_ms=float(np.percentile(seconds, 99) * 1000), recall_at_10=recall_at(found, ids[truth]),
                       memory_mb=index.memory_bytes() / 2**20, qps=float(len(seconds) / seconds.sum()),
                       bruteforce_qps=float(len(brute_seconds) / brute_seconds.sum()), queries=queries,
                       build_s=build_s, params=dict(index.params), tuned_recall=index.recall, filtered=filtered)


def filtered_search(index: VectorIndex, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, fraction: float, *,
                    seed: int = 0, on_status: StatusFn | None = None) -> dict:
    """Single queries restricted to a random ``fraction`` of the collection (a filter's photos are spread over
    every cluster, the hard case for an IVF), with recall@10 against exact search within that set; and the
    SQL side of such a filter, a date range that keeps the same fraction of an index's rows, on an index
    store of as many rows (their vectors left out: a date filter never reads them)."""
    status = on_status or (lambda message: None)
    rng = np.random.default_rng(seed + 1)
    count = max(K, int(round(len(ids) * fraction)))
    chosen = np.sort(rng.choice(len(ids), count, replace=False))
    allowed = ids[chosen]
    status(f"timing {len(queries)} single queries among {count:,} allowed vectors ({fraction:.1%})")
    seconds = single_query_seconds(lambda q: index.search(q[None, :], K, allowed=allowed), queries)
    _, found = index.search(queries, K, allowed=allowed)
    _, truth = exact_top_k(vectors[chosen], queries, K)
    sql = _date_filter_seconds(len(ids), fraction, status)
    return {"fraction": fraction, "allowed": count, "p50_ms": float(np.median(seconds) * 1000),
            "p99_ms": float(np.percentile(seconds, 99) * 1000), "recall_at_10": recall_at(found, allowed[truth]),
            "sql_p50_ms": float(np.median(sql) * 1000), "sql_rows": len(ids)}


def _date_filter_seconds(rows: int, fraction: float, status: StatusFn, repeats: int = 20) -> np.ndarray:
    """Seconds of each of ``repeats`` date filters (as ``cliplens search --after Y --before Y`` runs them) that
    keep ``fraction`` of ``rows`` photos dated evenly over the years."""
    import shutil
    import tempfile
    from pathlib import Path

    from ..index.filters import SearchFilter
    from ..index.store import IndexStore

    folder = Path(tempfile.mkdtemp(prefix="cliplens-bench-filter-"))
    try:
        store = IndexStore(folder, create=True)
        try:
            status(f"writing {rows:,} rows of photo metadata to an index store")
            days = max(1, int(round(365 / fraction)))  # one year is `fraction` of the span
            with store.transaction():
                store.db.run_many("INSERT INTO files (path, vector, taken, taken_source) VALUES (?, x'00', ?, 'exif')",
                                  ((f"/photos/{i:07d}.jpg".encode(), _date(i % days)) for i in range(rows)))
            status("timing date filters")
            seconds = np.empty(repeats)
            for r in range(repeats):
                year = str(2000 + r % max(1, days // 365))
                wanted = SearchFilter(after=year, before=year)
                start = time.perf_counter()
                wanted.select(store)
                seconds[r] = time.perf_counter() - start
            return seconds
        finally:
            store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _date(day: int) -> str:
    from datetime import date, timedelta

    return (date(2000, 1, 1) + timedelta(days=day)).isoformat() + "T12:00:00"
