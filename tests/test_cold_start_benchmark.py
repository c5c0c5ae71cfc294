"""benchmarks/cold_start.py's rounds: every figure is the median over the rounds of the rounds'
medians, and the rounds' own over-floor figures are kept beside it (the README quotes both)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

COLD_START_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "cold_start.py"


@pytest.fixture(scope="module")
def cold_start():
    spec = importlib.util.spec_from_file_location("cold_start_benchmark", COLD_START_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _round(over: float, load: float) -> dict:
    return {"model": "m.onnx", "floor": "numpy+onnxruntime", "runs": 7, "cold_start_ms": 100.0 + over, "floor_ms": 100.0,
            "over_floor_ms": over, "import_ms": 70.0, "load_ms": load, "first_prediction_ms": 1.0, "process_ms": 120.0,
            "process_over_floor_ms": over + 5.0, "package": "/venv/lib/mome_edge"}


def test_rounds_take_the_median_of_each_figure_and_keep_the_rounds(cold_start) -> None:
    row = cold_start._over_rounds([_round(19.0, 40.0), _round(51.0, 60.0), _round(28.0, 45.0)])
    assert row["over_floor_ms"] == 28.0 and row["load_ms"] == 45.0 and row["cold_start_ms"] == 128.0
    assert row["over_floor_ms_rounds"] == [19.0, 51.0, 28.0]
    assert row["runs"] == 7 and row["processes"] == 21 and row["model"] == "m.onnx" and row["floor"] == "numpy+onnxruntime"


def test_zero_rounds_is_refused_before_anything_runs(tmp_path: Path) -> None:
    model = tmp_path / "m.mome"
    model.write_bytes(b"x")
    done = subprocess.run([sys.executable, str(COLD_START_PY), str(model), "--rounds", "0", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--rounds 0" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("r.*"))


def test_pool_takes_every_round_of_every_run(cold_start, tmp_path: Path) -> None:
    runs = [{"results": [dict(_round(25.0, 40.0), over_floor_ms_rounds=[25.0, 27.0, 32.0])]},
            {"results": [dict(_round(33.0, 40.0), over_floor_ms_rounds=[33.0, 29.0, 36.0])]}]
    (row,) = cold_start.pool_rounds(runs)
    assert row["model"] == "m.onnx" and row["rounds"] == 6 and row["file_bytes"] == 0
    assert row["over_floor_ms_median"] == 30.5 and row["within_target"] is False
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"run{i}.json")
        paths[-1].write_text(json.dumps(run))
    done = subprocess.run([sys.executable, str(COLD_START_PY), "--pool", *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0 and "| m.onnx | 0 | 6 | +30.5 |" in done.stdout
    other_build = {"results": [dict(_round(20.0, 40.0), over_floor_ms_rounds=[20.0], file_bytes=123)]}
    assert len(cold_start.pool_rounds([*runs, other_build])) == 2  # same name, another file: not pooled together


def test_pool_of_a_file_that_is_not_a_result_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": [{"no model": 1}]}')
    done = subprocess.run([sys.executable, str(COLD_START_PY), "--pool", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2 and "not a cold_start results file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("results", [{"results": []}, {}])
def test_pool_of_a_file_without_models_is_one_clear_error(tmp_path: Path, results: dict) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(results))
    done = subprocess.run([sys.executable, str(COLD_START_PY), "--pool", str(path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "Traceback" not in done.stderr
