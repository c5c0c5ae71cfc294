"""`mome-edge evaluate`: per-task AUC and logloss of a run's selected model, or of a compiled
artifact / exported ONNX file (so that users measure exactly what they ship)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import metrics_table, print_json, stdout
from mome_edge.cli.options import DataDir, Json, data_dir_or_none
from mome_edge.contract import SPLITS
from mome_edge.errors import ConfigError
from mome_edge.onnx_contract import MODEL_SUFFIXES




def evaluate(
    target: Path = typer.Argument(..., help="A run folder of `mome-edge train`, or a .mome / .onnx / .ort model file."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Data set to evaluate a model FILE on (run folders know theirs)."),
    runtime: str = typer.Option("numpy", "--runtime", help="For .mome files: numpy (reference) or onnx (exported in memory)."),
    json_output: bool = Json,
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Write per-task probabilities (CSV, rows in split order)."),
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Evaluate a trained run, or a compiled/exported model, on a split of a data set."""
    from mome_edge.extras import require_training_side

    # a run folder needs torch; a model file only the data-set readers and the metrics
    require_training_side("reading a data set" if target.is_file() else "evaluate")
    from mome_edge.train.evaluation import evaluate_model_file, evaluate_run

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if not target.exists():
        raise ConfigError(f"{target} does not exist, so it is not a run folder or a model file; pass a run folder of `mome-edge train` or a .mome/.onnx/.ort file")
    if predictions is not None:
        from mome_edge.runtime.predict import refuse_overwriting_inputs
        from mome_edge.runs import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, RUN_FILE, SUMMARY_FILE

        inputs = {"TARGET": target}
        if target.is_dir():
            inputs.update({f"the run's {name}": target / name for name in (RUN_FILE, MODEL_FILE, METRICS_FILE, SUMMARY_FILE, CHECKPOINT_DIR)})
        refuse_overwriting_inputs(predictions, inputs)
    if target.is_file():
        if target.suffix.lower() not in MODEL_SUFFIXES:
            raise ConfigError(f"{target} is neither a run folder nor a model file; pass a run folder or a .mome/.onnx/.ort file")
        if dataset is None:
            raise ConfigError(f"evaluating the model file {target} needs --dataset NAME (the data set it was trained on)")
        report = evaluate_model_file(target, dataset=dataset, split=split, runtime=runtime, data_dir=data_dir_or_none(data_dir),
                                     predictions_path=predictions, progress=not json_output)
    else:
        if dataset is not None:
            raise ConfigError("--dataset applies to model files only; a run folder is evaluated on its own data set")
        report = evaluate_run(target, split=split, data_dir=data_dir_or_none(data_dir), predictions_path=predictions)
    if json_output:
        print_json({"split": split, "tasks": report.metrics})
        return
    stdout.print(metrics_table(f"{target} on {split} ({report.rows} rows)", [(report.model_kind, report.metrics)], list(report.metrics)))
