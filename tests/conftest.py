"""Shared fixtures: tiny random checkpoints in temp dirs, and an isolated Hugging Face cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORDS = "a photo of the red green blue cat dog circle square on background small large two three".split()


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path_factory, monkeypatch):
    """No test reads the user's Hugging Face cache or reaches the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLIPLENS_MODEL", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _tokenizer(context_length: int):
    from cliplens.train import build_word_tokenizer

    return build_word_tokenizer([" ".join(WORDS)], context_length)


def save_preprocessor(path: Path, size: int, *, shortest_edge: bool = True) -> None:
    config = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "resample": 3,
        "do_center_crop": shortest_edge, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_convert_rgb": True,
        "size": {"shortest_edge": size} if shortest_edge else {"height": size, "width": size},
    }
    if shortest_edge:
        config["crop_size"] = {"height": size, "width": size}
    (path / "preprocessor_config.json").write_text(json.dumps(config))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A randomly initialised CLIP (32 px, 2 layers) saved with save_pretrained: for numerics only."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_clip")
    tok = _tokenizer(16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    save_preprocessor(path, 32)
    return path


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A randomly initialised SigLIP saved with save_pretrained."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_siglip")
    tok = _tokenizer(12)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=12, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
    )
    SiglipModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    save_preprocessor(path, 32, shortest_edge=False)
    return path


@pytest.fixture(scope="session")
def demo_model():
    """The bundled, trained demo model: for every test whose point is behaviour."""
    from cliplens import load_model

    return load_model("demo", device="cpu")
