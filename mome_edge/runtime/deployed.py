"""Predictions through the device runtime (ONNX Runtime or the numpy engine), for the CLI.

    predict_deployed("model.onnx", input_csv="rows.csv")               ONNX Runtime
    predict_deployed("model.mome", runtime="onnx", dataset="census-income")  exported in memory

Inputs are encoded with the model's own feature spec (from the artifact, or from the ONNX
file's metadata) and predicted in chunks of `chunk_rows`, with a progress bar on stderr for
large inputs. The `.mome` + numpy path of `mome-edge predict` stays in mome_edge.runtime.predict.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mome_edge.errors import ConfigError, DataError
from mome_edge.onnx_contract import ARTIFACT_SUFFIX, ONNX_SUFFIXES
from mome_edge.runtime.predict import Predictions, load_artifact_split, read_csv_columns

RUNTIMES = ("numpy", "onnx")
CHUNK_ROWS = 8192
PROGRESS_MIN_CHUNKS = 4  # no progress bar for inputs that fit in a few chunks


def load_predictor(path: str | Path, *, runtime: str = "onnx", threads: int | None = None):
    """A runtime Predictor for a .onnx/.ort file, or a .mome file with runtime numpy|onnx."""
    from mome_edge.runtime import Predictor

    path = Path(path)
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r} is unknown; use {' or '.join(RUNTIMES)}")
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        if runtime != "onnx":
            raise ConfigError(f"{path} is an ONNX model: it runs with --runtime onnx only")
        return Predictor(path, threads=threads)
    if suffix != ARTIFACT_SUFFIX:
        raise ConfigError(f"{path}: unknown model file type {suffix!r}; pass a .mome, .onnx or .ort file")
    if runtime == "numpy":
        return Predictor(path, threads=threads)
    from mome_edge.extras import require_training_side

    require_training_side("export")  # exporting in memory needs the onnx package
    from mome_edge.artifact.reader import read_artifact
    from mome_edge.exporters.onnx_export import export_onnx, onnx_bytes, weight_source

    loaded = read_artifact(path)
    model = export_onnx(loaded.model, source=weight_source(loaded), simplify=False, validate=True)
    return Predictor(onnx_bytes(model), threads=threads)


def predict_deployed(
    path: str | Path, *, runtime: str = "onnx", input_csv: str | Path | None = None, dataset: str | None = None,
    split: str = "test", data_dir: str | None = None, chunk_rows: int = CHUNK_ROWS, progress: bool = True,
    threads: int | None = None,
) -> Predictions:
    """Probabilities of a deployed model on raw CSV rows or a data set split (see module doc).

    Raises:
        ConfigError: bad runtime/model combination or chunk size.
        ArtifactError: unreadable model file.
        DataError: bad input rows, or a data set that does not encode like the model.
    """
    if (input_csv is None) == (dataset is None):
        raise DataError("give exactly one of --dataset NAME or --input ROWS.csv")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= 1")
    predictor = load_predictor(path, runtime=runtime, threads=threads)
    labels = None
    if input_csv is not None:
        categorical, numerical = predictor.spec.encode_columns(read_csv_columns(input_csv))
        source = str(input_csv)
    else:
        model = SimpleNamespace(spec=predictor.spec, metadata=predictor.metadata, tasks=predictor.tasks)
        part = load_artifact_split(model, dataset, split=split, data_dir=data_dir)
        categorical, numerical, labels = part.categorical, part.numerical, part.labels
        source = f"{dataset} ({split})"
    probs = predict_in_chunks(predictor, categorical, numerical, chunk_rows=chunk_rows, progress=progress)
    return Predictions(probs=probs, tasks=tuple(predictor.tasks), source=f"{source} via {predictor.runtime}", labels=labels)


def predict_deployed_to_csv(
    path: str | Path, output: str | Path, *, runtime: str = "onnx", input_csv: str | Path | None = None,
    dataset: str | None = None, split: str = "test", data_dir: str | None = None, chunk_rows: int = CHUNK_ROWS,
    threads: int | None = None,
):
    """`predict_deployed` streamed into `output` (mome_edge.runtime.predict.predict_to_csv's format and
    guarantees): raw CSV rows are read, encoded and predicted chunk by chunk, in bounded memory.

    Returns:
        mome_edge.runtime.predict.PredictionSummary.
    """
    from mome_edge.predictions_csv import write_prediction_chunks
    from mome_edge.runtime.predict import CSV_CHUNK_ROWS, PredictionSummary, input_chunks, refuse_overwriting_inputs

    if (input_csv is None) == (dataset is None):
        raise DataError("give exactly one of --dataset NAME or --input ROWS.csv")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= 1")
    refuse_overwriting_inputs(output, {"MODEL": path, "--input": input_csv})
    predictor = load_predictor(path, runtime=runtime, threads=threads)
    model = SimpleNamespace(spec=predictor.spec, metadata=predictor.metadata, tasks=predictor.tasks)
    chunks, source = input_chunks(model, input_csv=input_csv, dataset=dataset, split=split, data_dir=data_dir, chunk_rows=CSV_CHUNK_ROWS)
    probs = (predict_in_chunks(predictor, cat, num, chunk_rows=chunk_rows, progress=False) for cat, num in chunks)
    rows = write_prediction_chunks(output, predictor.tasks, probs)
    return PredictionSummary(rows=rows, tasks=tuple(predictor.tasks), source=f"{source} via {predictor.runtime}")


def predict_in_chunks(predictor, categorical: np.ndarray, numerical: np.ndarray, *, chunk_rows: int = CHUNK_ROWS,
                      progress: bool = True) -> np.ndarray:
    """predict_array over row chunks (bounded activations): float32 (N, T), rows in input order."""
    n = len(categorical)
    if n == 0:
        return np.zeros((0, len(predictor.tasks)), dtype=np.float32)
    starts = range(0, n, chunk_rows)
    parts = []
    if progress and len(starts) >= PROGRESS_MIN_CHUNKS:
        from rich.progress import Progress

        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task("predicting", total=n)
            for i in starts:
                parts.append(predictor.predict_array(categorical[i : i + chunk_rows], numerical[i : i + chunk_rows]))
                bar.advance(task, len(parts[-1]))
    else:
        parts = [predictor.predict_array(categorical[i : i + chunk_rows], numerical[i : i + chunk_rows]) for i in starts]
    return np.concatenate(parts, axis=0)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
