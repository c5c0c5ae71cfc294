"""Golden rows written by `export` beside the model: their JSON shape (a contract for ports in
other languages and on other machines), and Python reproducing them from every file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mome_edge.artifact.writer import write_artifact
from mome_edge.errors import ArtifactError
from mome_edge.exporters.onnx_export import PARITY_ATOL_FP32, export_artifact
from mome_edge.runtime import Predictor
from mome_edge.runtime.golden import (
    GOLDEN_TOLERANCE,
    golden_inputs,
    golden_max_abs,
    golden_path,
    read_golden,
)

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import make_compiled, make_spec  # noqa: E402

GOLDEN_KEYS = {"format", "version", "model", "mode", "tasks", "tolerance", "rows", "inputs", "expected", "notes"}


@pytest.fixture(scope="module", params=["speed", "memory"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"golden-{request.param}")
    spec = make_spec(vocab_sizes=(5, 9, 3, 12), numerical=3)
    model = make_compiled("mome", seed=50, spec=spec, hidden=(13, 6))
    write_artifact(root / "m.mome", model)
    report = export_artifact(root / "m.mome", root / "m.onnx", mode=request.param, ort_format=True, simplify=False)
    return {"root": root, "report": report, "model": model, "mode": request.param}


def test_the_golden_file_has_the_documented_shape(exported) -> None:
    path = golden_path(exported["root"] / "m.onnx")
    assert path == exported["root"] / "m.golden.json" and exported["report"]["golden"]["path"] == str(path)
    doc = json.loads(path.read_text())
    assert set(doc) == GOLDEN_KEYS
    assert (doc["format"], doc["version"], doc["model"], doc["mode"]) == ("mome-edge-golden", 1, "m.onnx", exported["mode"])
    assert doc["tasks"] == list(exported["model"].tasks) and doc["tolerance"] == GOLDEN_TOLERANCE == PARITY_ATOL_FP32
    rows = len(doc["rows"])
    assert rows >= 4 and set(doc["inputs"]) == {"categorical", "numerical"} and set(doc["expected"]) == set(doc["tasks"])
    spec = exported["model"].spec
    assert all(len(r) == len(spec.categorical) for r in doc["inputs"]["categorical"])
    assert all(len(r) == len(spec.numerical) for r in doc["inputs"]["numerical"])
    assert all(len(v) == rows for v in doc["expected"].values())
    assert all(0.0 <= p <= 1.0 for v in doc["expected"].values() for p in v)
    cat, _ = golden_inputs(doc)
    assert (cat[0] == 0).all()  # row 0: unseen categories read the OOV row


def test_raw_rows_encode_to_the_golden_inputs(exported) -> None:
    doc = read_golden(golden_path(exported["root"] / "m.onnx"))
    cat, num = exported["model"].spec.encode_rows(doc["rows"])
    golden_cat, golden_num = golden_inputs(doc)
    np.testing.assert_array_equal(cat, golden_cat)
    np.testing.assert_array_equal(num, golden_num)  # float32 written exactly


@pytest.mark.parametrize("file", ["m.onnx", "m.ort", "m.mome"])
def test_python_reproduces_the_golden_rows(exported, file: str) -> None:
    doc = read_golden(golden_path(exported["root"] / "m.onnx"))
    predictor = Predictor(exported["root"] / file)
    assert predictor.tasks == tuple(doc["tasks"])
    probs = predictor.predict_array(*golden_inputs(doc))
    assert golden_max_abs(doc, probs) <= doc["tolerance"]
    from_rows = predictor.predict_rows(doc["rows"])  # the raw rows, through the model's own encoders
    assert golden_max_abs(doc, np.stack([from_rows[t] for t in doc["tasks"]], axis=1)) <= doc["tolerance"]
    assert exported["report"]["golden"]["max_abs"]["onnx"] <= doc["tolerance"]


def test_a_wrong_model_misses_the_golden_rows(exported, tmp_path: Path) -> None:
    """The check can fail: another model's probabilities are far outside the tolerance."""
    doc = read_golden(golden_path(exported["root"] / "m.onnx"))
    other = make_compiled("mome", seed=51, spec=exported["model"].spec, hidden=(13, 6))
    write_artifact(tmp_path / "o.mome", other)
    probs = Predictor(tmp_path / "o.mome").predict_array(*golden_inputs(doc))
    assert golden_max_abs(doc, probs) > 100 * doc["tolerance"]


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ArtifactError, match="not a mome-edge-golden v1 file"):
        read_golden(tmp_path / "x.json")
