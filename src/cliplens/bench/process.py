"""Benchmarks of whole ``cliplens`` processes: cold-start wall time and peak memory."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


def cliplens_command() -> list[str]:
    """How to start the ``cliplens`` command of this installation."""
    script = Path(sys.executable).with_name("cliplens")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cliplens.cli import run; run()"]


@dataclass
class RunStats:
    """One finished process: wall seconds and peak resident memory."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stderr: str


def run_measured(args: Sequence[str], env: dict | None = None) -> RunStats:
    """Run a process to the end; its own peak RSS comes from ``wait4`` (so other children do not count)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty process cannot block on it
        start = time.perf_counter()
        proc = subprocess.Popen(list(args), stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak = usage.ru_maxrss * scale / 2**20
        else:  # pragma: no cover - Windows has no wait4
            proc.wait()
            peak = float("nan")
        wall = time.perf_counter() - start
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
    return RunStats(wall, peak, proc.returncode, text)


@dataclass
class ColdStart:
    model: str
    command: str
    first_run_s: float
    wall_s_median: float
    wall_s_min: float
    runs: int


def cold_start(image: Path, labels: Sequence[str], model: str, *, runs: int = 5, shown_model: str | None = None
               ) -> ColdStart:
    """Wall time of ``cliplens classify IMAGE LABELS --model M`` as a new process each time.

    The first run may export the model and embed the reference vocabulary; the figures are the
    runs after it, each a fresh process (imports, model load, decode, encode, answer).
    """
    args = cliplens_command() + ["classify", str(image), *labels, "--model", model]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = run_measured(args, env)
    if first.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {first.stderr.strip().splitlines()[-1:]}")
    times = [run_measured(args, env).wall_s for _ in range(runs)]
    shown_model = shown_model or model
    shown = ["cliplens", "classify", image.name, *labels, "--model", shown_model]
    return ColdStart(shown_model, " ".join(shown), first.wall_s, statistics.median(times), min(times), runs)


@dataclass
class MemoryRun:
    model: str
    images: int
    peak_rss_mb: float
    seconds: float
    command: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def index_memory(folder: Path, count: int, model: str, index: Path, *, shown_model: str | None = None) -> MemoryRun:
    """Peak RSS of ``cliplens index FOLDER`` over ``count`` images into a fresh index, in a process of its own."""
    shutil.rmtree(index, ignore_errors=True)
    args = cliplens_command() + ["index", str(folder), "--index", str(index), "--model", model]
    stats = run_measured(args, {**os.environ, "HF_HUB_OFFLINE": "1"})
    if stats.returncode != 0:
        raise RuntimeError(f"cliplens index failed: {stats.stderr.strip().splitlines()[-1:]}")
    shown_model = shown_model or model
    return MemoryRun(shown_model, count, stats.peak_rss_mb, stats.wall_s,
                     f"cliplens index {folder.name}/ --index NEW --model {shown_model}")
