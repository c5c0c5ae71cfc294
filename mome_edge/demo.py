"""The end-to-end demo: data -> MoME and MMoE training -> comparison table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.runs import DatasetRef

DEMO_MODELS = ("mome", "mmoe")
SYNTHETIC_ROWS = 30_000


def pick_dataset(data_dir: str | None, force_synthetic: bool) -> DatasetRef:
    """census-income when its file is reachable, else the MMoE paper's synthetic generator."""
    from mome_edge.data import default_data_dir, find_census_file
    from mome_edge.errors import DataError

    if not force_synthetic:
        folder = data_dir or default_data_dir()
        if folder is not None:
            try:
                find_census_file(folder)
                return DatasetRef(name="census-income", data_dir=str(folder))
            except DataError:
                pass
    return DatasetRef(name="synthetic", synthetic_rows=SYNTHETIC_ROWS)


def run_demo(*, data_dir: str | None, out: Path | None, epochs: int | None, force_synthetic: bool, progress: bool) -> dict[str, Any]:
    from mome_edge.train import train

    console = Console(stderr=True)
    ref = pick_dataset(data_dir, force_synthetic)
    data = ref.load()
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mome-demo-"))
    console.print(f"[bold]demo[/bold] on {ref.describe()} ({len(data.train)} training rows); runs in {out}")
    results = {}
    for kind in DEMO_MODELS:
        train_config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
        console.print(f"[bold]training {kind}[/bold]")
        result = train(
            run_dir=out / kind, data=data, model_config=ModelConfig(kind=kind), train_config=train_config,
            dataset=ref, progress=progress,
        )
        results[kind] = result.summary
    return {"dataset": ref.describe(), "out": str(out), "tasks": list(data.spec.tasks), "models": results}


def render_demo(report: dict[str, Any]) -> None:
    console = Console()
    tasks = report["tasks"]
    table = Table(title=f"MoME vs MMoE on {report['dataset']} (test split)")
    table.add_column("model")
    for task in tasks:
        table.add_column(f"{task} AUC", justify="right")
    table.add_column("parameters", justify="right")
    table.add_column("s/epoch", justify="right")
    for kind, summary in report["models"].items():
        aucs = [summary["test"][t]["auc"] for t in tasks]
        table.add_row(kind, *("n/a" if a is None else f"{a:.4f}" for a in aucs), f"{summary['parameters']:,}", f"{summary['seconds_per_epoch']:.2f}")
    console.print(table)
    mome = report["models"].get("mome", {})
    if "hardening_auc_change" in mome and mome["hardening_auc_change"]:
        change = ", ".join(f"{t} {v:+.4f}" for t, v in mome["hardening_auc_change"].items() if v is not None)
        console.print(f"MoME test AUC change from binarising the expert masks: {change}")
    if "neuron_pruning" in mome:
        pruning = mome["neuron_pruning"]
        console.print(f"MoME neurons kept per base layer input: {pruning['kept']} of {pruning['nominal']}")
    console.print(f"runs written to {report['out']}")
