"""examples/js: onnxruntime-node predicts the golden rows `export` writes beside the model (speed
and memory modes, fp32 and int8) within their tolerance, and refuses a damaged file or a golden
file it does not match (runs when node and npm exist)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mome_edge.artifact.writer import write_artifact
from mome_edge.exporters.onnx_export import export_artifact
from mome_edge.runtime.golden import GOLDEN_ROWS, golden_path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "js"
sys.path.insert(0, str(ROOT / "tests"))
from compiled_factory import make_compiled  # noqa: E402

JS_VS_PYTHON_TOLERANCE = 1e-5  # the golden tolerance: one float32 graph, two ONNX Runtime builds
NPM_TIMEOUT_S = 600
# npm installs once per package.json into this cache (a fresh machine downloads ~290 MB once)
JS_CACHE = Path(os.environ.get("MOME_JS_CACHE", Path.home() / ".cache" / "mome-edge-js"))


@pytest.fixture(scope="module")
def js_example(tmp_path_factory) -> Path:
    """A folder holding this checkout's example files, its node_modules linked from the npm cache.

    The cache is shared by every checkout on the machine (keyed by package.json): the script runs
    from a private copy, so another checkout's tests cannot swap predict.mjs under this one."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("node and npm are not installed; install Node.js >= 18 to run examples/js")
    key = hashlib.sha256((EXAMPLE / "package.json").read_bytes() + (EXAMPLE / ".npmrc").read_bytes()).hexdigest()[:12]
    cache = JS_CACHE / key
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        for name in ("package.json", ".npmrc"):
            shutil.copyfile(EXAMPLE / name, cache / name)
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock"], cwd=cache,
                              capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        assert done.returncode == 0, f"npm install failed: {done.stderr[-2000:]}"
    folder = tmp_path_factory.mktemp("js-example")
    for name in ("package.json", ".npmrc", "predict.mjs"):
        shutil.copyfile(EXAMPLE / name, folder / name)
    (folder / "node_modules").symlink_to(cache / "node_modules", target_is_directory=True)
    return folder


def export_with_golden(folder: Path, *, mode: str = "speed", experts: str = "bitset", weights: str = "fp32",
                       opset: int | None = None) -> tuple[Path, Path]:
    """`export` of a small MoME: the .onnx and the golden rows it writes beside it."""
    artifact = folder / "model.mome"
    write_artifact(artifact, make_compiled("mome", seed=3), weights=weights)
    model = folder / "model.onnx"
    export_artifact(artifact, model, mode=mode, experts=experts, opset=opset)
    return model, golden_path(model)


def run_example(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(folder / "predict.mjs"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("mode", "experts", "weights", "opset"), [
    ("speed", "bitset", "fp32", None), ("memory", "bitset", "fp32", None), ("memory", "bitset", "fp32", 18),
    ("speed", "bitset", "int8", None), ("memory", "bitset", "int8", None), ("speed", "dense", "int8", None),
])
def test_js_predicts_the_golden_rows(js_example: Path, tmp_path: Path, mode: str, experts: str, weights: str,
                                     opset: int | None) -> None:
    model, _ = export_with_golden(tmp_path, mode=mode, experts=experts, weights=weights, opset=opset)
    done = run_example(js_example, str(model), "--json")  # golden file found beside the model
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["rows"] == GOLDEN_ROWS and report["mode"] == mode
    assert report["onnxruntime_node"] == json.loads((EXAMPLE / "package.json").read_text())["dependencies"]["onnxruntime-node"]
    assert set(report["batched"]) == set(report["one_row_at_a_time"]) == {"income", "marital"}
    assert report["ok"] and report["max_abs_diff"] <= JS_VS_PYTHON_TOLERANCE


def test_js_reports_a_golden_mismatch(js_example: Path, tmp_path: Path) -> None:
    model, golden = export_with_golden(tmp_path, mode="memory")
    doc = json.loads(golden.read_text())
    doc["expected"]["marital"][5] += 1e-3  # what a port that is off by 1e-3 would see
    golden.write_text(json.dumps(doc))
    done = run_example(js_example, str(model), str(golden), "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert not report["ok"]
    assert report["batched"]["marital"] == pytest.approx(1e-3, abs=1e-6)
    assert report["batched"]["income"] <= JS_VS_PYTHON_TOLERANCE


def test_js_refuses_a_damaged_export(js_example: Path, tmp_path: Path) -> None:
    model, golden = export_with_golden(tmp_path)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    done = run_example(js_example, str(model), str(golden))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {model}: its SHA-256 does not match the one stored at export (damaged or edited); "
                                   "export it again with `mome-edge export`")


def test_js_refuses_golden_rows_of_another_format(js_example: Path, tmp_path: Path) -> None:
    model, golden = export_with_golden(tmp_path)
    doc = json.loads(golden.read_text())
    golden.write_text(json.dumps({**doc, "format": "mome-edge golden rows"}))  # the old script's layout name
    done = run_example(js_example, str(model))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {golden}: not a mome-edge-golden v1 file; export the model again"
