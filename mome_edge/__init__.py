"""mome-edge: compress multi-task recommendation models with Mixture-of-Masked-Experts.

Importing this package is lean on purpose: it pulls in neither torch nor pandas, so that the
device-side runtime (numpy + onnxruntime + bitarray) can live under the same namespace. Even
`__version__` is resolved lazily: `importlib.metadata` scans every installed distribution and
cost ~50 ms of a device's cold start when it ran at import time.
"""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("mome-edge")
        except PackageNotFoundError:  # running from a source tree that was never installed
            value = "0.0.0+unknown"
        globals()["__version__"] = value  # resolved once per process
        return value
    raise AttributeError(f"module 'mome_edge' has no attribute {name!r}")
