"""What opening an ONNX file costs ONNX Runtime, in fresh processes: session wall time and the
minor page faults it takes (first touches of fresh memory), plus the added peak RSS.

    python benchmarks/session_start.py FILE.onnx [FILE.onnx ...] [--runs 15] [--json] [--out PREFIX]

Each run is a fresh interpreter that imports numpy and onnxruntime, then opens the file as an
app would (a plain `onnxruntime.InferenceSession(path)`, default options); the files take turns,
run by run, and every figure is a median over the runs. On this shared VM a session's wall time
moves by several milliseconds from one process to the next, while its page-fault count moves
by a few dozen, so the fault count is the stable measure of how much memory a load writes
(constant folding's outputs, the pre-packed weights). What each fault costs is measured too: after
the session, the child writes one byte to each page of 16 MiB of new memory (`us per fresh page`,
a few microseconds on this VM, so a thousand faults are a few milliseconds of a session start).
The peak RSS is the process's peak minus its RSS after the imports, in the same process: what
the session adds, for comparing files with each other (the README's memory figures instead take
a plain session's peak against a process that only imported the runtime: device_bench.py).

The "before" file of benchmarks/results/session_start.md, mome-speed-c8112d4.onnx, is the census
model exported by commit c8112d4 (`git worktree add /tmp/c8112d4 c8112d4`, then in it `mome-edge
export DIR/census/mome-fp32.mome -o mome-speed-c8112d4.onnx`): the same artifact as
DIR/census/mome-speed.onnx, the previous small-layer chain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from mome_edge.atomic import atomic_write_text

# the child: imports first (not measured), then the session alone
_CHILD = r"""
import json, re, resource, sys, time
import numpy, onnxruntime
def rss_kib():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))
before_kib, faults0 = rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
session = onnxruntime.InferenceSession(sys.argv[1])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
# what one first touch of fresh memory costs here: 16 MiB of new anonymous pages, one write each
import mmap
fresh = mmap.mmap(-1, 16 << 20)
touch_start, faults1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for offset in range(0, 16 << 20, 4096):
    fresh[offset] = 1
touch = time.perf_counter() - touch_start
touched = max(1, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults1)
print(json.dumps({"session_ms": 1e3 * wall, "page_faults": usage.ru_minflt - faults0,
                  "added_peak_rss_mib": (usage.ru_maxrss - before_kib) / 1024, "us_per_fresh_page": 1e6 * touch / touched}))
"""


def measure(paths: list[Path], runs: int, python: str = sys.executable) -> list[dict]:
    """Per file: the medians over `runs` fresh processes of session_ms, page_faults and added_peak_rss_mib."""
    samples: dict[Path, list[dict]] = {p: [] for p in paths}
    for _ in range(runs):
        for path in paths:  # interleaved: a burst of load on the machine hits every file
            done = subprocess.run([python, "-I", "-c", _CHILD, str(path)], capture_output=True, text=True)
            if done.returncode != 0:
                _fail(f"ONNX Runtime could not open {path}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            samples[path].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return [{"file": str(path), "file_bytes": path.stat().st_size, "runs": runs,
             **{key: statistics.median(s[key] for s in samples[path])
                for key in ("session_ms", "page_faults", "added_peak_rss_mib", "us_per_fresh_page")}}
            for path in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--out", type=Path, help="also write the results to PREFIX.json and PREFIX.md")
    args = parser.parse_args()
    if args.runs < 1:
        _fail(f"--runs {args.runs}: pass at least 1")
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        _fail(f"no file {missing[0]}; make the census files with `python benchmarks/deploy.py --work DIR --sizes census`")
    if args.out and not args.out.parent.is_dir():  # checked before minutes of measuring, not after
        _fail(f"--out {args.out}: no folder {args.out.parent}; create it or pass another prefix")
    rows = measure(args.files, args.runs)
    lines = [f"Session start, median of {args.runs} fresh processes (plain InferenceSession, default options)", "",
             "| file | bytes | session ms | page faults | added peak RSS MiB | us per fresh page |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {Path(r['file']).name} | {r['file_bytes']:,} | {r['session_ms']:.1f} | {r['page_faults']:,.0f} | "
              f"{r['added_peak_rss_mib']:.1f} | {r['us_per_fresh_page']:.1f} |" for r in rows]
    if args.out:
        atomic_write_text(args.out.with_suffix(".json"), json.dumps({"runs": args.runs, "results": rows}, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(json.dumps(rows, indent=2) if args.json else "\n".join(lines))


def _fail(problem: str) -> None:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
