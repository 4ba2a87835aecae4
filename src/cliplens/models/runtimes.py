"""Opening a runtime, and choosing for each kind of answer the fastest one that keeps the reference's answers.

:func:`open_runtime` loads one :class:`~cliplens.models.backend.Runtime` (exporting to ONNX once when
it needs to). :func:`choose` takes a :class:`~cliplens.models.backend.RuntimePlan` and a purpose
("probabilities" or "rankings") and returns the runtime to use: the fastest candidate whose verdict
on this machine meets that purpose's contract. Verdicts missing for this machine are measured first,
once per checkpoint and machine (:func:`measure`), against torch fp32 on generated probe images.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..errors import CliplensError
from .backend import REFERENCE, BackendNote, Runtime, RuntimePlan
from .base import Encoder, StatusFn
from .machine import machine_key
from .parity import (
    PURPOSES,
    Verdict,
    judge,
    probe_set,
    read_verdicts,
    record_verdicts,
    run_probe,
)


class PrecisionNote(UserWarning):
    """A named reduced precision (``--precision int8``) says how far its answers may stray from fp32."""


_noted: set[tuple[str, str, str]] = set()
_noted_lock = threading.Lock()


def open_runtime(model_dir: Path, name: str, runtime: Runtime, device: str, *,
                 on_status: StatusFn | None = None) -> Encoder:
    """Load the model in ``runtime`` on ``device`` (an ONNX runtime exports the model once, into the cache)."""
    if runtime.backend == "torch":
        from .hf import TransformersEncoder

        return TransformersEncoder(model_dir, name=name, device=device, precision=runtime.precision)
    from .export import ensure_export
    from .onnx import OnnxEncoder

    folder = ensure_export(model_dir, name, runtime.precision, on_status=on_status)
    return OnnxEncoder(folder, name=name, precision=runtime.precision, device=device, model_path=model_dir)


def measure(model_dir: Path, name: str, runtimes: Sequence[Runtime], device: str, *, source: str = "probe",
            images: Sequence | None = None, labels: Sequence[str] | None = None,
            opened: dict[Runtime, Encoder] | None = None, on_status: StatusFn | None = None,
            auto: bool = True) -> dict[Runtime, Verdict]:
    """Hold each of ``runtimes`` to the contracts against torch fp32 on probe images, and record the verdicts.

    ``images`` and ``labels`` default to :func:`~cliplens.models.parity.probe_set`. Runtimes that cannot
    be opened are left out with a :class:`BackendNote` under ``auto``, else their error is raised.
    ``opened`` receives the encoders loaded on the way, so the one chosen need not be loaded again.
    """
    opened = {} if opened is None else opened
    status = on_status or (lambda message: None)
    machine = machine_key(device)
    status(f"checking which runtime keeps {name}'s answers fastest on this machine (once)")
    reference = opened.get(REFERENCE) or open_runtime(model_dir, name, REFERENCE, device)
    opened[REFERENCE] = reference
    if images is None:
        size = reference.input_size[0] if reference.input_size else 224
        images, default_labels = probe_set(size)
        labels = labels or default_labels
    pixels = [reference.prepare(image) for image in images]
    expected = run_probe(reference, pixels, labels)
    verdicts: dict[Runtime, Verdict] = {}
    for runtime in runtimes:
        try:
            encoder = opened.get(runtime) or open_runtime(model_dir, name, runtime, device, on_status=on_status)
        except CliplensError as exc:
            if not auto:
                raise
            warnings.warn(f"{name}: {exc}; {runtime.name} is left out", BackendNote, stacklevel=3)
            continue
        opened[runtime] = encoder
        status(f"checking {runtime.name} against {REFERENCE.name}")
        outputs = expected if runtime == REFERENCE else run_probe(encoder, pixels, labels)
        verdicts[runtime] = judge(runtime.name, outputs, expected, machine=machine, source=source,
                                  fp32=runtime.fp32, reference_name=REFERENCE.name)
    record_verdicts(model_dir, list(verdicts.values()))
    return verdicts


def fastest(verdicts: dict[Runtime, Verdict], candidates: Sequence[Runtime], purpose: str) -> Runtime | None:
    """The quickest of ``candidates`` whose verdict meets ``purpose``'s contract (None when none does)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, not {purpose!r}")
    passing = [r for r in candidates if r in verdicts and verdicts[r].meets(purpose)]
    if not passing:
        return None
    return max(passing, key=lambda r: (verdicts[r].images_per_s or 0.0, -candidates.index(r)))


def choose(model_dir: Path, name: str, plan: RuntimePlan, purpose: str, *, opened: dict[Runtime, Encoder],
           on_status: StatusFn | None = None) -> Runtime:
    """The runtime ``plan`` comes to for answers of kind ``purpose`` on this machine."""
    if not plan.choice_needed:
        runtime = plan.candidates[0]
        if plan.named and not runtime.fp32:
            _note_named(model_dir, name, runtime, plan.device, opened, on_status)
        return runtime
    machine = machine_key(plan.device)
    verdicts = {r: v for r in plan.candidates if (v := read_verdicts(model_dir, machine).get(r.name))}
    missing = [r for r in plan.candidates if r not in verdicts]
    if missing:
        verdicts.update(measure(model_dir, name, missing, plan.device, opened=opened, on_status=on_status))
    chosen = fastest(verdicts, plan.candidates, purpose)
    if chosen is None:  # not even an fp32 runtime matched the reference: run the reference itself, if allowed
        chosen = REFERENCE if REFERENCE in plan.candidates else plan.candidates[-1]
        warnings.warn(f"{name}: no runtime met the {purpose} contract on this machine; running {chosen.name}",
                      BackendNote, stacklevel=4)
    return chosen


def _note_named(model_dir: Path, name: str, runtime: Runtime, device: str, opened: dict[Runtime, Encoder],
                on_status: StatusFn | None) -> None:
    """Say once per process how far a reduced precision the user named strays from fp32 (measured here once)."""
    key = (str(model_dir), runtime.name, device)
    with _noted_lock:
        if key in _noted:
            return
        _noted.add(key)
    verdict = read_verdicts(model_dir, machine_key(device)).get(runtime.name)
    if verdict is None:
        verdict = measure(model_dir, name, [runtime], device, opened=opened, on_status=on_status, auto=False)[runtime]
    warnings.warn(f"{name}: {verdict.summary()}", PrecisionNote, stacklevel=4)
