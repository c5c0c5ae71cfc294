"""mome-edge: compress multi-task recommendation models with Mixture-of-Masked-Experts.

Importing this package is lean on purpose: it pulls in neither torch nor pandas, so that
the device-side runtime (numpy + onnxruntime + bitarray) can live under the same namespace.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mome-edge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
