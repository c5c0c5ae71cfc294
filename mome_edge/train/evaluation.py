"""Evaluate a finished run on one split of its data, optionally writing predictions."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path


from mome_edge.predictions_csv import predictions_writer, write_predictions
from mome_edge.errors import DataError
from mome_edge.metrics import task_metrics


@dataclass(frozen=True)
class EvaluationReport:
    model_kind: str
    split: str
    rows: int
    metrics: dict[str, dict[str, float | None]]


def evaluate_run(run_dir: str | Path, *, split: str = "test", data_dir: str | None = None, predictions_path: str | Path | None = None) -> EvaluationReport:
    """Metrics of a run's selected model on one split of its data (streamed for prepared data)."""
    from mome_edge.train.loop import load_trained_model, predict_arrays, predict_proba

    model, info, _ = load_trained_model(run_dir)
    ref = info.dataset if data_dir is None else dataclasses.replace(info.dataset, data_dir=data_dir)
    if ref.is_prepared:
        return _evaluate_prepared(model, info, ref, split, predictions_path, lambda c, n: predict_arrays(model, c, n))
    data = ref.load()
    _check_same_encoding(data.spec, info, ref, run_dir)
    part = data.get(split)
    probs = predict_proba(model, part)
    if predictions_path is not None:
        write_predictions(predictions_path, probs, info.feature_spec.tasks)
    return EvaluationReport(
        model_kind=info.model_config.kind, split=split, rows=len(part), metrics=task_metrics(part.labels, probs, part.spec.tasks)
    )


def _check_same_encoding(spec, info, ref, run_dir) -> None:
    if spec.to_json() != info.feature_spec.to_json():
        raise DataError(
            f"the data of {ref.describe()} no longer encodes as it did when {run_dir} was trained "
            "(file or split changed); evaluate with the original data files"
        )


def _evaluate_prepared(model, info, ref, split, predictions_path, predict) -> EvaluationReport:
    """Streamed: features are read batch by batch; predictions go straight to the CSV."""
    from mome_edge.data.prepared import PreparedDataset
    from mome_edge.streaming_metrics import StreamingTaskMetrics

    dataset = PreparedDataset(str(ref.data_dir))
    _check_same_encoding(dataset.spec, info, ref, ref.data_dir)
    metrics = StreamingTaskMetrics(dataset.spec.tasks)
    with contextlib.ExitStack() as stack:
        csv = None
        if predictions_path is not None:
            csv = stack.enter_context(predictions_writer(predictions_path, dataset.spec.tasks))
        for cat, num, labels in dataset.iter_split(split, 8192):
            probs = predict(cat, num)
            metrics.update(labels, probs)
            if csv is not None:
                csv.write(probs)
    return EvaluationReport(model_kind=info.model_config.kind, split=split, rows=metrics.rows, metrics=metrics.result())


def evaluate_model_file(
    path: str | Path, *, dataset: str, split: str = "test", runtime: str = "numpy", data_dir: str | None = None,
    predictions_path: str | Path | None = None, progress: bool = True,
) -> EvaluationReport:
    """Metrics of a shipped model file (.mome, .onnx, .ort) on a split of the data set it was trained on.

    .onnx/.ort files always run on ONNX Runtime; a .mome runs on the numpy reference, or
    exported in memory and run on ONNX Runtime with runtime="onnx". So users measure exactly
    what they ship.
    """
    from mome_edge.runtime.deployed import predict_deployed

    path = Path(path)
    from mome_edge.onnx_contract import ONNX_SUFFIXES

    engine = "onnx" if path.suffix.lower() in ONNX_SUFFIXES else runtime
    result = predict_deployed(path, runtime=engine, dataset=dataset, split=split, data_dir=data_dir, progress=progress)
    if predictions_path is not None:
        write_predictions(predictions_path, result.probs, result.tasks)
    return EvaluationReport(model_kind=path.name, split=split, rows=len(result.probs),
                            metrics=task_metrics(result.labels, result.probs, result.tasks))
