"""Where torch stops: an AST walk of every module, and a lean device-side import.

torch (and everything that only the workstation installs) may be imported only by the
training side, `mome_edge/train/` and `mome_edge/compile/`. Every other module ships to devices
with the base install (numpy, onnxruntime, bitarray, safetensors, typer, rich), so even a lazy
`import torch` inside a function there is refused: it would fail on a device.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_ALLOWED = ("mome_edge/train/", "mome_edge/compile/")
# Device-side packages: besides torch, none of the training-only dependencies at module level.
# (data/ is the training side's reader of CSV/Parquet: pandas/pyarrow are fine there, torch is not.)
TRAINING_ONLY = ("torch", "pandas", "sklearn", "onnx", "onnxsim", "matplotlib", "pyarrow")
DEVICE_PACKAGES = ("mome_edge/runtime/", "mome_edge/artifact/")


# scripts that run on the device itself (the ARM64 check copies them into an emulated userland
# that has only the device install): no training-only import anywhere, lazy ones included
DEVICE_SCRIPTS = ("scripts/device_predict.py",)


def _python_files() -> list[Path]:
    roots = [REPO / "mome_edge", REPO / "cli", REPO / "exporters", REPO / "scripts"]  # benchmarks/ run on the workstation
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _imports(tree: ast.AST, *, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, top-level package) of every import; with top_level_only, module scope only."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module.split(".")[0]))
        elif top_level_only and isinstance(node, (ast.If, ast.Try)):
            found += _imports(ast.Module(body=list(ast.walk(node))[1:], type_ignores=[]), top_level_only=False)
    return found


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_torch_is_imported_only_by_the_training_side() -> None:
    offenders = []
    for path in _python_files():
        rel = _relative(path)
        if rel.startswith(TORCH_ALLOWED):
            continue
        for line, package in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=False):
            if package == "torch":
                offenders.append(f"{rel}:{line}")
    assert offenders == [], f"torch imported outside {TORCH_ALLOWED}: {offenders}"


def test_the_boundary_test_sees_a_lazy_import() -> None:
    """The walk must find an import inside a function, or the test above could never fail."""
    tree = ast.parse("def f():\n    if True:\n        import torch.nn as nn\n")
    assert (3, "torch") in _imports(tree, top_level_only=False)


@pytest.mark.parametrize("package", DEVICE_PACKAGES)
def test_device_packages_import_no_training_dependency_at_module_level(package: str) -> None:
    offenders = []
    for path in sorted((REPO / package).rglob("*.py")):
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True):
            if name in TRAINING_ONLY:
                offenders.append(f"{_relative(path)}:{line} imports {name}")
    assert offenders == []


@pytest.mark.parametrize("script", DEVICE_SCRIPTS)
def test_device_scripts_import_no_training_dependency_anywhere(script: str) -> None:
    path = REPO / script
    found = [f"{script}:{line} imports {name}" for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=False)
             if name in TRAINING_ONLY]
    assert found == []


def test_top_level_modules_and_cli_import_no_training_dependency_at_module_level() -> None:
    """mome_edge/*.py and cli/ load on the device install; their training imports are lazy."""
    paths = sorted((REPO / "mome_edge").glob("*.py")) + sorted((REPO / "cli").glob("*.py"))
    offenders = []
    for path in paths:
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True):
            if name in TRAINING_ONLY:
                offenders.append(f"{_relative(path)}:{line} imports {name}")
    assert offenders == []


def test_cli_and_runtime_start_without_training_modules() -> None:
    """Loading the CLI app and the runtime imports none of the training-only packages."""
    code = (
        "import sys\n"
        "import mome_edge.cli.main, mome_edge.runtime, mome_edge.artifact.reader, mome_edge.artifact.describe\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TRAINING_ONLY!r})\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
