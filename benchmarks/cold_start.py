"""Cold start as a device pays it: process start -> import -> load -> first prediction.

    python benchmarks/cold_start.py MODEL.mome MODEL.onnx [...] [--runs 7] [--rounds 1] [--realtime]

(the census models: `python benchmarks/deploy.py --work DIR --sizes census` writes them under
DIR/census/). On a shared machine, --realtime runs the measured processes under SCHED_FIFO so
that other jobs cannot preempt them; the results record which way they were taken.

The measuring interpreter is a fresh venv with the device install of this checkout (`pip install
.`, no extras, so mome_edge is byte-compiled as on a device, not an editable source tree), built
once under build/cold-start-venv. Each model is measured in `--runs` fresh processes, alternating
with floor processes that only import numpy (for .mome) or numpy and onnxruntime (for
.onnx/.ort); medians. With --rounds R the whole measurement runs R times, every model once per
round (a burst of load on the machine then hits one round of every model, not all of one
model's processes), and each figure is the median over the rounds of the rounds' medians, with
the rounds' over-floor figures listed beside it: on this shared VM one model's over-floor
median moved by 10-30 ms from one run of the command to the next. Writes
benchmarks/results/cold_start.{json,md}. `--pool RUN.json ...` pools the rounds of several runs
per model and prints their median and mean over-floor figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import venv
from pathlib import Path

from mome_edge.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "build" / "cold-start-venv"
RESULTS = REPO / "benchmarks" / "results"
TARGET_OVER_FLOOR_MS = 30.0  # issue 10: at most 30 ms above the floor of the model's own dependencies


def device_python(rebuild: bool) -> Path:
    python = VENV / "bin" / "python"
    if rebuild or not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)], check=True)
    else:  # the checkout may have changed since: reinstall (no dependency resolution needed)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall",
                        "--disable-pip-version-check", str(REPO)], check=True)
    return python


def pool_rounds(reports: list[dict]) -> list[dict]:
    """Several runs' results (cold_start.json files) -> per model file (by file name and size, in
    first-seen order: two builds of the same name stay apart): every round's over-floor figure
    of every run, and their median and mean."""
    pooled: dict[tuple[str, int], list[float]] = {}
    for report in reports:
        for row in report["results"]:
            key = (Path(row["model"]).name, int(row.get("file_bytes", 0)))
            pooled.setdefault(key, []).extend(row.get("over_floor_ms_rounds", [row["over_floor_ms"]]))
    return [{"model": name, "file_bytes": size, "rounds": len(values), "over_floor_ms_median": statistics.median(values),
             "over_floor_ms_mean": statistics.mean(values), "within_target": statistics.median(values) <= TARGET_OVER_FLOOR_MS}
            for (name, size), values in pooled.items()]


def _pool_main(paths: list[Path]) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        _fail(f"no results file {missing[0]}; pass cold_start.json files written by this script")
    try:
        rows = pool_rounds([json.loads(p.read_text()) for p in paths])
    except (ValueError, KeyError, TypeError) as exc:
        _fail(f"not a cold_start results file ({type(exc).__name__}: {exc}); pass cold_start.json files written by this script")
    if not rows:
        _fail(f"no model results in {', '.join(map(str, paths))}; pass cold_start.json files of runs that measured models")
    print(f"Over floor, every round of {len(paths)} run(s) pooled\n")
    print(f"| model | bytes | rounds | median ms | mean ms | median within {TARGET_OVER_FLOOR_MS:.0f} ms |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['model']} | {r['file_bytes']:,} | {r['rounds']} | {r['over_floor_ms_median']:+.1f} | {r['over_floor_ms_mean']:+.1f} | "
              f"{'yes' if r['within_target'] else 'no'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", nargs="+", type=Path, metavar="RUN.json",
                        help="measure nothing: pool every round of these cold_start.json runs per model (median and mean)")
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1, help="measure every model this many times, rounds interleaved")
    parser.add_argument("--rebuild-venv", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start")
    parser.add_argument("--realtime", action="store_true",
                        help="run the measured processes (and their floors) under SCHED_FIFO (`chrt -f 50`, needs root): "
                             "other work on a shared machine then cannot preempt them")
    args = parser.parse_args()
    if args.pool:
        if args.models:
            _fail("--pool reads results and measures nothing; pass either models or --pool RUN.json ..., not both")
        _pool_main(args.pool)
        return
    if not args.models:
        _fail("no model files; pass MODEL.mome / MODEL.onnx files to measure, or --pool RUN.json ... to pool runs")
    if args.runs < 1 or args.rounds < 1:
        _fail(f"--runs {args.runs} / --rounds {args.rounds}: both must be >= 1; pass --runs and --rounds of at least 1")
    if args.realtime and shutil.which("chrt") is None:
        _fail("--realtime needs the chrt command (util-linux); install it or drop --realtime")
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        _fail(f"no model file {missing[0]}; make them with `python benchmarks/deploy.py --work DIR --sizes census`")
    python = device_python(args.rebuild_venv)
    code = (
        "import json, sys\n"
        "from mome_edge.runtime.cold_start import measure_cold_start\n"
        f"print(json.dumps([measure_cold_start(p, runs={args.runs}) for p in sys.argv[1:]]))\n"
    )
    load_before = os.getloadavg()[0]  # timing is only as good as the machine is idle: recorded with the results
    prefix = ["chrt", "-f", "50"] if args.realtime else []  # children inherit the policy
    models = [str(m.resolve()) for m in args.models]
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}: {len(models)} model(s), {args.runs} fresh processes each ...", file=sys.stderr)
        done = subprocess.run([*prefix, str(python), "-I", "-c", code, *models], capture_output=True, text=True)
        if done.returncode != 0:
            _fail(f"the measurement failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
        rounds.append(json.loads(done.stdout))
    rows = [_over_rounds([one[i] for one in rounds]) for i in range(len(models))]
    timed = {row["package"] for row in rows}
    if any(not p.startswith(str(VENV)) for p in timed):  # a source tree is not what a device runs
        _fail(f"timed mome_edge from {sorted(timed)}, not the device install under {VENV}")
    for row in rows:
        row["file_bytes"] = Path(row["model"]).stat().st_size
        row["within_target"] = row["over_floor_ms"] <= TARGET_OVER_FLOOR_MS
    load_after = os.getloadavg()[0]
    per_round = f"median over {args.rounds} rounds of the medians of {args.runs} fresh processes" if args.rounds > 1 else f"median of {args.runs} fresh processes"
    lines = [
        f"Cold start ({per_round}; device install in a fresh venv; floor = a process that only imports the model's runtime dependencies; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after, on {os.cpu_count()} CPUs"
        f"{'; measured processes under SCHED_FIFO (chrt -f 50)' if args.realtime else ''})",
        "",
        f"| model | bytes | cold start ms | floor | floor ms | over floor ms | within {TARGET_OVER_FLOOR_MS:.0f} ms | import ms | load ms | first prediction ms | whole process over floor ms | over floor per round ms |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        each = ", ".join(f"{v:+.0f}" for v in r["over_floor_ms_rounds"])
        lines.append(f"| {Path(r['model']).name} | {r['file_bytes']:,} | {r['cold_start_ms']:.0f} | {r['floor']} | {r['floor_ms']:.0f} | "
                     f"{r['over_floor_ms']:+.0f} | {'yes' if r['within_target'] else 'no'} | {r['import_ms']:.1f} | {r['load_ms']:.1f} | "
                     f"{r['first_prediction_ms']:.2f} | {r['process_over_floor_ms']:+.0f} | {each} |")
    lines.append("")
    lines.append("Each process is timed from just before it starts to its first prediction (the floor: to its imports done), on the "
                 "monotonic clock the processes share. import ms includes numpy (part of the floor); over floor = median of paired "
                 "(cold start - floor) differences; the whole-process column also counts the exit (an ONNX Runtime session's "
                 "teardown), which an app does not wait for.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({"runs": args.runs, "rounds": args.rounds, "realtime": args.realtime, "load_average": [load_before, load_after], "results": rows}, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


def _over_rounds(results: list[dict]) -> dict:
    """One model's measure_cold_start results, one per round -> the median of every figure over
    the rounds, plus the rounds' own over-floor figures (over_floor_ms_rounds)."""
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in results)
    out["processes"] = sum(r["runs"] for r in results)  # runs stays the processes per round
    out["over_floor_ms_rounds"] = [r["over_floor_ms"] for r in results]
    return out


def _fail(problem: str) -> None:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
