"""The device install, for real: a fresh venv with `pip install <checkout>` (no extras).

It must hold no torch (nor pandas, scikit-learn, onnx, matplotlib), pass `pip check`, and its
`mome-edge` must predict, inspect and bench `.mome`, `.onnx` and `.ort` files, while training
commands stop with one line saying what to install.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from mome_edge.artifact.reader import read_artifact
from mome_edge.runtime.predict import reference_predict

REPO = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("torch", "pandas", "sklearn", "onnx", "onnxsim", "matplotlib", "pyarrow")
PREDICTION_TOLERANCE = 1e-5  # ONNX Runtime vs the numpy reference, plus the CSV's 7 significant digits
INSTALL_TIMEOUT_S = 900

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def device_venv(tmp_path_factory) -> Path:
    """A venv holding only the base install of this checkout; its bin folder."""
    root = tmp_path_factory.mktemp("device-venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    done = subprocess.run(
        [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "bin"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_artifact) -> dict[str, Path]:
    """The same model as .mome, .onnx and .ort (exported with the workstation install)."""
    from mome_edge.exporters.onnx_export import export_artifact

    folder = tmp_path_factory.mktemp("device-models")
    mome = folder / "model.mome"
    mome.write_bytes(Path(tiny_artifact("mome", "fp32")).read_bytes())
    export_artifact(mome, folder / "model.onnx", ort_format=True)
    return {"mome": mome, "onnx": folder / "model.onnx", "ort": folder / "model.ort"}


def _run(bin_dir: Path, *argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_device_install_has_no_training_side_and_is_consistent(device_venv: Path) -> None:
    code = f"import importlib.util; print([m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)])"
    done = _run(device_venv, "python", "-c", code)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    check = _run(device_venv, "python", "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("fmt", ["mome", "onnx", "ort"])
def test_the_device_cli_predicts_every_model_format(device_venv: Path, models: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    model = read_artifact(models["mome"]).model
    names = [*model.spec.field_names, *model.spec.numerical_names]
    rng = np.random.default_rng(0)
    rows = [[str(v) for v in rng.integers(0, 12, len(names))] for _ in range(5)]
    (tmp_path / "rows.csv").write_text("\n".join([",".join(names), *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    done = _run(device_venv, "mome-edge", "predict", str(models[fmt]), "--input", "rows.csv", "--output", "preds.csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = np.loadtxt(tmp_path / "preds.csv", delimiter=",", skiprows=1, ndmin=2)
    cat, num = model.spec.encode_rows([dict(zip(names, r)) for r in rows])
    np.testing.assert_allclose(got, reference_predict(model, cat, num), atol=PREDICTION_TOLERANCE)


def test_the_device_cli_inspects_and_benches(device_venv: Path, models: dict[str, Path]) -> None:
    done = _run(device_venv, "mome-edge", "inspect", str(models["mome"]), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file_bytes"] == models["mome"].stat().st_size
    done = _run(device_venv, "mome-edge", "bench", str(models["mome"]), str(models["onnx"]), str(models["ort"]),
                "--batch", "1", "--threads", "1", "--runs", "3", "--warmup", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["results"]) >= 3


@pytest.mark.parametrize(
    "argv, missing",
    [
        (["train", "--model", "mome", "--dataset", "synthetic", "--out", "{tmp}/run"], "torch"),
        (["compile", "{tmp}/run", "-o", "{tmp}/m.mome"], "torch"),
        (["export", "{mome}", "-o", "{tmp}/m.onnx"], "onnx"),
        (["evaluate", "{mome}", "--dataset", "synthetic"], "pandas"),
        (["prepare", "--dataset", "aliexpress", "--out", "{tmp}/p"], "pandas"),
        (["demo", "--out", "{tmp}/demo"], "torch"),
    ],
    ids=["train", "compile", "export", "evaluate", "prepare", "demo"],
)
def test_training_commands_on_the_device_say_what_to_install(device_venv: Path, models: dict[str, Path], tmp_path: Path,
                                                             argv: list[str], missing: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)).replace("{mome}", str(models["mome"])) for a in argv]
    done = _run(device_venv, "mome-edge", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "needs the training side (" in done.stderr and missing in done.stderr
    assert 'pip install "mome-edge[train]"' in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_this_test_would_see_torch(tmp_path: Path) -> None:
    """The absence check above is meaningful: the same code finds torch in the workstation venv."""
    code = f"import importlib.util; print([m for m in {TRAINING_ONLY!r} if importlib.util.find_spec(m)])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "torch" in done.stdout
