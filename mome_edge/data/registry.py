"""``load_dataset``: one entry point for the built-in data sets and user TOML specs."""

from __future__ import annotations

import numbers
from pathlib import Path

from mome_edge.data.aliexpress import load_aliexpress
from mome_edge.data.census import TASK_GROUPS, load_census
from mome_edge.data.synthetic import DEFAULT_ROWS as SYNTHETIC_ROWS
from mome_edge.data.synthetic import DEFAULT_CORRELATION, make_mmoe_synthetic
from mome_edge.data.synthetic_aliexpress import DEFAULT_ROWS as SYNTHETIC_ALIEXPRESS_ROWS
from mome_edge.data.synthetic_aliexpress import load_synthetic_aliexpress
from mome_edge.data.types import DataSplits
from mome_edge.data.user_spec import load_user_spec
from mome_edge.errors import DataError

DATASET_NAMES: tuple[str, ...] = ("census-income", "aliexpress", "synthetic", "synthetic-aliexpress")


def load_dataset(
    name: str | None = None,
    *,
    spec_path: str | Path | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    task_group: str = "income-marital",
    max_rows: int | None = None,
    synthetic_rows: int | None = None,
    synthetic_correlation: float | None = None,
) -> DataSplits:
    """Load a data set as encoded train/validation/test splits.

    Args:
        name: one of DATASET_NAMES; or None with ``spec_path`` (a user TOML spec).
        data_dir: folder of the real files; default MOME_DATA_DIR, else ../shared/data.
        seed: split seed (and generator seed for synthetic data).
        task_group: census-income tasks, "income-marital" or "education-marital"; other
            data sets ignore it.
        max_rows: read only the first max_rows rows (of each file for aliexpress).
        synthetic_rows: rows to generate for the synthetic data sets.
        synthetic_correlation: task correlation p in [-1, 1] of the "synthetic" generator
            (None: its default, DEFAULT_CORRELATION); any other data set refuses it.
    Raises:
        DataError: unknown name, missing files, malformed data (the message names the fix).
    """
    if (name is None) == (spec_path is None):
        raise DataError(
            f"give exactly one of a data set name ({', '.join(DATASET_NAMES)}) or a spec path (a TOML data spec)"
        )
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed={seed!r} must be a non-negative integer")
    for arg, value in (("max_rows", max_rows), ("synthetic_rows", synthetic_rows)):
        if value is not None and (not _is_int(value) or value < 1):
            raise DataError(f"{arg}={value!r} must be a positive integer (or left unset)")
    check_synthetic_correlation(synthetic_correlation, name)
    seed = int(seed)
    max_rows = None if max_rows is None else int(max_rows)
    synthetic_rows = None if synthetic_rows is None else int(synthetic_rows)
    if spec_path is not None:
        return load_user_spec(spec_path, seed=seed, max_rows=max_rows)
    if task_group not in TASK_GROUPS:
        raise DataError(f"unknown task group {task_group!r}; use one of {sorted(TASK_GROUPS)}")
    if name == "census-income":
        return load_census(data_dir, task_group=task_group, seed=seed, max_rows=max_rows)
    if name == "aliexpress":
        return load_aliexpress(data_dir, seed=seed, max_rows=max_rows)
    if name in ("synthetic", "synthetic-aliexpress"):
        default = SYNTHETIC_ROWS if name == "synthetic" else SYNTHETIC_ALIEXPRESS_ROWS
        n_rows = synthetic_rows or default
        if max_rows is not None:
            n_rows = min(n_rows, max_rows)
        if name == "synthetic":
            correlation = DEFAULT_CORRELATION if synthetic_correlation is None else float(synthetic_correlation)
            return make_mmoe_synthetic(n_rows, correlation=correlation, seed=seed)
        return load_synthetic_aliexpress(n_rows, seed=seed)
    raise DataError(f"unknown data set {name!r}; use one of {', '.join(DATASET_NAMES)}, or a TOML spec via spec_path")


def check_synthetic_correlation(value: object, dataset: str | None, *, flag: str = "synthetic_correlation") -> None:
    """DataError unless `value` is None or a task correlation in [-1, 1] for the "synthetic" data set.

    Any other data set refuses a correlation instead of ignoring it: a run that asked for
    p = 0.2 and silently trained on other data would report numbers for the wrong question."""
    if value is None:
        return
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not -1.0 <= float(value) <= 1.0:  # NaN fails too
        raise DataError(f"{flag}={value!r} is not a task correlation; pass a number in [-1, 1] (default {DEFAULT_CORRELATION})")
    if dataset != "synthetic":
        raise DataError(f"{flag} applies only to the 'synthetic' data set, not {dataset or 'a spec or prepared data'!r}; drop it or use --dataset synthetic")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
