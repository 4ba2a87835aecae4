"""Exporting a checkpoint's image and text towers to ONNX, once, into the cache.

An export lives in ``<cache>/onnx/<content hash of the model folder>/``: the towers in fp32
(``image.fp32.onnx``, ``text.fp32.onnx``), their int8 forms made by ONNX Runtime's dynamic
quantisation, the tokenizer as a ``tokenizers`` file, the preprocessor config and ``export.json``
with what the runtime needs (family, scale, bias, context length). Loading an export needs neither
torch nor transformers, which is what makes a cold start fast.

Each export is checked against the torch model it came from (see :mod:`cliplens.models.parity`); the
result is kept in ``parity.json`` and ``auto`` only picks a precision that passed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import warnings
from pathlib import Path

from ..files import atomic_folder, atomic_path, atomic_write_json
from .base import StatusFn
from .parity import probe_parity
from .onnx_layout import EXPORT_FORMAT, ONNX_PRECISIONS, TOWERS, ExportError, export_folder, has_export, tower_file

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
            status("checking int8 against fp32")
            probe_parity(folder, "int8")
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
        probe_parity(tmp, "fp32", torch_encoder=encoder)


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
        "pad_to_context": encoder.family in ("siglip", "siglip2"),
        "uses_attention_mask": encoder.family == "clip",
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
        if encoder.family == "clip":
            seq = torch.export.Dim("sequence", min=2, max=encoder.context_length)
            args = (tokens["input_ids"], tokens["attention_mask"])
            names, shapes = ["input_ids", "attention_mask"], {"input_ids": {0: batch, 1: seq},
                                                              "attention_mask": {0: batch, 1: seq}}
        else:
            args = (tokens["input_ids"],)
            names, shapes = ["input_ids"], {"input_ids": {0: batch}}
    module = _tower_module(encoder.model, tower, tower == "text" and encoder.family == "clip")
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


def _quantize_int8(folder: Path, status: StatusFn) -> None:
    """Dynamic int8 quantisation of both towers' weights, per output channel (activations quantised at run
    time); per-channel scales kept top-1 agreement higher than per-tensor ones at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for tower in TOWERS:
        status(f"quantising the {tower} tower to int8")
        with atomic_path(tower_file(folder, tower, "int8")) as tmp, quiet_logs():
            quantize_dynamic(tower_file(folder, tower, "fp32"), tmp, weight_type=QuantType.QInt8, per_channel=True)
