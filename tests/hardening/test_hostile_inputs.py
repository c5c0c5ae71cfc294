"""Hostile inputs at run time, on every path that predicts: the numpy reference
(`reference_forward`), the device runtime's numpy engine and ONNX Runtime (`Predictor` with a
.mome and an .onnx file), `mome_edge.runtime.predict` and the `predict` command.

The input policy under test (documented in mome_edge/runtime/predict.py and mome_edge/runtime/inputs.py):
- wrong dtype, rank, field count or row count: one DataError naming it and the fix;
- any categorical id outside a field's vocabulary (negative, too large, int64 extremes) reads
  the OOV row 0, exactly like the trained torch model: same probabilities;
- NaN / +-inf numerical values follow the field's recorded missing-value policy ("mean":
  as if missing; "error": DataError); values that overflow float32 inside the network are a
  DataError, never NaN; outputs are always finite and in [0, 1];
- an empty batch gives an empty output on the batch paths (reference, files, CLI) and a
  DataError from the online `Predictor.predict`;
- raw rows are streamed: 10^6 rows through `mome-edge predict` in bounded memory.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mutants import crafted_model, hostile_ids
from mome_edge.artifact.reader import read_artifact
from mome_edge.artifact.writer import write_artifact
from mome_edge.artifact.compiled import reference_forward
from mome_edge.errors import DataError
from mome_edge.runtime import Predictor

HOSTILE_ROWS = 100_000
TORCH_ATOL = 1e-5  # reference vs the trained torch model, fp32 artifact (mome_edge.compile.compiler.FP32_PARITY_TOLERANCE)
RUNTIME_ATOL = 1e-5  # numpy engine / ONNX Runtime vs the reference, fp32
STREAM_ROWS = (100_000, 1_000_000)
STREAM_RSS_GROWTH_MB = 64  # peak RSS of 10^6 rows minus that of 10^5 rows, `mome-edge predict --input`
INT64 = np.iinfo(np.int64)


@pytest.fixture(scope="module")
def engines(tiny_artifact, tmp_path_factory) -> dict[str, dict]:
    """kind -> the artifact's model and a predict function per path (reference, numpy, onnx)."""
    from mome_edge.exporters.onnx_export import export_artifact

    folder = tmp_path_factory.mktemp("hostile-inputs")
    out = {}
    for kind in ("mome", "mmoe"):
        path = tiny_artifact(kind, "fp32")
        onnx = folder / f"{kind}.onnx"
        export_artifact(path, onnx, simplify=False, validate=False)
        model = read_artifact(path).model
        numpy_predictor, onnx_predictor = Predictor(path), Predictor(onnx)
        out[kind] = {
            "model": model,
            "path": path,
            "onnx": onnx,
            "paths": {
                "reference": lambda c, n, m=model: reference_forward(m, c, n),
                "numpy": numpy_predictor.predict_array,
                "onnx": onnx_predictor.predict_array,
            },
        }
    return out


def _batch(model, rows: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = np.asarray(model.spec.vocab_sizes)
    cat = (rng.random((rows, len(sizes))) * sizes).astype(np.int64)
    num = rng.standard_normal((rows, len(model.spec.numerical))).astype(np.float32)
    return cat, num


# --- wrong dtypes, ranks and field counts --------------------------------------------------------
BAD_INPUTS = {
    "float-ids": (lambda c, n: (c.astype(np.float64), n), "categorical ids must be integers"),
    "string-ids": (lambda c, n: (c.astype(str), n), "categorical ids must be integers"),
    "object-ids": (lambda c, n: (c.astype(object), n), "categorical ids must be integers"),
    "bool-ids": (lambda c, n: (c > 0, n), "categorical ids must be integers"),
    "1-d-ids": (lambda c, n: (c[:, 0], n), "must be a 2-D array"),
    "3-d-ids": (lambda c, n: (c[None], n), "must be a 2-D array"),
    "scalar-ids": (lambda c, n: (np.int64(3), n), "must be a 2-D array"),
    "one-field-short": (lambda c, n: (c[:, :-1], n), "columns but the model reads"),
    "one-field-extra": (lambda c, n: (np.concatenate([c, c[:, :1]], axis=1), n), "columns but the model reads"),
    "no-ids": (lambda c, n: (None, n), "categorical is missing"),
    "ragged-ids": (lambda c, n: ([[1, 2], [3]], n), "categorical"),
    "string-numbers": (lambda c, n: (c, n.astype(str)), "numerical values must be floats"),
    "complex-numbers": (lambda c, n: (c, n.astype(np.complex64)), "numerical values must be floats"),
    "1-d-numbers": (lambda c, n: (c, n[:, 0]), "must be a 2-D array"),
    "numbers-short": (lambda c, n: (c, n[:, :-1]), "columns but the model reads"),
    "rows-differ": (lambda c, n: (c, n[:-1]), "rows but numerical has"),
}


@pytest.mark.parametrize("path", ["reference", "numpy", "onnx"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_wrong_inputs_are_one_clear_data_error(case: str, path: str, engines) -> None:
    entry = engines["mome"]
    make, message = BAD_INPUTS[case]
    cat, num = make(*_batch(entry["model"]))
    with pytest.raises(DataError, match=message):
        entry["paths"][path](cat, num)


# --- category ids: 10^5 random ids with the extremes, against the trained torch model ------------
@pytest.mark.parametrize("kind", ["mome", "mmoe"])
def test_random_and_extreme_ids_match_the_trained_torch_model(kind: str, engines, tiny_run) -> None:
    from mome_edge.train.loop import load_trained_model, predict_arrays

    entry = engines[kind]
    model = entry["model"]
    rng = np.random.default_rng(7)
    sizes = np.asarray(model.spec.vocab_sizes)
    cat = hostile_ids(model.spec.vocab_sizes, HOSTILE_ROWS, seed=7)
    anywhere = rng.integers(INT64.min, INT64.max, size=cat.shape, dtype=np.int64, endpoint=True)  # the whole int64 range
    near = rng.integers(-3, sizes + 3, size=cat.shape)  # around both ends of every table
    pick = rng.integers(0, 3, size=cat.shape)
    cat = np.where(pick == 0, cat, np.where(pick == 1, anywhere, near)).astype(np.int64)
    cat[:4] = np.array([INT64.min, INT64.max, -1, 2**31])[:, None]
    num = rng.standard_normal((HOSTILE_ROWS, len(model.spec.numerical))).astype(np.float32)
    assert (cat < 0).any() and (cat >= sizes).any()

    torch_model, _, _ = load_trained_model(tiny_run(kind))
    expected = predict_arrays(torch_model, cat, num)
    for name, predict in entry["paths"].items():
        probs = predict(cat, num)  # zero exceptions
        assert probs.shape == (HOSTILE_ROWS, len(model.tasks)) and probs.dtype == np.float32
        assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all(), name
        np.testing.assert_allclose(probs, expected, rtol=0, atol=TORCH_ATOL + (RUNTIME_ATOL if name != "reference" else 0), err_msg=name)


def test_unsigned_and_narrow_integer_ids_read_like_int64(engines) -> None:
    entry = engines["mome"]
    cat, num = _batch(entry["model"], rows=6)
    cat[0] = 0
    wide = cat.astype(np.uint64)
    wide[1] = np.iinfo(np.uint64).max  # beyond int64: out of every vocabulary, so OOV
    oov = cat.copy()
    oov[1] = 0
    for predict in entry["paths"].values():
        np.testing.assert_array_equal(predict(wide, num), predict(oov, num))
        np.testing.assert_allclose(predict(cat.astype(np.int16), num), predict(cat, num), rtol=0, atol=0)


# --- NaN and +-inf: the recorded missing-value policy ---------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_numericals_follow_the_mean_policy_on_every_path(value: float, engines) -> None:
    entry = engines["mome"]
    cat, num = _batch(entry["model"])
    assert {s.missing for s in entry["model"].spec.numerical} == {"mean"}
    hostile, as_mean = num.copy(), num.copy()
    hostile[::2, 0] = value
    as_mean[::2, 0] = 0.0  # the training mean after standardising
    before = hostile.copy()
    for name, predict in entry["paths"].items():
        np.testing.assert_allclose(predict(cat, hostile), predict(cat, as_mean), rtol=0, atol=RUNTIME_ATOL, err_msg=name)
    np.testing.assert_array_equal(hostile, before)  # the caller's array is never written


@pytest.fixture(scope="module")
def error_policy_artifact(tmp_path_factory) -> Path:
    model = crafted_model()
    spec = model.spec.replace(numerical=tuple(s.replace(missing="error") for s in model.spec.numerical))
    path = tmp_path_factory.mktemp("error-policy") / "strict.mome"
    write_artifact(path, dataclasses.replace(model, spec=spec))
    return path


def test_non_finite_numericals_with_the_error_policy_are_refused(error_policy_artifact: Path, tmp_path: Path) -> None:
    model = read_artifact(error_policy_artifact).model
    cat, num = _batch(model)
    num[3, 1] = np.nan
    for predict in (lambda c, n: reference_forward(model, c, n), Predictor(error_policy_artifact).predict_array):
        with pytest.raises(DataError, match="numerical field 'spend' has a NaN or infinite value at row 3"):
            predict(cat, num)
    from mome_edge.runtime.predict import predict_artifact

    rows = tmp_path / "rows.csv"
    rows.write_text("color,city,age,spend\n" + "red,a,41,2\n" * 3 + "red,a,1e300,2\n", encoding="utf-8")  # finite, but inf once scaled
    with pytest.raises(DataError, match="'age' at row 3 holds '1e300', too large for the model's float32 inputs"):
        predict_artifact(error_policy_artifact, input_csv=rows)


def test_raw_nan_inf_and_overflowing_values_read_as_missing_with_the_mean_policy(tmp_path: Path) -> None:
    from mome_edge.runtime.predict import predict_artifact

    path = tmp_path / "crafted.mome"
    write_artifact(path, crafted_model())
    cells = ["", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e999", "1e300", "-1e300"]
    rows = tmp_path / "rows.csv"
    rows.write_text("color,city,age,spend\n" + "".join(f"blue,c,{cell},3\n" for cell in cells), encoding="utf-8")
    probs = predict_artifact(path, input_csv=rows).probs
    assert np.isfinite(probs).all()
    np.testing.assert_array_equal(probs, np.repeat(probs[:1], len(cells), axis=0))  # every one as missing


def test_values_that_overflow_inside_the_network_are_an_error_never_nan(engines) -> None:
    entry = engines["mome"]
    cat, num = _batch(entry["model"])
    num[2] = 3e38  # finite float32, but the first layer overflows
    for name, predict in entry["paths"].items():
        with pytest.raises(DataError, match="the model's outputs are not finite for 1 of 8 rows \\(first: row 2\\)"):
            predict(cat, num)


# --- empty batches ---------------------------------------------------------------------------------
def test_an_empty_batch_is_an_empty_output_on_batch_paths_and_an_error_online(engines, tmp_path: Path) -> None:
    from mome_edge.runtime.predict import predict_artifact, predict_to_csv, reference_predict

    entry = engines["mome"]
    model = entry["model"]
    cat, num = np.zeros((0, len(model.spec.categorical)), np.int64), np.zeros((0, len(model.spec.numerical)), np.float32)
    assert reference_forward(model, cat, num).shape == (0, len(model.tasks))
    assert reference_predict(model, cat, num).shape == (0, len(model.tasks))
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join([*model.spec.field_names, *model.spec.numerical_names]) + "\n", encoding="utf-8")
    assert predict_artifact(entry["path"], input_csv=rows).probs.shape == (0, len(model.tasks))
    for source in (entry["path"], entry["onnx"]):
        out = tmp_path / f"{Path(source).suffix[1:]}.csv"
        if Path(source).suffix == ".mome":
            assert predict_to_csv(source, out, input_csv=rows).rows == 0
        else:
            from mome_edge.runtime.deployed import predict_deployed_to_csv

            assert predict_deployed_to_csv(source, out, input_csv=rows).rows == 0
        assert out.read_text(encoding="utf-8") == ",".join(model.tasks) + "\n"
    for name in ("numpy", "onnx"):
        with pytest.raises(DataError, match="empty batch \\(0 rows\\); pass at least one row"):
            entry["paths"][name](cat, num)
    with pytest.raises(DataError, match="categorical ids must be integers"):
        reference_forward(model, cat.astype(np.float32), num)  # an empty batch is still checked


# --- 10^6 rows, streamed -----------------------------------------------------------------------------
_LAUNCH = (
    "import resource, sys\n"
    "from mome_edge.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "finally:\n"
    "    sys.stderr.write(f'MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')\n"
)


def _write_rows(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    colors = np.array(["red", "blue", "green", ""])[rng.integers(0, 4, rows)]
    cities = np.array(list("abcdefgxyz"))[rng.integers(0, 10, rows)]
    ages = np.round(rng.normal(40, 12, rows), 1)
    spend = np.round(rng.lognormal(1, 1, rows), 2)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("color,city,age,spend\n")
        block = 100_000
        for i in range(0, rows, block):
            handle.write("".join(f"{c},{t},{a},{s}\n" for c, t, a, s in zip(colors[i : i + block], cities[i : i + block], ages[i : i + block], spend[i : i + block])))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mome", ".onnx"])
def test_a_million_rows_stream_through_predict_in_bounded_memory(suffix: str, tmp_path: Path) -> None:
    from mome_edge.exporters.onnx_export import export_artifact
    from mome_edge.runtime.predict import predict_artifact

    model_path = tmp_path / "crafted.mome"
    write_artifact(model_path, crafted_model())
    if suffix == ".onnx":
        export_artifact(model_path, tmp_path / "crafted.onnx", simplify=False, validate=False)
        model_path = tmp_path / "crafted.onnx"
    peaks = {}
    for rows in STREAM_ROWS:
        data, out = tmp_path / f"rows-{rows}.csv", tmp_path / f"preds-{rows}.csv"
        _write_rows(data, rows)
        done = subprocess.run([sys.executable, "-c", _LAUNCH, "predict", str(model_path), "--input", str(data), "-o", str(out)],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        peaks[rows] = int(done.stderr.split("MAXRSS_KB ")[1].split()[0]) / 1024
        with out.open(encoding="utf-8") as handle:
            assert sum(1 for _ in handle) == rows + 1
    growth = peaks[STREAM_ROWS[1]] - peaks[STREAM_ROWS[0]]
    assert growth < STREAM_RSS_GROWTH_MB, peaks
    # and the streamed output is the same as predicting the first rows in memory
    head = tmp_path / "head.csv"
    with (tmp_path / f"rows-{STREAM_ROWS[1]}.csv").open(encoding="utf-8") as handle:
        head.write_text("".join(next(handle) for _ in range(1_001)), encoding="utf-8")
    expected = predict_artifact(tmp_path / "crafted.mome", input_csv=head).probs
    streamed = np.loadtxt(tmp_path / f"preds-{STREAM_ROWS[1]}.csv", delimiter=",", skiprows=1, max_rows=1_000, ndmin=2)
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-6 + RUNTIME_ATOL)
