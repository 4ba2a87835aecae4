"""RAW files and videos in the index: a DNG is indexed like a photo; a video becomes one vector per scene, found at
the right moment, kept in step by incremental runs (moves, copies, changes, deletes), never a duplicate of itself,
and a truncated one is a bad file with a reason."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliplens.index import IndexStore, PhotoIndex, SearchFilter, index_errors, update_index
from cliplens.inputs.demo_data import ShapeScene, render_scene

from conftest import run_cli
from media_files import write_dng, write_video

pytest.importorskip("av")
pytest.importorskip("rawpy")


def _scene(shape: str, colour: str, background: str, seed: int) -> Image.Image:
    return render_scene(ShapeScene(shape, colour, 1, "large", background), random.Random(seed), 224)


RED_CIRCLE = _scene("circle", "red", "white", 1)
BLUE_SQUARE = _scene("square", "blue", "black", 2)
GREEN_TRIANGLE = _scene("triangle", "green", "white", 3)
YELLOW_STAR = _scene("star", "yellow", "black", 4)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    (folder / "videos").mkdir()
    write_video(folder / "videos/clip.mp4", [(RED_CIRCLE, 3), (BLUE_SQUARE, 3), (RED_CIRCLE, 2)])
    write_dng(folder / "raw.dng", GREEN_TRIANGLE)
    YELLOW_STAR.save(folder / "star.jpg", quality=92)
    whole = (folder / "videos/clip.mp4").read_bytes()
    (folder / "videos/cut.mp4").write_bytes(whole[: len(whole) // 2])
    index = tmp_path_factory.mktemp("media-index")
    run = update_index([folder], index, "demo", backend="torch")
    return folder, index, run


def _moments(result) -> list[tuple[str, float | None]]:
    return [(Path(h.path).name, h.time) for h in result.hits]


def test_videos_and_raw_files_are_indexed_and_a_truncated_video_is_a_bad_file(library):
    folder, index, run = library
    assert (run.files, run.encoded, run.failed) == (4, 3, 1)
    assert [(Path(e.source).name, e.reason) for e in run.errors] == [("cut.mp4", "truncated or corrupt video")]
    assert [(Path(p).name, r) for p, r in index_errors(index)] == [("cut.mp4", "truncated or corrupt video")]
    store = IndexStore(index)
    try:
        assert store.count() == 2 + 3  # the two photos, and the video's three scenes
        video = store.rows()[str(folder / "videos/clip.mp4")]
        assert video.kind == "video" and video.has_vector and (video.width, video.height) == (320, 240)
        assert [(s.time, s.until) for s in store.scenes(video.id)] == [(0.0, 3.0), (3.0, 6.0), (6.0, 8.0)]
    finally:
        store.close()


def test_a_video_is_found_at_the_moment_that_shows_the_query(library):
    folder, index, _ = library
    photos = PhotoIndex(index)
    try:
        circle = photos.search("a red circle", top=2)
        assert sorted(_moments(circle)) == [("clip.mp4", 0.0), ("clip.mp4", 6.0)]
        assert _moments(photos.search("a blue square", top=1)) == [("clip.mp4", 3.0)]
        assert _moments(photos.search("a green triangle", top=1)) == [("raw.dng", None)]
        assert _moments(photos.search("a yellow star", top=1)) == [("star.jpg", None)]
        videos = photos.search("a green triangle", top=10, filters=SearchFilter(kind="video"))
        assert {name for name, _ in _moments(videos)} == {"clip.mp4"} and len(videos.hits) == 3
        stills = photos.search(filters=SearchFilter(kind="photo"), top=10)
        assert sorted(name for name, _ in _moments(stills)) == ["raw.dng", "star.jpg"]
        glob = photos.search(filters=SearchFilter(path="*/videos/*"), top=10)  # a scene's path is its video's
        assert [t for _, t in _moments(glob)] == [0.0, 3.0, 6.0]
    finally:
        photos.close()


def test_the_cli_names_the_file_and_the_moment(library):
    folder, index, _ = library
    proc = run_cli("search", "a blue square", "--index", index, "-k", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("clip.mp4 @ 0:03")
    proc = run_cli("search", "a blue square", "--index", index, "-k", "1", "--kind", "video", "--json")
    hit = json.loads(proc.stdout)["results"][0]
    assert (hit["kind"], hit["time"], hit["until"]) == ("video", 3.0, 6.0)
    proc = run_cli("search", "--kind", "film", "--index", index)
    assert proc.returncode == 2 and "kind" in proc.stderr and "photo, video" in proc.stderr
    proc = run_cli("search", "--like", folder / "videos/clip.mp4", "--index", index)
    assert proc.returncode == 2 and "id of a scene" in proc.stderr


def test_a_video_never_duplicates_itself_but_its_copy_does(library, tmp_path):
    folder, _, _ = library
    shutil.copytree(folder, tmp_path / "lib")
    index = tmp_path / "index"
    update_index([tmp_path / "lib"], index, "demo", backend="torch")
    shutil.copy(tmp_path / "lib/videos/clip.mp4", tmp_path / "lib/copy.mp4")
    run = update_index([tmp_path / "lib"], index, "demo", backend="torch")
    assert (run.encoded, run.reused) == (0, 1)  # the copy's scenes come from the original's, unencoded
    photos = PhotoIndex(index)
    try:
        groups = photos.dedupe(threshold=0.5)  # the two red-circle scenes of one video are alike, but one video
        assert groups and all(len(g.paths) == len(set(g.paths)) for g in groups)
        pairs = sorted((tuple(Path(p).name for p in g.paths), tuple(g.times)) for g in groups)
        assert (("copy.mp4", "clip.mp4"), (3.0, 3.0)) in pairs and len(groups) == 3  # each scene with its copy
    finally:
        photos.close()


def test_incremental_runs_move_change_and_remove_videos_with_their_scenes(library, tmp_path):
    folder, _, _ = library
    lib = tmp_path / "lib"
    (lib / "a").mkdir(parents=True)
    shutil.copy(folder / "videos/clip.mp4", lib / "a/clip.mp4")
    index = tmp_path / "index"
    update_index([lib], index, "demo", backend="torch")
    again = update_index([lib], index, "demo", backend="torch")
    assert (again.unchanged, again.encoded) == (1, 0)

    (lib / "b").mkdir()
    (lib / "a/clip.mp4").rename(lib / "b/moved.mp4")
    moved = update_index([lib], index, "demo", backend="torch")
    assert (moved.moved, moved.encoded, moved.removed) == (1, 0, 0)
    photos = PhotoIndex(index)
    try:
        assert _moments(photos.search("a blue square", top=1)) == [("moved.mp4", 3.0)]
    finally:
        photos.close()

    write_video(lib / "b/moved.mp4", [(GREEN_TRIANGLE, 2), (YELLOW_STAR, 2)])  # new content, same name
    changed = update_index([lib], index, "demo", backend="torch")
    assert changed.encoded == 1
    photos = PhotoIndex(index)
    try:
        assert len(photos) == 2  # the old scenes left the vector index too
        assert _moments(photos.search("a yellow star", top=1)) == [("moved.mp4", 2.0)]
    finally:
        photos.close()

    (lib / "b/moved.mp4").unlink()
    gone = update_index([lib], index, "demo", backend="torch")
    assert gone.removed == 1
    store = IndexStore(index)
    try:
        assert store.count() == 0 and store.parents() == {}
    finally:
        store.close()


def test_the_service_shows_a_scene_by_the_frame_it_starts_with(library, demo_model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cliplens.service import ServiceConfig, create_app

    _, index, _ = library
    app = create_app(ServiceConfig(index=str(index), model="demo", backend="torch", api_key="",
                                   allowed_hosts=["testserver"]), encoder=demo_model)
    with TestClient(app) as client:
        body = client.post("/v1/search", data={"query": "a blue square", "top": "1", "kind": "video"}).json()
        hit = body["results"][0]
        assert (hit["kind"], hit["time"], Path(hit["path"]).name) == ("video", 3.0, "clip.mp4")
        thumb = client.get(hit["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        import io

        frame = Image.open(io.BytesIO(thumb.content)).convert("RGB")
        expected = BLUE_SQUARE.resize(frame.size).getpixel((frame.width // 2, frame.height // 2))
        got = frame.getpixel((frame.width // 2, frame.height // 2))
        assert all(abs(a - b) < 40 for a, b in zip(got, expected))
        assert client.post("/v1/search", data={"query": "x", "kind": "film"}).status_code == 422


@pytest.mark.slow
def test_sigkill_mid_run_leaves_each_video_whole_or_absent(tmp_path):
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    folder = tmp_path / "videos"
    folder.mkdir()
    shots = [RED_CIRCLE, BLUE_SQUARE, GREEN_TRIANGLE, YELLOW_STAR]
    for i in range(30):
        # a frame more per video: 30 different files (a copy would reuse its original's scenes)
        write_video(folder / f"v{i:02d}.mp4", [(shots[(i + n) % 4], 2 + (i / 24 if n == 0 else 0)) for n in range(3)],
                    size=(160, 120))
    index = tmp_path / "index"
    args = [sys.executable, "-m", "cliplens.cli", "index", str(folder), "--index", str(index), "--model", "demo",
            "--backend", "torch", "--batch-size", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(index / "index.sqlite", timeout=1) as db:
                if db.execute("SELECT COUNT(*) FROM files WHERE kind = 'video' AND parent IS NULL").fetchone()[0] >= 3:
                    break
        except sqlite3.OperationalError:
            pass  # not made yet
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    def scenes_per_video() -> list[int]:
        with sqlite3.connect(index / "index.sqlite") as db:
            return [n for (n,) in db.execute("SELECT (SELECT COUNT(*) FROM files AS s WHERE s.parent = v.id) "
                                             "FROM files AS v WHERE v.parent IS NULL AND v.kind = 'video'")]

    survived = scenes_per_video()
    assert 3 <= len(survived) < 30 and set(survived) == {3}  # whole videos only
    rerun = update_index([folder], index)
    assert (rerun.encoded, rerun.unchanged, rerun.failed) == (30 - len(survived), len(survived), 0)
    assert scenes_per_video() == [3] * 30


def test_export_names_a_videos_scenes_by_media_fragments(library, tmp_path):
    pd = pytest.importorskip("pandas")
    _, index, _ = library
    proc = run_cli("index", "--export", tmp_path / "out", "--index", index)
    assert proc.returncode == 0, proc.stderr
    names = sorted(Path(p).name for p in pd.read_parquet(tmp_path / "out" / "metadata" / "metadata_0.parquet")
                   ["image_path"])
    assert names == ["clip.mp4#t=0", "clip.mp4#t=3", "clip.mp4#t=6", "raw.dng", "star.jpg"]
    assert np.load(tmp_path / "out" / "img_emb" / "img_emb_0.npy").shape[0] == 5
