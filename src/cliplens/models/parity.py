"""Whether a faster runtime or precision gives the same answers as the model it came from.

Two checks, with the same thresholds:

- fp32 ONNX against torch: every embedding within cosine 0.9999, token ids identical.
- int8 ONNX against fp32: mean cosine ≥ 0.99 per tower, zero-shot top-1 agreement ≥ 99%.

:func:`probe_parity` runs a quick form when an export is made (a few dozen generated images),
:func:`cliplens.bench.parity.check_parity` the full one behind ``cliplens bench parity`` (500 held-out images). Both
record their verdict in the export's ``parity.json``; ``--backend auto`` only uses a precision
whose latest verdict passed.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_write_json
from ..inputs.demo_data import DEMO_LABELS, generate
from ..inputs.wordlists import imagenet_classes
from .onnx import OnnxEncoder
from .onnx_layout import ExportError

FP32_MIN_COSINE = 0.9999
INT8_MEAN_COSINE = 0.99
INT8_TOP1_AGREEMENT = 0.99
PARITY_FILE = "parity.json"
HELD_OUT_SEED = 20261123  # generated scenes no training or calibration run of the demo model has seen
PROBE_SEED = 97
PROBE_IMAGES = 128  # one flip in 128 still passes the 99% agreement bar
PROBE_TEMPLATE = "a photo of a {}."  # how labels are prompted when the two runtimes are compared


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
    texts = [PROBE_TEMPLATE.replace("{}", label) for label in labels]
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
    atomic_write_json(Path(folder) / PARITY_FILE, verdicts)


def held_out_images(n: int, image_size: int, seed: int = HELD_OUT_SEED) -> tuple[list, list[str]]:
    """``n`` generated one-shape scenes at the model's resolution (one true label each), and the 30 demo labels.

    Labels that describe the images matter: against labels that fit nothing, similarities are near
    ties and top-1 flips on noise, which says nothing about the answers a user gets.
    """
    return [sample.image for sample in generate(n, seed=seed, size=image_size)], list(DEMO_LABELS)


def probe_parity(folder: Path, precision: str, *, torch_encoder=None) -> ParityResult:
    """The quick check made when an export is created; fp32 needs the torch encoder it came from."""
    candidate = OnnxEncoder(folder, name="probe", precision=precision)
    if precision == "fp32":
        if torch_encoder is None:
            raise ValueError("the fp32 probe compares with torch and needs the torch encoder")
        reference, reference_name = torch_encoder, "torch fp32"
        _check_tokens(candidate, torch_encoder)
    else:
        reference, reference_name = OnnxEncoder(folder, name="probe", precision="fp32"), "onnx fp32"
    images, labels = held_out_images(PROBE_IMAGES, candidate.input_size[0], seed=PROBE_SEED)
    result = compare(candidate, reference, images, labels, precision=precision, source="export probe",
                     reference_name=reference_name)
    record(folder, result)
    return result


def _check_tokens(onnx_encoder, torch_encoder) -> None:
    """The exported tokenizer must give exactly the ids transformers gives (long texts included)."""
    texts = ["a photo of a dog.", "A Red CIRCLE!", "naïve café, 2 cats", "x" * 400, " ".join(imagenet_classes()[:60])]
    with warnings.catch_warnings():  # the long texts are truncated on purpose
        warnings.simplefilter("ignore")
        ids, _ = onnx_encoder.token_ids(texts)
        expected, _ = torch_encoder.token_ids(texts)
    if ids.shape != expected.shape or not np.array_equal(ids, expected):
        raise ExportError(f"{torch_encoder.name}: the exported tokenizer does not reproduce the model's "
                          "token ids; use the torch backend", parameter="backend")
