"""Shared fixtures: tiny random checkpoints in temp dirs, and isolated Hugging Face and cliplens caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORDS = "a photo of the red green blue cat dog circle square on background small large two three".split()


@pytest.fixture(scope="session", autouse=True)
def isolated_cliplens_cache(tmp_path_factory):
    """One cliplens cache (ONNX exports, reference embeddings) per test session, set before any session
    fixture loads a model. Models run in torch unless a test asks for another backend: tests of the
    ONNX backend and of ``auto`` say so explicitly."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPLENS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cliplens-cache"))
        patch.setenv("CLIPLENS_BACKEND", "torch")
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.delenv("CLIPLENS_PRECISION", raising=False)
        yield


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


def run_cli(*args, env: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``cliplens ARGS...`` in a fresh process (the caches and offline settings of this session, plus ``env``)."""
    return subprocess.run([sys.executable, "-m", "cliplens.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=timeout, **kwargs)


@pytest.fixture
def cli():
    """Run the ``cliplens`` command in a fresh process: ``cli("classify", image, "cat", "--json")``."""
    return run_cli


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


def tiny_text_config(tok, context_length: int, layers: int = 2) -> dict:
    """A 32-wide text tower over the test tokenizer."""
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                num_attention_heads=2, max_position_embeddings=context_length, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def save_tiny_checkpoint(path: Path, family: str, *, seed: int, context_length: int = 16, image_size: int = 32,
                         patch_size: int = 8, vision_width: int = 32, text_layers: int = 2, **config) -> Path:
    """Save a randomly initialised CLIP or SigLIP with its tokenizer and preprocessor config."""
    import torch
    from transformers import CLIPConfig, CLIPModel, SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    tok = _tokenizer(context_length)
    vision = dict(image_size=image_size, patch_size=patch_size, hidden_size=vision_width,
                  intermediate_size=2 * vision_width, num_hidden_layers=2, num_attention_heads=2)
    config_cls, model_cls = (CLIPConfig, CLIPModel) if family == "clip" else (SiglipConfig, SiglipModel)
    model_cls(config_cls(text_config=tiny_text_config(tok, context_length, text_layers), vision_config=vision,
                         **config)).save_pretrained(path)
    tok.save_pretrained(path)
    if family != "clip":  # as SigLIP's own tokenizers: ids only (SigLIP reads padded text without a mask)
        settings = json.loads((path / "tokenizer_config.json").read_text())
        (path / "tokenizer_config.json").write_text(json.dumps({**settings, "model_input_names": ["input_ids"]}))
    save_preprocessor(path, image_size, shortest_edge=family == "clip")
    return path


def save_tiny_naflex(path: Path, *, seed: int = 3) -> Path:
    """Save a randomly initialised SigLIP 2 NaFlex model (patches packed by its own processor, 16 at most)."""
    import torch
    from transformers import Siglip2Config, Siglip2Model
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    torch.manual_seed(seed)
    tok = _tokenizer(12)
    config = Siglip2Config(
        text_config=tiny_text_config(tok, 12, layers=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           patch_size=8, num_patches=16))
    Siglip2Model(config).save_pretrained(path)
    tok.save_pretrained(path)
    Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A randomly initialised CLIP (32 px, 2 layers) saved with save_pretrained: for numerics only."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_clip"), "clip", seed=0, projection_dim=24)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    """A randomly initialised SigLIP saved with save_pretrained."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny_siglip"), "siglip", seed=1, context_length=12)


@pytest.fixture(scope="session")
def demo_model():
    """The bundled, trained demo model: for every test whose point is behaviour (kept out of load_model's
    cache, so a test of release_models cannot close it under the others)."""
    from cliplens import load_model

    return load_model("demo", device="cpu", backend="torch", precision="fp32", cache=False)


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory) -> Path:
    """A photo index of 40 demo images (for the service's search tests)."""
    import cliplens
    from cliplens.inputs.demo_data import write_demo_data

    photos = tmp_path_factory.mktemp("indexed-photos")
    write_demo_data(photos, 40, seed=99)
    index = tmp_path_factory.mktemp("demo-index")
    cliplens.update_index([photos], index, "demo", backend="torch")
    return index


def _chromium() -> str | None:
    """Debian's Chromium (or CLIPLENS_CHROMIUM); None: Playwright's own download (scripts/get-browser gets one)."""
    for candidate in (os.environ.get("CLIPLENS_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


CHROMIUM = _chromium()
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "test-artifacts"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright (``make test`` gets it, see scripts/get-browser). Screenshots
    that tests take go to build/test-artifacts/."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)  # None: its own
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page; console errors and uncaught page errors are collected in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
