"""AliExpress search logs in the common processed CSV layout (the MoME paper's data sets).

Layout: ``search_id, categorical_1..16, numerical_1..63, click, conversion``. Tasks: ``ctr`` =
click and ``ctcvr`` = click AND conversion (a conversion implies a click in this data, the
product only guards against stray rows). ``search_id`` is never a feature. The test file is
the test split; validation is a seeded 10 % of the training file; encoders fit on the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mome_edge.data.frames import build_splits, column_floats
from mome_edge.data.paths import resolve_data_dir
from mome_edge.data.splits import SplitIndex, holdout_indices
from mome_edge.data.types import DataSplits
from mome_edge.errors import DataError

DATASET = "aliexpress"
CATEGORICAL: tuple[str, ...] = tuple(f"categorical_{i}" for i in range(1, 17))
NUMERICAL: tuple[str, ...] = tuple(f"numerical_{i}" for i in range(1, 64))
LABEL_COLUMNS: tuple[str, ...] = ("click", "conversion")
COLUMNS: tuple[str, ...] = ("search_id", *CATEGORICAL, *NUMERICAL, *LABEL_COLUMNS)
TASKS: tuple[str, ...] = ("ctr", "ctcvr")
LABEL_SOURCES = {
    "ctr": {"column": "click", "positive": ["1"], "meaning": "clicked"},
    "ctcvr": {"columns": ["click", "conversion"], "rule": "click * conversion", "meaning": "clicked and bought"},
}
VALIDATION_FRACTION = 0.1
SUBFOLDERS: tuple[str, ...] = ("", "aliexpress-sample", "aliexpress")
CSV_SUFFIXES = (".csv", ".csv.gz")
HOLDS = "the AliExpress *train*.csv and *test*.csv files (e.g. aliexpress-sample/)"


def find_aliexpress_files(data_dir: str | Path, *, suffixes: tuple[str, ...] = CSV_SUFFIXES) -> tuple[Path, Path]:
    """(train, test) files ending in one of `suffixes` in data_dir, data_dir/aliexpress-sample or data_dir/aliexpress."""
    root = Path(data_dir).expanduser()
    kinds = ", ".join(suffixes)
    for sub in SUBFOLDERS:
        folder = root / sub if sub else root
        if not folder.is_dir():
            continue
        train, test = _matches(folder, "train", suffixes), _matches(folder, "test", suffixes)
        if not train and not test:
            continue
        if len(train) != 1 or len(test) != 1:
            raise DataError(
                f"{str(folder)!r} must hold exactly one *train* and one *test* file ({kinds}), found "
                f"train {[p.name for p in train]} and test {[p.name for p in test]}; point --data-dir at a "
                "folder with one pair"
            )
        return train[0], test[0]
    raise DataError(
        f"no AliExpress *train* / *test* file ({kinds}) in {str(root)!r} or its {list(SUBFOLDERS[1:])} folders; "
        f"set --data-dir or MOME_DATA_DIR to the folder holding {HOLDS}"
    )


def read_aliexpress_csv(path: Path, *, max_rows: int | None = None) -> pd.DataFrame:
    """One processed AliExpress CSV, checked for the expected columns."""
    try:
        frame = pd.read_csv(path, nrows=max_rows)
    except (OSError, ValueError, pd.errors.ParserError, EOFError) as exc:
        raise DataError(
            f"cannot read AliExpress file {str(path)!r} ({exc}); check that it is a CSV with a header"
        ) from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"AliExpress file {str(path)!r} lacks the columns {missing}; expected the processed layout "
            "search_id, categorical_1..16, numerical_1..63, click, conversion"
        )
    return frame


def aliexpress_labels(frame: pd.DataFrame, *, source: str) -> np.ndarray:
    """float32 [N, 2]: ctr = click, ctcvr = click * conversion; DataError on non-0/1 values."""
    parts = []
    for column in LABEL_COLUMNS:
        values = column_floats(frame[column])
        if not np.isin(values, (0.0, 1.0)).all():
            raise DataError(f"column {column!r} of {source} must hold only 0 and 1; fix or drop the other rows")
        parts.append(values)
    click, conversion = parts
    return np.stack([click, click * conversion], axis=1).astype(np.float32)  # (N, 2)


def aliexpress_splits(
    train_frame: pd.DataFrame, test_frame: pd.DataFrame, *, seed: int, dataset: str = DATASET, source: str = DATASET
) -> DataSplits:
    """DataSplits of processed-layout frames: validation = seeded 10 % of the train frame."""
    frame = pd.concat([train_frame, test_frame], ignore_index=True)
    kept, held_out = holdout_indices(len(train_frame), fraction=VALIDATION_FRACTION, seed=seed)
    test = np.arange(len(train_frame), len(frame), dtype=np.int64)
    if len(test) == 0:
        raise DataError(f"the test part of {source} has no row; provide a non-empty test file")
    return build_splits(
        frame,
        aliexpress_labels(frame, source=source),
        SplitIndex(train=kept, validation=held_out, test=test),
        dataset=dataset,
        categorical=CATEGORICAL,
        numerical=NUMERICAL,
        tasks=TASKS,
        label_sources=LABEL_SOURCES,
    )


def load_aliexpress(data_dir: str | Path | None = None, *, seed: int = 0, max_rows: int | None = None) -> DataSplits:
    """AliExpress train/test CSVs as DataSplits; ``max_rows`` caps the rows read from each file."""
    train_path, test_path = find_aliexpress_files(resolve_data_dir(data_dir, holds=HOLDS))
    return aliexpress_splits(
        read_aliexpress_csv(train_path, max_rows=max_rows),
        read_aliexpress_csv(test_path, max_rows=max_rows),
        seed=seed,
        source=f"{train_path.name} / {test_path.name}",
    )


def _matches(folder: Path, word: str, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and word in p.name and p.name.lower().endswith(suffixes))
