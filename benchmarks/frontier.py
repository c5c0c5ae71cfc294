"""The size/accuracy frontier: test AUC against `.mome` bytes, MoME against size-matched
baselines trained with the same `--budget`.

Budgets are fractions (1/5, 1/10, 1/20, 1/40) of the fp32 bytes of the default MMoE on each
data set (measured with the compiler's own bytes model). Every point is one
`mome-edge train ... --budget B --budget-weights W --seed S` then `mome-edge compile
--weights W` in fresh processes; the point records the file's bytes, the test AUC of the
compiled file (numpy reference, stored precision) and the wall time of training. "default"
points are the models at their default sizes (no budget).

Resumable: points already in frontier.json are skipped, so the script can be stopped and
re-run (the CPU is shared); the table and plot are rebuilt from whatever is there. Points run
in priority order (census at 1/20 first).

    .venv/bin/python benchmarks/frontier.py [--datasets census-income,synthetic] [--seeds 0,1,2]
        [--kinds mome,mmoe,shared-bottom,ple] [--budgets 20,10,40,5] [--weights fp32,int8] [--max-minutes 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mome_edge.atomic import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).parent / "results"
# the synthetic MMoE generator at a low task correlation, where experts matter (the MMoE
# paper's point: the less related the tasks, the more a shared bottom loses to experts)
SYNTHETIC_ROWS = 60_000
SYNTHETIC_CORRELATION = 0.2
DATASET_ARGS = {
    "census-income": ["--dataset", "census-income"],
    "synthetic": ["--dataset", "synthetic", "--synthetic-rows", str(SYNTHETIC_ROWS),
                  "--synthetic-correlation", str(SYNTHETIC_CORRELATION)],
}
DATASET_TITLES = {"synthetic": f"synthetic: the MMoE generator, {SYNTHETIC_ROWS:,} rows, task correlation {SYNTHETIC_CORRELATION}"}


def reference_bytes(dataset: str) -> int:
    """fp32 bytes of the default MMoE on `dataset` (shapes only: the compiler's bytes model)."""
    import torch

    from mome_edge.compile.sizing import compiled_size
    from mome_edge.config import ModelConfig
    from mome_edge.runs import DatasetRef
    from mome_edge.train.model import build_model

    synthetic = dataset == "synthetic"  # the same data the points train on (DATASET_ARGS)
    ref = DatasetRef(name=dataset, synthetic_rows=SYNTHETIC_ROWS if synthetic else None,
                     synthetic_correlation=SYNTHETIC_CORRELATION if synthetic else None, data_dir=os.environ.get("MOME_DATA_DIR"))
    spec = ref.load().spec
    torch.manual_seed(0)
    return compiled_size(build_model(ModelConfig(kind="mmoe"), spec), spec, weights="fp32", metadata={}).bytes


def point_id(dataset: str, kind: str, fraction: int | None, weights: str, seed: int) -> str:
    return f"{dataset}/{kind}/{'default' if fraction is None else f'1-{fraction}'}/{weights}/seed{seed}"


def run_point(work: Path, dataset: str, kind: str, budget: int | None, weights: str, seed: int, threads: int) -> dict:
    name = f"{dataset}-{kind}-{budget or 'default'}-{weights}-s{seed}"
    run_dir, artifact = work / name, work / f"{name}.mome"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    train = [sys.executable, "-m", "mome_edge.cli", "train", "--model", kind, *DATASET_ARGS[dataset], "--seed", str(seed),
             "--out", str(run_dir), "--threads", str(threads), "--quiet", "--json"]
    if budget is not None:
        train += ["--budget", str(budget), "--budget-weights", weights]
    start = time.perf_counter()
    done = subprocess.run(train, capture_output=True, text=True)
    train_s = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}", "train_s": train_s}
    summary = json.loads(done.stdout)
    compiled = subprocess.run([sys.executable, "-m", "mome_edge.cli", "compile", str(run_dir), "-o", str(artifact), "--weights", weights,
                               "--json"], capture_output=True, text=True, check=True)
    report = json.loads(compiled.stdout)
    return {
        "file_bytes": report["file_bytes"],
        "components": report["components"],
        "test_auc": report["test_auc"],
        "validation_auc": {t: m["auc"] for t, m in summary["validation"].items()},
        "train_s": train_s,
        "data": summary["dataset"],  # as the run describes it (the synthetic task correlation included)
        "epochs_run": summary["epochs_run"],
        "budget": summary.get("budget", {}).get("shrunk"),
        # MoME: neurons kept per layer at the switch and the binary expert-mask density (the reading uses them)
        "neurons_kept": summary.get("neuron_pruning", {}).get("kept"),
        "neurons_nominal": summary.get("neuron_pruning", {}).get("nominal"),
        "mask_density": summary.get("masks", {}).get("binary_density"),
    }


def _add_point(path: Path, results: dict, key: str, point: dict) -> dict:
    """Write `point` into frontier.json under an exclusive lock, merged with what is on disk:
    two runs of this script (disjoint --kinds/--datasets, one per core) then add to one file
    instead of overwriting each other's points. Returns the merged results."""
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        on_disk = json.loads(path.read_text()) if path.is_file() else {"reference_bytes": {}, "points": {}}
        merged = {"reference_bytes": {**results["reference_bytes"], **on_disk["reference_bytes"]},
                  "points": {**results["points"], **on_disk["points"], key: point}}
        atomic_write_json(path, merged)
    return merged


def plan(datasets, kinds, fractions, weights_list, seeds) -> list[tuple]:
    """Points in priority order: per dataset, 1/20 first (the issue's check), fp32 before int8,
    MoME/MMoE/SharedBottom before PLE, then the other budgets, then the default sizes."""
    order = []
    for dataset in datasets:
        for fraction in fractions:
            for weights in weights_list:
                for seed in seeds:
                    for kind in kinds:
                        order.append((dataset, kind, fraction, weights, seed))
        for seed in seeds:
            for kind in kinds:
                order.append((dataset, kind, None, "fp32", seed))
    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="census-income,synthetic")
    parser.add_argument("--kinds", default="mome,mmoe,shared-bottom,ple")
    parser.add_argument("--budgets", default="20,10,40,5", help="budget = default MMoE fp32 bytes / N, in this order")
    parser.add_argument("--weights", default="fp32,int8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop starting new points after this long")
    parser.add_argument("--work", type=Path, default=Path("runs/frontier"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true")
    args = parser.parse_args()
    path = args.out / "frontier.json"
    results = json.loads(path.read_text()) if path.is_file() else {"reference_bytes": {}, "points": {}}
    start = time.monotonic()
    if not args.render_only:
        args.work.mkdir(parents=True, exist_ok=True)
        datasets = args.datasets.split(",")
        for dataset in datasets:
            if dataset not in results["reference_bytes"]:
                results["reference_bytes"][dataset] = reference_bytes(dataset)
        points = plan(datasets, args.kinds.split(","), [int(f) for f in args.budgets.split(",")], args.weights.split(","),
                      [int(s) for s in args.seeds.split(",")])
        for dataset, kind, fraction, weights, seed in points:
            key = point_id(dataset, kind, fraction, weights, seed)
            if key in results["points"]:
                continue
            if args.max_minutes is not None and time.monotonic() - start > 60 * args.max_minutes:
                print(f"stopping: --max-minutes {args.max_minutes} reached", file=sys.stderr)
                break
            budget = None if fraction is None else results["reference_bytes"][dataset] // fraction
            print(f"{key} (budget {budget})", file=sys.stderr, flush=True)
            record = run_point(args.work, dataset, kind, budget, weights, seed, args.threads)
            point = {"dataset": dataset, "kind": kind, "fraction": fraction, "budget_bytes": budget,
                     "weights": weights, "seed": seed, **record}
            results = _add_point(path, results, key, point)
    atomic_write_text(args.out / "frontier.md", render(results) + "\n")
    plot(results, args.out / "frontier.png")
    print(render(results))


def _groups(results: dict) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for p in results["points"].values():
        if "error" in p:
            continue
        groups.setdefault((p["dataset"], p["fraction"] or 0, p["kind"], p["weights"]), []).append(p)
    return groups


def render(results: dict) -> str:
    lines = [
        "Each point: `mome-edge train --budget B --budget-weights W --seed S` then `mome-edge compile --weights W`; file bytes",
        "are the compiled file's, test AUC is the compiled file's (numpy reference, stored precision), train s is the wall",
        "time of training on a 2-core machine shared with other jobs (compare within a row group only). `default` = no budget.",
        "Rows with fewer than 3 seeds are where the run stopped (the script resumes where it stopped).",
        "",
    ]
    groups = _groups(results)
    for dataset in sorted({g[0] for g in groups}):
        ref = results["reference_bytes"][dataset]
        tasks = None
        rows = []
        for (d, fraction, kind, weights), points in sorted(groups.items(), key=lambda kv: (kv[0][1] == 0, kv[0][1], kv[0][2], kv[0][3])):
            if d != dataset:
                continue
            tasks = tasks or list(points[0]["test_auc"])
            aucs = [" {:.4f} ± {:.4f}".format(np.mean([p["test_auc"][t] for p in points]), np.std([p["test_auc"][t] for p in points]))
                    for t in tasks]
            budget = "default" if fraction == 0 else f"1/{fraction} ({ref // fraction:,})"
            rows.append(f"| {budget} | {kind} | {weights} | {len(points)} | {np.mean([p['file_bytes'] for p in points]):,.0f} |"
                        + " |".join(aucs) + f" | {np.mean([p['train_s'] for p in points]):,.0f} |")
        lines += [f"### {DATASET_TITLES.get(dataset, dataset)} (default MMoE fp32: {ref:,} bytes)", "",
                  "| budget (bytes) | model | weights | seeds | file bytes (mean) | " + " | ".join(f"test AUC {t} (mean ± std)" for t in tasks or [])
                  + " | train s (mean) |", "|---|---|---|---:|---:|" + "---:|" * len(tasks or []) + "---:|", *rows, ""]
    lines += reading(results, groups)
    errors = [f"- {k}: {p['error']}" for k, p in results["points"].items() if "error" in p]
    if errors:
        lines += ["Points that did not train:", *errors, ""]
    return "\n".join(lines)


def reading(results: dict, groups: dict[tuple, list[dict]]) -> list[str]:
    """Where MoME is above the size-matched frontier and where not: per budget and weights, MoME's
    mean test AUC minus the best baseline's at the same budget (computed, not written by hand)."""
    out = ["### MoME against the best size-matched baseline (mean test AUC difference; + = MoME above)", ""]
    for (dataset, fraction, kind, weights), points in sorted(groups.items()):
        if kind != "mome" or fraction == 0:
            continue
        rivals = {k: ps for (d, f, k, w), ps in groups.items() if d == dataset and f == fraction and w == weights and k != "mome"}
        if not rivals:
            continue
        parts = []
        for task in points[0]["test_auc"]:
            mome = np.mean([p["test_auc"][task] for p in points])
            best_kind, best = max(((k, np.mean([p["test_auc"][task] for p in ps])) for k, ps in rivals.items()), key=lambda kv: kv[1])
            parts.append(f"{task} {mome - best:+.4f} vs {best_kind}")
        seeds = min(len(points), *(len(ps) for ps in rivals.values()))
        out.append(f"- {dataset}, 1/{fraction}, {weights} ({seeds} seeds): " + "; ".join(parts) + _mome_shape(points))
    return [*out, ""]


def _neurons_kept(point: dict) -> tuple[list[int], list[int]] | None:
    """(kept, nominal) neurons per layer at MoME's phase switch (inputs of each base layer, then outputs)."""
    if point.get("neurons_kept") and point.get("neurons_nominal"):
        return point["neurons_kept"], point["neurons_nominal"]
    # points run before the fields existed: the budget's own text
    found = re.search(r"neurons kept per layer \[([\d, ]+)\] of \[([\d, ]+)\]", point.get("budget") or "")
    return ([int(x) for x in found.group(1).split(",")], [int(x) for x in found.group(2).split(",")]) if found else None


def _mome_shape(points: list[dict]) -> str:
    """What the budget left of MoME: mean neurons kept per layer and mean expert-mask density."""
    shapes = [k for k in map(_neurons_kept, points) if k]
    density = [p["mask_density"] for p in points if p.get("mask_density") is not None]
    parts = []
    if shapes and len({tuple(nominal) for _, nominal in shapes}) == 1:
        kept = np.mean([k for k, _ in shapes], axis=0)
        parts.append("neurons kept " + ", ".join(f"{v:.0f}" for v in kept) + " of " + ", ".join(map(str, shapes[0][1])))
    if density:
        parts.append(f"mask density {np.mean(density):.2f}")
    return f" (MoME: {'; '.join(parts)})" if parts else ""


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(results)
    datasets = sorted({g[0] for g in groups})
    if not datasets:
        return
    tasks = {d: list(next(p for (dd, *_), ps in groups.items() if dd == d for p in ps)["test_auc"]) for d in datasets}
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 4 * len(datasets)), squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, task in enumerate(tasks[dataset][:2]):
            ax = axes[i][j]
            lines: dict[tuple, list] = {}
            for (d, fraction, kind, weights), points in groups.items():
                if d == dataset:
                    lines.setdefault((kind, weights), []).append(
                        (np.mean([p["file_bytes"] for p in points]), np.mean([p["test_auc"][task] for p in points]),
                         np.std([p["test_auc"][task] for p in points])))
            for (kind, weights), xs in sorted(lines.items()):
                xs.sort()
                x, y, e = zip(*xs)
                ax.errorbar(x, y, yerr=e, marker="o", linestyle="-" if weights == "fp32" else "--", label=f"{kind} {weights}", capsize=2)
            ax.set_xscale("log")
            ax.set_xlabel(".mome bytes (log)")
            ax.set_ylabel(f"test AUC {task}")
            ax.set_title(f"{dataset}: {task}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
