"""The `.mome` format's constants: names, version, caps and the vocabulary of its manifest.

Spec: docs/artifact-format.md. Everything that reads or writes artifacts takes these from here.
"""

from __future__ import annotations

from typing import Any

from mome_edge.contract import MODEL_KINDS, WEIGHT_FORMATS  # noqa: F401  (WEIGHT_FORMATS: part of the format's vocabulary)

FORMAT_NAME = "mome-edge-artifact"
FORMAT_VERSION = 1
METADATA_KEY = "mome_edge_artifact"
HEADER_CAP = 64 * 1024 * 1024  # bytes; a manifest with large vocabularies stays far below
MAX_TENSORS = 65_536  # tensors per file: about two per categorical field plus a few per layer
# Expert masks are compressed (sc/zlib): before decoding, their decoded size (bool masks plus
# the dense float32 base weight, (E + 4) bytes per weight) must stay within this allowance plus
# MASK_EXPANSION_CAP bytes per file byte, so that a small file cannot claim gigabytes.
MASK_DECODE_ALLOWANCE = 64 * 1024 * 1024  # bytes
MASK_EXPANSION_CAP = 256  # decoded bytes per file byte beyond the allowance
KINDS = MODEL_KINDS  # every kind the trainer builds can be written
COMPONENTS = ("embeddings", "base_weights", "expert_masks", "expert_affine", "task_gates", "towers", "indices", "manifest")

# safetensors dtype tag <-> numpy dtype name, and item sizes
ST_DTYPES = {"F32": "float32", "F16": "float16", "I8": "int8", "U8": "uint8", "I64": "int64"}
ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int64": 8}
ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})  # a safetensors header entry


def table_entry(
    dtype: str, shape: tuple[int, ...], component: str, scale: str | None = None, axis: int | None = None, layout: str = "dense"
) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [int(s) for s in shape], "component": component, "scale": scale, "axis": axis, "layout": layout}

MESSAGE_LIMIT = 600  # characters of an ArtifactError message: one readable line, whatever the file holds
