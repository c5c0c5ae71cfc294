"""The one-file device bench: runs with numpy + onnxruntime only and writes the bench JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mome_edge.exporters.onnx_export import export_onnx, save_onnx
from mome_edge.runtime import device_bench

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import make_compiled  # noqa: E402

ROW_KEYS = {
    "model", "runtime", "experts", "batch", "threads", "load_s", "first_run_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms",
    "max_ms", "mean_ms", "rows_per_s", "runs", "warmup", "peak_rss_mb", "baseline_rss_mb", "added_rss_mb", "file_bytes",
    "cold_start",
}
COLD_START_KEYS = {"interpreter_s", "import_s", "load_s", "first_prediction_s", "total_s", "from"}


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("device") / "model.onnx"
    save_onnx(export_onnx(make_compiled("mome", seed=40), simplify=False, validate=False), path)
    return path


def test_measure_rows(onnx_file: Path) -> None:
    rows = device_bench.measure(str(onnx_file), batches=[1, 8], threads=[1], runs=3, warmup=1)
    assert [(r["batch"], r["threads"]) for r in rows] == [(1, 1), (8, 1)]
    for r in rows:
        assert set(r) == ROW_KEYS and r["experts"] == "materialize"  # a speed export: the file's mode
        cold = r["cold_start"]
        assert set(cold) == COLD_START_KEYS and cold == rows[0]["cold_start"]  # one cold start per process
        assert cold["total_s"] >= cold["import_s"] + cold["load_s"] + cold["first_prediction_s"] - 1e-9
        assert cold["load_s"] == rows[0]["load_s"] and cold["from"] == "script start"
        assert r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["rows_per_s"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0
        assert r["file_bytes"] == onnx_file.stat().st_size and r["runtime"] == "onnx"


def test_copied_script_runs_without_mome_edge(tmp_path: Path, onnx_file: Path) -> None:
    script = tmp_path / "device_bench.py"
    shutil.copyfile(device_bench.__file__, script)
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "mome_edge.py").write_text("raise ImportError('mome_edge is not installed on this device')\n")
    model = tmp_path / onnx_file.name
    shutil.copyfile(onnx_file, model)
    done = subprocess.run(
        [sys.executable, str(script), str(model), "--batch", "1,2", "--threads", "1", "--runs", "2", "--warmup", "0", "--json"],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"results", "environment"} and len(report["results"]) == 2
    assert report["results"][0]["cold_start"]["import_s"] > 0
    assert {"onnxruntime", "numpy", "cpu", "cpu_count", "platform"} <= set(report["environment"])


def test_script_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    done = subprocess.run([sys.executable, device_bench.__file__, str(bad), "--runs", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_the_standalone_script_repeats_the_contract_exactly() -> None:
    """device_bench.py is copied to boards without mome-edge, so it repeats a few names of
    mome_edge/onnx_contract.py; they must stay equal to their one home."""
    from mome_edge import onnx_contract

    assert device_bench.EXPERT_MODES == onnx_contract.EXPERT_MODES
    assert device_bench.META_FEATURE_SPEC == onnx_contract.META_FEATURE_SPEC
