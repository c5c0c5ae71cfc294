"""benchmarks/session_start.py: per-file medians over fresh processes of an ONNX Runtime
session's start (wall time, page faults, added peak RSS), and one clear error for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SESSION_START_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "session_start.py"


def _model(path: Path, weight_floats: int) -> Path:
    """x (B, 4) @ w (4, n): a session that holds n float weights."""
    w = numpy_helper.from_array(np.ones((4, weight_floats // 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", weight_floats // 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_rows_are_medians_per_file_and_a_bigger_model_writes_more_memory(tmp_path: Path) -> None:
    small, large = _model(tmp_path / "small.onnx", 64), _model(tmp_path / "large.onnx", 2**20)  # 4 MiB of weights
    done = subprocess.run([sys.executable, str(SESSION_START_PY), str(small), str(large), "--runs", "3", "--json",
                           "--out", str(tmp_path / "rows")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [Path(r["file"]).name for r in rows] == ["small.onnx", "large.onnx"] and all(r["runs"] == 3 for r in rows)
    assert json.loads((tmp_path / "rows.json").read_text())["results"] == rows
    assert "| small.onnx |" in (tmp_path / "rows.md").read_text()
    by_name = {Path(r["file"]).name: r for r in rows}
    # 4 MiB of weights read, copied and pre-packed: well over 1,000 more 4 KiB pages, several MiB more peak
    assert by_name["large.onnx"]["page_faults"] > by_name["small.onnx"]["page_faults"] + 1000
    assert by_name["large.onnx"]["added_peak_rss_mib"] > by_name["small.onnx"]["added_peak_rss_mib"] + 3
    assert all(r["session_ms"] > 0 and r["us_per_fresh_page"] > 0 for r in rows)


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SESSION_START_PY), str(tmp_path / "nope.onnx")], capture_output=True, text=True)
    assert done.returncode == 2 and "no file" in done.stderr and "Traceback" not in done.stderr


def test_a_file_onnx_runtime_cannot_open_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, str(SESSION_START_PY), str(bad), "--runs", "1"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: ONNX Runtime could not open") and "Traceback" not in done.stderr


def test_out_into_a_missing_folder_is_refused_before_measuring(tmp_path: Path) -> None:
    model = _model(tmp_path / "m.onnx", 64)
    done = subprocess.run([sys.executable, str(SESSION_START_PY), str(model), "--out", str(tmp_path / "no" / "rows")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no folder" in done.stderr and not (tmp_path / "no").exists()
