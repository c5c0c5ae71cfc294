"""bench(models, ...) -> BenchReport: latency, throughput, memory and size of several models in one run.

Each (model, expert mode, thread count) is measured by mome_edge/runtime/device_bench.py (the
same one-file script that runs on a device) in a fresh Python subprocess, so that peak
resident memory belongs to that model alone and models never share caches or allocators.
Rows are reported with ratios to the first model's row of the same batch, threads and mode.
numpy + onnxruntime only (matplotlib is imported by `plot_bench` alone).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mome_edge.errors import ConfigError, DataError, MomeError
from mome_edge.onnx_contract import DEFAULT_MEMORY_BUDGET_MB, EXPERT_MODES, MODEL_SUFFIXES

DEFAULT_BATCHES = (1, 32, 512)
DEFAULT_THREADS = (1, 2)
DEFAULT_RUNS = 100
DEFAULT_WARMUP = 10
RATIO_KEYS = ("p50_ms", "p90_ms", "p99_ms", "rows_per_s", "peak_rss_mb", "added_rss_mb", "load_s", "file_bytes")
WORKER_TIMEOUT_S = 3600
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    batches: tuple[int, ...] = DEFAULT_BATCHES
    threads: tuple[int, ...] = DEFAULT_THREADS
    runs: int = DEFAULT_RUNS
    warmup: int = DEFAULT_WARMUP
    experts: tuple[str, ...] = ("materialize",)
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batches", "threads"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"{name}={values!r}: use positive integers, e.g. 1,32,512")
        if not isinstance(self.runs, int) or self.runs < 1:
            raise ConfigError(f"runs={self.runs!r}: use an integer >= 1")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup!r}: use an integer >= 0")
        unknown = [e for e in self.experts if e not in EXPERT_MODES]
        if not self.experts or unknown:
            raise ConfigError(f"experts={list(self.experts)!r}: use {' and/or '.join(EXPERT_MODES)}")
        if self.memory_budget_mb < 0:
            raise ConfigError(f"memory_budget_mb={self.memory_budget_mb}: use a number >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "threads": list(self.threads), "runs": self.runs, "warmup": self.warmup,
                "experts": list(self.experts), "memory_budget_mb": self.memory_budget_mb, "seed": self.seed}


@dataclass(frozen=True)
class BenchReport:
    results: list[dict[str, Any]]
    environment: dict[str, Any]
    config: BenchConfig
    models: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"results": self.results, "baseline_model": self.models[0] if self.models else None,
                "environment": self.environment, "config": self.config.to_json()}


def bench(models: Sequence[str | Path], config: BenchConfig | None = None) -> BenchReport:
    """Measure every model; see the module docstring.

    Raises:
        DataError: a model file is missing or of an unknown type.
        MomeError: a worker failed (its one-line error is in the message).
    """
    config = config or BenchConfig()
    if not models:
        raise ConfigError("no model to bench; pass one or more .mome/.onnx/.ort files")
    paths = [Path(m) for m in models]
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} does not exist or is not a file; pass .mome, .onnx or .ort files")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise DataError(f"{path}: unknown model type {path.suffix!r}; bench reads {', '.join(MODEL_SUFFIXES)} files")
    results: list[dict[str, Any]] = []
    environment: dict[str, Any] = {}
    for path in paths:
        # an .onnx/.ort file runs the mode it was exported with (`export --mode`): once
        modes = config.experts if str(path).lower().endswith(".mome") else config.experts[:1]
        for mode in modes:
            for threads in config.threads:
                report = _run_worker(path, mode, threads, config)
                results.extend(report["results"])
                environment = environment or report["environment"]
    environment = {**environment, "threads": list(config.threads)}
    _add_ratios(results, str(paths[0]))
    return BenchReport(results=results, environment=environment, config=config, models=[str(p) for p in paths])


def _run_worker(path: Path, mode: str, threads: int, config: BenchConfig) -> dict[str, Any]:
    from mome_edge.runtime import device_bench

    command = [
        sys.executable, str(Path(device_bench.__file__)), str(path), "--json",
        "--batch", ",".join(map(str, config.batches)), "--threads", str(threads),
        "--runs", str(config.runs), "--warmup", str(config.warmup), "--experts", mode,
        "--memory-budget-mb", str(config.memory_budget_mb), "--seed", str(config.seed),
    ]
    # numpy's BLAS reads its thread count at import: give the worker the measured count
    env = {**os.environ, **{var: str(threads) for var in BLAS_THREAD_VARS}}
    env[device_bench.SPAWN_TIME_ENV] = repr(time.time())  # the cold start counts from here
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False, env=env)
    except subprocess.TimeoutExpired:
        raise MomeError(f"benching {path} took over {WORKER_TIMEOUT_S} s; lower --runs or the batch sizes") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        last = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
        raise MomeError(f"benching {path} failed: {last}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise MomeError(f"benching {path}: the worker printed no JSON report; run it alone to see why: {' '.join(command)}") from None


def _add_ratios(results: list[dict[str, Any]], baseline_model: str) -> None:
    base = {(r["batch"], r["threads"], r["experts"]): r for r in results if r["model"] == baseline_model}
    first = {}
    for r in results:
        if r["model"] == baseline_model:
            first.setdefault((r["batch"], r["threads"]), r)
    for row in results:
        # the same expert mode when the first model has it, else its first row at that batch/threads
        ref = base.get((row["batch"], row["threads"], row["experts"])) or first.get((row["batch"], row["threads"]))
        row["ratios"] = None if ref is None else {
            key: (row[key] / ref[key] if ref[key] else None) for key in RATIO_KEYS
        }


def plot_bench(report: BenchReport, path: str | Path) -> None:
    """p50 latency vs batch per model (one panel per thread count), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mome_edge.atomic import atomic_write_bytes

    threads = sorted({r["threads"] for r in report.results})
    fig, axes = plt.subplots(1, len(threads), figsize=(5 * len(threads), 4), squeeze=False)
    for ax, t in zip(axes[0], threads):
        series: dict[str, list[tuple[int, float]]] = {}
        for r in report.results:
            if r["threads"] == t:
                label = f"{Path(r['model']).name} ({r['experts']})"
                series.setdefault(label, []).append((r["batch"], r["p50_ms"]))
        for label, points in series.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
