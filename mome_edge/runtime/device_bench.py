#!/usr/bin/env python3
"""One-file latency/memory bench for a phone or board: numpy + onnxruntime only.

Copy this file next to MODEL.onnx (or MODEL.ort) and run

    python3 device_bench.py MODEL.onnx --batch 1,32,512 --threads 1,2 --runs 200 --json > bench.json

It prints the same JSON as `mome-edge bench --json`: {"results": [...], "environment": {...}}.
.mome artifacts need the mome_edge package (its numpy runtime; BLAS threads come from
OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, which `mome-edge bench` sets to --threads); .onnx/.ort
files need nothing but numpy and onnxruntime. `mome-edge bench` runs this module in a fresh subprocess per model
so that peak resident memory is per model.

Per (threads, batch): load_s (session/predictor construction), first_run_ms (first call at
that batch), cold_start (per process, the same for every row: interpreter_s from process start
to the script (when started by `mome-edge bench`), import_s (numpy + onnxruntime, and the
mome_edge runtime for .mome files), load_s, first_prediction_s (first call, first batch) and
total_s = process start (or script start) to the first prediction's result), latency min/p50/p90/p99/max/mean over --runs calls after --warmup calls,
rows_per_s = batch / mean latency, peak_rss_mb (the process's peak so far), baseline_rss_mb
(after importing numpy + onnxruntime, before loading the model) and added_rss_mb
(peak - baseline: what the model costs over a bare onnxruntime process).
"""

from __future__ import annotations

import time

_SCRIPT_START = time.time()  # before the heavy imports: import time is part of a cold start

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

_IMPORTED = time.time()
# `mome-edge bench` sets this to time.time() just before it starts the process, so the cold
# start includes the interpreter's own start-up; run by hand, the cold start starts at the script
SPAWN_TIME_ENV = "MOME_BENCH_SPAWN_TIME"

EXPERT_MODES = ("materialize", "on-demand")
META_FEATURE_SPEC = "mome.feature_spec"


# --- memory -------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (VmHWM on Linux/Android)."""
    kb = _proc_status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    import resource  # macOS, BSD: ru_maxrss is in bytes on macOS, KiB elsewhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float:
    kb = _proc_status_kb("VmRSS")
    return kb / 1024.0 if kb is not None else peak_rss_mb()


# --- environment ----------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "processor") and ":" in line:
                    value = line.split(":", 1)[1].strip()
                    if value and not value.isdigit():
                        return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    return {
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
    }


# --- models -----------------------------------------------------------------------------------------


class _OnnxModel:
    """An ORT session as an app opens one: default options but the thread count (as
    mome_edge.runtime.onnx_engine). The expert mode is the file's (`export --mode`)."""

    def __init__(self, path: str, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.experts = {"speed": "materialize", "memory": "on-demand"}.get(meta.get("mome.mode", "speed"), "materialize")
        inputs = {i.name: i for i in self.session.get_inputs()}
        if META_FEATURE_SPEC in meta:
            spec = json.loads(meta[META_FEATURE_SPEC])
            self.vocab = [len(c["vocabulary"]) + 1 for c in spec["categorical"]]
            self.width = len(spec["numerical"])
        else:  # not a mome-edge export: read the widths from the input shapes
            self.vocab = [2] * int(inputs["categorical"].shape[1])
            self.width = int(inputs["numerical"].shape[1])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def predict(self, cat: np.ndarray, num: np.ndarray):
        return self.session.run(self.outputs, {"categorical": cat, "numerical": num})


class _MomeModel:
    """A .mome artifact through mome_edge's numpy runtime (needs the mome_edge package)."""

    def __init__(self, path: str, threads: int, experts: str, memory_budget_mb: float) -> None:
        from mome_edge.runtime import Predictor

        # the budget sizes the on-demand resident subset; materialize holds every expert by definition
        budget = memory_budget_mb if experts == "on-demand" else None
        self.predictor = Predictor(path, threads=threads, experts=experts, memory_budget_mb=budget)
        self.experts = experts
        self.vocab = list(self.predictor.spec.vocab_sizes)
        self.width = len(self.predictor.spec.numerical)

    def predict(self, cat: np.ndarray, num: np.ndarray):
        return self.predictor.predict(cat, num)


def load(path: str, threads: int, experts: str, memory_budget_mb: float):
    if path.lower().endswith(".mome"):
        return _MomeModel(path, threads, experts, memory_budget_mb), "numpy"
    return _OnnxModel(path, threads), "onnx"


def sample(vocab: list[int], width: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = np.asarray(vocab, dtype=np.int64)
    cat = np.floor(rng.random((rows, len(sizes))) * sizes).astype(np.int64)
    num = rng.standard_normal((rows, width)).astype(np.float32)
    return cat, num


# --- measurement --------------------------------------------------------------------------------------


def measure(path: str, *, batches: list[int], threads: list[int], runs: int, warmup: int,
            experts: str = "materialize", memory_budget_mb: float = 16.0, seed: int = 0) -> list[dict]:
    """One result row per (threads, batch); every thread count gets its own session."""
    rows = []
    if path.lower().endswith(".mome"):
        # the numpy runtime's code belongs to the bare process, as onnxruntime's does
        import mome_edge.artifact.reader  # noqa: F401
        import mome_edge.runtime  # noqa: F401
    imported = time.time()
    # The inputs are drawn with numpy.random: its import maps ~6.6 MiB of extension modules
    # (measured: VmRSS before and after `import numpy.random`). That is the harness's cost,
    # not the model's, so it is paid before the baseline (and outside the cold start's phases).
    sample([2], 1, 1, seed)
    baseline = current_rss_mb()
    cold = None
    for t in threads:
        start = time.perf_counter()
        model, runtime = load(path, t, experts, memory_budget_mb)
        load_s = time.perf_counter() - start
        for batch in batches:
            cat, num = sample(model.vocab, model.width, batch, seed)
            start = time.perf_counter()
            model.predict(cat, num)
            first_ms = (time.perf_counter() - start) * 1e3
            if cold is None:
                cold = cold_start(imported, load_s, first_ms / 1e3)
            for _ in range(warmup):
                model.predict(cat, num)
            times = np.empty(runs, dtype=np.float64)
            for i in range(runs):
                start = time.perf_counter()
                model.predict(cat, num)
                times[i] = time.perf_counter() - start
            ms = times * 1e3
            peak = peak_rss_mb()
            rows.append({
                "model": path, "runtime": runtime, "experts": model.experts, "batch": batch, "threads": t,
                "load_s": load_s, "first_run_ms": first_ms, "cold_start": cold,
                "min_ms": float(ms.min()), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean()),
                "rows_per_s": float(batch / times.mean()), "runs": runs, "warmup": warmup,
                "peak_rss_mb": peak, "baseline_rss_mb": baseline, "added_rss_mb": peak - baseline,
                "file_bytes": os.path.getsize(path),
            })
        del model
    return rows


def cold_start(imported: float, load_s: float, first_prediction_s: float) -> dict:
    """Process start (or script start) to the first prediction, in parts (seconds)."""
    spawn = os.environ.get(SPAWN_TIME_ENV)
    start = float(spawn) if spawn else _SCRIPT_START
    return {
        "interpreter_s": _SCRIPT_START - float(spawn) if spawn else None,
        "import_s": imported - _SCRIPT_START,
        "load_s": load_s,
        "first_prediction_s": first_prediction_s,
        "total_s": (imported - start) + load_s + first_prediction_s,
        "from": "process start" if spawn else "script start",
    }


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: write positive integers separated by commas, e.g. 1,32,512")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help=".onnx, .ort (numpy + onnxruntime) or .mome (needs mome_edge)")
    parser.add_argument("--batch", type=_int_list, default=[1, 32, 512])
    parser.add_argument("--threads", type=_int_list, default=[1])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--experts", choices=EXPERT_MODES, default="materialize")
    parser.add_argument("--memory-budget-mb", type=float, default=16.0, help=".mome on-demand: MiB of rebuilt experts kept resident")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    if not os.path.isfile(args.model):
        parser.error(f"{args.model} does not exist")
    try:
        results = measure(args.model, batches=args.batch, threads=args.threads, runs=args.runs, warmup=args.warmup,
                          experts=args.experts, memory_budget_mb=args.memory_budget_mb, seed=args.seed)
    except Exception as exc:  # one line, no traceback: this runs on devices and under `mome-edge bench`
        sys.stderr.write(f"error: {exc}\n")
        return 2
    report = {"results": results, "environment": environment()}
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for r in results:
            print(f"{r['model']} threads={r['threads']} batch={r['batch']}: p50 {r['p50_ms']:.3f} ms, "
                  f"p99 {r['p99_ms']:.3f} ms, {r['rows_per_s']:.0f} rows/s, peak RSS {r['peak_rss_mb']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
