"""The multilingual families load and run with the same parity to transformers as CLIP and SigLIP, on tiny random
checkpoints written here (Chinese-CLIP's BERT, AltCLIP's XLM-R and MetaCLIP 2's text towers), and the commands
work with each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cliplens
from cliplens.inputs.demo_data import generate

from conftest import _tokenizer, run_cli, save_preprocessor

FAMILIES = ["chinese_clip", "altclip", "metaclip_2"]
CONTEXT = 16


def save_family(path, family: str, seed: int = 0):
    from transformers import (AltCLIPConfig, AltCLIPModel, ChineseCLIPConfig, ChineseCLIPModel, MetaClip2Config,
                              MetaClip2Model)

    torch.manual_seed(seed)
    tok = _tokenizer(CONTEXT)
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, pad_token_id=tok.pad_token_id, max_position_embeddings=CONTEXT)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    if family == "chinese_clip":
        model = ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    elif family == "altclip":  # XLM-R positions start after the padding index
        text = {**text, "max_position_embeddings": CONTEXT + tok.pad_token_id + 1, "project_dim": 24}
        model = AltCLIPModel(AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=24))
    else:
        text = {**text, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
        model = MetaClip2Model(MetaClip2Config(text_config=text, vision_config=vision, projection_dim=24))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    save_preprocessor(path, 32)
    return path, model.eval()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory):
    path, model = save_family(tmp_path_factory.mktemp(request.param), request.param)
    return request.param, path, model


def _cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_parity_with_transformers(family):
    name, path, model = family
    from transformers import AutoTokenizer

    encoder = cliplens.load_model(str(path), backend="torch")
    assert encoder.info.family == name and encoder.embed_dim == 24
    texts = ["a red circle", "two blue squares on a white background", "a"]
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        want_text = (out.pooler_output if hasattr(out, "pooler_output") else out).numpy()
    assert _cos(encoder.encode_texts(texts), want_text).min() >= 0.9999
    images = [s.image for s in generate(3, seed=4)]
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor.from_pretrained(path)(images, return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=pixels)
        want_image = (out.pooler_output if hasattr(out, "pooler_output") else out).numpy()
    assert _cos(encoder.encode_images(images), want_image).min() >= 0.9999
    padded = encoder.encode_texts(["a red circle"])[0]  # a text alone equals the same text in a padded batch
    assert _cos(padded[None], encoder.encode_texts(texts)[:1]).min() >= 0.9999


def test_the_towers_export_to_onnx_with_parity(family):
    pytest.importorskip("onnxruntime")
    name, path, _ = family
    onnx = cliplens.load_model(str(path), backend="onnx", precision="fp32")
    reference = cliplens.load_model(str(path), backend="torch")
    texts = ["a red circle", "two blue squares on a white background", "a"]
    images = [s.image for s in generate(3, seed=6)]
    assert onnx.info.backend == "onnx" and onnx.info.family == name
    assert _cos(onnx.encode_texts(texts), reference.encode_texts(texts)).min() >= 0.9999
    assert _cos(onnx.encode_images(images), reference.encode_images(images)).min() >= 0.9999


@pytest.mark.slow
def test_the_commands_work_with_each_family(family, tmp_path):
    name, path, _ = family
    image = tmp_path / "shape.png"
    next(generate(1, seed=5)).image.save(image)
    proc = run_cli("classify", image, "red circle", "blue square", "--model", path, "--backend", "torch", "--json")
    assert proc.returncode == 0, proc.stderr
    assert abs(sum(label["probability"] for label in json.loads(proc.stdout)["labels"]) - 1) < 1e-6
    proc = run_cli("embed", image, "--model", path, "--backend", "torch", "--out", tmp_path / "emb")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("rank", "a red circle", image, "--model", path, "--backend", "torch", "--json")
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "photos").mkdir()
    Image.open(image).save(tmp_path / "photos" / "a.png")
    proc = run_cli("index", tmp_path / "photos", "--index", tmp_path / "index", "--model", path, "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("search", "a red circle", "--index", tmp_path / "index", "--backend", "torch", "--json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)["results"]) == 1, proc.stderr
    proc = run_cli("caption", image, "--model", path, "--backend", "torch", "--banks", "demo_shapes,colours", "--json")
    assert proc.returncode == 0 and "llm" in json.loads(proc.stdout), proc.stderr
    proc = run_cli("dream", "a red circle", "--model", path, "--steps", "3", "--out", tmp_path / "dream.png")
    assert proc.returncode == 0 and Image.open(tmp_path / "dream.png").size[0] > 0, proc.stderr
