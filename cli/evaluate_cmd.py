"""`mome-edge evaluate`: per-task AUC and logloss of a run's selected model on one split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import metrics_table, print_json, stdout
from mome_edge.cli.options import DataDir, Json, data_dir_or_none
from mome_edge.errors import ConfigError

SPLITS = ("train", "validation", "test")


def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `mome-edge train`."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    json_output: bool = Json,
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write per-task probabilities (CSV, rows in split order)."),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Evaluate a trained run on a split of its data set."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    from mome_edge.evaluation import evaluate_run

    report = evaluate_run(run_dir, split=split, data_dir=data_dir_or_none(data_dir), predictions_path=predictions)
    if json_output:
        print_json({"split": split, "tasks": report.metrics})
        return
    stdout.print(metrics_table(f"{run_dir} on {split} ({report.rows} rows)", [(report.model_kind, report.metrics)], list(report.metrics)))
