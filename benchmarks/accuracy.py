"""Accuracy benchmark: MoME vs MMoE vs PLE vs SharedBottom on census-income.

Same split (split seed 0), same budget (TrainConfig defaults), 5 training seeds. Writes
benchmarks/results/accuracy.json and accuracy.md (the README quotes the table).

    .venv/bin/python benchmarks/accuracy.py [--data-dir DIR] [--seeds 5] [--models mome,mmoe,ple,shared-bottom]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.data import default_data_dir
from mome_edge.runs import DatasetRef
from mome_edge.train.loop import train

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", default="mome,mmoe,ple,shared-bottom")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    ref = DatasetRef(name="census-income", data_dir=str(args.data_dir or default_data_dir()))
    data = ref.load()
    tasks = list(data.spec.tasks)
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            for seed in range(args.seeds):
                summary = train(
                    run_dir=Path(tmp) / f"{kind}-{seed}", data=data, model_config=ModelConfig(kind=kind),
                    train_config=TrainConfig(seed=seed), dataset=ref, progress=False,
                ).summary
                results.setdefault(kind, []).append(summary)
                print(kind, seed, {t: round(summary["test"][t]["auc"], 4) for t in tasks}, flush=True)

    report = {"dataset": "census-income", "split_seed": 0, "seeds": args.seeds, "tasks": tasks, "models": {}}
    for kind, runs in results.items():
        entry = {
            "parameters": runs[0]["parameters"],
            "seconds_per_epoch_median": float(np.median([r["seconds_per_epoch"] for r in runs])),
            "epochs_run_mean": float(np.mean([r["epochs_run"] for r in runs])),
        }
        for task in tasks:
            aucs = np.array([r["test"][task]["auc"] for r in runs])
            entry[task] = {"auc_mean": float(aucs.mean()), "auc_std": float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0}
        if kind == "mome":
            change = {t: [r["hardening_auc_change"][t] for r in runs] for t in tasks}
            entry["hardening_auc_change_mean"] = {t: float(np.mean(v)) for t, v in change.items()}
            entry["binary_mask_density_mean"] = float(np.mean([r["masks"]["binary_density"] for r in runs]))
            entry["neurons_kept"] = [r["neuron_pruning"]["kept"] for r in runs]
        report["models"][kind] = entry

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"| model | params | " + " | ".join(f"{t} test AUC (mean ± std, {args.seeds} seeds)" for t in tasks) + " | s/epoch |",
        "|---|---:|" + "---:|" * len(tasks) + "---:|",
    ]
    for kind, entry in report["models"].items():
        cells = " | ".join(f"{entry[t]['auc_mean']:.4f} ± {entry[t]['auc_std']:.4f}" for t in tasks)
        lines.append(f"| {kind} | {entry['parameters']:,} | {cells} | {entry['seconds_per_epoch_median']:.2f} |")
    (args.out / "accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
