"""The ONNX Runtime backend: exports made once and keyed by content, parity with torch (fp32, bf16), token ids,
bad backend/precision combinations and the CLI flags. How auto chooses among runtimes: tests/models/test_runtimes.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cliplens
from cliplens.inputs.demo_data import generate
from cliplens.errors import UsageError
from cliplens.models import BackendNote, TextTruncatedWarning, TransformersEncoder, load_model
from cliplens.models.onnx_layout import export_folder, has_export
from cliplens.models.onnx import OnnxEncoder
from cliplens.models.parity import probe_set
from cliplens.text.prompts import DEFAULT_TEMPLATE, prompts_for

from conftest import WORDS, save_tiny_checkpoint

EXAMPLES = Path(cliplens.__file__).parent / "examples"
SEED = 20261124  # generated scenes used by no training or calibration run


def _rowwise_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def onnx_demo():
    return load_model("demo", device="cpu", backend="onnx", precision="fp32", cache=False)


@pytest.fixture(scope="module")
def tiny_clip_pair(tiny_clip_dir):
    return (load_model(str(tiny_clip_dir), backend="onnx", precision="fp32", cache=False),
            TransformersEncoder(tiny_clip_dir, device="cpu"))


@pytest.fixture(scope="module")
def tiny_siglip_pair(tiny_siglip_dir):
    return (load_model(str(tiny_siglip_dir), backend="onnx", precision="fp32", cache=False),
            TransformersEncoder(tiny_siglip_dir, device="cpu"))


# --- parity with torch ---------------------------------------------------------------------------

def test_demo_onnx_fp32_matches_torch(onnx_demo, demo_model):
    assert isinstance(onnx_demo, OnnxEncoder) and isinstance(demo_model, TransformersEncoder)
    assert (onnx_demo.info.backend, onnx_demo.info.precision) == ("onnx", "fp32")
    images, labels = probe_set(demo_model.preprocessor.output_size[0], 64, seed=SEED)
    ours, ref = onnx_demo.encode_images(images), demo_model.encode_images(images)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (64, demo_model.embed_dim)
    assert _rowwise_cos(ours, ref).min() >= 0.9999
    texts = list(labels) + prompts_for(labels, [DEFAULT_TEMPLATE, "two {}s on a white background"])
    ours_t, ref_t = onnx_demo.encode_texts(texts), demo_model.encode_texts(texts)
    assert ours_t.shape == ref_t.shape == (90, demo_model.embed_dim)
    assert _rowwise_cos(ours_t, ref_t).min() >= 0.9999


def test_token_ids_match_transformers(tiny_clip_pair, tiny_siglip_pair):
    short = ["a photo of a dog", "red", "Two RED circles on a blue background", "zebra cat", ""]
    for (onnx_enc, torch_enc), pad_to_context in ((tiny_clip_pair, False), (tiny_siglip_pair, True)):
        context = torch_enc.context_length
        exact = " ".join(WORDS[: context - 2])  # with <bos> and <eos>: exactly the context, not truncated
        over = " ".join((WORDS * 3)[: context + 5])
        with warnings.catch_warnings():
            warnings.simplefilter("error", TextTruncatedWarning)
            ids, mask = onnx_enc.token_ids(short + [exact])
            expected = torch_enc.tokenize(short + [exact])
        assert np.array_equal(ids, expected["input_ids"].numpy())
        if not pad_to_context:  # CLIP: padded to the longest text, with its attention mask
            assert np.array_equal(mask, expected["attention_mask"].numpy())
            ids, _ = onnx_enc.token_ids(short)
            assert ids.shape[1] == max(len(t.split()) for t in short) + 2 < context
            assert np.array_equal(ids, torch_enc.tokenize(short)["input_ids"].numpy())
        else:  # SigLIP: always padded to its full context
            assert ids.shape[1] == context
        assert ids.dtype == np.int64

        with pytest.warns(TextTruncatedWarning, match=f"1 text.*{context} tokens"):
            ids, mask = onnx_enc.token_ids(short + [over])
        with pytest.warns(TextTruncatedWarning, match=f"1 text.*{context} tokens"):
            expected = torch_enc.tokenize(short + [over])
        assert ids.shape == (len(short) + 1, context)
        assert np.array_equal(ids, expected["input_ids"].numpy())
        if not pad_to_context:
            assert np.array_equal(mask, expected["attention_mask"].numpy())


def test_tiny_siglip_onnx_matches_torch(tiny_siglip_pair):
    onnx_enc, torch_enc = tiny_siglip_pair
    rng = np.random.default_rng(3)
    images = [s.image for s in generate(6, seed=SEED, size=48)]
    images += [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((40, 50), (97, 33))]
    assert _rowwise_cos(onnx_enc.encode_images(images), torch_enc.encode_images(images)).min() >= 0.9999
    texts = ["a photo of a cat", "two red circles on a blue background", "dog", "small green square"]
    assert _rowwise_cos(onnx_enc.encode_texts(texts), torch_enc.encode_texts(texts)).min() >= 0.9999
    assert onnx_enc.info.score_kind == torch_enc.info.score_kind == "sigmoid"
    assert onnx_enc.info.logit_scale == torch_enc.info.logit_scale
    assert onnx_enc.info.logit_bias == torch_enc.info.logit_bias and torch_enc.info.logit_bias is not None
    assert (onnx_enc.info.family, onnx_enc.info.embed_dim, onnx_enc.info.context_length) == \
        (torch_enc.info.family, torch_enc.info.embed_dim, torch_enc.info.context_length)


def test_torch_bf16_is_close_to_fp32(demo_model):
    bf16 = load_model("demo", device="cpu", backend="torch", precision="bf16", cache=False)
    assert isinstance(bf16, TransformersEncoder)
    assert (bf16.info.backend, bf16.info.precision) == ("torch", "bf16")
    images, labels = probe_set(demo_model.preprocessor.output_size[0], 32, seed=SEED + 1)
    ours = bf16.encode_images(images)
    assert ours.dtype == np.float32
    assert _rowwise_cos(ours, demo_model.encode_images(images)).mean() >= 0.99
    texts = prompts_for(labels, [DEFAULT_TEMPLATE])
    ours_t = bf16.encode_texts(texts)
    assert ours_t.dtype == np.float32
    assert _rowwise_cos(ours_t, demo_model.encode_texts(texts)).mean() >= 0.99
    assert bf16.logit_scale == demo_model.logit_scale  # read before the cast to bf16


def test_classifier_gives_the_same_answers_on_onnx(onnx_demo, demo_model):
    labels = ["red circle", "blue star", "yellow triangle", "green square", "orange cross", "dog"]
    images = [s.image for s in generate(6, seed=SEED + 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dog" is not a word the demo model reads
        ours = cliplens.Classifier(labels, onnx_demo).score_vectors(onnx_demo.encode_images(images), [""] * 6)
        ref = cliplens.Classifier(labels, demo_model).score_vectors(demo_model.encode_images(images), [""] * 6)
    for a, b in zip(ours, ref):
        theirs = {s.label: s.probability for s in b.labels}
        assert max(abs(s.probability - theirs[s.label]) for s in a.labels) <= 1e-4
        assert abs(a.none_of_these - b.none_of_these) <= 1e-3


# --- the export ----------------------------------------------------------------------------------

def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_export_is_made_once_and_keyed_by_content(tiny_clip_pair, tiny_clip_dir, tmp_path):
    folder = tiny_clip_pair[0].folder
    assert folder == export_folder(tiny_clip_dir) and has_export(folder, "fp32")
    copy = tmp_path / "clip"
    shutil.copytree(tiny_clip_dir, copy)
    assert export_folder(copy) == folder  # the same weights elsewhere share the export

    before = _stamps(folder)
    heard: list[str] = []
    again = load_model(str(copy), backend="onnx", precision="fp32", cache=False, on_status=heard.append)
    assert heard == [] and again.folder == folder and _stamps(folder) == before

    save_tiny_checkpoint(copy, "clip", seed=5, projection_dim=24)  # same shapes, other weights
    changed = export_folder(copy)
    assert changed != folder and not has_export(changed, "fp32")
    first = load_model(str(copy), backend="onnx", precision="fp32", cache=False, on_status=heard.append)
    assert first.folder == changed and has_export(changed, "fp32") and len(heard) >= 3
    stamps = _stamps(changed)
    heard.clear()
    second = load_model(str(copy), backend="onnx", precision="fp32", cache=False, on_status=heard.append)
    assert heard == [] and second.folder == changed and _stamps(changed) == stamps
    texts = ["a photo of a cat", "red circle"]
    assert not np.allclose(first.encode_texts(texts), tiny_clip_pair[0].encode_texts(texts), atol=1e-3)
    assert _stamps(folder) == before


def test_onnx_model_info_names_the_folder_loaded(tiny_clip_pair, tiny_clip_dir, tmp_path):
    # the calibration shipped beside a model (not part of its content hash) is found through info.path,
    # so a copy that shares another folder's export must still report its own folder
    copy = tmp_path / "clip-copy"
    shutil.copytree(tiny_clip_dir, copy)
    encoder = load_model(str(copy), backend="onnx", precision="fp32", cache=False)
    assert encoder.folder == tiny_clip_pair[0].folder
    assert encoder.info.path == str(copy) == TransformersEncoder(copy, device="cpu").info.path


@pytest.mark.parametrize("backend, precision", [("onnx", "int8"), ("auto", "auto")])
def test_cached_onnx_model_loads_without_torch_or_transformers(backend, precision, monkeypatch):
    # once the export and this machine's verdicts are cached, neither a named ONNX runtime nor auto loads torch
    monkeypatch.delenv("CLIPLENS_BACKEND", raising=False)
    monkeypatch.delenv("CLIPLENS_PRECISION", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8 says how far it strays
        first = load_model("demo", backend=backend, precision=precision, cache=False)
    assert isinstance(first, OnnxEncoder)
    image = EXAMPLES / "blue-star.png"
    expected = np.concatenate([first.encode_images([image])[0], first.encode_texts(["a photo of a blue star."])[0]])
    code = (
        "import json, sys, cliplens\n"
        f"enc = cliplens.load_model('demo', backend={backend!r}, precision={precision!r})\n"
        f"img = enc.encode_images([{str(image)!r}])[0]\n"
        "txt = enc.encode_texts(['a photo of a blue star.'])[0]\n"
        "loaded = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(json.dumps({'kind': type(enc).__name__, 'precision': enc.info.precision, 'loaded': loaded,\n"
        "                  'vector': [float(x) for x in list(img) + list(txt)]}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["loaded"] == [], proc.stderr
    assert (data["kind"], data["precision"]) == ("OnnxEncoder", first.info.precision)
    np.testing.assert_allclose(data["vector"], expected, atol=1e-5)
    if precision == "int8":  # a named int8 says, in one line, how far it strays from fp32
        assert "onnx int8 moves probabilities by up to" in proc.stderr and "PrecisionNote" in proc.stderr


def test_auto_runs_torch_when_the_exported_tokenizer_does_not_match(tmp_path, monkeypatch):
    import cliplens.models.export as export_module
    from tokenizers import Tokenizer, normalizers

    model = save_tiny_checkpoint(tmp_path / "clip", "clip", seed=11, projection_dim=24)  # an export of its own
    real_save = export_module._save_tokenizer

    def save_without_lowercasing(encoder, folder):
        meta = real_save(encoder, folder)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.normalizer = normalizers.NFKC()  # "A Red CIRCLE!" no longer reads as the model reads it
        tokenizer.save(str(folder / "tokenizer.json"))
        return meta

    monkeypatch.setattr(export_module, "_save_tokenizer", save_without_lowercasing)
    with pytest.warns(BackendNote, match="token ids"):
        encoder = load_model(str(model), backend="auto", precision="auto", cache=False)
    assert isinstance(encoder, TransformersEncoder)
    folder = export_folder(model)
    assert not has_export(folder, "fp32") and not folder.with_name(folder.name + ".partial").exists()

# --- choosing the runtime ------------------------------------------------------------------------

def test_without_onnxruntime_auto_runs_torch_and_onnx_is_refused(monkeypatch):
    import cliplens.models.onnx

    monkeypatch.setattr(cliplens.models.onnx, "onnxruntime_available", lambda: False)
    with pytest.warns(BackendNote, match="onnxruntime is not installed"):
        encoder = load_model("demo", backend="auto", precision="auto", cache=False)
    assert isinstance(encoder, TransformersEncoder) and encoder.info.backend == "torch"
    with pytest.raises(UsageError, match="onnxruntime"):
        load_model("demo", backend="onnx", precision="fp32", cache=False)
    with pytest.raises(UsageError, match="onnxruntime"):
        load_model("demo", backend="auto", precision="int8", cache=False)


@pytest.mark.parametrize("backend, precision, parameter, message", [
    ("torch", "int8", "precision", "precision int8: runs on ONNX Runtime; use the onnx or auto backend"),
    ("onnx", "bf16", "precision", "precision bf16: runs on the torch backend"),
    ("onnx", "fp16", "precision", "precision fp16: runs on the torch backend"),
    ("cuda", "fp32", "backend", "backend cuda: choose from auto, torch, onnx"),
    ("auto", "int4", "precision", "precision int4: choose from auto, fp32, bf16, fp16, int8"),
    ("torch", "fp16", "precision", "precision fp16: is for GPUs"),
])
def test_bad_backend_and_precision_are_usage_errors(backend, precision, parameter, message):
    with pytest.raises(UsageError) as info:
        load_model("demo", device="cpu", backend=backend, precision=precision, cache=False)
    assert info.value.parameter == parameter
    assert message in str(info.value) and "\n" not in str(info.value)


# --- command line --------------------------------------------------------------------------------

def test_cli_backend_and_precision_flags():
    from cliplens.cli import app

    image = str(EXAMPLES / "three-yellow-triangles.png")
    labels = ["yellow triangle", "red star", "blue circle"]
    runner = CliRunner()
    result = runner.invoke(app, ["classify", image, *labels, "--model", "demo", "--backend", "onnx",
                                 "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    encoder = load_model("demo", backend="onnx", precision="fp32", cache=False)
    expected = cliplens.classify(image, labels, encoder).to_dict()
    assert [d["label"] for d in data["labels"]] == [d["label"] for d in expected["labels"]]
    for got, want in zip(data["labels"], expected["labels"]):
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
    assert data["none_of_these"] == pytest.approx(expected["none_of_these"], abs=1e-6)

    result = runner.invoke(app, ["classify", image, *labels, "--model", "demo", "--backend", "torch",
                                 "--precision", "int8"])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--precision int8: runs on ONNX Runtime" in lines[0], result.stderr
