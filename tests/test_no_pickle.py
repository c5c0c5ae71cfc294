"""No pickle anywhere on a load path, by construction: the package's source is walked (AST)
for pickle, dill, joblib, torch.load without weights_only=True and np.load(allow_pickle=True);
and a trained run is resumed and reloaded in a process where every unpickling entry point
raises."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = [ROOT / "mome_edge", ROOT / "cli", ROOT / "exporters"]
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name.endswith("torch.load"):
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append(f"{name}(...) without weights_only=True")
            if name in ("np.load", "numpy.load"):
                allow = keywords.get("allow_pickle")
                if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                    found.append(f"{name}(..., allow_pickle=...)")
            if name.endswith("pd.read_pickle") or name.endswith(".read_pickle"):
                found.append(f"{name}(...)")
    return [f"{path.relative_to(root)}:{item}" for item in found]


def test_source_has_no_pickle_paths():
    files = [p for d in SOURCE_DIRS for p in d.rglob("*.py")]
    assert len(files) > 20
    violations = [v for f in files for v in _violations(f)]
    assert violations == []


def test_ast_check_catches_offenders(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\nx = torch.load('f')\nimport numpy as np\nnp.load('a', allow_pickle=True)\n")
    assert len(_violations(bad, root=tmp_path)) == 3


# torch and rich import pickle at start-up, so the module cannot be removed outright; instead
# every way to *unpickle* is made to fail: any load path that unpickles raises.
BLOCK_PICKLE = """
import pickle, _pickle, sys
def _refuse(*args, **kwargs):
    raise RuntimeError("unpickling attempted on a mome-edge load path")
class _RefusingUnpickler:
    def __init__(self, *args, **kwargs):
        _refuse()
for module in (pickle, _pickle):
    module.load = module.loads = _refuse
    module.Unpickler = _RefusingUnpickler
"""


@pytest.mark.slow
def test_resume_and_load_without_pickle(tmp_path):
    script = BLOCK_PICKLE + f"""
from mome_edge.cli.main import main
args = ["train", "--model", "mome", "--dataset", "synthetic", "--synthetic-rows", "2000", "--hidden", "16,8",
        "--experts", "2", "--epochs", "4", "--neuron-epochs", "1", "--harden-epochs", "1", "--quiet", "--out", {str(tmp_path / 'run')!r}]
try:
    main(args)
except SystemExit as e:
    assert e.code in (0, None), e.code
import pathlib
ckpts = sorted(pathlib.Path({str(tmp_path / 'run')!r}, "checkpoints").glob("*.safetensors"))
ckpts[-1].unlink()  # force a real resume from the previous checkpoint
(pathlib.Path({str(tmp_path / 'run')!r}) / "model.safetensors").unlink()
try:
    main(args + ["--resume"])
except SystemExit as e:
    assert e.code in (0, None), e.code
from mome_edge.train.loop import load_trained_model
model, info, summary = load_trained_model({str(tmp_path / 'run')!r})
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
