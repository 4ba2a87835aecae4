"""The Ray engine of `cliplens index` builds the same index as the local one (a real local Ray, 2 CPUs)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cliplens.inputs.demo_data import write_demo_data
from cliplens.errors import UsageError
from cliplens.index import IndexStore, update_index


def _photos(tmp_path: Path) -> Path:
    write_demo_data(tmp_path / "demo", 40, seed=3)
    folder = tmp_path / "demo" / "images"
    (folder / "bad.png").write_bytes(b"not an image")
    return folder


def _vectors_by_path(store: IndexStore) -> dict[str, np.ndarray]:
    ids, vectors = store.vectors()
    paths = store.paths(ids)
    return {paths[int(i)]: v for i, v in zip(ids, vectors)}


def _index(folder: Path, index: Path, engine: str):
    return update_index([folder], index, "demo", backend="torch", precision="fp32", engine=engine)


@pytest.mark.slow
def test_ray_engine_builds_the_same_index_as_the_local_one(tmp_path):
    import ray

    folder = _photos(tmp_path)
    local_run = _index(folder, tmp_path / "local", "local")
    ray_run = _index(folder, tmp_path / "ray", "ray")
    assert not ray.is_initialized()  # the Ray it started is gone again
    local, on_ray = IndexStore(tmp_path / "local"), IndexStore(tmp_path / "ray")
    try:
        assert (ray_run.files, ray_run.encoded, ray_run.failed) == (41, 40, 1)
        assert (local_run.files, local_run.encoded, local_run.failed) == (41, 40, 1)
        want, got = _vectors_by_path(local), _vectors_by_path(on_ray)
        assert len(want) == 40 and set(got) == set(want)
        for path, vector in want.items():
            assert got[path].dtype == np.float32
            assert float(np.linalg.norm(got[path])) == pytest.approx(1.0, abs=1e-4)
            assert float(vector @ got[path]) >= 0.9999, path
        bad = str((folder / "bad.png").resolve())
        assert on_ray.errors() == local.errors() and [p for p, _ in on_ray.errors()] == [bad]
        local_rows, ray_rows = local.rows(), on_ray.rows()
        assert set(ray_rows) == set(local_rows)
        for path, row in local_rows.items():
            other = ray_rows[path]
            assert (other.sha256, other.size, other.width, other.height) == (row.sha256, row.size, row.width,
                                                                              row.height), path

        shards = tmp_path / "ray" / "shards"
        files = sorted(shards.rglob("*.parquet"))
        assert files
        table = pq.ParquetDataset(files).read() if len(files) > 1 else pq.read_table(files[0])
        assert set(table.column_names) == {"path", "vector", "width", "height", "error"}
        assert str(table.schema.field("vector").type) == "list<element: float>"
        assert str(table.schema.field("path").type) == "binary"  # a file name's own bytes, whatever they are
        assert sorted(os.fsdecode(p) for p in table.column("path").to_pylist()) == sorted(ray_rows)
        shard_rows = {os.fsdecode(r["path"]): r for r in table.to_pylist()}
        assert shard_rows[bad]["vector"] is None and shard_rows[bad]["error"] == on_ray.errors()[0][1]
        some = next(iter(want))
        assert np.allclose(np.asarray(shard_rows[some]["vector"], np.float32), got[some])

        again = _index(folder, tmp_path / "ray", "ray")
        assert (again.encoded, again.unchanged, again.failed) == (0, 41, 0)

        # Known content never goes to Ray: a copy reuses its vector, a re-saved file keeps its row.
        names = sorted(p for p in folder.rglob("*.png") if p.name != "bad.png")
        shutil.copy(names[0], folder / "copy.png")
        stat = names[1].stat()
        os.utime(names[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        third = _index(folder, tmp_path / "ray", "ray")
        assert (third.encoded, third.reused, third.unchanged, third.failed) == (0, 1, 41, 0)
        # no Ray run, so no shards (each Ray run clears the shards of the run before, whose rows are indexed)
        assert files and not list(shards.rglob("*.parquet"))
        copied = _vectors_by_path(on_ray)
        assert np.array_equal(copied[str((folder / "copy.png").resolve())], copied[str(names[0].resolve())])
    finally:
        local.close()
        on_ray.close()


def test_ray_engine_without_ray_says_how_to_get_it(tmp_path, monkeypatch):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(Path(__file__).parents[2] / "src" / "cliplens" / "examples" / "two-red-circles.png", folder)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'cliplens\[ray\]'"):
        _index(folder, tmp_path / "idx", "ray")


@pytest.mark.parametrize("kind", ["fixed size (demo)", "SigLIP 2 NaFlex"])
def test_ray_tasks_prepare_images_exactly_as_the_encoder_does(kind, demo_model, tmp_path):
    """The Ray decode task runs the encoder's own preparer, so vectors cannot drift from the local path (they
    did for NaFlex, whose patches the Ray task used to resize and crop like a fixed-size model's)."""
    from PIL import Image

    from cliplens import load_model
    from cliplens.index.ray_engine import _item, decode_batch
    from cliplens.inputs.images import load_image

    from conftest import save_tiny_naflex

    encoder = demo_model if kind.startswith("fixed") else load_model(save_tiny_naflex(tmp_path / "naflex"),
                                                                     device="cpu", backend="torch", cache=False)
    paths = []
    for i, size in enumerate([(64, 64), (120, 40), (30, 90)]):  # squares and both aspect ratios
        paths.append(tmp_path / f"{i}.png")
        Image.radial_gradient("L").resize(size).convert("RGB").save(paths[-1])
    paths.insert(1, tmp_path / "bad.png")
    paths[1].write_bytes(b"not an image")
    batch = decode_batch({"path": np.array([str(p) for p in paths], dtype=object)}, preparer=encoder.preparer)
    assert list(batch["error"]) == ["", "not an image (unknown or unsupported format)", "", ""]
    good = [0, 2, 3]
    for row in good:
        local = encoder.prepare(load_image(paths[row], draft_size=encoder.draft_size))
        remote = _item(batch, row)
        if isinstance(local, dict):
            assert set(remote) == set(local)
            for key in local:
                np.testing.assert_array_equal(remote[key], local[key])
        else:
            np.testing.assert_array_equal(remote, local)
    vectors = encoder.encode_prepared([_item(batch, row) for row in good])
    np.testing.assert_allclose(vectors, encoder.encode_images([paths[row] for row in good]), atol=1e-5)
