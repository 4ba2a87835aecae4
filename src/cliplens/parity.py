"""Whether a faster runtime or precision gives the same answers as the model it came from.

Two checks, with the same thresholds:

- fp32 ONNX against torch: every embedding within cosine 0.9999, token ids identical.
- int8 ONNX against fp32: mean cosine ≥ 0.99 per tower, zero-shot top-1 agreement ≥ 99%.

:func:`probe_parity` runs a quick form when an export is made (a few dozen generated images),
:func:`check_parity` the full one behind ``cliplens bench parity`` (500 held-out images). Both
record their verdict in the export's ``parity.json``; ``--backend auto`` only uses a precision
whose latest verdict passed.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UsageError

FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.99
INT8_TOP1_AGREEMENT = 0.99
PARITY_FILE = "parity.json"
HELD_OUT_SEED = 20261123  # generated scenes no training or calibration run of the demo model has seen
PROBE_SEED = 97
PROBE_IMAGES = 128  # one flip in 128 still passes the 99% agreement bar


@dataclass
class ParityResult:
    """One precision compared with its reference on the same images and labels."""

    precision: str  # the precision checked: "fp32" (ONNX against torch) or "int8" (against ONNX fp32)
    reference: str  # what it was compared with
    passed: bool
    images: int
    labels: int
    image_cosine_mean: float
    image_cosine_min: float
    text_cosine_mean: float
    text_cosine_min: float
    top1_agreement: float
    source: str  # "export probe" or "bench parity"

    def to_dict(self) -> dict:
        return asdict(self)


def _rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def compare(candidate, reference, images: Sequence, labels: Sequence[str], *, precision: str, source: str,
            reference_name: str) -> ParityResult:
    """Embed the same images and label prompts with both encoders and judge ``candidate`` against ``reference``."""
    from .prompts import DEFAULT_TEMPLATE, prompts_for

    texts = prompts_for(labels, [DEFAULT_TEMPLATE])
    pixels = [reference.prepare(im) for im in images]
    ref_img, cand_img = reference.encode_prepared(pixels), candidate.encode_prepared(pixels)
    ref_txt, cand_txt = reference.encode_texts(texts), candidate.encode_texts(texts)
    image_cos, text_cos = _rowwise_cosine(cand_img, ref_img), _rowwise_cosine(cand_txt, ref_txt)
    agreement = float(np.mean(np.argmax(cand_img @ cand_txt.T, 1) == np.argmax(ref_img @ ref_txt.T, 1)))
    if precision == "fp32":
        passed = bool(min(image_cos.min(), text_cos.min()) >= FP32_MIN_COSINE)
    else:  # reduced precisions (int8, bf16, fp16) are held to the int8 thresholds
        passed = bool(image_cos.mean() >= INT8_MEAN_COSINE and text_cos.mean() >= INT8_MEAN_COSINE
                      and agreement >= INT8_TOP1_AGREEMENT)
    return ParityResult(precision, reference_name, passed, len(images), len(labels), float(image_cos.mean()),
                        float(image_cos.min()), float(text_cos.mean()), float(text_cos.min()), agreement, source)


def read_parity(folder: Path) -> dict[str, dict]:
    """The verdicts recorded for an export, by precision ({} when none)."""
    try:
        return json.loads((Path(folder) / PARITY_FILE).read_text())
    except (OSError, ValueError):
        return {}


def parity_passed(folder: Path, precision: str) -> bool:
    """Whether the latest parity check of ``precision`` in this export passed."""
    return bool(read_parity(folder).get(precision, {}).get("passed", False))


def record(folder: Path, result: ParityResult) -> None:
    """Keep ``result`` as the verdict for its precision (atomically, beside the export)."""
    verdicts = read_parity(folder)
    verdicts[result.precision] = result.to_dict()
    tmp = Path(folder) / f"{PARITY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(verdicts, indent=2) + "\n")
    tmp.replace(Path(folder) / PARITY_FILE)


def held_out_images(n: int, image_size: int, seed: int = HELD_OUT_SEED) -> tuple[list, list[str]]:
    """``n`` generated one-shape scenes at the model's resolution (one true label each), and the 30 demo labels.

    Labels that describe the images matter: against labels that fit nothing, similarities are near
    ties and top-1 flips on noise, which says nothing about the answers a user gets.
    """
    from .demo_data import DEMO_LABELS, generate

    return [sample.image for sample in generate(n, seed=seed, size=image_size)], list(DEMO_LABELS)


def probe_parity(folder: Path, precision: str, *, torch_encoder=None) -> ParityResult:
    """The quick check made when an export is created; fp32 needs the torch encoder it came from."""
    from .models.onnx import OnnxEncoder

    candidate = OnnxEncoder(folder, name="probe", precision=precision)
    if precision == "fp32":
        if torch_encoder is None:
            raise UsageError("the fp32 probe compares with torch and needs the torch encoder")
        reference, reference_name = torch_encoder, "torch fp32"
        _check_tokens(candidate, torch_encoder)
    else:
        reference, reference_name = OnnxEncoder(folder, name="probe", precision="fp32"), "onnx fp32"
    images, labels = held_out_images(PROBE_IMAGES, candidate.preprocessor.output_size[0], seed=PROBE_SEED)
    result = compare(candidate, reference, images, labels, precision=precision, source="export probe",
                     reference_name=reference_name)
    record(folder, result)
    return result


def _check_tokens(onnx_encoder, torch_encoder) -> None:
    """The exported tokenizer must give exactly the ids transformers gives (long texts included)."""
    import warnings

    from .models.export import ExportError
    from .prompts import imagenet_classes

    texts = ["a photo of a dog.", "A Red CIRCLE!", "naïve café, 2 cats", "x" * 400, " ".join(imagenet_classes()[:60])]
    with warnings.catch_warnings():  # the long texts are truncated on purpose
        warnings.simplefilter("ignore")
        ids, _ = onnx_encoder.token_ids(texts)
        expected = torch_encoder.tokenize(texts)["input_ids"].numpy()
    if ids.shape != expected.shape or not np.array_equal(ids, expected):
        raise ExportError(f"{torch_encoder.name}: the exported tokenizer does not reproduce the model's "
                             "token ids; use --backend torch")


def check_parity(model: str | None = None, *, images: Sequence | None = None, labels: Sequence[str] | None = None,
                 n: int = 500, bf16: bool = True, on_status=None) -> list[ParityResult]:
    """The full check behind ``cliplens bench parity``: ONNX fp32 against torch, int8 against ONNX fp32
    (and torch bf16 against torch fp32, for information) on ``n`` held-out images.

    ``images`` (PIL images or paths) default to generated scenes, ``labels`` to the demo labels for
    generated scenes and the ImageNet classes for the caller's images. The ONNX verdicts are recorded
    in the export, so ``--backend auto`` follows them.
    """
    from .images import load_image
    from .models import load_model
    from .prompts import imagenet_classes

    import warnings

    from .models import BackendNote

    torch_fp32 = load_model(model, device="cpu", backend="torch", precision="fp32", cache=False)
    with warnings.catch_warnings():  # an earlier failed verdict is what this check is about to redo
        warnings.simplefilter("ignore", BackendNote)
        onnx_fp32 = load_model(model, backend="onnx", precision="fp32", cache=False, on_status=on_status)
        onnx_int8 = load_model(model, backend="onnx", precision="int8", cache=False, on_status=on_status)
    if images is None:
        images, default_labels = held_out_images(n, torch_fp32.preprocessor.output_size[0])
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
