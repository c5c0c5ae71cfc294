"""The predictions CSV: its one writer, used by `predict`, `evaluate --predictions` and the runtime.

Format: a header with one column per task, then one row of probabilities per input row, in
input order, each printed with 7 significant digits (float32 carries ~7). A file appears
atomically (complete or not at all); `-` writes to standard output instead.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from mome_edge.atomic import atomic_file

STDOUT = "-"  # the output path that means standard output
PROBABILITY_FORMAT = "%.7g"


def is_stdout(path: str | Path) -> bool:
    return str(path) == STDOUT


@contextlib.contextmanager
def _open(path: str | Path) -> Iterator[IO[str]]:
    if is_stdout(path):
        yield sys.stdout
        sys.stdout.flush()
    else:
        with atomic_file(path, "w") as handle:
            yield handle


@contextlib.contextmanager
def predictions_writer(path: str | Path, tasks: Sequence[str]) -> Iterator["PredictionsWriter"]:
    """A writer to which batches of probabilities are appended; the file appears on success only."""
    with _open(path) as handle:
        writer = PredictionsWriter(handle, tasks)
        yield writer


class PredictionsWriter:
    """Appends (B, T) probability batches under the header written on creation."""

    def __init__(self, handle: IO[str], tasks: Sequence[str]) -> None:
        self._handle = handle
        self._tasks = len(tasks)
        self.rows = 0
        handle.write(",".join(tasks) + "\n")

    def write(self, probs: np.ndarray) -> None:
        if probs.ndim != 2 or probs.shape[1] != self._tasks:
            raise ValueError(f"probabilities of shape {probs.shape} do not have one column per task ({self._tasks})")
        np.savetxt(self._handle, probs, delimiter=",", fmt=PROBABILITY_FORMAT)
        self.rows += len(probs)


def write_predictions(path: str | Path, probs: np.ndarray, tasks: Sequence[str]) -> int:
    """All probabilities (N, T) at once; the number of rows written."""
    return write_prediction_chunks(path, tasks, iter([probs]))


def write_prediction_chunks(path: str | Path, tasks: Sequence[str], probs: Iterable[np.ndarray]) -> int:
    """Probability chunks streamed into one CSV; the number of rows.

    The first chunk is computed before the output is opened, so that input errors (a missing
    column, a bad header) leave no trace; a later error removes the temp file, and an existing
    file at `path` stays as it was.
    """
    chunks = iter(probs)
    first = next(chunks, None)
    with predictions_writer(path, tasks) as writer:
        for part in itertools.chain([first] if first is not None else [], chunks):
            writer.write(part)
    return writer.rows
