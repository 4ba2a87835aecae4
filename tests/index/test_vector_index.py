"""The FAISS vector index of the photo index: exact where it says so, recall ≥ 0.95 where it is
approximate, updates without rebuilds, atomic save/load, typed errors, the size/memory rule, and
the JSON of ``cliplens bench search``. Small collections; the approximate path is forced with
``exact_below``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cliplens.bench.search import clustered_vectors
from cliplens.errors import UsageError
from cliplens.index.vectors import (StaleIndexError, VectorIndex, choose_spec, estimate_bytes, exact_top_k,
                                    recall_at)

DIM = 64
N = 20_000
QUERIES = 200


def numpy_top_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest inner products by a full sort: the answer exact search must give."""
    return ids[np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """FAISS on one thread: on a machine whose cores other processes hold, its parallel regions wait for
    descheduled threads (a 20k build takes 12 s instead of 1 s). What is tested does not depend on it."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    """N clustered vectors with scattered ids, and QUERIES held-out vectors of the same distribution."""
    vectors = clustered_vectors(N + QUERIES, DIM, seed=3)
    ids = np.random.default_rng(0).choice(10 * N, N, replace=False).astype(np.int64)
    return vectors[:N], ids, vectors[N:]


@pytest.fixture(scope="module")
def approximate(data):
    vectors, ids, _ = data
    spec = choose_spec(N, DIM, exact_below=1_000)
    return VectorIndex.create(spec, DIM).build(vectors, ids)


def small_index(data, kind: str, n: int = 5_000) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    vectors, ids, _ = data
    spec = choose_spec(n, DIM, exact_below=1_000 if kind == "approximate" else 100_000)
    assert (spec == "Flat") == (kind == "exact")
    return VectorIndex.create(spec, DIM).build(vectors[:n], ids[:n]), vectors[:n], ids[:n]


def test_exact_search_equals_numpy_brute_force(data):
    vectors, ids, queries = data
    index = VectorIndex.create(choose_spec(2_000, DIM), DIM).build(vectors[:2_000], ids[:2_000])
    assert index.spec == "Flat" and len(index) == 2_000
    scores, found = index.search(queries, 10)
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (QUERIES, 10)
    assert np.array_equal(found, numpy_top_ids(vectors[:2_000], ids[:2_000], queries, 10))
    expected = np.sort(queries @ vectors[:2_000].T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def test_approximate_search_reaches_the_recall_target(data, approximate):
    vectors, ids, queries = data
    assert approximate.spec.startswith("IVF") and "nprobe" in approximate.params
    assert approximate.recall >= 0.95  # tuned on the collection's own vectors
    scores, found = approximate.search(queries, 10)
    assert recall(found, numpy_top_ids(vectors, ids, queries, 10)) >= 0.95  # held out: not in the index
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert approximate.memory_bytes() < estimate_bytes("Flat", N, DIM) / 2


def test_tuning_raises_nprobe_until_recall_is_met(data, approximate):
    vectors, ids, queries = data
    truth = numpy_top_ids(vectors, ids, queries, 10)
    tuned = approximate.params["nprobe"]
    approximate.params["nprobe"] = 1
    try:
        assert recall(approximate.search(queries, 10)[1], truth) < 0.95  # one list is not enough here ...
    finally:
        approximate.params["nprobe"] = tuned
    assert tuned > 1  # ... so tuning had to raise it


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_add_then_search_finds_the_new_ids(data, kind):
    index, _, _ = small_index(data, kind)
    _, _, queries = data
    new = queries[:50]
    new_ids = np.arange(50, dtype=np.int64) + 10**9
    index.add(new, new_ids)
    assert len(index) == 5_050
    _, found = index.search(new, 1)
    assert np.array_equal(found[:, 0], new_ids)


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_add_an_existing_id_replaces_its_vector(data, kind):
    index, vectors, ids = small_index(data, kind)
    _, _, queries = data
    index.add(queries[:1], ids[:1])
    assert len(index) == 5_000
    _, found = index.search(queries[:1], 1)
    assert found[0, 0] == ids[0]
    scores, found = index.search(vectors[:1], 1)
    assert not (found[0, 0] == ids[0] and scores[0, 0] > 0.99)  # the old vector is gone


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_remove_makes_ids_disappear(data, kind):
    index, vectors, ids = small_index(data, kind)
    gone = ids[:300]
    assert index.remove(np.concatenate([gone, [10**12]])) == 300  # an unknown id is ignored
    assert len(index) == 4_700
    _, found = index.search(vectors[:300], 10)
    assert not np.isin(found, gone).any()
    assert (found >= 0).all()  # still 10 answers each
    assert index.remove(gone) == 0
    assert not index.needs_rebuild
    index.remove(ids[300:1_500])  # 1,500 of 5,000 gone
    assert len(index) == 3_500
    index.add(vectors[:200], ids[:200])  # back, in new places: every remaining vector still finds itself
    scores, found = index.search(vectors[:3_000:3], 1)
    kept = np.isin(ids[:3_000:3], np.concatenate([ids[:200], ids[1_500:]]))
    assert np.array_equal(found[kept, 0], ids[:3_000:3][kept]) and (scores[kept, 0] > 0.99).all()
    assert not np.isin(found[:, 0], ids[200:1_500]).any()
    index.remove(ids[:200])
    if kind == "approximate":  # the re-ranking codes cannot delete: tombstones make a rebuild worth it
        assert index.tombstones == 1_700 and index.needs_rebuild  # 1,500, and 200 added back and removed again
        assert "removed" in index.rebuild_reason


def test_growth_past_what_the_ivf_was_trained_for_asks_for_a_rebuild(data):
    vectors, ids, _ = data
    index = VectorIndex.create(choose_spec(2_000, DIM, exact_below=1_000), DIM).build(vectors[:2_000], ids[:2_000])
    index.add(vectors[2_000:8_000], ids[2_000:8_000])
    assert not index.needs_rebuild
    index.add(vectors[8_000:8_500], ids[8_000:8_500])
    assert index.needs_rebuild and "built for 2,000" in index.rebuild_reason


def test_fewer_than_k_matches_are_padded(data):
    vectors, ids, queries = data
    index = VectorIndex.create("Flat", DIM).build(vectors[:3], ids[:3])
    scores, found = index.search(queries[:2], 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert set(found[0, :3]) == set(ids[:3])
    empty_scores, empty = VectorIndex.create("Flat", DIM).search(queries[:2], 4)
    assert empty.shape == (2, 4) and (empty == -1).all()
    nothing = VectorIndex.create(choose_spec(0, DIM), DIM).build(np.zeros((0, 0), np.float32), [])
    assert len(nothing) == 0 and (nothing.search(queries[:1], 3)[1] == -1).all()


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_save_and_load_give_identical_results(data, kind, tmp_path):
    index, vectors, ids = small_index(data, kind)
    _, _, queries = data
    index.remove(ids[:100])
    index.info["generation"] = 7
    path = tmp_path / "vectors.faiss"
    index.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.faiss", "vectors.faiss.json"]  # no temp files
    meta = json.loads((tmp_path / "vectors.faiss.json").read_text())
    assert meta["spec"] == index.spec and meta["params"] == index.params
    loaded = VectorIndex.load(path)
    assert loaded.spec == index.spec and loaded.params == index.params and len(loaded) == len(index) == 4_900
    assert loaded.tombstones == index.tombstones and loaded.info == {"generation": 7}
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10)):
        assert np.array_equal(a, b)
    loaded.remove(ids[100:200])  # the loaded index keeps working
    assert len(loaded) == 4_800 and not np.isin(loaded.search(vectors[100:200], 10)[1], ids[:200]).any()


def test_a_damaged_save_is_a_stale_index(data, tmp_path):
    index, _, _ = small_index(data, "exact", n=500)
    path = tmp_path / "v.faiss"
    index.save(path)
    with open(path, "ab") as f:
        f.write(b"x")  # the FAISS file no longer matches its JSON
    with pytest.raises(StaleIndexError, match="rebuild"):
        VectorIndex.load(path)
    with pytest.raises(StaleIndexError):
        VectorIndex.load(tmp_path / "missing.faiss")
    assert issubclass(StaleIndexError, UsageError)


def test_wrong_dimensions_raise_usage_errors(data):
    vectors, ids, queries = data
    index = VectorIndex.create("Flat", DIM)
    with pytest.raises(UsageError, match=rf"expected shape \(n, {DIM}\), got \(10, 32\)"):
        index.build(vectors[:10, :32], ids[:10])
    index.build(vectors[:10], ids[:10])
    with pytest.raises(UsageError, match="search: queries"):
        index.search(queries[:, :DIM - 1], 3)
    with pytest.raises(UsageError, match="add: vectors"):
        index.add(np.zeros((2, DIM + 1), np.float32), [1, 2])
    with pytest.raises(UsageError, match="expected 2 ids"):
        index.add(vectors[:2], [1, 2, 3])
    with pytest.raises(UsageError, match="twice"):
        index.add(vectors[:2], [5, 5])
    with pytest.raises(UsageError, match="k must be"):
        index.search(queries[:1], 0)
    with pytest.raises(UsageError, match="not a FAISS index kind"):
        VectorIndex.create("NoSuchIndex", DIM)
    with pytest.raises(UsageError, match="dimension"):
        VectorIndex.create("Flat", 0)
    with pytest.raises(UsageError) as caught:
        index.search(queries[:, :3], 1)
    assert len(str(caught.value).splitlines()) == 1


def test_choose_spec_by_size_and_memory_budget():
    assert choose_spec(99_999, 512) == "Flat"
    big = choose_spec(1_000_000, 512)
    assert big.startswith("IVF") and big != "Flat"
    assert estimate_bytes(big, 1_000_000, 512) <= 2**30  # 1M × 512 fits 1 GB
    assert choose_spec(1_000_000, 512, memory_budget_mb=1024) == big
    assert choose_spec(5_000, DIM, exact_below=1_000).startswith("IVF")
    assert choose_spec(5_000, DIM, exact_below=10_000) == "Flat"
    # a budget too small for the float32 copy: approximate even below the threshold
    flat_mb = estimate_bytes("Flat", 50_000, 512) / 2**20
    assert choose_spec(50_000, 512, memory_budget_mb=flat_mb / 2) != "Flat"
    # smaller budgets, smaller codes: each choice fits its budget and is smaller than the last
    sizes = []
    for budget in (1024, 500, 400, 300, 60):
        spec = choose_spec(1_000_000, 512, memory_budget_mb=budget)
        sizes.append(estimate_bytes(spec, 1_000_000, 512))
        assert sizes[-1] <= budget * 2**20, spec
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 5
    with pytest.raises(UsageError, match="memory budget of 10 MB"):
        choose_spec(1_000_000, 512, memory_budget_mb=10)


def test_a_small_budget_builds_an_index_within_it(data):
    vectors, ids, queries = data
    roomy = choose_spec(N, DIM, exact_below=1_000)
    budget = estimate_bytes(roomy, N, DIM) / 2**20 / 2
    spec = choose_spec(N, DIM, exact_below=1_000, memory_budget_mb=budget)
    assert spec != roomy
    index = VectorIndex.create(spec, DIM).build(vectors, ids)
    assert index.memory_bytes() <= budget * 2**20
    assert index.search(queries[:5], 10)[1].shape == (5, 10)


def test_bench_search_json_has_exactly_the_promised_fields():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # see one_thread
    proc = subprocess.run([sys.executable, "-c", "from cliplens.cli import run; run()", "bench", "search",
                           "--vectors", "3000", "--dim", "32", "--queries", "40", "--exact-below", "1000",
                           "--filter-fraction", "0.05", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    filtered = figures.pop("filtered")
    cpu = figures.pop("cpu")
    assert list(figures) == ["vectors", "dim", "index", "p50_ms", "p99_ms", "recall_at_10", "memory_mb", "qps",
                             "bruteforce_qps", "ratio"]
    assert figures["vectors"] == 3000 and figures["dim"] == 32 and figures["index"].startswith("IVF")
    assert isinstance(figures["index"], str) and all(isinstance(figures[k], float) for k in list(figures)[3:])
    assert "cores" in cpu and list(filtered) == ["fraction", "allowed", "p50_ms", "p99_ms", "recall_at_10",
                                                 "sql_p50_ms", "sql_rows"]
    assert filtered["allowed"] == 150 and filtered["recall_at_10"] >= 0.95 and filtered["sql_rows"] == 3000
    assert 0 < filtered["p50_ms"] <= filtered["p99_ms"] and filtered["sql_p50_ms"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] and figures["qps"] > 0 and figures["bruteforce_qps"] > 0
    assert 0.5 <= figures["recall_at_10"] <= 1 and figures["memory_mb"] > 0
    assert figures["ratio"] == pytest.approx(figures["qps"] / figures["bruteforce_qps"], rel=0.02, abs=0.006)
    exact = subprocess.run([sys.executable, "-c", "from cliplens.cli import run; run()", "bench", "search",
                            "--vectors", "500", "--dim", "16", "--queries", "10", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert exact.returncode == 0, exact.stderr
    assert json.loads(exact.stdout)["index"] == "Flat" and json.loads(exact.stdout)["recall_at_10"] == 1.0


@pytest.mark.parametrize("spec", ["Flat", "IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16x4fs,Refine(SQ8)", "HNSW16,SQ8"])
def test_a_search_among_allowed_ids_finds_their_best_whatever_their_share(spec):
    """A filter that keeps 1% of the collection: every kind finds the allowed rows' own nearest (not the few
    allowed rows that happen to lie in the probed lists), never a row outside the set or a removed one."""
    rng = np.random.default_rng(0)
    vectors = clustered_vectors(20_000, 64, seed=3)
    ids = np.arange(len(vectors), dtype=np.int64) * 3 + 5  # ids that are not positions
    queries = clustered_vectors(20, 64, seed=4)
    allowed = np.sort(rng.choice(ids, 200, replace=False))
    index = VectorIndex.create(spec, 64).build(vectors, ids)
    index.remove(allowed[:5])
    live = allowed[5:]
    _, truth = exact_top_k(vectors[(live - 5) // 3], queries, 10)
    scores, found = index.search(queries, 10, allowed=allowed)
    assert np.isin(found, live).all() and np.isfinite(scores).all()
    assert recall_at(found, live[truth]) >= 0.95
    unfiltered = index.search(queries, 10)[1]
    assert np.isin(unfiltered, live).mean() < 0.2  # the plain top 10 holds few of them: filtering after would fail
    assert index.search(queries, 10, allowed=np.zeros(0, np.int64))[1].max() == -1
