"""The full parity check behind ``cliplens bench parity``: every runtime on this machine against torch fp32."""

from __future__ import annotations

from collections.abc import Sequence

from ..inputs.images import load_image
from ..inputs.wordlists import imagenet_classes
from ..models import load_model, resolve_model_dir
from ..models.backend import REFERENCE, Runtime
from ..models.machine import has_bf16_units
from ..models.onnx import onnxruntime_available
from ..models.parity import HELD_OUT_SEED, Verdict, probe_set
from ..models.runtimes import measure

CPU_RUNTIMES = (Runtime("onnx", "int8"), Runtime("onnx", "fp32"), Runtime("torch", "bf16"), REFERENCE)


def check_parity(model: str | None = None, *, images: Sequence | None = None, labels: Sequence[str] | None = None,
                 n: int = 500, bf16: bool | None = None, on_status=None) -> list[Verdict]:
    """Hold every CPU runtime to both contracts against torch fp32 on ``n`` held-out images and record the verdicts,
    so ``auto`` follows them on this machine.

    ``images`` (PIL images or paths) default to generated scenes, ``labels`` to the demo labels for
    generated scenes and the ImageNet classes for the caller's images. ``bf16`` (default: only where
    the CPU has bf16 units) adds torch bf16, which elsewhere is emulated and slow.
    """
    folder = resolve_model_dir(model)
    name = model or str(folder)
    reference = load_model(str(folder), device="cpu", backend="torch", precision="fp32", cache=False)
    opened = {REFERENCE: reference}
    try:
        if images is None:
            images, default_labels = probe_set(reference.input_size[0], n, seed=HELD_OUT_SEED)
        else:
            images = [load_image(im, draft_size=reference.draft_size) for im in images]
            default_labels = list(imagenet_classes())
        runtimes = [r for r in CPU_RUNTIMES
                    if (r.backend != "onnx" or onnxruntime_available())
                    and (r.precision != "bf16" or (has_bf16_units() if bf16 is None else bf16))]
        verdicts = measure(folder, name, runtimes, "cpu", source="bench parity", images=images,
                           labels=list(labels) if labels else default_labels, opened=opened,
                           on_status=on_status, auto=False)
    finally:
        for encoder in opened.values():
            encoder.close()
    return list(verdicts.values())
