"""scripts/check_arm64.py: the device install on an arm64 userland under qemu-user predicts
census test rows and the export's golden rows like x86_64 (within ARM64_TOLERANCE) from the
.mome (numpy), the speed and the memory .onnx and their .ort, and reports a golden mismatch.

Runs when qemu-aarch64-static is installed (`make check-arm64` installs it, as root) and the
census data is present. Measured on the 2-core workstation: ~25 s to build the arm64 userland
and wheels once (cached in ~/.cache/mome-edge-arm64), ~35 s to train and export the tiny
model, then ~15 s per check of its five files (6-11 s of it under qemu); 45 s for this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_arm64.py"
sys.path.insert(0, str(ROOT / "scripts"))
from check_arm64 import ARM64_TOLERANCE, DEFAULT_CACHE, DEFAULT_ONNXRUNTIME, build_default_models  # noqa: E402

from mome_edge.runtime.golden import GOLDEN_ROWS, golden_path  # noqa: E402

CHECK_TIMEOUT_S = 900  # a cold cache downloads ~12 MB of .debs and ~60 MB of wheels
GOLDEN_SHIFT = 1e-3  # a port that is off by this much must fail the check

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


@pytest.fixture(scope="module")
def qemu() -> str:
    found = shutil.which("qemu-aarch64-static")
    if not found:
        pytest.skip("qemu-aarch64-static is not installed; `apt-get install qemu-user-static` or `make check-arm64` (as root)")
    cache = Path(os.environ.get("MOME_ARM64_CACHE", DEFAULT_CACHE))
    if os.geteuid() != 0 and not (cache / "sysroot.done").is_file():
        pytest.skip(f"building the arm64 userland in {cache} needs root; run `make check-arm64` once as root")
    return found


@pytest.fixture(scope="module")
def census_models(tmp_path_factory, shared_data_dir: Path) -> list[Path]:
    """A tiny census-income MoME: the .mome and the exports `make check-arm64` builds (DEFAULT_EXPORTS)."""
    return build_default_models(tmp_path_factory.mktemp("arm64-models"), str(shared_data_dir))


def run_check(models: list[Path], report: Path, data_dir: Path, *, rows: int = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, models), "--rows", str(rows), "--data-dir", str(data_dir),
                           "--json", str(report)], capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)


def test_arm64_predictions_equal_x86(qemu: str, census_models: list[Path], shared_data_dir: Path, tmp_path: Path) -> None:
    done = run_check(census_models, tmp_path / "report.json", shared_data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["arm64"]["machine"] == "aarch64" and report["x86_64"]["machine"] == "x86_64"
    assert report["arm64"]["onnxruntime"] == DEFAULT_ONNXRUNTIME
    # the device install: no torch, pandas, onnx... installed on the arm64 side, none imported on either
    assert report["arm64"]["workstation_packages_installed"] == []
    assert report["arm64"]["workstation_packages_imported"] == report["x86_64"]["workstation_packages_imported"] == []
    # census rows + 2 out-of-range-id rows, then the golden rows (one set: every export of one .mome shares them)
    assert report["inputs"]["census_rows"] == 100 + 2 and report["inputs"]["golden_rows"] == GOLDEN_ROWS
    assert report["inputs"]["rows"] == 100 + 2 + GOLDEN_ROWS
    assert report["inputs"]["source"].startswith("census-income test split")
    names = sorted(m.name for m in census_models)
    assert names == ["mome-memory.onnx", "mome-memory.ort", "mome-speed.onnx", "mome-speed.ort", "mome.mome"]
    paths = {(r["model"], r["path"]) for r in report["results"]}
    exports = [name for name in names if name != "mome.mome"]
    assert paths == {("mome.mome", "predictor-materialize"), ("mome.mome", "predictor-on-demand"),
                     *((name, path) for name in exports for path in ("predictor", "plain-session"))}
    for row in report["results"]:
        assert row["max_abs_diff_vs_x86_64"] <= ARM64_TOLERANCE
        # every export (and its .ort) meets the expected probabilities written beside it
        assert (row["max_abs_diff_vs_golden"] is None) == (row["model"] == "mome.mome")
        assert row["model"] == "mome.mome" or row["max_abs_diff_vs_golden"] <= ARM64_TOLERANCE


def test_arm64_check_fails_on_a_golden_mismatch(qemu: str, census_models: list[Path], shared_data_dir: Path, tmp_path: Path) -> None:
    onnx_model = next(m for m in census_models if m.name == "mome-memory.onnx")
    golden = golden_path(onnx_model)
    original = golden.read_text()
    try:
        doc = json.loads(original)
        doc["expected"]["income"][3] += GOLDEN_SHIFT  # what a port that is off by 1e-3 would see
        golden.write_text(json.dumps(doc))
        done = run_check([onnx_model], tmp_path / "report.json", shared_data_dir, rows=20)
    finally:
        golden.write_text(original)  # the other test reads this file
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["inputs"]["rows"] == 20 + 2 + GOLDEN_ROWS and "golden rows mome-memory.golden.json" in report["inputs"]["source"]
    for row in report["results"]:
        assert row["max_abs_diff_vs_x86_64"] <= ARM64_TOLERANCE
        assert row["max_abs_diff_vs_golden"] == pytest.approx(GOLDEN_SHIFT, abs=1e-6)
    assert "FAILED" in done.stdout
