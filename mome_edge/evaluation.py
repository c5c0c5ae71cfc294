"""Evaluate a finished run on one split of its data, optionally writing predictions."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mome_edge.atomic import atomic_write_text
from mome_edge.errors import DataError
from mome_edge.metrics import task_metrics


@dataclass(frozen=True)
class EvaluationReport:
    model_kind: str
    split: str
    rows: int
    metrics: dict[str, dict[str, float | None]]


def write_predictions_csv(path: str | Path, probs: np.ndarray, tasks: list[str] | tuple[str, ...]) -> None:
    """One column per task, one row per input row, in order; written atomically."""
    buffer = io.StringIO()
    buffer.write(",".join(tasks) + "\n")
    np.savetxt(buffer, probs, delimiter=",", fmt="%.7g")
    atomic_write_text(path, buffer.getvalue())


def evaluate_run(run_dir: str | Path, *, split: str = "test", data_dir: str | None = None, predictions_path: str | Path | None = None) -> EvaluationReport:
    from mome_edge.train import load_trained_model, predict_proba

    model, info, _ = load_trained_model(run_dir)
    ref = info.dataset if data_dir is None else dataclasses.replace(info.dataset, data_dir=data_dir)
    data = ref.load()
    if data.spec.to_json() != info.feature_spec.to_json():
        raise DataError(
            f"the data of {ref.describe()} no longer encodes as it did when {run_dir} was trained "
            "(file or split changed); evaluate with the original data files"
        )
    part = data.get(split)
    probs = predict_proba(model, part)
    if predictions_path is not None:
        write_predictions_csv(predictions_path, probs, info.feature_spec.tasks)
    return EvaluationReport(
        model_kind=info.model_config.kind, split=split, rows=len(part), metrics=task_metrics(part.labels, probs, part.spec.tasks)
    )
