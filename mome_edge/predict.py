"""Predictions from a compiled artifact through the numpy reference (no torch).

    predict_artifact(path, input_csv="rows.csv")      raw rows, encoded with the artifact's encoders
    predict_artifact(path, dataset="census-income")   a split of a built-in data set
    evaluate_artifact(path, dataset=..., split=...)   per-task AUC / logloss of what ships
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mome_edge.compiled import CompiledModel, reference_forward
from mome_edge.errors import DataError

PREDICT_BATCH = 8192  # rows per reference_forward call: bounds the (E, B, width) activations
SPLITS = ("train", "validation", "test")


def reference_predict(model: CompiledModel, categorical: np.ndarray, numerical: np.ndarray, *, batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """`reference_forward` over row batches: probabilities float32 (N, T), rows in input order."""
    n = categorical.shape[0]
    if n == 0:
        return np.zeros((0, len(model.tasks)), dtype=np.float32)
    parts = [reference_forward(model, categorical[i : i + batch_size], numerical[i : i + batch_size]) for i in range(0, n, batch_size)]
    return np.concatenate(parts, axis=0)


@dataclass(frozen=True, kw_only=True)
class Predictions:
    """Per-task probabilities (rows in input order) and where the rows came from."""

    probs: np.ndarray  # float32 (N, T)
    tasks: tuple[str, ...]
    source: str
    labels: np.ndarray | None = None  # float32 (N, T) when the rows came from a data set


def write_predictions(path: str | Path, probs: np.ndarray, tasks: tuple[str, ...] | list[str]) -> None:
    """One column per task, one row per input row, in order; written atomically.

    Same format as `mome_edge.evaluation.write_predictions_csv`, without importing the
    metrics stack (scikit-learn) on the device-side path.
    """
    from mome_edge.atomic import atomic_write_text

    buffer = io.StringIO()
    buffer.write(",".join(tasks) + "\n")
    np.savetxt(buffer, probs, delimiter=",", fmt="%.7g")
    atomic_write_text(path, buffer.getvalue())


def read_csv_columns(path: str | Path) -> dict[str, list[str]]:
    """A CSV file with a header row -> column name -> raw string values (stdlib csv, no pandas).

    Raises:
        DataError: missing file, no header row, or rows with more fields than the header.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty; give a CSV file whose first row names the feature columns")
            names = [h.strip() for h in header]
            columns: dict[str, list[str]] = {name: [] for name in names}
            if len(columns) != len(names):
                raise DataError(f"{path} repeats a column name in its header; give every column a unique name")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank line
                if len(row) > len(names):
                    raise DataError(f"{path} line {line} has {len(row)} fields, the header names {len(names)}; fix the row")
                row = row + [""] * (len(names) - len(row))  # short rows: the rest is missing
                for name, value in zip(names, row):
                    columns[name].append(value)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; pass a CSV file of raw rows with --input") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the rows as a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}); fix the file") from None
    return columns


def predict_artifact(
    path: str | Path,
    *,
    input_csv: str | Path | None = None,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
) -> Predictions:
    """Probabilities of a compiled artifact on raw CSV rows or on a data set split.

    Args:
        path: the artifact file.
        input_csv: raw rows with the original column names; categories the artifact has
            never seen map to the OOV id, missing numericals follow the recorded policy.
        dataset: a built-in data set name (instead of input_csv); loaded with the split
            settings recorded in the artifact when the name matches its source data set.
        split: train, validation or test (with dataset).
        data_dir: folder of the real data files (with dataset).
    Returns:
        Predictions, one column per task of the artifact.
    Raises:
        ArtifactError: the artifact is unreadable.
        DataError: bad input rows, or a data set that does not encode like the artifact.
    """
    from mome_edge.artifact import read_artifact

    if (input_csv is None) == (dataset is None):
        raise DataError("give exactly one of --dataset NAME or --input ROWS.csv")
    loaded = read_artifact(path)
    model = loaded.model
    if input_csv is not None:
        categorical, numerical = model.spec.encode_columns(read_csv_columns(input_csv))
        return Predictions(probs=reference_predict(model, categorical, numerical), tasks=model.tasks, source=str(input_csv))
    part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
    probs = reference_predict(model, part.categorical, part.numerical)
    return Predictions(probs=probs, tasks=model.tasks, source=f"{dataset} ({split})", labels=part.labels)


def load_artifact_split(model: CompiledModel, dataset: str, *, split: str = "test", data_dir: str | None = None):
    """A split of `dataset`, encoded exactly as the artifact expects (-> MultiTaskData).

    Raises:
        DataError: unknown split, unloadable data, or encoders that differ from the artifact's.
    """
    if split not in SPLITS:
        raise DataError(f"--split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    from mome_edge.data import load_dataset

    recorded: Mapping[str, Any] = model.metadata.get("dataset") or {}
    settings = {}
    if recorded.get("name") == dataset:  # the same split and encoders as at training
        settings = {k: recorded[k] for k in ("seed", "task_group", "max_rows", "synthetic_rows") if recorded.get(k) is not None}
    data = load_dataset(dataset, data_dir=data_dir, **settings)
    if data.spec.to_json() != model.spec.to_json():
        raise DataError(
            f"data set {dataset!r} does not encode like this artifact's feature spec (other data, split or tasks); "
            "predict on raw rows with --input ROWS.csv, or on the data set the model was trained on"
        )
    return data.get(split)


def evaluate_artifact(path: str | Path, *, dataset: str, split: str = "test", data_dir: str | None = None):
    """Per-task AUC/logloss of the artifact itself on a data set split (-> EvaluationReport).

    Raises:
        ArtifactError, DataError: as `predict_artifact`.
    """
    from mome_edge.artifact import read_artifact
    from mome_edge.evaluation import EvaluationReport
    from mome_edge.metrics import task_metrics

    model = read_artifact(path).model
    part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
    probs = reference_predict(model, part.categorical, part.numerical)
    return EvaluationReport(model_kind=model.kind, split=split, rows=len(part), metrics=task_metrics(part.labels, probs, model.tasks))
