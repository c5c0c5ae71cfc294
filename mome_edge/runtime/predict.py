"""Predictions from a compiled artifact through the numpy reference (no torch).

    predict_artifact(path, input_csv="rows.csv")      raw rows, encoded with the artifact's encoders
    predict_artifact(path, dataset="census-income")   a split of a built-in data set
    predict_to_csv(path, output, input_csv=...)       the same, streamed to a CSV file in bounded memory
    evaluate_artifact(path, dataset=..., split=...)   per-task AUC / logloss of what ships

Input policy (raw rows): unknown categories and out-of-range ids read the OOV row; missing,
NaN and +-inf numerical values, and finite values too large for float32 once scaled, follow
the spec's recorded missing-value policy ("mean": the training mean, "error": DataError
naming the field and row); rows whose outputs would overflow float32 are a DataError, never
NaN. An input with a header and no rows gives a header-only output; a file with no header
row is an error. The same policy holds for encoded arrays (`compiled.check_inputs`) and in
the device runtime (`mome_edge.runtime.inputs`), whose online Predictor also refuses an empty batch.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from mome_edge.predictions_csv import write_prediction_chunks
from mome_edge.artifact.compiled import CompiledModel, reference_forward
from mome_edge.encoding import FeatureSpec
from mome_edge.contract import SPLITS
from mome_edge.errors import ConfigError, DataError

PREDICT_BATCH = 8192  # rows per reference_forward call: bounds the (E, B, width) activations
CSV_CHUNK_ROWS = 65_536  # raw rows parsed and encoded at a time: bounds memory for any file size


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


def read_csv_columns(path: str | Path) -> dict[str, list[str]]:
    """A CSV file with a header row -> column name -> raw string values (stdlib csv, no pandas).

    Raises:
        DataError: missing file, no header row, or rows with more fields than the header.
    """
    columns: dict[str, list[str]] = {}
    for chunk in iter_csv_columns(path):
        for name, values in chunk.items():
            columns.setdefault(name, []).extend(values)
    return columns


def iter_csv_columns(path: str | Path, *, chunk_rows: int = CSV_CHUNK_ROWS) -> Iterator[dict[str, list[str]]]:
    """`read_csv_columns` in chunks of at most `chunk_rows` rows (at least one chunk, maybe empty).

    Raises:
        DataError: as `read_csv_columns`, when the chunk holding the problem is read.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows {chunk_rows} must be >= 1")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path} is empty; give a CSV file whose first row names the feature columns")
            names = [h.strip() for h in header]
            if len(set(names)) != len(names):
                raise DataError(f"{path} repeats a column name in its header; give every column a unique name")
            columns: dict[str, list[str]] = {name: [] for name in names}
            rows = 0
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank line
                if len(row) > len(names):
                    raise DataError(f"{path} line {line} has {len(row)} fields, the header names {len(names)}; fix the row")
                row = row + [""] * (len(names) - len(row))  # short rows: the rest is missing
                for name, value in zip(names, row):
                    columns[name].append(value)
                rows += 1
                if rows == chunk_rows:
                    yield columns
                    columns, rows = {name: [] for name in names}, 0
            yield columns  # the rest; an empty chunk keeps the header's names for a header-only file
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; pass a CSV file of raw rows with --input") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder; pass a CSV file of raw rows with --input") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the rows as a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc}); fix the file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); check the path and its permissions") from None


def encode_csv_chunks(spec: FeatureSpec, input_csv: str | Path, *, chunk_rows: int = CSV_CHUNK_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Raw CSV rows -> (int64 ids (n, F), float32 values (n, D)) per chunk, encoded with `spec`
    and the input policy of this module's docstring; row numbers in errors count data rows
    from 0 over the whole file."""
    start = 0
    for columns in iter_csv_columns(input_csv, chunk_rows=chunk_rows):
        try:
            with np.errstate(over="ignore"):  # a value beyond float32 once scaled: reported below
                categorical, numerical = spec.encode_columns(columns)
        except DataError as exc:
            raise DataError(re.sub(r"at row (\d+)", lambda m: f"at row {int(m.group(1)) + start}", str(exc), count=1)) from None
        # A finite raw value beyond float32 once scaled is inf now: non-finite, so it follows the
        # recorded missing-value policy like NaN/inf ("mean" in the reference; "error" here, with
        # the row counted over the whole file).
        bad = ~np.isfinite(numerical)
        if bad.any():
            for row, col in np.argwhere(bad):
                scaler = spec.numerical[int(col)]
                if scaler.missing == "error":
                    raise DataError(
                        f"{input_csv}: numerical field {scaler.name!r} at row {start + int(row)} holds {columns[scaler.name][int(row)][:40]!r}, "
                        "too large for the model's float32 inputs once scaled, and the model records the 'error' missing-value policy; fix the value"
                    )
        yield categorical, numerical
        start += len(categorical)


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
    from mome_edge.artifact.reader import read_artifact

    if (input_csv is None) == (dataset is None):
        raise DataError("give exactly one of --dataset NAME or --input ROWS.csv")
    loaded = read_artifact(path)
    model = loaded.model
    if input_csv is not None:
        parts = [reference_predict(model, cat, num) for cat, num in encode_csv_chunks(model.spec, input_csv)]
        probs = np.concatenate(parts, axis=0) if parts else np.zeros((0, len(model.tasks)), np.float32)
        return Predictions(probs=probs, tasks=model.tasks, source=str(input_csv))
    part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
    probs = reference_predict(model, part.categorical, part.numerical)
    return Predictions(probs=probs, tasks=model.tasks, source=f"{dataset} ({split})", labels=part.labels)


@dataclass(frozen=True, kw_only=True)
class PredictionSummary:
    """What `predict_to_csv` wrote."""

    rows: int
    tasks: tuple[str, ...]
    source: str


def predict_to_csv(
    path: str | Path,
    output: str | Path,
    *,
    input_csv: str | Path | None = None,
    dataset: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    chunk_rows: int = CSV_CHUNK_ROWS,
) -> PredictionSummary:
    """`predict_artifact` streamed into `output` (the predictions CSV, mome_edge/predictions_csv.py), chunk by chunk.

    Memory stays bounded by `chunk_rows` for raw CSV rows of any length. The output is written
    to a temp file in its folder and renamed at the end: a failure (a bad row late in the
    file, a full disk) leaves any existing output untouched and no partial file.

    Raises:
        ConfigError: `output` is the artifact or the input file itself.
        ArtifactError, DataError: as `predict_artifact`.
        MomeError: the output folder is not writable.
    """
    from mome_edge.artifact.reader import read_artifact

    if (input_csv is None) == (dataset is None):
        raise DataError("give exactly one of --dataset NAME or --input ROWS.csv")
    refuse_overwriting_inputs(output, {"the artifact": path, "--input": input_csv})
    model = read_artifact(path).model
    chunks, source = input_chunks(model, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir, chunk_rows=chunk_rows)
    rows = write_prediction_chunks(output, model.tasks, (reference_predict(model, cat, num) for cat, num in chunks))
    return PredictionSummary(rows=rows, tasks=model.tasks, source=source)


def input_chunks(
    model: Any, *, input_csv: str | Path | None, dataset: str | None, split: str = "test", data_dir: str | None = None,
    chunk_rows: int = CSV_CHUNK_ROWS,
) -> tuple[Iterator[tuple[np.ndarray, np.ndarray]], str]:
    """(encoded row chunks, a description of the source) for raw CSV rows or a data set split.

    `model` needs `.spec` (and `.metadata` for a data set): a CompiledModel or a runtime
    Predictor. CSV chunks are read lazily; a data set split is loaded once.
    """
    if input_csv is not None:
        return encode_csv_chunks(model.spec, input_csv, chunk_rows=chunk_rows), str(input_csv)
    part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
    return ((part.categorical[i : i + chunk_rows], part.numerical[i : i + chunk_rows]) for i in range(0, len(part), chunk_rows)), f"{dataset} ({split})"


def refuse_overwriting_inputs(output: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """ConfigError when `output` names the same file (or folder) as one of `inputs` (label -> path)."""
    out = Path(output)
    for label, given in inputs.items():
        if given is None:
            continue
        given = Path(given)
        try:
            same = out.exists() and given.exists() and os.path.samefile(out, given)
        except OSError:
            same = False
        if same or out.resolve() == given.resolve():
            raise ConfigError(f"the output {out} is {label} ({given}) itself; write the output to another path")


def load_artifact_split(model: CompiledModel, dataset: str, *, split: str = "test", data_dir: str | None = None):
    """A split of `dataset`, encoded exactly as the artifact expects (-> MultiTaskData).

    Raises:
        DataError: unknown split, unloadable data, or encoders that differ from the artifact's.
    """
    if split not in SPLITS:
        raise DataError(f"--split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    from mome_edge.data import load_dataset

    recorded = model.metadata.get("dataset") if isinstance(model.metadata, Mapping) else None
    if not isinstance(recorded, Mapping):  # free-form metadata: only a well-formed record is used
        recorded = {}
    settings = {}
    if recorded.get("name") == dataset:  # the same split and encoders as at training
        kinds = {"seed": int, "task_group": str, "max_rows": int, "synthetic_rows": int, "synthetic_correlation": (float, int)}
        settings = {k: recorded[k] for k, kind in kinds.items() if isinstance(recorded.get(k), kind) and not isinstance(recorded.get(k), bool)}
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
    from mome_edge.artifact.reader import read_artifact
    from mome_edge.train.evaluation import EvaluationReport
    from mome_edge.metrics import task_metrics

    model = read_artifact(path).model
    part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
    probs = reference_predict(model, part.categorical, part.numerical)
    return EvaluationReport(model_kind=model.kind, split=split, rows=len(part), metrics=task_metrics(part.labels, probs, model.tasks))
