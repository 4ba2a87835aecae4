"""Exporting a checkpoint's image and text towers to ONNX, once, into the cache.

An export lives in ``<cache>/onnx/<content hash of the model folder>/``: the towers in fp32
(``image.fp32.onnx``, ``text.fp32.onnx``), the image tower's int8 form made by ONNX Runtime's
dynamic quantisation (texts always run in fp32: label and caption embeddings are cached, so the
faithful path costs little there), the tokenizer as a ``tokenizers`` file, the preprocessor config
and ``export.json`` with what the runtime needs (family, scale, bias, context length). Loading an
export needs neither torch nor transformers, which is what makes a cold start fast.

An fp32 export must reproduce the torch model it came from (the same token ids, embeddings within
cosine 0.9999) or it is not kept. How far int8 strays is a matter for the parity contract
(:mod:`cliplens.models.parity`), judged per machine when a runtime is chosen.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..files import atomic_folder, atomic_path, atomic_write_json
from ..inputs.wordlists import imagenet_classes
from .base import StatusFn
from .hf import MASKED_TEXT, PADDED_TO_CONTEXT
from .onnx_layout import (
    EXPORT_FORMAT,
    ONNX_PRECISIONS,
    ExportError,
    export_folder,
    has_export,
    tower_file,
)
from .parity import PROBE_TEMPLATE, probe_set

OPSET = 18

log = logging.getLogger("cliplens")


def ensure_export(model_dir: str | Path, name: str, precision: str, *, on_status: StatusFn | None = None) -> Path:
    """The export folder holding ``precision`` for this model, exporting (and checking) what is missing."""
    from filelock import FileLock

    if precision not in ONNX_PRECISIONS:
        raise ExportError(f"{precision!r} is not available with ONNX Runtime (choose from "
                          f"{', '.join(ONNX_PRECISIONS)})", parameter="precision")
    folder = export_folder(model_dir)
    if has_export(folder, precision):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    status = on_status or (lambda message: log.info(message))
    with FileLock(str(folder) + ".lock"):  # two processes exporting the same model wait for each other
        if not has_export(folder, "fp32"):
            _export_fp32(Path(model_dir), name, folder, status)
        if precision == "int8" and not has_export(folder, "int8"):
            _quantize_int8(folder, status)
    return folder


def _export_fp32(model_dir: Path, name: str, folder: Path, status: StatusFn) -> None:
    from .hf import TransformersEncoder

    status(f"loading {name} in torch to export it to ONNX (once)")
    encoder = TransformersEncoder(model_dir, name=name, device="cpu")
    if encoder.input_size is None:
        raise ExportError(f"{name}: its images have no fixed size (SigLIP 2 NaFlex), which the ONNX export needs; "
                          "use the torch backend", parameter="backend")
    try:
        with atomic_folder(folder) as tmp:
            _export_into(tmp, encoder, model_dir, name, folder.name, status)
    finally:
        encoder.close()


def _export_into(tmp: Path, encoder, model_dir: Path, name: str, key: str, status: StatusFn) -> None:
    """Write the fp32 export of ``encoder`` into the folder ``tmp`` and check it against torch."""
    tokenizer_meta = _save_tokenizer(encoder, tmp)
    status("exporting the image tower to ONNX")
    _export_tower(encoder, "image", tmp)
    status("exporting the text tower to ONNX")
    _export_tower(encoder, "text", tmp)
    if (model_dir / "preprocessor_config.json").exists():
        shutil.copy(model_dir / "preprocessor_config.json", tmp)
    info = encoder.info
    meta = {
        "format": EXPORT_FORMAT, "model": name, "source": str(model_dir), "content_hash": key,
        "family": info.family, "embed_dim": info.embed_dim, "context_length": info.context_length,
        "score_kind": info.score_kind, "logit_scale": info.logit_scale, "logit_bias": info.logit_bias,
        "opset": OPSET, **tokenizer_meta,
    }
    atomic_write_json(tmp / "export.json", meta)
    status("checking the ONNX export against torch")
    with quiet_logs():
        check_reproduces(tmp, encoder)


FP32_MIN_COSINE = 0.9999
CHECK_IMAGES = 16


def check_reproduces(folder: Path, torch_encoder) -> None:
    """An fp32 export must give the torch model's token ids and its embeddings (cosine ≥ 0.9999), else it is refused."""
    from .onnx import OnnxEncoder

    exported = OnnxEncoder(folder, name=torch_encoder.name, precision="fp32")
    texts = ["a photo of a dog.", "A Red CIRCLE!", "naïve café, 2 cats", "x" * 400, " ".join(imagenet_classes()[:60])]
    with warnings.catch_warnings():  # the long texts are truncated on purpose
        warnings.simplefilter("ignore")
        ids, _ = exported.token_ids(texts)
        expected, _ = torch_encoder.token_ids(texts)
    if ids.shape != expected.shape or not np.array_equal(ids, expected):
        raise ExportError(f"{torch_encoder.name}: the exported tokenizer does not reproduce the model's "
                          "token ids; use the torch backend", parameter="backend")
    images, labels = probe_set(torch_encoder.input_size[0], CHECK_IMAGES)
    pixels = [torch_encoder.prepare(image) for image in images]
    prompts = [PROBE_TEMPLATE.replace("{}", label) for label in labels]
    cosines = np.concatenate([
        np.sum(exported.encode_prepared(pixels) * torch_encoder.encode_prepared(pixels), axis=1),
        np.sum(exported.encode_texts(prompts) * torch_encoder.encode_texts(prompts), axis=1)])
    if cosines.min() < FP32_MIN_COSINE:
        raise ExportError(f"{torch_encoder.name}: the ONNX export does not reproduce the model (cosine "
                          f"{cosines.min():.6f} < {FP32_MIN_COSINE}); use the torch backend", parameter="backend")


def _save_tokenizer(encoder, folder: Path) -> dict:
    """Save the model's tokenizer as a plain ``tokenizers`` file, and what padding it needs."""
    tokenizer = encoder.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{encoder.name}: its tokenizer has no fast (tokenizers) form; use the torch backend",
                          parameter="backend")
    backend = backend.__class__.from_str(backend.to_str())  # a copy, so the loaded tokenizer keeps its settings
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(folder / "tokenizer.json"))
    return {
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        "pad_token": tokenizer.pad_token or "",
        "unk_token_id": tokenizer.unk_token_id,
        "pad_to_context": encoder.family in PADDED_TO_CONTEXT,
        "uses_attention_mask": encoder.family in MASKED_TEXT,
    }


@contextlib.contextmanager
def quiet_logs():
    """Silence what the exporter, transformers and the quantiser log or print while they run."""
    names = ("", "torch", "torch.onnx", "torch.export", "transformers", "onnxruntime", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)  # a root with a handler is not configured by a stray logging.warning()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(guard)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _tower_module(model, tower: str, with_mask: bool):
    """A torch module computing one tower's projected embedding, the form the exporter traces."""
    import torch

    def projected(out):
        return out.pooler_output if hasattr(out, "pooler_output") else out

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return projected(self.model.get_image_features(pixel_values=pixel_values))

    class TextTower(ImageTower):
        def forward(self, input_ids):
            return projected(self.model.get_text_features(input_ids=input_ids))

    class MaskedTextTower(ImageTower):
        def forward(self, input_ids, attention_mask):
            return projected(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    cls = ImageTower if tower == "image" else MaskedTextTower if with_mask else TextTower
    return cls().eval()


def _export_tower(encoder, tower: str, folder: Path) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    if tower == "image":
        height, width = encoder.input_size
        args = (torch.zeros(2, 3, height, width),)
        names, shapes = ["pixel_values"], {"pixel_values": {0: batch}}
    else:
        ids, mask = encoder.token_ids(["a photo of a dog.", "a"])
        tokens = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if encoder.family in MASKED_TEXT:
            seq = torch.export.Dim("sequence", min=2, max=encoder.context_length)
            args = (tokens["input_ids"], tokens["attention_mask"])
            names, shapes = ["input_ids", "attention_mask"], {"input_ids": {0: batch, 1: seq},
                                                              "attention_mask": {0: batch, 1: seq}}
        else:
            args = (tokens["input_ids"],)
            names, shapes = ["input_ids"], {"input_ids": {0: batch}}
    module = _tower_module(encoder.model, tower, tower == "text" and encoder.family in MASKED_TEXT)
    path = tower_file(folder, tower, "fp32")
    try:
        with quiet_logs():
            program = torch.onnx.export(module, args, input_names=names, output_names=["embeds"],
                                        dynamic_shapes=shapes, opset_version=OPSET, dynamo=True)
            program.save(str(path))  # weights go to a side file past protobuf's 2 GB
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; the model still works in torch
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{encoder.name}: the {tower} tower cannot be exported to ONNX ({first[:200]}); "
                          "use the torch backend", parameter="backend") from None


#: Layers of the image tower left in fp32 by the int8 quantisation: the patch embedding and the first transformer
#: block(s). A sweep on this CPU kind (README, runtime section) found them the most sensitive: keeping them
#: took the demo model's recall@10 against fp32 from 0.976 to 0.99 for 1.5× fp32's speed on ViT-B/32, where
#: quantising everything gave 1.4× and failed the ranking contract.
INT8_KEEP_FIRST_BLOCKS = 1


def int8_excluded_nodes(model) -> list[str]:
    """Names of the nodes the int8 quantiser must leave in fp32: the patch embedding and the first blocks.

    The exporter records each node's module path in its metadata (``namespace``), so the same names mean
    the same layers for any CLIP or SigLIP tower cliplens exports.
    """
    weights = {t.name for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2 or node.input[1] not in weights:
            continue  # attention's activation × activation products are never quantised
        scope = " ".join(p.value for p in node.metadata_props if p.key in ("namespace", "pkg.torch.onnx.name_scopes"))
        blocks = [int(b) for b in re.findall(r"encoder\.layers\.(\d+)\.", scope)]
        if "patch_embedding" in scope or (blocks and blocks[-1] < INT8_KEEP_FIRST_BLOCKS):
            keep.append(node.name)
            if node.op_type == "Gemm":  # the quantiser splits a Gemm into MatMul + Add before matching names
                keep += [node.name + "_MatMul", node.name + "_Add"]
    return keep


def _quantize_int8(folder: Path, status: StatusFn) -> None:
    """Dynamic int8 quantisation of the image tower's weights (per tensor; activations quantised at run time),
    the sensitive first layers kept in fp32 (:func:`int8_excluded_nodes`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    status("quantising the image tower to int8")
    source = tower_file(folder, "image", "fp32")
    excluded = int8_excluded_nodes(onnx.load(str(source), load_external_data=False))
    with atomic_path(tower_file(folder, "image", "int8")) as tmp, quiet_logs():
        quantize_dynamic(source, tmp, weight_type=QuantType.QInt8, per_channel=False, nodes_to_exclude=excluded)
