"""Embedding many images and texts, the clip-retrieval output layout, and the embed command."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

import cliplens
from cliplens.models import TransformersEncoder


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    Image.new("RGB", (30, 20), "red").save(folder / "sub" / "r.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (folder / "notes.txt").write_text("not an image, and not an image extension")
    return folder


def test_embed_images_skips_and_reports_bad_files(tiny_clip_dir, photo_dir):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    sources = cliplens.expand_paths([photo_dir])
    assert len(sources) == 7  # notes.txt is not picked up from a folder
    seen = []
    result = cliplens.embed_images(sources, encoder, batch_size=3, workers=2, on_progress=lambda d, t: seen.append((d, t)))
    assert result.vectors.shape == (6, 24) and len(result.sources) == 6 and len(result.errors) == 1
    assert result.errors[0].source.endswith("broken.jpg")
    assert seen[-1] == (7, 7)
    # vectors equal encoding each image alone, in input order
    ok = [s for s in sources if not str(s).endswith("broken.jpg")]
    np.testing.assert_allclose(result.vectors, encoder.encode_images(ok), atol=1e-5)
    with pytest.raises(cliplens.ImageLoadError, match="broken.jpg"):
        cliplens.embed_images(sources, encoder, skip_errors=False)


def test_output_layout_rows_line_up(tiny_clip_dir, photo_dir, tmp_path):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    result = cliplens.embed_images(cliplens.expand_paths([photo_dir]), encoder)
    out = tmp_path / "out"
    cliplens.write_image_embeddings(result, out, dtype="float16")
    vectors = np.load(out / "img_emb" / "img_emb_0.npy")
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pydict()
    assert vectors.dtype == np.float16 and vectors.shape == (7, 24)
    assert list(meta) == ["image_path", "width", "height", "error"]
    assert len(meta["image_path"]) == 7
    for i, (path, error) in enumerate(zip(meta["image_path"], meta["error"])):
        if error is None:
            j = result.sources.index(path)
            np.testing.assert_allclose(vectors[i].astype(np.float32), result.vectors[j], atol=2e-3)
        else:
            assert path.endswith("broken.jpg") and not vectors[i].any()
    assert meta["width"][meta["image_path"].index(str(photo_dir / "sub" / "r.jpg"))] == 30
    manifest = json.loads((out / "cliplens.json").read_text())
    assert manifest == {"kind": "img", "model": encoder.name, "dim": 24, "dtype": "float16", "count": 6, "failed": 1}
    with pytest.raises(cliplens.OutputError, match="already holds files") as info:
        cliplens.write_image_embeddings(result, out)
    assert info.value.exists and info.value.parameter == "out"


def test_text_embeddings_layout(tiny_clip_dir, tmp_path):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    texts = ["a red circle", "a blue square"]
    vectors = cliplens.embed_texts(texts, encoder)
    cliplens.write_text_embeddings(texts, vectors, tmp_path, model=encoder.name)
    np.testing.assert_allclose(np.load(tmp_path / "text_emb" / "text_emb_0.npy"), vectors)
    assert pq.read_table(tmp_path / "metadata" / "metadata_0.parquet").to_pydict() == {"caption": texts}


def _photo_like(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 150 + 60], -1)
    noise = np.random.default_rng(1).normal(0, 6, base.shape)
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.2, height * 0.2, width * 0.5, height * 0.6), fill=(200, 30, 40))
    draw.rectangle((width * 0.6, height * 0.5, width * 0.9, height * 0.9), fill=(20, 60, 200))
    return image


@pytest.fixture(scope="module")
def clip224_dir(tmp_path_factory):
    """A random CLIP that, like ViT-B/32, wants 224 px input: to check reduced-scale JPEG decoding."""
    from conftest import save_tiny_checkpoint

    return save_tiny_checkpoint(tmp_path_factory.mktemp("clip224"), "clip", seed=2, image_size=224, patch_size=32,
                                vision_width=64, text_layers=1, projection_dim=32)


def test_large_jpeg_draft_decode_keeps_embedding(clip224_dir, tmp_path):
    encoder = TransformersEncoder(clip224_dir, device="cpu")
    path = tmp_path / "big.jpg"
    _photo_like(4000, 3000).save(path, quality=92)
    draft = cliplens.load_image(path, draft_size=encoder.preprocessor.draft_size)
    assert draft.size == (1000, 750)  # decoded at 1/4 scale
    full = cliplens.load_image(path)
    assert full.size == (4000, 3000)
    v_full = encoder.encode_images([full])
    v_draft = encoder.encode_images([path])  # the normal path decodes at reduced scale
    assert float((v_full @ v_draft.T)[0, 0]) >= 0.999


def test_cli_embed_partial_failure_exit_1_and_json(cli, tiny_clip_dir, photo_dir, tmp_path):
    proc = cli("embed", str(photo_dir), "--out", str(tmp_path / "e"), "--model", str(tiny_clip_dir), "--json")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["count"] == 6 and summary["failed"] == 1 and summary["dim"] == 24
    assert summary["errors"][0]["path"].endswith("broken.jpg")
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_embed_texts(cli, tiny_clip_dir, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("a cat\n\na dog\n")
    proc = cli("embed", "--text-file", str(texts), "--text", "a bird", "--out", str(tmp_path / "t"),
                "--model", str(tiny_clip_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["count"] == 3
    assert np.load(tmp_path / "t" / "text_emb" / "text_emb_0.npy").shape == (3, 24)


@pytest.mark.parametrize("args, message", [
    (["--out", "o"], "give image paths, or texts with --text"),
    (["missing_dir", "--out", "o"], "missing_dir: no such file"),
    (["--text", "x", "--out", "o", "--dtype", "int8"], "--dtype int8"),
])
def test_cli_embed_usage_errors(cli, tiny_clip_dir, tmp_path, args, message):
    proc = cli("embed", *args, "--model", str(tiny_clip_dir))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
