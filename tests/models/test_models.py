"""Model loading, parity with transformers, preprocessing and offline behaviour."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cliplens
from cliplens.errors import ModelLoadError, ModelNotFoundError
from cliplens.models import TransformersEncoder
from cliplens.models.preprocess import ImagePreprocessor


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(50, 40), (40, 50), (32, 32), (97, 33), (64, 80)]
    return [Image.fromarray(rng.integers(0, 255, (sizes[i % 5][1], sizes[i % 5][0], 3), dtype=np.uint8))
            for i in range(n)]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_clip_image_and_text_parity_with_transformers(tiny_clip_dir):
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    images = _images(5)
    ours = encoder.encode_images(images)
    ref_model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    pixels = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = ref_model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    assert ours.dtype == np.float32 and ours.shape == (5, 24)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cos(ours, ref).min() >= 0.99999

    texts = ["a photo of a cat", "two red circles on a blue background", "dog"]
    tok = AutoTokenizer.from_pretrained(tiny_clip_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref_t = ref_model.get_text_features(**tok).pooler_output.numpy()
    assert _cos(encoder.encode_texts(texts), ref_t).min() >= 0.99999


def test_siglip_loads_with_sigmoid_scores(tiny_siglip_dir):
    from transformers import SiglipModel

    encoder = cliplens.load_model(str(tiny_siglip_dir), device="cpu", cache=False)
    assert encoder.score_kind == "sigmoid" and encoder.logit_bias is not None
    ref_model = SiglipModel.from_pretrained(tiny_siglip_dir).eval()
    assert encoder.logit_scale == pytest.approx(ref_model.logit_scale.exp().item())
    images = _images(3)
    ours = encoder.encode_images(images)
    pixels = torch.from_numpy(ImagePreprocessor.from_pretrained(tiny_siglip_dir)(images))
    with torch.no_grad():
        ref = ref_model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    assert _cos(ours, ref).min() >= 0.99999
    probs = cliplens.label_probabilities(ours @ encoder.encode_texts(["cat", "dog"]).T, encoder)
    assert probs.shape == (3, 2) and ((probs > 0) & (probs < 1)).all()
    assert not np.allclose(probs.sum(1), 1.0)  # independent sigmoids, not a softmax


def test_preprocessor_matches_transformers_pil_processor(tiny_clip_dir):
    from transformers import CLIPImageProcessorPil

    images = _images(5, seed=3)
    ours = ImagePreprocessor.from_pretrained(tiny_clip_dir)(images)
    ref = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)(images, return_tensors="np")["pixel_values"]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4


def test_preprocessor_config_round_trip():
    pre = ImagePreprocessor(shortest_edge=64, crop=(64, 64))
    assert ImagePreprocessor.from_config(pre.to_config()) == pre
    siglip = ImagePreprocessor.from_config({"size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3,
                                            "image_std": [0.5] * 3, "resample": 2})
    assert siglip.output_size == (224, 224) and siglip.crop is None and siglip.mean == (0.5, 0.5, 0.5)


def test_long_text_is_truncated_with_warning(tiny_clip_dir):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    long_text = " ".join(["red circle"] * 40)
    with pytest.warns(cliplens.TextTruncatedWarning, match="1 text"):
        vec = encoder.encode_texts([long_text, "cat"])
    assert vec.shape == (2, 24) and np.isfinite(vec).all()


def test_short_text_gives_no_warning(tiny_clip_dir):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode_texts(["a photo of a cat"])


def test_empty_inputs_give_empty_arrays(tiny_clip_dir):
    encoder = TransformersEncoder(tiny_clip_dir, device="cpu")
    assert encoder.encode_texts([]).shape == (0, 24)
    assert encoder.encode_images([]).shape == (0, 24)


def test_aliases_and_local_dirs_resolve(tiny_clip_dir):
    assert cliplens.resolve_model_dir("demo") == cliplens.models.DEMO_DIR
    assert cliplens.resolve_model_dir(str(tiny_clip_dir)) == tiny_clip_dir
    encoder = cliplens.load_model(str(tiny_clip_dir), device="cpu")
    assert cliplens.load_model(str(tiny_clip_dir), device="cpu") is encoder  # kept, not reloaded
    cliplens.release_models()
    assert cliplens.load_model(str(tiny_clip_dir), device="cpu") is not encoder


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        cliplens.load_model(str(tmp_path))


def test_non_clip_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelLoadError, match="not a CLIP"):
        cliplens.load_model(str(tmp_path))


def test_uncached_model_offline_names_model_and_remedy():
    with pytest.raises(ModelNotFoundError) as info:
        cliplens.load_model("nobody/not-a-model")
    message = str(info.value)
    assert info.value.parameter == "model" and message.startswith("model: ")
    assert "nobody/not-a-model" in message and "cliplens models pull" in message and "local folder" in message


def test_cached_hub_model_loads_offline(tiny_clip_dir, tmp_path):
    """A model in the HF cache layout loads by hub id with HF_HUB_OFFLINE=1."""
    import os
    import shutil

    from huggingface_hub import constants

    repo = os.path.join(constants.HF_HUB_CACHE, "models--someone--tiny-clip")
    snapshot = os.path.join(repo, "snapshots", "0" * 40)
    shutil.copytree(tiny_clip_dir, snapshot)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as fh:
        fh.write("0" * 40)
    encoder = cliplens.load_model("someone/tiny-clip", device="cpu", cache=False)
    assert encoder.encode_texts(["cat"]).shape == (1, 24)


@pytest.mark.parametrize("offline", ["1", "0"])
def test_cli_missing_model_is_one_line_exit_2(cli, offline, tmp_path):
    """Offline flag set, or hub unreachable (a closed local port): one line, exit 2, no traceback."""
    env = {"HF_HUB_OFFLINE": offline, "HF_HOME": str(tmp_path), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    proc = cli("classify", str(image), "cat", "dog", "--model", "nobody/not-a-model", env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "--model: 'nobody/not-a-model'" in lines[0] and "cliplens models pull" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_models_path_and_list(cli):
    proc = cli("models", "path", "demo")
    assert proc.returncode == 0 and proc.stdout.strip() == str(cliplens.models.DEMO_DIR)
    proc = cli("models", "list", "--json")
    assert proc.returncode == 0
    import json

    names = {e["name"]: e for e in json.loads(proc.stdout)["models"]}
    assert names["demo"]["available"] is True and names["clip-b32"]["target"] == "openai/clip-vit-base-patch32"


def test_siglip2_naflex_parity_with_transformers(tmp_path):
    """SigLIP 2 NaFlex keeps aspect ratios; its embeddings equal transformers' with its own processor."""
    from transformers import Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    from conftest import save_tiny_naflex

    save_tiny_naflex(tmp_path)
    processor = Siglip2ImageProcessorPil.from_pretrained(tmp_path)
    encoder = cliplens.load_model(str(tmp_path), device="cpu", cache=False)
    assert encoder.info.family == "siglip2" and encoder.score_kind == "sigmoid"
    assert encoder.input_size is None and encoder.differentiable  # images keep their own size
    images = _images(4, seed=5)
    ours = encoder.encode_images(images)
    ref_model = Siglip2Model.from_pretrained(tmp_path).eval()
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        ref = ref_model.get_image_features(**inputs).pooler_output.numpy()
    assert _cos(ours, ref).min() >= 0.99999
    embedded = cliplens.embed_images(images, encoder, batch_size=3)
    np.testing.assert_allclose(embedded.vectors, ours, atol=1e-5)


def test_device_override_and_errors(tiny_clip_dir):
    from cliplens.errors import UsageError
    from cliplens.models import pick_device

    assert pick_device("cpu") == "cpu"
    assert pick_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available"):
            cliplens.load_model(str(tiny_clip_dir), device="cuda")


def test_default_model_comes_from_environment(tiny_clip_dir, monkeypatch):
    from cliplens.models import default_model

    assert default_model() == "openai/clip-vit-base-patch32"
    monkeypatch.setenv("CLIPLENS_MODEL", str(tiny_clip_dir))
    assert cliplens.load_model(device="cpu", cache=False).info.path == str(tiny_clip_dir)


def test_siglip_with_sentencepiece_tokenizer(tiny_siglip_dir, tmp_path):
    """SigLIP v1 checkpoints ship spiece.model; cliplens loads them and pads texts to the full context."""
    import shutil

    import sentencepiece as spm
    from transformers import SiglipModel, SiglipTokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["a photo of a red circle", "two small blue squares on a white background"] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=15,
                                   model_type="word", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    model_dir = tmp_path / "siglip_spm"
    shutil.copytree(tiny_siglip_dir, model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model_dir / name).unlink()
    SiglipTokenizer(vocab_file=str(tmp_path / "spiece.model")).save_pretrained(model_dir)

    encoder = cliplens.load_model(str(model_dir), device="cpu", cache=False)
    texts = ["a photo of a red circle", "blue squares"]
    ours = encoder.encode_texts(texts)
    tokens = SiglipTokenizer.from_pretrained(model_dir)(texts, padding="max_length", max_length=12, return_tensors="pt")
    with torch.no_grad():
        ref = SiglipModel.from_pretrained(model_dir).eval().get_text_features(input_ids=tokens["input_ids"]).pooler_output
    assert _cos(ours, ref.numpy()).min() >= 0.99999
