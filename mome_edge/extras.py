"""Which install a command needs: the base (device) install, or the `[train]` extra.

The base install is what a phone or board runs (numpy, onnxruntime, bitarray, safetensors and
the CLI). Commands that train, compile, export or read data sets need the workstation side;
on a device install they stop with one line saying what to install, instead of a traceback
from deep inside an import.
"""

from __future__ import annotations

import importlib.util

from mome_edge.errors import ConfigError

# What each training-side command imports (module names, not distribution names).
NEEDS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "pandas", "pyarrow", "sklearn"),
    "compile": ("torch", "pandas", "pyarrow", "sklearn"),  # compile re-checks parity on the test split
    "export": ("onnx", "onnxsim"),
    "evaluate": ("torch", "pandas", "sklearn"),
    "prepare": ("pandas", "pyarrow"),
    "demo": ("torch", "pandas", "pyarrow", "sklearn", "onnx", "onnxsim"),
    "reading a data set": ("pandas", "pyarrow", "sklearn"),
    "--plot": ("matplotlib",),
}
INSTALL_HINT = (
    "install the training side with `pip install \"mome-edge[train]\"` "
    "(for the CPU-only torch build, install torch first from PyTorch's CPU wheel index, see the README)"
)


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules of `modules` that this environment cannot import (found without importing them)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_training_side(what: str) -> None:
    """ConfigError naming what is missing unless everything `what` (a command or feature, a NEEDS key) imports is installed."""
    missing = missing_modules(NEEDS[what])
    if missing:
        subject = f"`mome-edge {what}`" if what.isidentifier() else what
        raise ConfigError(f"{subject} needs the training side ({', '.join(missing)} not installed); {INSTALL_HINT}")
