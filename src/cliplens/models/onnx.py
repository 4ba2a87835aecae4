"""The ONNX Runtime backend: a checkpoint's exported towers, run without torch or transformers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .base import Encoder, ModelInfo, warn_truncated
from .onnx_layout import TOWERS, read_meta, tower_file
from .preprocess import ImagePreprocessor


def onnxruntime_available() -> bool:
    """Whether the optional ``onnxruntime`` package is installed."""
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise UsageError("this ONNX Runtime build cannot use it (install onnxruntime-gpu for CUDA, or "
                     "use the torch backend)", value=str(device), parameter="device")


class OnnxEncoder(Encoder):
    """An Encoder over an ONNX export (see :mod:`cliplens.models.export`); sessions open on first use."""

    image_batch_size = 16  # ONNX Runtime on a CPU is as fast at 8–16 as at 32, with less memory

    def __init__(self, folder: str | Path, name: str, precision: str = "fp32", device: str = "cpu",
                 threads: int | None = None, model_path: str | Path | None = None):
        """``folder`` is the export; ``model_path`` the model folder it stands for (content-identical copies
        share one export, so the export's own record of its source may name another copy)."""
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        self.precision = precision
        self.device = device
        self.threads = threads
        self._providers = _providers(device)
        self._sessions: dict[str, object] = {}
        self._lock = threading.Lock()
        for tower in TOWERS:
            if not tower_file(self.folder, tower, precision).exists():
                raise UsageError(f"{name}: no {precision} ONNX export in {self.folder}", parameter="precision")
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.context_length = int(self.meta["context_length"])
        self.tokenizer.enable_truncation(max_length=self.context_length)
        self.preprocessor = ImagePreprocessor.from_pretrained(self.folder)
        meta = self.meta
        self.info = ModelInfo(
            name=name, path=str(model_path or meta["source"]), family=meta["family"], embed_dim=int(meta["embed_dim"]),
            context_length=self.context_length, score_kind=meta["score_kind"], logit_scale=float(meta["logit_scale"]),
            logit_bias=None if meta["logit_bias"] is None else float(meta["logit_bias"]),
            device=device, backend="onnx", precision=precision, text_precision="fp32",
        )

    def session(self, tower: str):
        """The ONNX Runtime session of one tower, opened on first use."""
        with self._lock:
            if tower not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3
                # Idle model threads sleep instead of spinning, so decode workers get the cores between
                # batches (15% more images/s end to end on 2 cores; the model alone is as fast).
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                if self.threads:
                    options.intra_op_num_threads = self.threads
                path = tower_file(self.folder, tower, self.precision)
                self._sessions[tower] = ort.InferenceSession(str(path), options, providers=self._providers)
            return self._sessions[tower]

    def encode_pixel_batch(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        return self.session("image").run(None, {"pixel_values": pixels})[0]

    def token_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (int64), padded as the model was trained, truncated with a warning."""
        encodings = self.tokenizer.encode_batch(list(texts))
        warn_truncated([text for text, enc in zip(texts, encodings) if enc.overflowing], self.context_length)
        width = self.context_length if self.meta["pad_to_context"] else max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), int(self.meta["pad_token_id"]), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        return ids, mask

    def encode_text_batch(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self.token_ids(texts)
        feeds = {"input_ids": ids}
        if self.meta["uses_attention_mask"]:
            feeds["attention_mask"] = mask
        return self.session("text").run(None, feeds)[0]

    def readable(self, texts: Sequence[str]) -> list[bool]:
        unk = self.meta.get("unk_token_id")
        if unk is None:
            return [True] * len(texts)
        return [unk not in enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
