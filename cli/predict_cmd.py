"""`mome-edge predict`: probabilities from an artifact, through the numpy reference."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import print_json, stderr
from mome_edge.cli.options import DataDir, data_dir_or_none
from mome_edge.errors import ConfigError
from mome_edge.onnx_contract import ONNX_SUFFIXES
from mome_edge.predictions_csv import is_stdout


def predict_command(
    model: Path = typer.Argument(..., metavar="MODEL.mome", help="A .mome artifact (`mome-edge compile`) or an .onnx/.ort export (`mome-edge export`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV to write: one column per task, rows in input order ('-' = stdout)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A built-in data set to predict on (instead of --input)."),
    split: str = typer.Option("test", "--split", help="train, validation or test (with --dataset)."),
    input_csv: Optional[Path] = typer.Option(None, "--input", help="CSV of raw rows with the original column names."),
    data_dir: Optional[Path] = DataDir,
    json_output: bool = typer.Option(False, "--json", help="Print the probabilities as one JSON object on stdout (with -o FILE: a summary)."),
    runtime: str = typer.Option("numpy", "--runtime", help="For .mome: numpy (reference) or onnx (exported in memory, ONNX Runtime). .onnx/.ort files always run on onnx."),
) -> None:
    """Predict per-task probabilities with a compiled artifact (numpy reference, no torch) or an ONNX export."""
    from mome_edge.extras import require_training_side

    if dataset is not None:
        require_training_side("reading a data set")
    if (dataset is None) == (input_csv is None):
        raise ConfigError("give exactly one of --dataset NAME or --input ROWS.csv")
    from mome_edge.runtime.predict import predict_to_csv, refuse_overwriting_inputs

    if output is None and not json_output:
        raise ConfigError("give --output FILE.csv (or -o - for standard output, or --json); predictions need somewhere to go")
    if output is not None and is_stdout(output) and json_output:
        raise ConfigError("-o - and --json both write to standard output; choose one")
    onnx_runtime = "onnx" if runtime == "numpy" else runtime
    on_onnx = model.suffix.lower() in ONNX_SUFFIXES or runtime != "numpy"  # the device runtime
    if output is None:  # --json alone: the probabilities themselves
        if on_onnx:
            from mome_edge.runtime.deployed import predict_deployed

            result = predict_deployed(model, runtime=onnx_runtime, input_csv=input_csv, dataset=dataset, split=split,
                                      data_dir=data_dir_or_none(data_dir), progress=False)
        else:
            from mome_edge.runtime.predict import predict_artifact

            result = predict_artifact(model, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir_or_none(data_dir))
        print_json({"model": str(model), "source": result.source, "rows": int(len(result.probs)), "tasks": list(result.tasks),
                    "probabilities": {task: [round(float(p), 7) for p in result.probs[:, i]] for i, task in enumerate(result.tasks)}})
        return
    refuse_overwriting_inputs(output, {"MODEL": model, "--input": input_csv})
    # Both paths stream: raw rows in chunks, bounded memory for any input size, atomic output.
    if on_onnx:
        from mome_edge.runtime.deployed import predict_deployed_to_csv

        summary = predict_deployed_to_csv(model, output, runtime=onnx_runtime, input_csv=input_csv, dataset=dataset, split=split,
                                          data_dir=data_dir_or_none(data_dir))
    else:
        summary = predict_to_csv(model, output, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir_or_none(data_dir))
    rows, tasks, source = summary.rows, summary.tasks, summary.source
    if json_output:
        print_json({"model": str(model), "source": source, "rows": rows, "tasks": list(tasks), "output": str(output)})
    elif not is_stdout(output):
        stderr.print(f"[dim]wrote {output}: {rows:,} rows x {len(tasks)} tasks ({', '.join(tasks)}) from {source}[/dim]")
