"""Writing `.mome` files (spec: docs/artifact-format.md).

    write_artifact(path, model, weights="int8")   CompiledModel -> one file, atomically
    artifact_bytes(model, weights=...)            the exact bytes, deterministic for a given model
    quantize_model(model, weights)                the model exactly as such a file reads back

The container is safetensors written through its numpy API; the manifest is canonical JSON
in the header metadata, with checksums of itself and of the payload.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as st_save

from mome_edge.artifact.canonical import canonical_json, jsonable, sha256_text
from mome_edge.artifact.compiled import CompiledModel
from mome_edge.artifact.format import FORMAT_NAME, FORMAT_VERSION, MAX_TENSORS, METADATA_KEY, table_entry
from mome_edge.artifact.masks import BIT_ORDER, encode_mask
from mome_edge.artifact.quantise import check_weights, dequantise, quantise
from mome_edge.artifact.schema import (
    build_model,
    check_compiled_model,
    compare_tables,
    expected_tensors,
    flatten_model,
    model_structure,
    store_tensor,
)
from mome_edge.atomic import atomic_write_bytes
from mome_edge.errors import ArtifactError
from mome_edge.sha256 import sha256_hex

def write_artifact(path: str | Path, model: CompiledModel, *, weights: str = "fp32") -> int:
    """Write `model` to `path` atomically (temp file in the same folder, fsync, rename).

    Args:
        path: destination file (conventionally `*.mome`).
        model: a consistent CompiledModel with float32 tensors.
        weights: storage precision of embeddings, base weights, gate and tower weights:
            "fp32", "fp16" or "int8" (per-channel scales).
    Returns:
        The number of bytes written.
    Raises:
        ConfigError: unknown `weights`, or values out of float16 range with "fp16".
        ArtifactError: the model's shapes are inconsistent (nothing is written).
        MomeError: the destination folder is not writable.
    """
    data = artifact_bytes(model, weights=weights)
    atomic_write_bytes(path, data)
    return len(data)


def artifact_bytes(model: CompiledModel, *, weights: str = "fp32") -> bytes:
    """The exact bytes `write_artifact` writes (deterministic for a given model)."""
    check_weights(weights)
    check_compiled_model(model)
    structure = model_structure(model)
    tensors = flatten_model(model)
    stored: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        for stored_name, array, entry in store_tensor(name, tensor, weights):
            stored[stored_name] = array
            table[stored_name] = entry
    for l, layer in enumerate(model.layers):
        if layer.masks is None:
            continue
        # One tensor per layer: the experts' encoded masks back to back (a tensor each would
        # cost a header entry each); the manifest lists each one's encoding and byte count.
        entries, chunks, previous = [], [], None
        for e in range(layer.experts):
            mask = np.asarray(layer.masks[e], dtype=bool)
            encoded = encode_mask(mask, previous)
            chunks.append(encoded.data)
            entries.append(encoded.to_json())
            previous = mask
        blob = b"".join(chunks)
        stored[f"layers.{l}.masks"] = np.frombuffer(blob, dtype=np.uint8).copy()
        table[f"layers.{l}.masks"] = table_entry("uint8", (len(blob),), "expert_masks")
        structure["layers"][l]["masks"] = entries
    if len(stored) > MAX_TENSORS:
        raise ArtifactError(f"the model has {len(stored)} tensors, more than the {MAX_TENSORS} an artifact may hold; use fewer categorical fields")
    # The model must read back: compare what we store with what the structure implies.
    compare_tables(expected_tensors(structure, weights, table), table, "cannot write the artifact")

    # Pass 1 lays the data section out (safetensors orders tensors itself; the metadata does
    # not change that order), so that the manifest can carry the payload's checksum.
    draft = st_save(stored)
    (draft_header,) = struct.unpack("<Q", draft[:8])
    payload = draft[8 + draft_header :]
    manifest = {
        **structure,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "weights": weights,
        "bit_order": BIT_ORDER,
        "tensors": table,
        "payload_sha256": sha256_hex(payload),
        "metadata": jsonable(dict(model.metadata)),
    }
    manifest["manifest_sha256"] = sha256_text(canonical_json(manifest))
    data = st_save(stored, metadata={METADATA_KEY: canonical_json(manifest)})
    (header_len,) = struct.unpack("<Q", data[:8])
    if data[8 + header_len :] != payload:  # pragma: no cover - would be a safetensors change
        raise ArtifactError("safetensors laid the data out differently between two saves; report this bug")
    return data


def quantize_model(model: CompiledModel, weights: str) -> CompiledModel:
    """The model exactly as an artifact written with `weights` reads back (float32 tensors).

    Args:
        model: float32 CompiledModel.
        weights: "fp32" (returned unchanged), "fp16" or "int8".
    Returns:
        A CompiledModel whose quantisable tensors went through the storage precision.
    Raises:
        ConfigError: unknown `weights`, or values out of float16 range.
    """
    check_weights(weights)
    if weights == "fp32":
        return model
    arrays = {}
    for name, tensor in flatten_model(model).items():
        if tensor.quant_axis is None:
            arrays[name] = tensor.array
            continue
        stored, scale, axis = quantise(name, tensor.array, weights, tensor.quant_axis)
        arrays[name] = dequantise(stored, scale, axis)
    masks = {l: layer.masks for l, layer in enumerate(model.layers)}
    return build_model(model_structure(model), arrays, masks, model.spec, dict(model.metadata))
