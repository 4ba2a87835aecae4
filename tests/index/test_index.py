"""Photo search on the demo model: index, search, dedupe, incremental updates, crash safety, model checks."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cliplens
from cliplens.inputs.demo_data import generate, write_demo_data
from cliplens.errors import DataError, UsageError
from cliplens.index import IndexStore, ModelMismatchError, PhotoIndex, parse_query, update_index
from cliplens.index.sync import writer_lock
from cliplens.index.transfer import export_embeddings, import_embeddings

SEED = 4321


def _labels(folder: Path) -> dict[str, str]:
    """Absolute image path → its scene's colour–shape label."""
    with (folder / "pairs.csv").open() as fh:
        return {str((folder / row["path"]).resolve()): row["label"] for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    write_demo_data(folder, 150, seed=SEED)
    return folder


@pytest.fixture(scope="module")
def built(photos, tmp_path_factory):
    index = tmp_path_factory.mktemp("index")
    run = update_index([photos], index, "demo", backend="torch")
    return index, run


def test_first_run_encodes_everything(built):
    index, run = built
    assert run.files == 150 and run.encoded == 150 and run.failed == 0
    store = IndexStore(index)
    assert store.count() == 150 and store.model.name == "demo"
    assert store.model.dim == cliplens.load_model("demo", backend="torch").embed_dim


def test_text_query_for_shape_and_colour_returns_them_first(built, photos):
    index, _ = built
    labels = _labels(photos)
    photo_index = PhotoIndex(index)
    wanted = sorted({label for label in labels.values()})[:8]
    precision = []
    for label in wanted:
        present = sum(1 for v in labels.values() if v == label)
        result = photo_index.search(f"a photo of a {label}", top=min(3, present))
        assert labels[result.hits[0].path] == label, (label, result.hits[0])
        precision += [labels[h.path] == label for h in result.hits]
        assert [h.score for h in result.hits] == sorted([h.score for h in result.hits], reverse=True)
    assert np.mean(precision) >= 0.8


def _planted(folder: Path, n: int = 8) -> list[tuple[Path, Path]]:
    """Originals rendered at 128 px and copies of them resized and re-encoded as JPEG."""
    pairs = []
    for i, sample in enumerate(generate(n, seed=SEED + 1, size=128)):
        original = folder / f"original_{i}.png"
        sample.image.save(original)
        copy = folder / "copies" / f"copy_{i}.jpg"
        copy.parent.mkdir(exist_ok=True)
        side = (96, 160, 112, 144)[i % 4]
        sample.image.resize((side, side), Image.Resampling.BICUBIC).save(copy, "JPEG", quality=(85, 90, 95)[i % 3])
        pairs.append((original.resolve(), copy.resolve()))
    return pairs


@pytest.fixture(scope="module")
def with_duplicates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dupes")
    write_demo_data(folder, 80, seed=SEED + 2, size=128)
    pairs = _planted(folder)
    index = tmp_path_factory.mktemp("dupes_index")
    update_index([folder], index, "demo", backend="torch")
    return index, pairs


def test_image_query_returns_its_near_duplicates_first(with_duplicates):
    index, pairs = with_duplicates
    photo_index = PhotoIndex(index)
    found = 0
    for original, copy in pairs:
        hits = photo_index.search(image=original, top=3).hits
        assert hits[0].path == str(original) and hits[0].score > 0.999
        found += str(copy) in [h.path for h in hits[:2]]
    assert found >= len(pairs) - 1  # the copy comes right after the image itself


def test_more_like_this_searches_by_the_stored_vector_without_the_model(with_duplicates, tmp_path):
    index, pairs = with_duplicates
    photo_index = PhotoIndex(index)
    try:
        found = 0
        for original, copy in pairs:
            hits = photo_index.search(like=original, top=2).hits
            assert str(original) not in [h.path for h in hits]  # the file itself is not more like itself
            found += hits[0].path == str(copy)
        assert found >= len(pairs) - 1
        assert photo_index._encoder is None  # nothing was read or encoded: the index's own vectors
        by_id = photo_index.search(like=photo_index.store.id_of(pairs[0][0]), top=2)
        assert [h.path for h in by_id.hits] == [h.path for h in photo_index.search(like=pairs[0][0], top=2).hits]
        outside = tmp_path / "not-indexed.png"
        Image.new("RGB", (32, 32)).save(outside)
        for unknown in (outside, 10**9):
            with pytest.raises(UsageError) as caught:
                photo_index.search(like=unknown)
            assert caught.value.parameter == "like"
    finally:
        photo_index.close()
    proc = subprocess.run([sys.executable, "-m", "cliplens.cli", "search", "--like", str(pairs[1][0]), "-k", "1",
                           "--index", str(index), "--json"], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0 and json.loads(proc.stdout)["results"][0]["path"] == str(pairs[1][1]), proc.stderr


def test_dedupe_finds_planted_duplicates(with_duplicates):
    index, pairs = with_duplicates
    photo_index = PhotoIndex(index)
    groups = photo_index.dedupe(threshold=0.98)
    together = sum(any(str(o) in g.paths and str(c) in g.paths for g in groups) for o, c in pairs)
    assert together >= len(pairs) - 1  # the demo model sees a 96 px JPEG of a 128 px render at ~0.95
    assert all(len(g.paths) >= 2 for g in groups)
    # distinct scenes with the same shapes and colours also reach 0.98 for this small model, but most
    # images stay out of any group
    assert sum(len(g.paths) for g in groups) < len(photo_index) / 2


def test_incremental_runs_encode_only_what_changed(tmp_path):
    folder = tmp_path / "photos"
    write_demo_data(folder, 30, seed=SEED + 3)
    index = tmp_path / "index"
    first = update_index([folder], index, "demo", backend="torch")
    assert first.encoded == 30
    again = update_index([folder], index, backend="torch")
    assert (again.encoded, again.unchanged, again.removed) == (0, 30, 0)

    images = sorted((folder / "images").rglob("*.png"))
    changed = next(generate(1, seed=99)).image
    changed.save(images[0])  # new content at a known path
    os.rename(images[1], folder / "renamed.png")  # a move
    shutil.copy(images[2], folder / "copy.png")  # a copy of known content
    images[3].unlink()  # a deletion
    (folder / "broken.png").write_bytes(b"not an image")
    os.utime(images[4], ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    run = update_index([folder], index, backend="torch")
    assert (run.encoded, run.moved, run.reused, run.removed, run.failed) == (1, 1, 1, 1, 1)
    assert run.errors[0].source.endswith("broken.png") and "not an image" in run.errors[0].reason
    store = IndexStore(index)
    paths = set(store.rows())
    assert str((folder / "renamed.png").resolve()) in paths and str(images[1].resolve()) not in paths
    assert str(images[3].resolve()) not in paths
    assert store.count() == 30 and [p for p, _ in store.errors()] == [str((folder / "broken.png").resolve())]
    # the changed file's vector is the new content's
    ids = {row.path: row.id for row in store.rows().values()}
    _, vector = store.vectors([ids[str(images[0].resolve())]])
    fresh = cliplens.load_model("demo", backend="torch").encode_images([images[0]])
    assert float(vector[0] @ fresh[0]) > 0.9999
    # the search index follows: the deleted file is gone from results, the moved one is found at its new path
    hits = PhotoIndex(index).search(image=folder / "renamed.png", top=1).hits
    assert hits[0].path == str((folder / "renamed.png").resolve())

    Image.new("RGB", (64, 64), (200, 0, 0)).save(folder / "broken.png")  # fixed
    fixed = update_index([folder], index, backend="torch")
    assert (fixed.encoded, fixed.failed) == (1, 0) and IndexStore(index).errors() == []


def test_excluded_files_leave_the_index(tmp_path):
    folder = tmp_path / "photos"
    write_demo_data(folder, 12, seed=SEED + 4)
    index = tmp_path / "index"
    update_index([folder], index, "demo", backend="torch")
    run = update_index([folder], index, exclude=["*/0000003.png"], backend="torch")
    assert run.removed == 1 and IndexStore(index).count() == 11


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing_committed(cli, tmp_path):
    folder = tmp_path / "photos"
    write_demo_data(folder, 600, seed=SEED + 5)
    index = tmp_path / "index"
    args = [sys.executable, "-m", "cliplens.cli", "index", str(folder), "--index", str(index), "--model", "demo",
            "--backend", "torch", "--batch-size", "1", "--workers", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (index / "index.sqlite").exists():
            try:
                with sqlite3.connect(index / "index.sqlite", timeout=1) as db:
                    committed = db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0  # tables not made yet
            if committed >= 40:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    with sqlite3.connect(index / "index.sqlite") as db:
        survived = db.execute("SELECT COUNT(*) FROM files WHERE vector IS NOT NULL").fetchone()[0]
    assert 40 <= survived < 600
    rerun = cli("index", str(folder), "--index", str(index), "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["encoded"] == 600 - survived and report["unchanged"] == survived
    with sqlite3.connect(index / "index.sqlite") as db:
        paths = [os.fsdecode(row[0]) for row in db.execute("SELECT path FROM files WHERE vector IS NOT NULL")]
    images = {str(p.resolve()) for p in (folder / "images").rglob("*.png")}
    assert len(paths) == len(set(paths)) == 600 and set(paths) == images


def test_search_works_while_an_indexing_run_holds_the_index(built, photos):
    index, _ = built
    store = IndexStore(index)
    lock = writer_lock(store)
    lock.acquire()
    try:
        result = PhotoIndex(index).search("a photo of a blue square", top=2)
        assert len(result.hits) == 2
        with pytest.raises(UsageError, match="another `cliplens index` run"):
            update_index([photos], index, backend="torch")
    finally:
        lock.release()


def test_another_model_is_refused_with_a_way_out(cli, tmp_path, tiny_clip_dir):
    folder = tmp_path / "photos"
    write_demo_data(folder, 6, seed=SEED + 6)
    index = tmp_path / "index"
    update_index([folder], index, "demo", backend="torch")
    with pytest.raises(ModelMismatchError, match="rebuild the index") as info:
        PhotoIndex(index, str(tiny_clip_dir))
    assert info.value.parameter == "model" and info.value.remedy == "reindex"
    with pytest.raises(ModelMismatchError, match="rebuild the index"):
        update_index([folder], index, str(tiny_clip_dir), backend="torch")
    proc = cli("index", str(folder), "--index", str(index), "--model", str(tiny_clip_dir), "--backend", "torch")
    assert proc.returncode == 2 and proc.stderr.strip().endswith("(pass --reindex)"), proc.stderr
    run = update_index([folder], index, str(tiny_clip_dir), reindex=True, backend="torch")
    assert run.encoded == 6 and IndexStore(index).model.dim == 24
    proc = cli("search", "a red circle", "--index", str(index), "--model", "demo")
    assert proc.returncode == 2 and "--reindex" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_query_arithmetic(built, photos):
    terms = parse_query('"red circle" + "stripes" - "blue square"')
    assert [(t.text, t.sign) for t in terms] == [("red circle", 1), ("stripes", 1), ("blue square", -1)]
    assert [(t.text, t.sign) for t in parse_query("horse + stripes - brown")] == [("horse", 1), ("stripes", 1),
                                                                                  ("brown", -1)]
    assert len(parse_query("a black-and-white photo")) == 1
    for bad in ['"a" +', '"a" "b"', "", '"a" + - "b"']:
        with pytest.raises(UsageError):
            parse_query(bad)
    index, _ = built
    photo_index = PhotoIndex(index)
    labels = _labels(photos)
    # red circle − red + blue: the colour moves, the shape stays
    hits = photo_index.search('"a photo of a red circle" - "red" + "blue"', top=3).hits
    assert labels[hits[0].path] == "blue circle"
    same = photo_index.search("a photo of a red circle", add=["blue"], subtract=["red"], top=3)
    assert [h.path for h in same.hits] == [h.path for h in hits]


@pytest.mark.slow
def test_cli_search_json_and_threshold(cli, built):
    index, _ = built
    proc = cli("search", "a photo of a green star", "--index", str(index), "-k", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data) == ["query", "score_kind", "results", "near_miss"] and data["query"] == "a photo of a green star"
    assert data["score_kind"] == "margin" and data["near_miss"] is None  # the demo model ships a calibration
    assert len(data["results"]) == 4
    assert all(list(r) == ["path", "id", "kind", "time", "until", "score", "similarity", "match", "taken",
                           "taken_source", "camera", "lat", "lon", "text"] for r in data["results"])
    assert all((r["kind"], r["time"], r["until"]) == ("photo", None, None) for r in data["results"])
    assert all(r["taken_source"] == "file" and r["camera"] is None for r in data["results"])  # generated PNGs
    assert all(r["score"] < r["similarity"] for r in data["results"])  # the margin is below the cosine
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)
    cut = cli("search", "a photo of a green star", "--index", str(index), "--threshold", str(scores[1]), "--json")
    assert [r["path"] for r in json.loads(cut.stdout)["results"]] == [r["path"] for r in data["results"][:2]]


def test_errors_listing_and_dedupe_json(cli, tmp_path):
    folder = tmp_path / "photos"
    write_demo_data(folder, 5, seed=SEED + 7)
    (folder / "empty.jpg").write_bytes(b"")
    image = next((folder / "images").rglob("*.png"))
    shutil.copy(image, folder / "twin.png")
    index = tmp_path / "index"
    first = cli("index", str(folder), "--index", str(index), "--model", "demo", "--backend", "torch")
    assert first.returncode == 1 and "empty.jpg" in first.stderr
    listed = cli("index", "--errors", "--index", str(index), "--json")
    assert json.loads(listed.stdout)["errors"] == [{"path": str((folder / "empty.jpg").resolve()), "reason": "empty file"}]
    dupes = json.loads(cli("dedupe", "--index", str(index), "--threshold", "0.999", "--json").stdout)
    assert dupes["threshold"] == 0.999
    assert {str(image.resolve()), str((folder / "twin.png").resolve())} <= set(dupes["groups"][0]["paths"])


def test_export_and_import_in_clip_retrieval_layout(built, photos, tmp_path):
    index, _ = built
    export_embeddings(IndexStore(index), tmp_path / "emb")
    assert (tmp_path / "emb" / "img_emb" / "img_emb_0.npy").exists()
    assert (tmp_path / "emb" / "metadata" / "metadata_0.parquet").exists()
    fresh = IndexStore(tmp_path / "fresh", create=True)
    encoder = cliplens.load_model("demo", backend="torch")
    assert import_embeddings(fresh, tmp_path / "emb", encoder) == 150
    ids, vectors = fresh.vectors()
    original_ids, original = IndexStore(index).vectors()
    by_path = dict(zip(IndexStore(index).paths(original_ids).values(), original))
    mapped = fresh.paths(ids)
    assert all(np.allclose(by_path[mapped[int(i)]], v, atol=1e-6) for i, v in zip(ids, vectors))
    run = update_index([photos], tmp_path / "fresh", backend="torch")  # files known from the import are skipped
    assert run.encoded == 0 and run.unchanged == 150
    with pytest.raises(DataError, match="img_emb"):
        import_embeddings(IndexStore(tmp_path / "fresh"), tmp_path / "nowhere", encoder)


def test_a_file_moved_over_another_replaces_it(tmp_path):
    folder = tmp_path / "photos"
    write_demo_data(folder, 8, seed=SEED + 8)
    index = tmp_path / "index"
    update_index([folder], index, "demo", backend="torch")
    first, second = sorted((folder / "images").rglob("*.png"))[:2]
    os.replace(first, second)  # `mv first second`: second now holds first's bytes
    run = update_index([folder], index, backend="torch")
    assert (run.moved, run.encoded, run.removed) == (1, 0, 0)
    store = IndexStore(index)
    assert store.count() == 7 and str(first.resolve()) not in store.rows()
    photo_index = PhotoIndex(index)
    hits = photo_index.search(image=second, top=8).hits
    assert hits[0].path == str(second.resolve()) and hits[0].score > 0.9999
    assert len(photo_index) == 7  # the replaced file's old vector left the vector index too


def test_an_index_from_cliplens_0_1_is_upgraded_in_place_and_a_newer_one_is_refused(tmp_path):
    """Schema 1 kept paths as text; opening it for writing turns them into bytes without re-encoding anything."""
    from cliplens.index.store import SCHEMA_VERSION

    index = tmp_path / "index"
    index.mkdir()
    with sqlite3.connect(index / "index.sqlite") as db:
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER, mtime_ns INTEGER,
                sha256 TEXT, width INTEGER, height INTEGER, error TEXT, vector BLOB, gen INTEGER NOT NULL DEFAULT 0,
                indexed_at REAL);
            CREATE TABLE removed (id INTEGER NOT NULL, gen INTEGER NOT NULL);
            INSERT INTO meta VALUES ('schema', '1'), ('generation', '1'), ('model', 'demo'),
                                    ('model_fingerprint', 'f'), ('dim', '2');
        """)
        db.execute("INSERT INTO files (path, size, mtime_ns, vector, gen) VALUES (?, 1, 1, ?, 1)",
                   ("/photos/café.png", np.array([1, 0], np.float32).tobytes()))
    store = IndexStore(index)
    try:
        assert store.meta("schema") == str(SCHEMA_VERSION)
        assert list(store.rows()) == ["/photos/café.png"]
        assert store.count() == 1
    finally:
        store.close()
    with sqlite3.connect(index / "index.sqlite") as db:
        assert db.execute("SELECT typeof(path) FROM files").fetchone()[0] == "blob"
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(UsageError, match="newer cliplens"):
        IndexStore(index)


def test_content_hashes_share_one_chunked_reader(tmp_path):
    """The vector index's checksum, model files' SHA-256 and the embedding cache's keys all read files through
    cliplens.files.hash_files: one file or several in turn, in chunks, with the hash each asks for."""
    import hashlib

    from cliplens.files import file_sha256, hash_files
    from cliplens.index.sync import checksum
    from cliplens.vectors.cache import file_key

    vectors = tmp_path / "vectors.faiss"
    vectors.write_bytes(os.urandom(3 << 20))  # more than one chunk
    (tmp_path / "vectors.faiss.json").write_bytes(b'{"kind": "Flat"}')
    whole = vectors.read_bytes() + b'{"kind": "Flat"}'
    assert checksum(vectors) == hash_files([vectors, tmp_path / "vectors.faiss.json"]) == \
        hashlib.sha256(whole).hexdigest()
    assert file_sha256(vectors) == hashlib.sha256(vectors.read_bytes()).hexdigest()
    assert file_key(vectors) == hashlib.blake2b(vectors.read_bytes(), digest_size=16).hexdigest()
    (tmp_path / "vectors.faiss.json").unlink()
    assert checksum(vectors) is None  # a missing part: no checksum
