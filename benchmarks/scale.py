"""Training at scale: streamed AliExpress-schema data at the paper's dimensions (16 fields x
embedding 128 + 63 numerical, 8 experts, base [512, 256], batch 2048).

For each requested epoch size (default 1M and 10M training rows) it generates the data
(`write_aliexpress_parquet`, streamed), prepares it (`mome-edge prepare`), and trains MoME
for one epoch with `mome-edge train --prepared ... --stop-after-epoch 1`: the first epoch of
MoME's schedule, neuron masking (phase 1). Every command runs in its own process; its peak
resident memory is measured by the kernel (``ru_maxrss`` of a small launching shim's children:
the largest process of the tree) and by sampling the summed RSS of the whole process tree every 0.2 s.

Phase 2 (expert masking, ~9x the compute of phase 1 at these sizes) is measured for one
epoch on a smaller prepared set (``--phase2-rows``), and both phases are run with 1 process
x 1 thread, 1 process x 2 threads and 2 processes (torchrun + DDP, gloo) x 1 thread.

Writes benchmarks/results/scale.json, scale.md and scale_rss.png (RSS over time).

    .venv/bin/python benchmarks/scale.py [--epoch-rows 1000000,10000000] [--phase2-rows 100000] [--work runs/scale-bench]
        [--stages one-epoch,scaling]   # a subset re-measures only that; the rest is kept from scale.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mome_edge.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
PAPER_DIMS = ["--embedding-dim", "128", "--hidden", "512,256", "--experts", "8", "--batch-size", "2048"]
# the epoch trained is epoch 1 of each schedule: neuron masking, or (M = 0) expert masking
SCHEDULES = {
    "neuron-masking": ["--epochs", "3", "--neuron-epochs", "1", "--harden-epochs", "1"],
    "expert-masking": ["--epochs", "2", "--neuron-epochs", "0", "--harden-epochs", "1"],
}
TEST_FILE_ROWS = 50_000
SAMPLE_EVERY_S = 0.2
CPUS = os.cpu_count() or 1
STAGES = ("one-epoch", "scaling")
# (processes, threads per process) compared on this machine
LAYOUTS = ((1, 1), (1, CPUS), (CPUS, 1)) if CPUS > 1 else ((1, 1),)


@dataclass
class Measured:
    """One command's wall time, exit code, output and memory."""

    seconds: float
    code: int
    stdout: str
    peak_rss_mib: float  # largest single process of the tree (kernel high-water mark)
    peak_tree_rss_mib: float  # largest sampled sum over the tree (all ranks + launcher)
    trace: list[tuple[float, float]] = field(default_factory=list)  # (seconds, tree RSS MiB)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # the command name may hold spaces: ppid is the 2nd field after the last ')'
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _tree_rss_mib(root: int) -> float:
    children, stack, total = _children_map(), [root], 0
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


# Runs the command and reports its peak RSS. Why a shim: a process started from this one by
# vfork/posix_spawn (what subprocess uses) inherits this process's RSS high-water mark at exec
# (Linux keeps the larger of the old and new image's), so ru_maxrss of a direct child is at
# least this benchmark's own peak. The shim is small, and RUSAGE_CHILDREN of the shim covers
# the command and every descendant it waited for (torchrun's ranks), each counted alone.
_SHIM = """
import json, resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, out)
sys.exit(code)
"""


def run_measured(argv: list[str], *, env: dict[str, str] | None = None, log: Path) -> Measured:
    """Run `argv` (stderr to the terminal, stdout kept), sampling its tree's RSS; fail loudly on error."""
    print(f"$ {' '.join(argv)}", file=sys.stderr, flush=True)
    usage_file = log.with_name(log.name + ".rusage.json")
    with open(log, "w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _SHIM, str(usage_file), *argv], stdout=out, env={**os.environ, **(env or {})})
        trace: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                trace.append((time.perf_counter() - start, _tree_rss_mib(proc.pid)))
                stop.wait(SAMPLE_EVERY_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        out.seek(0)
        stdout = out.read()
    if code != 0:
        raise SystemExit(f"command failed with exit code {code}: {' '.join(argv)}\n{stdout[-2000:]}")
    usage = json.loads(usage_file.read_text())
    usage_file.unlink()
    return Measured(
        seconds=seconds, code=code, stdout=stdout, peak_rss_mib=usage["maxrss_kib"] / 1024,
        peak_tree_rss_mib=max((rss for _, rss in trace), default=0.0), trace=trace,
    )


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mome_edge.cli", *args]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepared_set(work: Path, epoch_rows: int, *, keep_raw: bool) -> dict:
    """Generate (streamed) and prepare a data set whose training split has about `epoch_rows` rows; reused if present."""
    from mome_edge.data.aliexpress import VALIDATION_FRACTION
    from mome_edge.data.streaming import DEFAULT_SHARD_ROWS
    from mome_edge.data.synthetic_aliexpress import write_aliexpress_parquet

    folder = work / f"rows-{epoch_rows}"
    prepared, raw, report_path = folder / "prepared", folder / "raw", folder / "data.json"
    if report_path.is_file() and (prepared / "prepared.json").is_file():
        print(f"reusing {prepared}", file=sys.stderr)
        return json.loads(report_path.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    raw.mkdir(parents=True)
    train_file_rows = math.ceil(epoch_rows / (1 - VALIDATION_FRACTION))  # the train file also feeds validation
    print(f"generating {train_file_rows:,} + {TEST_FILE_ROWS:,} rows into {raw}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    write_aliexpress_parquet(raw / "train.parquet", train_file_rows, seed=0)
    write_aliexpress_parquet(raw / "test.parquet", TEST_FILE_ROWS, seed=1)
    generate_s = time.perf_counter() - start
    raw_bytes = folder_bytes(raw)
    # the default shard size for the large sets (same reads at 1M and 10M); small sets get
    # smaller shards so that every rank of a 2-process run has row groups of its own
    shard_rows = DEFAULT_SHARD_ROWS if epoch_rows >= 2 * DEFAULT_SHARD_ROWS else max(8_192, epoch_rows // 8)
    run = run_measured(cli("prepare", "--dataset", "aliexpress", "--data-dir", str(raw), "--out", str(prepared),
                           "--shard-rows", str(shard_rows), "--json"), log=folder / "prepare.log")
    summary = json.loads(run.stdout)
    report = {
        "generated_rows": train_file_rows + TEST_FILE_ROWS,
        "generate_s": generate_s,
        "generate_rows_per_s": (train_file_rows + TEST_FILE_ROWS) / generate_s,
        "raw_parquet_bytes": raw_bytes,
        "rows": summary["rows"],
        "prepare_s": run.seconds,
        "prepare_rows_per_s": summary["rows_per_second"],
        "prepare_peak_rss_mib": run.peak_rss_mib,
        "prepared_bytes": folder_bytes(prepared),
        "shard_rows": shard_rows,
    }
    if not keep_raw:
        shutil.rmtree(raw)  # several GB at 10M rows; the prepared shards are what training reads
    atomic_write_json(report_path, report)
    return report


def train_one_epoch(prepared: Path, run_dir: Path, *, phase: str, processes: int, threads: int, extra: tuple[str, ...] = ()) -> dict:
    """`mome-edge train` for epoch 1 of `phase`'s schedule; the epoch's record plus measured memory."""
    shutil.rmtree(run_dir, ignore_errors=True)
    args = ["train", "--prepared", str(prepared), "--model", "mome", "--out", str(run_dir), *PAPER_DIMS, *SCHEDULES[phase],
            "--stop-after-epoch", "1", "--threads", str(threads), "--json", *extra]
    if processes > 1:
        args += ["--nproc", str(processes)]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    run = run_measured(cli(*args), env={"OMP_NUM_THREADS": str(threads)}, log=run_dir.parent / f"{run_dir.name}.log")
    record = json.loads((run_dir / "metrics.json").read_text())[0]
    assert record["phase"] == phase, record["phase"]
    return {
        "train_args": list(extra),
        "neurons_kept": _neurons_kept(run_dir),
        "phase": phase,
        "processes": processes,
        "threads_per_process": threads,
        "epoch_seconds": record["seconds"],
        "rows_per_s": record["rows_per_s"],
        "validation_auc": {t: m["auc"] for t, m in record["validation"].items()},
        "wall_s": run.seconds,
        "peak_rss_mib": run.peak_rss_mib,
        "peak_tree_rss_mib": run.peak_tree_rss_mib,
        "rank0_peak_rss_mib": record["peak_rss_mb"],
        "trace": [(round(t, 2), round(r, 1)) for t, r in run.trace[:: max(1, round(1 / SAMPLE_EVERY_S))]],
    }


def _neurons_kept(run_dir: Path) -> dict | None:
    """Neurons kept per base layer at the switch after a neuron-masking epoch (None otherwise)."""
    from mome_edge.runs import checkpoint_paths
    from mome_edge.train.checkpoint import load_tensors

    _, meta = load_tensors(checkpoint_paths(run_dir)[-1])
    pruning = meta["state"]["reports"].get("neuron_pruning")
    return None if pruning is None else {"kept": pruning["kept"], "nominal": pruning["nominal"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-rows", default="1000000,10000000", help="training rows per epoch, comma-separated")
    parser.add_argument("--phase2-rows", type=int, default=100_000, help="training rows of the phase-2 and scaling set")
    parser.add_argument("--scaling-rows", type=int, default=None, help="phase-1 scaling set (default: the smallest --epoch-rows)")
    parser.add_argument("--work", type=Path, default=Path("runs/scale-bench"))
    parser.add_argument("--keep-raw", action="store_true", help="keep the generated Parquet (default: delete once prepared)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--train-args", default="", help="extra `mome-edge train` flags for the one-epoch stage, e.g. '--gate-lr 0.02'")
    parser.add_argument("--append", action="store_true", help="add the one-epoch results to those in scale.json instead of replacing them")
    parser.add_argument("--threads", type=int, default=CPUS,
                        help=f"threads of the one-epoch stage's single process (default {CPUS}: all cores; 1 on a shared machine)")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    if not stages or not stages <= set(STAGES):
        raise SystemExit(f"--stages {args.stages!r}: use a comma-separated subset of {','.join(STAGES)}")
    import torch

    epoch_rows = sorted(int(x) for x in args.epoch_rows.split(","))
    scaling_rows = args.scaling_rows or epoch_rows[0]
    report: dict = {
        "machine": {"cpus": CPUS, "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()},
        "dims": {"fields": 16, "embedding": 128, "numerical": 63, "experts": 8, "hidden": [512, 256], "batch": 2048},
        "data": {}, "one_epoch": [], "scaling": [],
    }
    previous = args.out / "scale.json"
    if stages != set(STAGES) and previous.is_file():  # keep what this run does not re-measure
        kept = json.loads(previous.read_text())
        report.update({k: kept[k] for k in ("data", "one_epoch", "scaling", "efficiency") if k in kept})
        for stage in stages:
            if not (args.append and stage == "one-epoch"):
                report[stage.replace("-", "_")] = []

    def save() -> None:  # after every stage: a long run that dies keeps what it measured
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "scale.json", report)

    for rows in sorted({*epoch_rows, scaling_rows, args.phase2_rows}):
        report["data"][str(rows)] = prepared_set(args.work, rows, keep_raw=args.keep_raw)
        save()
    for rows in epoch_rows if "one-epoch" in stages else ():
        extra = tuple(args.train_args.split())
        result = train_one_epoch(args.work / f"rows-{rows}" / "prepared", args.work / "runs" / f"phase1-{rows}",
                                 phase="neuron-masking", processes=1, threads=args.threads, extra=extra)
        report["one_epoch"].append({"epoch_rows": report["data"][str(rows)]["rows"]["train"], **result})
        save()
    for phase, rows in (("neuron-masking", scaling_rows), ("expert-masking", args.phase2_rows)) if "scaling" in stages else ():
        for processes, threads in LAYOUTS:
            name = f"{phase}-{rows}-p{processes}t{threads}"
            result = train_one_epoch(args.work / f"rows-{rows}" / "prepared", args.work / "runs" / name,
                                     phase=phase, processes=processes, threads=threads)
            report["scaling"].append({"epoch_rows": report["data"][str(rows)]["rows"]["train"], **result})
            save()
    report["efficiency"] = efficiency(report["scaling"])
    save()
    atomic_write_text(args.out / "scale.md", render(report) + "\n")
    plot(report, args.out / "scale_rss.png")
    print(render(report))


def efficiency(scaling: list[dict]) -> dict:
    """Per phase: multi-process rows/s over (processes x one-process-one-thread rows/s), and over 1 process with all threads."""
    out = {}
    for phase in SCHEDULES:
        rows = {(r["processes"], r["threads_per_process"]): r["rows_per_s"] for r in scaling if r["phase"] == phase}
        single = rows.get((1, 1))
        for (processes, threads), rate in rows.items():
            if processes > 1 and single:
                out[phase] = {
                    "processes": processes,
                    "speedup_vs_1x1": rate / single,
                    "scaling_efficiency": rate / (processes * single),
                    "vs_1_process_all_threads": rate / rows[(1, CPUS)] if (1, CPUS) in rows else None,
                }
    return out


def render(report: dict) -> str:
    lines = ["| training rows | generated rows | generate rows/s | raw Parquet MiB | prepare rows/s | prepare peak RSS MiB | prepared MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for d in report["data"].values():
        lines.append(
            f"| {d['rows']['train']:,} | {d['generated_rows']:,} | {d['generate_rows_per_s']:,.0f} | {d['raw_parquet_bytes'] / 2**20:,.0f} | "
            f"{d['prepare_rows_per_s']:,.0f} | {d['prepare_peak_rss_mib']:,.0f} | {d['prepared_bytes'] / 2**20:,.0f} |"
        )
    lines += ["", "| epoch (phase 1) rows | extra train flags | threads | epoch s | rows/s | peak RSS MiB | validation AUC (ctr / ctcvr) | neurons kept per layer (of nominal) |",
              "|---:|---|---:|---:|---:|---:|---|---|"]
    for r in report["one_epoch"]:
        auc = " / ".join(f"{v:.4f}" for v in r["validation_auc"].values())
        kept = r.get("neurons_kept")
        kept_text = "n/a" if not kept else ", ".join(f"{k} / {n}" for k, n in zip(kept["kept"], kept["nominal"]))
        lines.append(f"| {r['epoch_rows']:,} | {' '.join(r.get('train_args', [])) or '-'} | {r['threads_per_process']} | {r['epoch_seconds']:,.0f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mib']:,.0f} | {auc} | {kept_text} |")
    lines += ["", "| phase | rows | processes x threads | rows/s | peak RSS MiB (largest process) | peak RSS MiB (all processes) |",
              "|---|---:|---|---:|---:|---:|"]
    for r in report["scaling"]:
        lines.append(
            f"| {r['phase']} | {r['epoch_rows']:,} | {r['processes']} x {r['threads_per_process']} | {r['rows_per_s']:,.0f} | "
            f"{r['peak_rss_mib']:,.0f} | {r['peak_tree_rss_mib']:,.0f} |"
        )
    for phase, e in report.get("efficiency", {}).items():
        vs_all = f"{e['vs_1_process_all_threads']:.2f}x" if e["vs_1_process_all_threads"] is not None else "n/a"
        lines.append(
            f"\n{phase}: {e['processes']} processes give {e['speedup_vs_1x1']:.2f}x one process with one thread "
            f"(scaling efficiency {100 * e['scaling_efficiency']:.0f} %), {vs_all} one process with {CPUS} threads."
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in report["one_epoch"]:
        t, rss = zip(*r["trace"]) if r["trace"] else ((), ())
        ax.plot(t, rss, label=f"{r['epoch_rows']:,} rows (peak {r['peak_rss_mib']:,.0f} MiB)")
    ax.axhline(4096, color="grey", linestyle="--", linewidth=1, label="4 GiB")
    ax.set_xlabel("seconds since start of `mome-edge train`")
    ax.set_ylabel("resident memory, MiB")
    peaks = [r["peak_rss_mib"] for r in report["one_epoch"]]
    spread = f"peaks {min(peaks):,.0f}-{max(peaks):,.0f} MiB" if peaks else "no run"
    ax.set_title(f"MoME phase-1 epoch at paper dimensions ({spread})")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


if __name__ == "__main__":
    main()
