"""The examples run as written (on a small census subset)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.real_data
def test_census_end_to_end_example(tmp_path, shared_data_dir):
    mome_edge = shutil.which("mome-edge", path=str(Path(sys.executable).parent)) or "mome-edge"
    env = {**os.environ, "MOME_DATA_DIR": str(shared_data_dir), "MOME_EXAMPLE_FAST": "1", "MOME_EDGE": mome_edge}
    done = subprocess.run(["bash", str(ROOT / "examples" / "census_end_to_end.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    for name in ("mome.mome", "mmoe.mome", "mome-int8.mome", "mome.onnx", "mome.ort", "mome-memory.onnx", "mome-memory.ort",
                 "mome.golden.json", "mmoe.onnx", "mome-masks.png", "bench.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "mome.onnx").stat().st_size < (out / "mmoe.onnx").stat().st_size
    metrics = json.loads((out / "mome-onnx-test.json").read_text())
    assert metrics["tasks"]["income"]["auc"] > 0.8
    bench = json.loads((out / "bench.json").read_text())
    assert {r["model"].split("/")[-1] for r in bench["results"]} >= {"mome.onnx", "mome-memory.onnx", "mmoe.onnx"}
