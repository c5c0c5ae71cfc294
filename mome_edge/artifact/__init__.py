"""The compiled model and its `.mome` file. numpy + bitarray + safetensors only (no torch).

    compiled   CompiledModel (plain numpy arrays) and its reference forward pass
    masks      expert masks <-> bitsets, the one declared bit order
    format     the format's constants          container  the safetensors header, read defensively
    schema     model <-> named tensors          quantise   fp32 / fp16 / int8 storage
    canonical  canonical JSON + checksums       reader / writer   the only file reader and writer
    describe   where every byte goes (`inspect`)

The reader and writer are re-exported lazily, so `import mome_edge.artifact.compiled` (which
the ONNX runtime needs) does not pay for safetensors.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "read_artifact": "reader", "parse_artifact": "reader", "LoadedArtifact": "reader",
    "write_artifact": "writer", "artifact_bytes": "writer", "quantize_model": "writer",
    "CompiledModel": "compiled",
    "check_compiled_model": "schema", "check_weights": "quantise",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"mome_edge.artifact.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mome_edge.artifact' has no attribute {name!r}")
