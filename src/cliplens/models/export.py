"""Exporting a checkpoint's image and text towers to ONNX, once, into the cache.

An export lives in ``<cache>/onnx/<content hash of the model folder>/``: the towers in fp32
(``image.fp32.onnx``, ``text.fp32.onnx``), their int8 forms made by ONNX Runtime's dynamic
quantisation, the tokenizer as a ``tokenizers`` file, the preprocessor config and ``export.json``
with what the runtime needs (family, scale, bias, context length). Loading an export needs neither
torch nor transformers, which is what makes a cold start fast.

Each export is checked against the torch model it came from (see :mod:`cliplens.parity`); the
result is kept in ``parity.json`` and ``auto`` only picks a precision that passed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Callable

from ..cache import cache_dir, model_content_hash
from ..errors import ModelLoadError

EXPORT_FORMAT = "cliplens-onnx/1"
ONNX_PRECISIONS = ("fp32", "int8")
TOWERS = ("image", "text")
OPSET = 18

StatusFn = Callable[[str], None]
log = logging.getLogger("cliplens")


class ExportError(ModelLoadError):
    """A model cannot be exported to ONNX (or its export does not reproduce it)."""


def export_folder(model_dir: str | Path) -> Path:
    """Where the export of the model in ``model_dir`` lives (keyed by the folder's content hash)."""
    return cache_dir() / "onnx" / model_content_hash(model_dir)


def tower_file(folder: Path, tower: str, precision: str) -> Path:
    return folder / f"{tower}.{precision}.onnx"


def has_export(folder: Path, precision: str) -> bool:
    """Whether both towers of ``precision`` and the metadata are in ``folder``."""
    return (folder / "export.json").exists() and all(tower_file(folder, t, precision).exists() for t in TOWERS)


def read_meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / "export.json").read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{folder}: damaged ONNX export ({exc}); delete the folder to export again") from None
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{folder}: ONNX export in format {meta.get('format')!r}, expected {EXPORT_FORMAT}")
    return meta


def ensure_export(model_dir: str | Path, name: str, precision: str, *, on_status: StatusFn | None = None) -> Path:
    """The export folder holding ``precision`` for this model, exporting (and checking) what is missing."""
    from filelock import FileLock

    if precision not in ONNX_PRECISIONS:
        raise ExportError(f"precision {precision!r} is not available with ONNX Runtime (choose from {', '.join(ONNX_PRECISIONS)})")
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
            from ..parity import probe_parity

            status("checking int8 against fp32")
            probe_parity(folder, "int8")
    return folder


def _export_fp32(model_dir: Path, name: str, folder: Path, status: StatusFn) -> None:
    from .hf import TransformersEncoder

    status(f"loading {name} in torch to export it to ONNX (once)")
    encoder = TransformersEncoder(model_dir, name=name, device="cpu")
    if encoder.family == "siglip2" and encoder._naflex is not None:
        raise ExportError(f"{name}: SigLIP 2 NaFlex checkpoints cannot be exported to ONNX yet; use --backend torch")
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer_meta = _save_tokenizer(encoder, tmp)
        status("exporting the image tower to ONNX")
        _export_tower(encoder, "image", tmp)
        status("exporting the text tower to ONNX")
        _export_tower(encoder, "text", tmp)
        shutil.copy(model_dir / "preprocessor_config.json", tmp) if (model_dir / "preprocessor_config.json").exists() else None
        info = encoder.info
        meta = {
            "format": EXPORT_FORMAT, "model": name, "source": str(model_dir), "content_hash": folder.name,
            "family": info.family, "embed_dim": info.embed_dim, "context_length": info.context_length,
            "score_kind": info.score_kind, "logit_scale": info.logit_scale, "logit_bias": info.logit_bias,
            "opset": OPSET, **tokenizer_meta,
        }
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n")
        status("checking the ONNX export against torch")
        from ..parity import probe_parity

        with quiet_logs():
            probe_parity(tmp, "fp32", torch_encoder=encoder)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        encoder.close()


def _save_tokenizer(encoder, folder: Path) -> dict:
    """Save the model's tokenizer as a plain ``tokenizers`` file, and what padding it needs."""
    tokenizer = encoder.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"{encoder.name}: its tokenizer has no fast (tokenizers) form; use --backend torch")
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
        height, width = encoder.preprocessor.output_size
        args = (torch.zeros(2, 3, height, width),)
        names, shapes = ["pixel_values"], {"pixel_values": {0: batch}}
    else:
        tokens = encoder.tokenize(["a photo of a dog.", "a"])
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
                          "use --backend torch") from None


def _quantize_int8(folder: Path, status: StatusFn) -> None:
    """Dynamic int8 quantisation of both towers' weights, per output channel (activations quantised at run
    time); per-channel scales kept top-1 agreement higher than per-tensor ones at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for tower in TOWERS:
        status(f"quantising the {tower} tower to int8")
        target = tower_file(folder, tower, "int8")
        tmp = target.with_name(target.name + ".partial")
        with quiet_logs():
            quantize_dynamic(tower_file(folder, tower, "fp32"), tmp, weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(target)
