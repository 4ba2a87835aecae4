"""The full parity check behind ``cliplens bench parity``: every runtime against its reference."""

from __future__ import annotations

import warnings
from typing import Sequence

from ..inputs.images import load_image
from ..inputs.wordlists import imagenet_classes
from ..models import BackendNote, load_model
from ..models.parity import ParityResult, compare, held_out_images, record


def check_parity(model: str | None = None, *, images: Sequence | None = None, labels: Sequence[str] | None = None,
                 n: int = 500, bf16: bool = True, on_status=None) -> list[ParityResult]:
    """The full check behind ``cliplens bench parity``: ONNX fp32 against torch, int8 against ONNX fp32
    (and torch bf16 against torch fp32, for information) on ``n`` held-out images.

    ``images`` (PIL images or paths) default to generated scenes, ``labels`` to the demo labels for
    generated scenes and the ImageNet classes for the caller's images. The ONNX verdicts are recorded
    in the export, so ``--backend auto`` follows them.
    """
    torch_fp32 = load_model(model, device="cpu", backend="torch", precision="fp32", cache=False)
    with warnings.catch_warnings():  # an earlier failed verdict is what this check is about to redo
        warnings.simplefilter("ignore", BackendNote)
        onnx_fp32 = load_model(model, backend="onnx", precision="fp32", cache=False, on_status=on_status)
        onnx_int8 = load_model(model, backend="onnx", precision="int8", cache=False, on_status=on_status)
    if images is None:
        images, default_labels = held_out_images(n, torch_fp32.input_size[0])
    else:
        images, default_labels = [load_image(im, draft_size=torch_fp32.draft_size) for im in images], list(imagenet_classes())
    labels = list(labels) if labels else default_labels
    results = [
        compare(onnx_fp32, torch_fp32, images, labels, precision="fp32", source="bench parity",
                reference_name="torch fp32"),
        compare(onnx_int8, onnx_fp32, images, labels, precision="int8", source="bench parity",
                reference_name="onnx fp32"),
    ]
    for result in results:
        record(onnx_fp32.folder, result)
    if bf16:
        torch_bf16 = load_model(model, device="cpu", backend="torch", precision="bf16", cache=False)
        results.append(compare(torch_bf16, torch_fp32, images, labels, precision="bf16", source="bench parity",
                               reference_name="torch fp32"))
    return results
