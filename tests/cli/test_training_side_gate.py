"""On a device install (no torch, pandas, scikit-learn, onnx), training-side commands stop with
one line saying what to install; device commands never ask for the training side."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import mome_edge.extras as extras
from cli_helpers import invoke

TRAINING_MODULES = {"torch", "pandas", "pyarrow", "sklearn", "onnx", "onnxsim", "matplotlib"}


@pytest.fixture()
def device_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """find_spec answers as on the base install: the training-only modules are absent."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name in TRAINING_MODULES else real(name, *args, **kwargs)

    monkeypatch.setattr(extras.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    "argv, subject",
    [
        (["train", "--model", "mome", "--dataset", "synthetic", "--out", "{tmp}/run"], "`mome-edge train`"),
        (["compile", "{tmp}/run", "-o", "{tmp}/m.mome"], "`mome-edge compile`"),
        (["export", "{tmp}/m.mome", "-o", "{tmp}/m.onnx"], "`mome-edge export`"),
        (["evaluate", "{tmp}", "--split", "test"], "`mome-edge evaluate`"),
        (["prepare", "--dataset", "aliexpress", "--out", "{tmp}/p"], "`mome-edge prepare`"),
        (["demo"], "`mome-edge demo`"),
        (["predict", "{tmp}/m.mome", "--dataset", "synthetic", "-o", "{tmp}/p.csv"], "reading a data set"),
    ],
    ids=["train", "compile", "export", "evaluate", "prepare", "demo", "predict-dataset"],
)
def test_training_commands_say_what_to_install(device_install, tmp_path: Path, argv: list[str], subject: str) -> None:
    code, stdout, stderr = invoke([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith(f"error: {subject} needs the training side (")
    assert 'pip install "mome-edge[train]"' in stderr
    assert stdout == "" and list(tmp_path.iterdir()) == []


_BLOCKED_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # `import name` now fails, as on a device install
from mome_edge.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    sys.exit(exc.code)
"""


def _run_blocked(argv: list[str]) -> subprocess.CompletedProcess:
    code = _BLOCKED_RUN.format(blocked=sorted(TRAINING_MODULES))
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)


def test_device_commands_need_no_training_side(tiny_artifact, tmp_path: Path) -> None:
    """predict on raw rows and inspect run in a process where every training module fails to import."""
    from mome_edge.artifact.reader import read_artifact

    path = tiny_artifact("mome", "fp32")
    spec = read_artifact(path).model.spec
    names = [*spec.field_names, *spec.numerical_names]
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n", encoding="utf-8")
    done = _run_blocked(["predict", str(path), "--input", str(rows), "-o", str(tmp_path / "p.csv")])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "p.csv").read_text(encoding="utf-8").startswith(",".join(spec.tasks))
    done = _run_blocked(["inspect", str(path), "--json"])
    assert done.returncode == 0, done.stderr
    done = _run_blocked(["inspect", str(path), "--plot", str(tmp_path / "m.png")])
    assert done.returncode == 2 and "--plot needs the training side (matplotlib not installed)" in done.stderr


def test_the_blocked_process_really_lacks_the_training_side() -> None:
    """The check above is meaningful: in the same kind of process, a training command cannot import torch."""
    done = _run_blocked(["train", "--model", "mome", "--dataset", "synthetic", "--out", "/nonexistent/x"])
    assert done.returncode == 2 and "needs the training side" in done.stderr
