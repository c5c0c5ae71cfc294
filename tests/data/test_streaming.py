"""Streaming preparation: spec parity with the in-memory loaders, caps, shards, batches, memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mome_edge.data import write_aliexpress_csv, write_aliexpress_parquet
from mome_edge.data import aliexpress as ali
from mome_edge.data import stream_source as source_module
from mome_edge.data.frames import build_splits
from mome_edge.data.prepared import MANIFEST, PreparedDataset
from mome_edge.data.splits import SplitIndex
from mome_edge.data.stream_source import TEST, TRAIN, VALIDATION, TokenColumn, aliexpress_token, assign_splits
from mome_edge.data.stream_stats import RunningMoments, VocabularyCounter
from mome_edge.data.streaming import fit_streaming_spec, prepare_dataset, stream_source
from mome_edge.data.user_spec import read_user_rows, read_user_spec, user_labels
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ConfigError, DataError

ALI_TRAIN_ROWS, ALI_TEST_ROWS = 20_000, 2_000
SPEC_ROWS = 6_000
STATS_RTOL = 1e-9  # streamed (Chan merge) vs numpy (pairwise sums) mean/std of the same rows
SCALED_ATOL = 1e-5  # scaled values from specs whose statistics differ in the last bits
SPEC = """
[data]
path = "{path}"
name = "shop"
[features]
categorical = ["city", "device"]
numerical = ["rowid", "price"]
[tasks.click]
column = "clicked"
positive = ["yes"]
[tasks.big]
column = "score"
threshold = 0.5
[split]
validation = 0.2
test = 0.2
"""


# --- data ----------------------------------------------------------------------------------


def spec_frame(n: int = SPEC_ROWS, *, seed: int = 0) -> pd.DataFrame:
    """Rows with padded values, every kind of missing value, and a non-number late in 'price'."""
    rng = np.random.default_rng(seed)
    city_ids = rng.zipf(1.6, n) % 60
    city = np.array([f" city{c} " if c % 7 == 0 else f"city{c}" for c in city_ids], dtype=object)
    city[rng.random(n) < 0.03] = "?"
    price = np.round(rng.lognormal(2.0, 1.0, n) * rng.choice([-1.0, 1.0], n, p=[0.1, 0.9]), 3).astype(object)
    price[rng.random(n) < 0.02] = ""
    price[n - 50] = "abc"  # not a number: the CSV reader restarts in text mode after many chunks
    price[n - 40] = " 7.5"
    price[n - 30] = "n/a"
    return pd.DataFrame(
        {
            "rowid": np.arange(n),
            "city": city,
            "device": rng.choice(["ios", "android", " web", ""], n, p=[0.4, 0.4, 0.15, 0.05]),
            "price": price,
            "clicked": rng.choice(["yes", " no"], n, p=[0.3, 0.7]),
            "score": rng.random(n).round(4),
            "unused": "x",
        }
    )


def write_spec(folder: Path, frame: pd.DataFrame, data_name: str = "rows.csv", spec: str = SPEC) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if data_name.endswith(".parquet"):
        frame.to_parquet(folder / data_name, index=False)
    else:
        frame.to_csv(folder / data_name, index=False)
    path = folder / "spec.toml"
    path.write_text(spec.format(path=data_name))
    return path


@pytest.fixture(scope="module")
def ali_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("aliexpress")
    write_aliexpress_csv(folder / "train.csv.gz", ALI_TRAIN_ROWS, seed=1)
    write_aliexpress_csv(folder / "test.csv", ALI_TEST_ROWS, seed=2)
    return folder


@pytest.fixture(scope="module")
def ali_prepared(ali_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("ali-prepared") / "prepared"
    prepare_dataset(stream_source("aliexpress", data_dir=ali_dir), out, shard_rows=4_000, row_group_rows=1_000, progress=False)
    return PreparedDataset(out)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spec(tmp_path_factory.mktemp("spec"), spec_frame())


@pytest.fixture(scope="module")
def spec_prepared(spec_path: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("spec-prepared") / "prepared"
    prepare_dataset(
        stream_source(spec_path=spec_path), out, shard_rows=1_000, row_group_rows=250, chunk_rows=500, progress=False
    )
    return PreparedDataset(out)


def in_memory_aliexpress(folder: Path, *, seed: int = 0):
    """build_splits on the same rows the streamed preparation assigns to each split."""
    train = ali.read_aliexpress_csv(next(folder.glob("*train*")))
    test = ali.read_aliexpress_csv(next(folder.glob("*test*")))
    codes = assign_splits("train", seed=seed, start=0, n=len(train), validation=ali.VALIDATION_FRACTION, test=None)
    frame = pd.concat([train, test], ignore_index=True)
    index = SplitIndex(
        train=np.flatnonzero(codes == TRAIN),
        validation=np.flatnonzero(codes == VALIDATION),
        test=np.arange(len(train), len(frame)),
    )
    return build_splits(
        frame, ali.aliexpress_labels(frame, source="test"), index, dataset=ali.DATASET, categorical=ali.CATEGORICAL,
        numerical=ali.NUMERICAL, tasks=ali.TASKS, label_sources=ali.LABEL_SOURCES,
    )


def in_memory_spec(spec_path: Path, *, log1p: tuple[str, ...] = ()):
    spec = read_user_spec(spec_path)
    frame = read_user_rows(spec)
    codes = assign_splits("all", seed=0, start=0, n=len(frame), validation=0.2, test=0.2)
    index = SplitIndex(
        train=np.flatnonzero(codes == TRAIN), validation=np.flatnonzero(codes == VALIDATION), test=np.flatnonzero(codes == TEST)
    )
    return build_splits(
        frame, user_labels(spec, frame), index, dataset=spec.name, categorical=spec.categorical,
        numerical=spec.numerical, tasks=[t.name for t in spec.tasks],
        label_sources={t.name: t.label_source() for t in spec.tasks}, log1p=log1p,
    )


def assert_same_spec(streamed: FeatureSpec, in_memory: FeatureSpec) -> None:
    a, b = streamed.to_json(), in_memory.to_json()
    for key in ("schema_version", "dataset", "categorical", "tasks", "label_sources"):
        assert a[key] == b[key], key
    assert [(n["name"], n["missing"], n.get("log1p")) for n in a["numerical"]] == [
        (n["name"], n["missing"], n.get("log1p")) for n in b["numerical"]
    ]
    for key in ("mean", "std"):
        np.testing.assert_allclose([n[key] for n in a["numerical"]], [n[key] for n in b["numerical"]], rtol=STATS_RTOL)


def rowids(prepared: PreparedDataset, num: np.ndarray) -> np.ndarray:
    """The 'rowid' numerical feature of encoded rows, unscaled."""
    scaler = prepared.spec.numerical[0]
    assert scaler.name == "rowid"
    return np.rint(num[:, 0].astype(np.float64) * scaler.std + scaler.mean).astype(np.int64)


# --- spec parity ----------------------------------------------------------------------------


def test_aliexpress_spec_and_rows_equal_the_in_memory_loader(ali_dir: Path, ali_prepared: PreparedDataset) -> None:
    splits = in_memory_aliexpress(ali_dir)
    assert_same_spec(ali_prepared.spec, splits.spec)
    assert ali_prepared.rows("test") == ALI_TEST_ROWS
    assert ali_prepared.rows("train") + ali_prepared.rows("validation") == ALI_TRAIN_ROWS
    for split in ("train", "validation", "test"):
        streamed, in_memory = ali_prepared.load_split(split), splits.get(split)
        np.testing.assert_array_equal(streamed.categorical, in_memory.categorical)
        np.testing.assert_allclose(streamed.numerical, in_memory.numerical, atol=SCALED_ATOL)
        np.testing.assert_array_equal(streamed.labels, in_memory.labels)


@pytest.mark.parametrize("log1p", [(), ("price",)], ids=["plain", "log1p"])
def test_spec_file_spec_and_rows_equal_the_in_memory_loader(
    spec_path: Path, tmp_path: Path, log1p: tuple[str, ...]
) -> None:
    # chunk_rows=500: 12 chunks, and the non-number in 'price' near the end forces the text-mode restart
    prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", chunk_rows=500, log1p=log1p, progress=False)
    prepared, splits = PreparedDataset(tmp_path / "p"), in_memory_spec(spec_path, log1p=log1p)
    assert_same_spec(prepared.spec, splits.spec)
    assert prepared.spec.numerical[1].log1p == bool(log1p)
    for split in ("train", "validation", "test"):
        streamed, in_memory = prepared.load_split(split), splits.get(split)
        np.testing.assert_array_equal(streamed.categorical, in_memory.categorical)
        np.testing.assert_allclose(streamed.numerical, in_memory.numerical, atol=SCALED_ATOL)
        np.testing.assert_array_equal(streamed.labels, in_memory.labels)
    assert "city0" in prepared.spec.categorical[0].vocabulary and "?" not in prepared.spec.categorical[0].vocabulary


@pytest.mark.parametrize("train_name", ["train.csv", "train.csv.gz", "train.parquet"])
def test_csv_gzip_and_parquet_inputs_prepare_identically(tmp_path: Path, train_name: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    writer = write_aliexpress_parquet if train_name.endswith(".parquet") else write_aliexpress_csv
    writer(folder / train_name, 3_000, seed=3)
    write_aliexpress_csv(folder / "test.csv", 500, seed=4)
    prepare_dataset(stream_source("aliexpress", data_dir=folder), tmp_path / "p", chunk_rows=700, progress=False)
    prepared = PreparedDataset(tmp_path / "p")
    assert_same_spec(prepared.spec, in_memory_aliexpress_any(folder))


def in_memory_aliexpress_any(folder: Path) -> FeatureSpec:
    """The in-memory loader reads CSV only: give it the Parquet rows as a CSV."""
    for parquet in folder.glob("*train*.parquet"):
        frame = pd.read_parquet(parquet)
        parquet.unlink()
        frame.to_csv(folder / "train.csv", index=False)
    return in_memory_aliexpress(folder).spec


def test_numerical_statistics_match_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.lognormal(3.0, 2.0, (10_007, 4)) + np.array([0.0, 1e6, -5.0, 0.0])
    values[rng.random(values.shape) < 0.05] = np.nan
    values[:, 3] = 2.5  # constant column
    moments = RunningMoments(4)
    for start in range(0, len(values), 999):  # uneven chunks
        moments.add(values[start : start + 999])
    for j in range(4):
        column = values[:, j][np.isfinite(values[:, j])]
        np.testing.assert_allclose(moments.mean[j], column.mean(), rtol=1e-12)
        np.testing.assert_allclose(moments.std()[j], column.std(), rtol=1e-9, atol=1e-12)
        assert moments.count[j] == len(column)


# --- vocabularies -----------------------------------------------------------------------------


def test_vocabulary_cap_keeps_the_most_frequent_values_ties_by_text() -> None:
    counter = VocabularyCounter("f")
    tokens = ("b", "a", "c", "d", None, "e")
    # counts: a 5, b 5, c 3, d 3, e 1; None and code -1 are missing
    codes = np.array([1] * 5 + [0] * 5 + [2] * 3 + [3] * 3 + [4] * 2 + [5] + [-1] * 2)
    counter.add(TokenColumn(codes, tokens))
    assert counter.top(None) == ["a", "b", "c", "d", "e"]
    assert counter.vocabulary(3) == ("a", "b", "c")  # c beats d on the tie: text order
    assert counter.vocabulary(None) == ("a", "b", "c", "d", "e")
    assert counter.missing_rows == 4 and counter.rows == len(codes)
    assert counter.oov_rows(counter.vocabulary(3)) == 3 + 1 + 4


def test_counter_pruning_keeps_heavy_values_and_reports_inexact() -> None:
    counter = VocabularyCounter("f", capacity=4)
    for chunk in range(10):
        tokens = ("heavy", "also", f"rare{chunk}a", f"rare{chunk}b", f"rare{chunk}c")
        counter.add(TokenColumn(np.array([0] * 50 + [1] * 20 + [2, 3, 4]), tokens))
    assert counter.vocabulary(2) == ("also", "heavy")
    assert counter.counts["heavy"] == 500 and not counter.exact and counter.distinct <= 4


def test_max_vocab_sends_rare_values_to_oov(spec_path: Path, tmp_path: Path) -> None:
    full, _ = fit_streaming_spec(stream_source(spec_path=spec_path))
    info = prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", max_vocab=5, progress=False)
    prepared = PreparedDataset(tmp_path / "p")
    city = prepared.spec.categorical[0]
    assert len(city.vocabulary) == 5 < len(full.categorical[0].vocabulary)
    assert prepared.spec.categorical[1].vocabulary == full.categorical[1].vocabulary  # under the cap: unchanged
    # the kept values are the 5 most frequent training values of 'city'
    splits = in_memory_spec(spec_path)
    train_ids = splits.train.categorical[:, 0]
    full_city = splits.spec.categorical[0]
    counts = {v: int((train_ids == i + 1).sum()) for i, v in enumerate(full_city.vocabulary)}
    expected = sorted(sorted(counts, key=lambda v: (-counts[v], v))[:5])
    assert city.vocabulary == tuple(expected)
    streamed = prepared.load_split("train").categorical[:, 0]
    kept = np.isin(train_ids, [full_city.vocabulary.index(v) + 1 for v in expected])
    assert (streamed[~kept] == 0).all() and (streamed[kept] > 0).all()
    report = info.summary()["vocabulary"]["city"]
    assert report["kept"] == 5 and report["oov_rows"] == int((~kept).sum()) and report["exact"]


def test_aliexpress_tokens_are_canonical_ids() -> None:
    assert [aliexpress_token(v) for v in ("3", "03", "3.0", " 3 ", 3, 3.0, "2.50", "", "?", "x")] == [
        "3", "3", "3", "3", "3", "3", "2.5", None, None, "x",
    ]


# --- shards and manifest ----------------------------------------------------------------------


def test_shards_cover_every_row_exactly_once(spec_prepared: PreparedDataset) -> None:
    codes = assign_splits("all", seed=0, start=0, n=SPEC_ROWS, validation=0.2, test=0.2)
    seen = []
    for code, split in enumerate(("train", "validation", "test")):
        ids = rowids(spec_prepared, spec_prepared.load_split(split).numerical)
        np.testing.assert_array_equal(ids, np.flatnonzero(codes == code))  # file order within a split
        assert spec_prepared.rows(split) == len(ids) == sum(s.rows for s in spec_prepared.shards(split))
        assert all(s.rows <= 1_000 and max(s.row_groups) <= 250 for s in spec_prepared.shards(split))
        seen.append(ids)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(SPEC_ROWS))


def test_manifest_is_complete_and_has_no_absolute_path(spec_prepared: PreparedDataset) -> None:
    manifest = json.loads((spec_prepared.path / MANIFEST).read_text())
    assert (manifest["format"], manifest["format_version"]) == ("mome-edge-prepared", 1)
    assert FeatureSpec.from_json(manifest["feature_spec"]) == spec_prepared.spec
    assert manifest["columns"] == {"categorical": ["c0", "c1"], "numerical": ["n0", "n1"], "labels": ["y0", "y1"]}
    assert manifest["source"]["files"][0]["name"] == "rows.csv" and manifest["source"]["spec_file"] == "spec.toml"
    assert str(spec_prepared.path.parent) not in json.dumps(manifest)
    assert set(manifest["positive_rates"]) == {"train", "validation", "test"}
    assert not list(spec_prepared.path.rglob("*.tmp"))


def test_preparation_is_deterministic(spec_path: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        prepare_dataset(stream_source(spec_path=spec_path), tmp_path / name, shard_rows=2_000, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 1 + 2 + 1 + 1  # manifest, 2 train shards (~3600 rows), 1 validation, 1 test
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_existing_preparation_is_kept_unless_overwrite(spec_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    prepare_dataset(stream_source(spec_path=spec_path), out, shard_rows=1_000, progress=False)
    assert len(list((out / "train").glob("part-*.parquet"))) == 4
    with pytest.raises(ConfigError, match="already holds a prepared data set"):
        prepare_dataset(stream_source(spec_path=spec_path), out, progress=False)
    prepare_dataset(stream_source(spec_path=spec_path), out, overwrite=True, progress=False)
    assert [p.name for p in (out / "train").glob("part-*.parquet")] == ["part-00000.parquet"]  # old shards gone
    assert PreparedDataset(out).shards("train")[0].rows == PreparedDataset(out).rows("train")


def test_failed_preparation_leaves_no_manifest_and_no_shards(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    write_aliexpress_csv(folder / "train.csv", 3_000, seed=3)
    test = pd.read_csv(write_aliexpress_csv(folder / "test.csv", 500, seed=4))
    test.loc[400, "click"] = 2
    test.to_csv(folder / "test.csv", index=False)
    with pytest.raises(DataError, match=r"'click' of test.csv must hold only 0 and 1 \(data row 400"):
        prepare_dataset(stream_source("aliexpress", data_dir=folder), tmp_path / "p", shard_rows=500, progress=False)
    assert not (tmp_path / "p" / MANIFEST).exists()
    assert not [p for p in (tmp_path / "p").rglob("*") if p.is_file()]
    with pytest.raises(DataError, match="holds no prepared.json"):
        PreparedDataset(tmp_path / "p")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shard_rows": 0}, ConfigError, "shard_rows=0 must be a positive integer"),
        ({"max_vocab": -1}, ConfigError, "max_vocab=-1 must be a positive integer"),
        ({"seed": -2}, ConfigError, "seed=-2 must be a non-negative integer"),
        ({"validation_fraction": 0.3}, ConfigError, "validation_fraction applies to the AliExpress layout only"),
        ({"log1p": ["city"]}, ConfigError, r"log1p columns \['city'\] are not numerical"),
    ],
    ids=["shard-rows", "max-vocab", "seed", "fraction-on-spec", "log1p-categorical"],
)
def test_bad_arguments(spec_path: Path, tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", progress=False, **kwargs)


def test_data_errors_name_the_problem(tmp_path: Path) -> None:
    frame = spec_frame(200)
    frame.loc[150, "clicked"] = ""
    spec_path = write_spec(tmp_path / "missing-label", frame)
    with pytest.raises(DataError, match=r"task 'click': a missing or non-numeric value in label column 'clicked' at data row 150"):
        prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", progress=False)
    spec_path = write_spec(tmp_path / "no-column", spec_frame(50).drop(columns=["price"]))
    with pytest.raises(DataError, match=r"lacks the columns \['price'\] named in the spec"):
        prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", progress=False)
    frame = spec_frame(200)
    frame["clicked"] = "no"
    spec_path = write_spec(tmp_path / "no-positive", frame)
    with pytest.raises(DataError, match="task 'click' has no positive row among the"):
        prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", progress=False)
    with pytest.raises(ConfigError, match="cannot be prepared for streaming"):
        stream_source("census-income")


def test_a_spec_seed_wins_and_parquet_specs_work(tmp_path: Path) -> None:
    frame = spec_frame(1_000)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")  # parquet columns are typed
    spec_path = write_spec(tmp_path / "d", frame, "rows.parquet", SPEC + "seed = 7\n")
    info = prepare_dataset(stream_source(spec_path=spec_path), tmp_path / "p", seed=3, progress=False)
    prepared = PreparedDataset(tmp_path / "p")
    codes = assign_splits("all", seed=7, start=0, n=1_000, validation=0.2, test=0.2)
    np.testing.assert_array_equal(rowids(prepared, prepared.load_split("test").numerical), np.flatnonzero(codes == TEST))
    assert info.summary()["rows"]["test"] == int((codes == TEST).sum())


# --- reading batches ------------------------------------------------------------------------


def epoch_ids(prepared: PreparedDataset, **kwargs) -> list[np.ndarray]:
    return [rowids(prepared, num) for _, num, _ in prepared.iter_batches("train", 128, **kwargs)]


def test_iter_batches_is_deterministic_and_reshuffles_per_epoch(spec_prepared: PreparedDataset) -> None:
    args = {"shuffle": True, "seed": 0, "shuffle_buffer": 600}
    first, again = epoch_ids(spec_prepared, epoch=0, **args), epoch_ids(spec_prepared, epoch=0, **args)
    second = epoch_ids(spec_prepared, epoch=1, **args)
    assert all((a == b).all() for a, b in zip(first, again)) and len(first) == len(again)
    everything = np.sort(rowids(spec_prepared, spec_prepared.load_split("train").numerical))
    for epoch in (first, second):
        np.testing.assert_array_equal(np.sort(np.concatenate(epoch)), everything)  # one rank: every row once
        assert [len(b) for b in epoch[:-1]] == [128] * (len(epoch) - 1)
    assert not (np.concatenate(first) == np.concatenate(second)).all()
    other_seed = epoch_ids(spec_prepared, epoch=0, shuffle=True, seed=1, shuffle_buffer=600)
    assert not (np.concatenate(first) == np.concatenate(other_seed)).all()


def test_iter_batches_without_shuffle_is_file_order(spec_prepared: PreparedDataset) -> None:
    ordered = np.concatenate(epoch_ids(spec_prepared, shuffle=False, seed=0, epoch=0))
    np.testing.assert_array_equal(ordered, rowids(spec_prepared, spec_prepared.load_split("train").numerical))


def test_batches_are_well_formed(spec_prepared: PreparedDataset) -> None:
    cat, num, labels = next(spec_prepared.iter_batches("train", 64, shuffle=True, seed=0, epoch=0))
    assert (cat.dtype, num.dtype, labels.dtype) == (np.int64, np.float32, np.float32)
    assert (cat.shape, num.shape, labels.shape) == ((64, 2), (64, 2), (64, 2))
    assert set(np.unique(labels)) <= {0.0, 1.0}


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "ordered"])
def test_ranks_read_disjoint_rows_in_equal_batch_counts(
    spec_prepared: PreparedDataset, world_size: int, shuffle: bool
) -> None:
    per_rank = []
    for rank in range(world_size):
        batches = epoch_ids(spec_prepared, shuffle=shuffle, seed=5, epoch=2, rank=rank, world_size=world_size)
        assert len(batches) == spec_prepared.num_batches("train", 128, shuffle=shuffle, seed=5, epoch=2, world_size=world_size)
        per_rank.append(np.concatenate(batches))
    rows = spec_prepared.rows_per_rank("train", shuffle=shuffle, seed=5, epoch=2, world_size=world_size)
    assert [len(ids) for ids in per_rank] == [rows] * world_size
    union = np.concatenate(per_rank)
    assert len(np.unique(union)) == len(union)  # disjoint
    dropped = spec_prepared.rows("train") - len(union)
    assert 0 <= dropped < world_size * 250  # fewer than world_size row groups
    assert set(union) <= set(rowids(spec_prepared, spec_prepared.load_split("train").numerical))


def test_drop_last_gives_only_full_batches(spec_prepared: PreparedDataset) -> None:
    sizes = [len(y) for *_, y in spec_prepared.iter_batches("train", 100, shuffle=True, seed=0, epoch=0, drop_last=True)]
    assert sizes == [100] * (spec_prepared.rows("train") // 100)


def test_iter_split_ranks_cover_the_split(spec_prepared: PreparedDataset) -> None:
    whole = spec_prepared.load_split("validation")
    ids = [rowids(spec_prepared, num) for _, num, _ in spec_prepared.iter_split("validation", 100)]
    np.testing.assert_array_equal(np.concatenate(ids), rowids(spec_prepared, whole.numerical))
    parts = [
        np.concatenate([rowids(spec_prepared, num) for _, num, _ in spec_prepared.iter_split("validation", 100, rank=r, world_size=2)])
        for r in range(2)
    ]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.sort(rowids(spec_prepared, whole.numerical)))


def test_reader_argument_errors(spec_prepared: PreparedDataset) -> None:
    with pytest.raises(ConfigError, match=r"rank=2 must be an integer in \[0, world_size=2\)"):
        next(spec_prepared.iter_batches("train", 8, shuffle=True, seed=0, epoch=0, rank=2, world_size=2))
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        spec_prepared.rows("dev")
    with pytest.raises(DataError, match="fewer than world_size 100"):
        spec_prepared.num_batches("test", 8, world_size=100)


# --- memory ------------------------------------------------------------------------------------


def test_prepare_memory_does_not_grow_with_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bounded terms: pyarrow's CSV read-ahead (32 blocks; small blocks here keep it small),
    # a few chunks, one row group per split writer, the vocabularies. With row groups of
    # 2048 rows every writer reaches its steady state within 50k rows.
    monkeypatch.setattr(source_module, "_MAX_BLOCK_BYTES", 64 << 10)
    peaks = {}
    for n_rows in (50_000, 200_000):
        folder = tmp_path / f"rows{n_rows}"
        folder.mkdir()
        write_aliexpress_csv(folder / "train.csv", n_rows, seed=1)
        write_aliexpress_csv(folder / "test.csv", 1_000, seed=2)
        source = stream_source("aliexpress", data_dir=folder)
        tracemalloc.start()
        try:
            prepare_dataset(source, folder / "p", chunk_rows=4_096, shard_rows=16_384, row_group_rows=2_048, progress=False)
            peaks[n_rows] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # 4 x the rows, no higher peak (the 200k rows encoded in memory alone take 78 MB)
    assert peaks[200_000] < 1.1 * peaks[50_000] + (1 << 20), peaks
    assert peaks[200_000] < 32 << 20, peaks
