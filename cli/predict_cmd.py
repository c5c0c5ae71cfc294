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
    from mome_edge.runtime.predict import predict_to_csv, refuse_overwriting_inputs

    refuse_overwriting_inputs(output, {"MODEL": model, "--input": input_csv})
    # Both paths stream: raw rows in chunks, bounded memory for any input size, atomic output.
    if model.suffix.lower() in (".onnx", ".ort") or runtime != "numpy":  # the device runtime (issue 4)
        from mome_edge.runtime.deployed import predict_deployed_to_csv

        onnx_runtime = "onnx" if runtime == "numpy" else runtime
        summary = predict_deployed_to_csv(model, output, runtime=onnx_runtime, input_csv=input_csv, dataset=dataset, split=split,
                                          data_dir=data_dir_or_none(data_dir))
    else:
        summary = predict_to_csv(model, output, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir_or_none(data_dir))
    rows, tasks, source = summary.rows, summary.tasks, summary.source
    stderr.print(f"[dim]wrote {output}: {rows:,} rows x {len(tasks)} tasks ({', '.join(tasks)}) from {source}[/dim]")
