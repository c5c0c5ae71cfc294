"""The device runtime: numpy and ONNX engines (speed and memory files) agree with the reference,
materialize equals on-demand, the memory budget is honoured or refused on every path (numpy
on-demand: a fixed resident subset, counted rebuilds per call), predict is thread-safe, inputs
are checked, raw rows encode, golden rows reproduce, and the runtime never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from mome_edge.artifact.writer import write_artifact
from mome_edge.artifact.compiled import reference_forward
from mome_edge.errors import ArtifactError, ConfigError, DataError
from mome_edge.exporters.onnx_export import export_onnx, save_onnx
from mome_edge.runtime import Predictor

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import KINDS, make_compiled, make_spec, sample_inputs  # noqa: E402

RUNTIME_ATOL = 1e-5  # numpy / ONNX engines vs reference_forward, probabilities, fp32
MODES_ATOL = 1e-6  # materialize vs on-demand: same numbers, per-expert vs side-by-side matmuls
EXPERT_MODES = ("materialize", "on-demand")
MiB = 2**20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """kind -> {"model": CompiledModel, "mome": path, "onnx": speed export, "onnx-memory": memory
    export (mome only)} (fp32, bitset experts)."""
    root = tmp_path_factory.mktemp("runtime")
    out = {}
    for kind in KINDS:
        model = make_compiled(kind, seed=21)
        write_artifact(root / f"{kind}.mome", model)
        save_onnx(export_onnx(model, simplify=False, validate=False), root / f"{kind}.onnx")
        out[kind] = {"model": model, "mome": root / f"{kind}.mome", "onnx": root / f"{kind}.onnx"}
        if kind == "mome":
            save_onnx(export_onnx(model, mode="memory", simplify=False, validate=False), root / "mome-memory.onnx")
            out[kind]["onnx-memory"] = root / "mome-memory.onnx"
    return out


# --- parity --------------------------------------------------------------------------------------

# (file, experts): numpy in both expert modes; ONNX files in the mode they were exported with
PATHS = [("mome", "materialize"), ("mome", "on-demand"), ("onnx", None), ("onnx-memory", None)]


@pytest.mark.parametrize(("fmt", "experts"), PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_predict_matches_reference(files, kind: str, fmt: str, experts: str | None) -> None:
    entry = files[kind]
    if fmt not in entry:
        pytest.skip("memory-mode exports need masked layers")
    budget = 0.001 if experts == "on-demand" else None  # numpy on-demand: below one expert, everything rebuilt
    predictor = Predictor(entry[fmt], experts=experts, memory_budget_mb=budget)
    assert predictor.runtime == ("numpy" if fmt == "mome" else "onnx") and predictor.tasks == entry["model"].tasks
    assert predictor.experts == experts or fmt != "mome"
    assert predictor.experts == {"onnx": "materialize", "onnx-memory": "on-demand"}.get(fmt, predictor.experts)
    cat, num = sample_inputs(entry["model"].spec, 30, seed=22, invalid=True)
    out = predictor.predict(cat, num)
    assert list(out) == list(entry["model"].tasks)
    reference = reference_forward(entry["model"], cat, num)
    for t, task in enumerate(out):
        assert out[task].dtype == np.float32 and out[task].shape == (30,)
        np.testing.assert_allclose(out[task], reference[:, t], rtol=0, atol=RUNTIME_ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_materialize_equals_on_demand(files, kind: str) -> None:
    cat, num = sample_inputs(files[kind]["model"].spec, 64, seed=23, invalid=True)
    a = Predictor(files[kind]["mome"], experts="materialize").predict_array(cat, num)
    b = Predictor(files[kind]["mome"], experts="on-demand", memory_budget_mb=0).predict_array(cat, num)
    np.testing.assert_allclose(a, b, rtol=0, atol=MODES_ATOL)
    if "onnx-memory" in files[kind]:  # the speed and memory exports of one model
        a = Predictor(files[kind]["onnx"]).predict_array(cat, num)
        b = Predictor(files[kind]["onnx-memory"]).predict_array(cat, num)
        np.testing.assert_allclose(a, b, rtol=0, atol=MODES_ATOL)


# --- memory budget ------------------------------------------------------------------------------------


def _budget_model():
    model = make_compiled("mome", seed=24, hidden=(64, 32), experts=4)
    expert_bytes = [layer.weight.nbytes for layer in model.layers]  # one rebuilt expert = one base weight
    return model, expert_bytes, sum(b * layer.experts for b, layer in zip(expert_bytes, model.layers))


@pytest.mark.parametrize(("budget", "resident"), [
    ("zero", 0),  # nothing resident: all 8 experts rebuilt on every call
    ("below", 5),  # the 4 first-layer experts and 1 of the second (fixed), 3 rebuilt per call
    ("at", 8),  # exactly the whole set: nothing rebuilt after load
    ("above", 8),
])
def test_on_demand_keeps_a_fixed_resident_subset(budget: str, resident: int) -> None:
    """Softmax routing reads every expert in a fixed cycle: an LRU below the whole set evicted each
    expert just before its next use (every read a rebuild). The fixed subset rebuilds exactly the
    experts outside it, every call, and never more."""
    model, expert_bytes, total = _budget_model()
    masked = sum(layer.experts for layer in model.layers)  # 8
    nbytes = {"zero": 0, "below": 4 * expert_bytes[0] + expert_bytes[1] + expert_bytes[1] // 2, "at": total,
              "above": 2 * total}[budget]
    predictor = Predictor.from_compiled(model, experts="on-demand", memory_budget_mb=nbytes / MiB)
    cat, num = sample_inputs(model.spec, 8, seed=25)
    reference = reference_forward(model, cat, num)
    for calls in (1, 2, 3):
        np.testing.assert_allclose(predictor.predict_array(cat, num), reference, rtol=0, atol=RUNTIME_ATOL)
        stats = predictor.stats()
        assert stats["resident_experts"] == resident and stats["rebuilds_per_call"] == masked - resident
        assert stats["rebuilds"] == calls * (masked - resident)  # the same experts, every call
        assert stats["cache"]["bytes"] <= nbytes and stats["cache"]["evictions"] == 0
        assert stats["cache"]["hits"] == calls * resident


def test_materialize_and_onnx_refuse_a_budget_they_cannot_honour(files) -> None:
    model, expert_bytes, total = _budget_model()
    Predictor.from_compiled(model, experts="materialize", memory_budget_mb=total / MiB)  # fits exactly
    with pytest.raises(ConfigError, match="materialize holds all .* use experts='on-demand'"):
        Predictor.from_compiled(model, experts="materialize", memory_budget_mb=(total - 1) / MiB)
    entry = files["mome"]
    speed_bytes = Predictor(entry["onnx"]).stats()["resident_expert_bytes"]
    memory_bytes = Predictor(entry["onnx-memory"]).stats()["resident_expert_bytes"]
    assert 0 < memory_bytes < speed_bytes
    Predictor(entry["onnx"], memory_budget_mb=speed_bytes / MiB)
    with pytest.raises(ConfigError, match=r"\(speed mode\) holds .* export --mode memory"):
        Predictor(entry["onnx"], memory_budget_mb=(speed_bytes - 1) / MiB)
    Predictor(entry["onnx-memory"], memory_budget_mb=memory_bytes / MiB)
    with pytest.raises(ConfigError, match=r"\(memory mode\) holds .* fixed subset"):
        Predictor(entry["onnx-memory"], memory_budget_mb=(memory_bytes - 1) / MiB)
    Predictor(files["mmoe"]["onnx"], memory_budget_mb=0)  # no masked experts: nothing to hold


def test_an_onnx_file_runs_the_mode_it_was_exported_with(files) -> None:
    entry = files["mome"]
    assert Predictor(entry["onnx"]).experts == "materialize" and Predictor(entry["onnx-memory"]).experts == "on-demand"
    with pytest.raises(ConfigError, match="exported with --mode speed .* export --mode memory"):
        Predictor(entry["onnx"], experts="on-demand")
    with pytest.raises(ConfigError, match="exported with --mode memory .* export --mode speed"):
        Predictor(entry["onnx-memory"], experts="materialize")


# --- threads ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "experts"), PATHS)
def test_concurrent_predicts_equal_sequential(files, fmt: str, experts: str | None) -> None:
    entry = files["mome"]
    budget = 0.002 if experts == "on-demand" else None
    predictor = Predictor(entry[fmt], experts=experts, memory_budget_mb=budget, threads=1)
    batches = [sample_inputs(entry["model"].spec, 16, seed=100 + i, invalid=True) for i in range(8)]
    expected = [predictor.predict_array(c, n) for c, n in batches]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for rep in range(10):
                i = (worker + rep) % len(batches)
                results[worker, rep] = (i, predictor.predict_array(*batches[i]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 60
    for i, probs in results.values():
        np.testing.assert_allclose(probs, expected[i], rtol=0, atol=MODES_ATOL)


# --- input checks -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(files) -> Predictor:
    return Predictor(files["mmoe"]["mome"])


def _inputs(predictor: Predictor, rows: int = 4):
    return sample_inputs(predictor.spec, rows, seed=26)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c, n: (c.astype(np.float32), n), r"categorical ids must be integers \(int64\), got dtype float32"),
    (lambda c, n: (c, n.astype(str)), "numerical values must be floats"),
    (lambda c, n: (c[0], n), r"categorical must be a 2-D array \(batch, 4\), got shape \(4,\)"),
    (lambda c, n: (c, n[None]), "numerical must be a 2-D array"),
    (lambda c, n: (c[:, :3], n), "categorical has 3 columns but the model reads 4 .cat0, cat1, cat2, cat3."),
    (lambda c, n: (c, n[:, :1]), "numerical has 1 columns but the model reads 3"),
    (lambda c, n: (c[:2], n), "categorical has 2 rows but numerical has 4"),
    (lambda c, n: (c[:0], n[:0]), r"empty batch \(0 rows\)"),
    (lambda c, n: (None, n), "categorical is missing"),
])
def test_input_errors(predictor: Predictor, mutate, message: str) -> None:
    cat, num = _inputs(predictor)
    with pytest.raises(DataError, match=message):
        predictor.predict(*mutate(cat, num))


def test_out_of_range_ids_read_oov_in_every_engine(files) -> None:
    entry = files["mome"]
    cat, num = sample_inputs(entry["model"].spec, 6, seed=27)
    bad = cat.copy()
    bad[:, 0] = [-1, -5, entry["model"].spec.vocab_sizes[0], 10**12, np.iinfo(np.int64).min, np.iinfo(np.int64).max]
    oov = cat.copy()
    oov[:, 0] = 0
    huge = bad.astype(np.uint64)
    huge[:, 0] = np.iinfo(np.uint64).max  # above int64's range
    for fmt in ("mome", "onnx"):
        p = Predictor(entry[fmt])
        np.testing.assert_array_equal(p.predict_array(bad, num), p.predict_array(oov, num))
        np.testing.assert_array_equal(p.predict_array(huge, num), p.predict_array(oov, num))
        np.testing.assert_array_equal(p.predict_array(cat.astype(np.int32), num), p.predict_array(cat, num))


@pytest.mark.parametrize("fmt", ["mome", "onnx"])
def test_non_finite_numericals_follow_the_recorded_policy(tmp_path: Path, fmt: str) -> None:
    model = make_compiled("mome", seed=28)
    paths = {"mome": tmp_path / "m.mome", "onnx": tmp_path / "m.onnx"}
    write_artifact(paths["mome"], model)
    save_onnx(export_onnx(model, simplify=False, validate=False), paths["onnx"])
    p = Predictor(paths[fmt])
    cat, num = sample_inputs(model.spec, 3, seed=29)
    bad = num.copy()
    bad[0, 1], bad[2, 2] = np.nan, np.inf
    filled = num.copy()
    filled[0, 1] = filled[2, 2] = 0.0  # 'mean' policy: the standardised mean
    np.testing.assert_array_equal(p.predict_array(cat, bad), p.predict_array(cat, filled))
    assert np.isnan(bad[0, 1])  # the caller's array is untouched

    strict = make_compiled("mome", seed=28, spec=make_spec(missing="error"))
    write_artifact(paths["mome"], strict)
    save_onnx(export_onnx(strict, simplify=False, validate=False), paths["onnx"])
    with pytest.raises(DataError, match="numerical field 'num1' has a NaN or infinite value at row 0"):
        Predictor(paths[fmt]).predict(cat, bad)


def test_predict_rows_from_dicts_and_dataframes(predictor: Predictor) -> None:
    spec = predictor.spec
    rows = [
        {"cat0": "v1", "cat1": "v3", "cat2": "v0", "cat3": "v10", "num0": 1.5, "num1": "2", "num2": None},
        {"cat0": "never-seen", "cat1": None, "cat2": "v1", "cat3": "v2", "num0": -3, "num1": 0.5, "num2": 7.0},
    ]
    cat, num = spec.encode_rows(rows)
    assert cat[1, 0] == 0 and cat[1, 1] == 0  # unknown and missing categories -> OOV
    expected = predictor.predict(cat, num)
    for source in (rows, pd.DataFrame(rows)):
        got = predictor.predict_rows(source)
        for task in expected:
            np.testing.assert_array_equal(got[task], expected[task])
    with pytest.raises(DataError, match="empty batch"):
        predictor.predict_rows([])
    with pytest.raises(DataError, match="lack the columns"):
        predictor.predict_rows(pd.DataFrame({"cat0": ["v1"]}))
    with pytest.raises(DataError, match="rows must be a list of dicts"):
        predictor.predict_rows({"cat0": "v1"})


def test_predict_rows_rejects_keys_the_model_does_not_read(predictor: Predictor) -> None:
    """A misspelled field must not be read silently as a missing value."""
    row = {"cat0": "v1", "cat1": "v3", "cat2": "v0", "cat3": "v10", "num0": 1.5, "num1": 2.0, "num2": 0.0}
    predictor.predict_rows([row, {"cat0": "v1"}])  # keys left out are missing values
    with pytest.raises(DataError, match=r"row 1 has keys the model does not read: \['nmu0'\]; use the feature names"):
        predictor.predict_rows([row, {**{k: v for k, v in row.items() if k != "num0"}, "nmu0": 1.5}])


# --- loading errors -------------------------------------------------------------------------------------


def test_loading_errors(tmp_path: Path, files) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        Predictor(tmp_path / "missing.onnx")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="unknown model file type '.bin'"):
        Predictor(tmp_path / "model.bin")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="is not a mome-edge ONNX export of format 2: it has no mome.sha256 checksum"):
        Predictor(tmp_path / "garbage.onnx")
    (tmp_path / "garbage.mome").write_bytes(b"not a model")
    with pytest.raises(ArtifactError):
        Predictor(tmp_path / "garbage.mome")
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    ), opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(plain, tmp_path / "plain.onnx")
    with pytest.raises(ArtifactError, match="another tool's model.*export it again with `mome-edge export`"):
        Predictor(tmp_path / "plain.onnx")
    with pytest.raises(ConfigError, match="not a runtime expert mode"):
        Predictor(files["mome"]["onnx"], experts="lazy")
    with pytest.raises(ConfigError, match="threads=0 must be an integer >= 1"):
        Predictor(files["mome"]["onnx"], threads=0)
    with pytest.raises(ConfigError, match="memory_budget_mb=-1 must be a number >= 0"):
        Predictor(files["mome"]["mome"], memory_budget_mb=-1)


def test_onnx_bytes_load_like_the_file(files) -> None:
    entry = files["ple"]
    cat, num = sample_inputs(entry["model"].spec, 5, seed=30)
    from_bytes = Predictor(entry["onnx"].read_bytes()).predict_array(cat, num)
    np.testing.assert_array_equal(from_bytes, Predictor(entry["onnx"]).predict_array(cat, num))


# --- no torch ---------------------------------------------------------------------------------------------


NO_TORCH_SCRIPT = """
import json, sys
import numpy as np
from mome_edge.runtime import Predictor
for path in sys.argv[1:]:
    for experts in ("materialize", "on-demand") if path.endswith(".mome") else (None,):
        p = Predictor(path, experts=experts)
        cat = np.zeros((3, len(p.spec.categorical)), dtype=np.int64)
        num = np.zeros((3, len(p.spec.numerical)), dtype=np.float32)
        p.predict(cat, num)
        p.predict_rows([{name: None for name in (*p.spec.field_names, *p.spec.numerical_names)}])
roots = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(roots))
"""
DEVICE_FORBIDDEN = ("torch", "onnx", "onnxsim", "pandas", "sklearn", "typer", "rich", "matplotlib")


def test_runtime_never_imports_torch(files) -> None:
    paths = [str(files["mome"]["mome"]), str(files["mome"]["onnx"]), str(files["mome"]["onnx-memory"]), str(files["ple"]["mome"])]
    done = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, *paths], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    roots = set(json.loads(done.stdout))
    assert "torch" not in roots
    assert not roots & set(DEVICE_FORBIDDEN), sorted(roots & set(DEVICE_FORBIDDEN))
    assert {"numpy", "onnxruntime", "mome_edge"} <= roots
