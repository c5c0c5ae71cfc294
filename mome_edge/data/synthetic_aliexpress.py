"""A generator of AliExpress-layout data of any size, streamed in bounded memory.

Rows have the processed CSV layout (search_id, categorical_1..16, numerical_1..63, click,
conversion). Labels depend on the features, so models can learn them:

- two latent scores per row, relevance r and purchase intent s, both N(0, 1);
- categorical fields drawn from skewed (Zipf-like) distributions over the cardinalities
  below, each value with its own effect on the click (and, for some fields, buy) odds;
- numerical_1..30 are noisy views of r, 31..45 of s, 46..63 pure noise; values in [0, 1]
  rounded to 6 decimals, with a per-column share of exact zeros, like the real data;
- click ~ Bernoulli(sigmoid(b_c + r + effects)), conversion = click AND
  Bernoulli(sigmoid(b_v + s + 0.5 r + effects)); b_c and b_v are calibrated at start-up so
  that P(click) = 2.2 % and P(conversion | click) = 3 %, i.e. CTCVR about 0.066 %. That is the
  order reported for the AliExpress NL/ES/FR/US sets (CTR about 2 %, CTCVR under 0.1 %).

Cardinalities follow the value ranges seen in the real sample rows, with headroom (the
first nine fields have 3-100 values, the last seven are binary); they are an assumption.

Determinism: rows are generated in fixed blocks of ``BLOCK_ROWS``, block b seeded by
(seed, b), so a row depends only on (seed, its index): any ``chunk_rows`` and any ``n_rows``
give the same rows (a smaller n_rows gives a prefix).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from mome_edge.data.aliexpress import CATEGORICAL, COLUMNS, LABEL_SOURCES, NUMERICAL, TASKS, aliexpress_labels
from mome_edge.data.frames import build_splits
from mome_edge.data.splits import SplitFractions, split_indices
from mome_edge.data.types import DataSplits
from mome_edge.errors import DataError

DATASET = "synthetic-aliexpress"
DEFAULT_ROWS = 100_000
DEFAULT_CHUNK_ROWS = 65_536
BLOCK_ROWS = 8_192  # fixed generation unit: changing it changes every generated row
CARDINALITIES: tuple[int, ...] = (10, 8, 12, 4, 24, 8, 100, 10, 10, 2, 2, 2, 2, 2, 2, 2)
CLICK_RATE = 0.022
CONVERSION_GIVEN_CLICK = 0.03
SPLIT = SplitFractions(validation=0.1, test=0.1)
_MEAN_SEARCH_ROWS = 8  # impressions per search_id, on average
_N_RELEVANCE, _N_INTENT = 30, 15  # numerical columns driven by r, then by s; the rest is noise
_CALIBRATION_ROWS = 100_000


@dataclass(frozen=True, kw_only=True)
class _World:
    """The fixed parameters of one seed's generator."""

    probs: tuple[np.ndarray, ...]  # per field: category probabilities [K_f]
    click_effects: tuple[np.ndarray, ...]  # per field: logit effect of each value [K_f]
    buy_effects: tuple[np.ndarray, ...]
    loadings: np.ndarray  # [63]: weight of the latent score in each numerical column
    offsets: np.ndarray  # [63]
    zero_rates: np.ndarray  # [63]: share of exact zeros
    click_bias: float = 0.0
    buy_bias: float = 0.0


def iter_aliexpress_chunks(
    n_rows: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS, seed: int = 0
) -> Iterator[pd.DataFrame]:
    """Yield DataFrames of at most ``chunk_rows`` rows in the processed AliExpress layout, ``n_rows`` in all."""
    if not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise DataError(f"n_rows={n_rows!r} must be a positive integer")
    if not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise DataError(f"chunk_rows={chunk_rows!r} must be a positive integer")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed={seed!r} must be a non-negative integer")
    # validated here, not on the first next(): a generator body would only run when iterated
    return _chunks(_make_world(int(seed)), int(n_rows), int(chunk_rows), int(seed))


def _chunks(world: _World, n_rows: int, chunk_rows: int, seed: int) -> Iterator[pd.DataFrame]:
    cached_index, cached = -1, None
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        parts = []
        for block in range(start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS + 1):
            if block != cached_index:  # a block spans several small chunks: keep only the last one
                cached_index, cached = block, _block(world, seed, block)
            lo = max(start, block * BLOCK_ROWS) - block * BLOCK_ROWS
            hi = min(stop, (block + 1) * BLOCK_ROWS) - block * BLOCK_ROWS
            parts.append(cached.iloc[lo:hi])
        yield pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def make_aliexpress_frame(n_rows: int, *, seed: int = 0) -> pd.DataFrame:
    """All ``n_rows`` generated rows in one DataFrame (for sizes that fit in memory)."""
    return pd.concat(list(iter_aliexpress_chunks(n_rows, seed=seed)), ignore_index=True)


def write_aliexpress_csv(
    path: str | Path, n_rows: int, *, seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Path:
    """Stream ``n_rows`` generated rows to a .csv or .csv.gz file (bounded memory; atomic replace)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    path = Path(path)
    if not path.name.endswith((".csv", ".csv.gz")):
        raise DataError(f"{str(path)!r}: use a .csv or .csv.gz file name")
    tmp = path.with_name(path.name + ".tmp")
    # pyarrow's writer is ~40x faster than DataFrame.to_csv; it always quotes a header, so
    # the header is written by hand to match the processed layout exactly
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    try:
        with open(tmp, "wb") as raw:
            # mtime=0 and no file name in the gzip header: the same rows give the same bytes
            gz = None
            if path.name.endswith(".gz"):
                gz = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=3)
            sink = gz if gz is not None else raw
            sink.write((",".join(COLUMNS) + "\n").encode("utf-8"))
            for chunk in iter_aliexpress_chunks(n_rows, chunk_rows=chunk_rows, seed=seed):
                pa_csv.write_csv(pa.Table.from_pandas(chunk, preserve_index=False), sink, write_options=options)
            if gz is not None:
                gz.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_aliexpress_parquet(
    path: str | Path, n_rows: int, *, seed: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Path:
    """Stream ``n_rows`` generated rows to a Parquet file, one row group per chunk; atomic replace."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix != ".parquet":
        raise DataError(f"{str(path)!r}: use a .parquet file name")
    tmp = path.with_name(path.name + ".tmp")
    try:
        writer = None
        try:
            for chunk in iter_aliexpress_chunks(n_rows, chunk_rows=chunk_rows, seed=seed):
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_synthetic_aliexpress(n_rows: int = DEFAULT_ROWS, *, seed: int = 0) -> DataSplits:
    """Generated AliExpress-layout rows as DataSplits: seeded 80/10/10, encoders fitted on train."""
    frame = make_aliexpress_frame(n_rows, seed=seed)
    return build_splits(
        frame,
        aliexpress_labels(frame, source=f"{n_rows} generated rows"),
        split_indices(len(frame), fractions=SPLIT, seed=seed),
        dataset=DATASET,
        categorical=CATEGORICAL,
        numerical=NUMERICAL,
        tasks=TASKS,
        label_sources=LABEL_SOURCES,
    )


def _make_world(seed: int) -> _World:
    rng = np.random.default_rng([seed, 0])
    probs, click_effects, buy_effects = [], [], []
    for j, size in enumerate(CARDINALITIES):
        weights = 1.0 / np.arange(1, size + 1) ** 1.1  # Zipf-like: a few values dominate
        probs.append(rng.permutation(weights / weights.sum()))
        click_effects.append(rng.normal(0.0, 0.4 if size > 2 else 0.2, size))
        # only a few fields move purchase odds, so the two tasks differ
        buy_effects.append(rng.normal(0.0, 0.5, size) if j in (0, 4, 6, 9) else np.zeros(size))
    n_num = len(NUMERICAL)
    loadings = np.zeros(n_num)
    n_driven = _N_RELEVANCE + _N_INTENT
    loadings[:n_driven] = rng.uniform(0.5, 1.5, n_driven) * rng.choice([-1, 1], n_driven)
    world = _World(
        probs=tuple(probs),
        click_effects=tuple(click_effects),
        buy_effects=tuple(buy_effects),
        loadings=loadings,
        offsets=rng.normal(-0.5, 0.7, n_num),
        zero_rates=rng.uniform(0.0, 0.7, n_num),
    )
    # calibrate the two intercepts on a fixed sample so the rates hit their targets
    *_, click_score, buy_score = _scores(world, np.random.default_rng([seed, 1]), _CALIBRATION_ROWS)
    click_bias = _solve_bias(click_score, np.ones_like(click_score), CLICK_RATE)
    p_click = _sigmoid(click_bias + click_score)
    buy_bias = _solve_bias(buy_score, p_click, CONVERSION_GIVEN_CLICK)
    return replace(world, click_bias=click_bias, buy_bias=buy_bias)


def _scores(world: _World, rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """(relevance [n], intent [n], categorical int64 [n, 16], click score [n], buy score [n])."""
    relevance = rng.standard_normal(n)
    intent = rng.standard_normal(n)
    cat = np.empty((n, len(CARDINALITIES)), dtype=np.int64)
    click_score = relevance.copy()
    buy_score = intent + 0.5 * relevance
    for j, size in enumerate(CARDINALITIES):
        cat[:, j] = rng.choice(size, size=n, p=world.probs[j])
        click_score += world.click_effects[j][cat[:, j]]
        buy_score += world.buy_effects[j][cat[:, j]]
    return relevance, intent, cat, click_score, buy_score


def _numerical(world: _World, rng: np.random.Generator, relevance: np.ndarray, intent: np.ndarray) -> np.ndarray:
    """float64 [n, 63] in [0, 1]: noisy views of the latent scores, with exact zeros."""
    n, n_num = len(relevance), len(NUMERICAL)
    latent = np.zeros((n, n_num))
    latent[:, :_N_RELEVANCE] = relevance[:, None]
    latent[:, _N_RELEVANCE : _N_RELEVANCE + _N_INTENT] = intent[:, None]
    noise = rng.standard_normal((n, n_num))
    num = _sigmoid(world.loadings * latent + world.offsets + 0.7 * noise)  # (n, 63)
    num[rng.random((n, n_num)) < world.zero_rates] = 0.0
    return np.round(num, 6)


def _block(world: _World, seed: int, block: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 2, block])
    relevance, intent, cat, click_score, buy_score = _scores(world, rng, BLOCK_ROWS)
    num = _numerical(world, rng, relevance, intent)
    click = rng.random(BLOCK_ROWS) < _sigmoid(world.click_bias + click_score)
    conversion = click & (rng.random(BLOCK_ROWS) < _sigmoid(world.buy_bias + buy_score))
    new_search = rng.random(BLOCK_ROWS) < 1.0 / _MEAN_SEARCH_ROWS
    new_search[0] = True
    search_id = block * BLOCK_ROWS + np.cumsum(new_search)  # unique across blocks
    columns = {
        "search_id": search_id.astype(np.int64),
        **{name: cat[:, j] for j, name in enumerate(CATEGORICAL)},
        **{name: num[:, j] for j, name in enumerate(NUMERICAL)},
        "click": click.astype(np.int64),
        "conversion": conversion.astype(np.int64),
    }
    return pd.DataFrame(columns, columns=list(COLUMNS))


def _solve_bias(score: np.ndarray, weight: np.ndarray, target: float) -> float:
    """b such that sum(weight * sigmoid(b + score)) / sum(weight) == target (bisection: monotone in b)."""
    lo, hi = -30.0, 30.0
    total = weight.sum()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (weight * _sigmoid(mid + score)).sum() / total < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
