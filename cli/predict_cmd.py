"""`mome-edge predict`: probabilities from an artifact, through the numpy reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import stderr
from mome_edge.cli.options import DataDir, data_dir_or_none
from mome_edge.errors import ConfigError


def predict_command(
    model: Path = typer.Argument(..., metavar="MODEL.mome", help="An artifact file written by `mome-edge compile`."),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write: one column per task, rows in input order."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A built-in data set to predict on (instead of --input)."),
    split: str = typer.Option("test", "--split", help="train, validation or test (with --dataset)."),
    input_csv: Optional[Path] = typer.Option(None, "--input", help="CSV of raw rows with the original column names."),
    data_dir: Optional[Path] = DataDir,
    runtime: str = typer.Option("numpy", "--runtime", help="For .mome: numpy (reference) or onnx (exported in memory, ONNX Runtime). .onnx/.ort files always run on onnx."),
) -> None:
    """Predict per-task probabilities with a compiled artifact (numpy reference, no torch) or an ONNX export."""
    if (dataset is None) == (input_csv is None):
        raise ConfigError("give exactly one of --dataset NAME or --input ROWS.csv")
    from mome_edge.predict import predict_artifact, write_predictions

    if model.suffix.lower() in (".onnx", ".ort") or runtime != "numpy":  # the device runtime (issue 4)
        from mome_edge.deployed import predict_deployed

        onnx_runtime = "onnx" if runtime == "numpy" else runtime
        result = predict_deployed(model, runtime=onnx_runtime, input_csv=input_csv, dataset=dataset, split=split,
                                  data_dir=data_dir_or_none(data_dir))
    else:
        result = predict_artifact(model, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir_or_none(data_dir))
    write_predictions(output, result.probs, result.tasks)
    stderr.print(f"[dim]wrote {output}: {len(result.probs):,} rows x {len(result.tasks)} tasks ({', '.join(result.tasks)}) from {result.source}[/dim]")
