"""The only reader and writer of `.mome` artifact files (spec: docs/artifact-format.md).

    write_artifact(path, model, weights="int8")   CompiledModel -> one file, atomically
    read_artifact(path) -> LoadedArtifact         .model (float32 CompiledModel), .manifest, .stored

The container is safetensors (bounds-checked, no code execution) written and read through
its numpy API; the manifest is canonical JSON in the header metadata. Reading checks every
size and checksum before trusting it and turns every problem into one ArtifactError. No
torch on this path: numpy, bitarray and safetensors only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from mome_edge.atomic import atomic_write_bytes
from mome_edge.artifact.compiled import ROUTINGS, CompiledModel, ExpertLayer, Linear, PleLevel
from mome_edge.config import WEIGHT_FORMATS
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError, ConfigError, MomeError
from mome_edge.artifact.masks import BIT_ORDER, decode_mask, encode_mask

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
KINDS = ("mome", "mmoe", "ple", "shared-bottom", "single-task")
COMPONENTS = ("embeddings", "base_weights", "expert_masks", "expert_affine", "task_gates", "towers", "indices", "manifest")
INT8_LEVELS = 127  # symmetric int8: q in [-127, 127], zero point 0
FP16_MAX = float(np.finfo(np.float16).max)

# safetensors dtype tag <-> numpy dtype name, and item sizes
_ST_DTYPES = {"F32": "float32", "F16": "float16", "I8": "int8", "U8": "uint8", "I64": "int64"}
_ITEMSIZE = {"float32": 4, "float16": 2, "int8": 1, "uint8": 1, "int64": 8}
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})  # a safetensors header entry
_STORED_FLOAT = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


@dataclass(frozen=True, kw_only=True)
class LoadedArtifact:
    """An artifact as read from disk.

    Attributes:
        model: the compiled model, every float tensor dequantised to float32.
        manifest: the parsed manifest (docs/artifact-format.md, section 2).
        stored: tensor name -> array exactly as stored (float16/int8 weights, int8 scales
            under `{name}.scale`, encoded mask bytes as uint8) for runtimes that keep them.
        tensor_bytes: tensor name -> bytes it occupies in the data section.
        header_bytes: 8-byte length prefix + JSON header (safetensors index + manifest).
        file_bytes: size of the file; header_bytes + sum(tensor_bytes) == file_bytes.
    """

    model: CompiledModel
    manifest: Mapping[str, Any]
    stored: Mapping[str, np.ndarray]
    tensor_bytes: Mapping[str, int]
    header_bytes: int
    file_bytes: int

    @property
    def weights(self) -> str:
        """Storage precision of the quantisable tensors: fp32, fp16 or int8."""
        return str(self.manifest["weights"])

    def stored_dense(self, name: str) -> np.ndarray:
        """Tensor `name` in its stored dtype (float16, int8, ...) and its logical dense shape.

        Union-layout tensors (MoME base weights, stored only where some expert uses them)
        are scattered into zeros with the expert masks; others are returned as stored.
        Runtimes that keep int8 pair this with `stored[manifest["tensors"][name]["scale"]]`.
        """
        value = self.stored[name]
        if self.manifest["tensors"][name]["layout"] != "union":
            return value
        return _unpack_union(value, self.model.layers[int(name.split(".")[1])].masks, name)

    def components(self) -> dict[str, int]:
        """Bytes per component (COMPONENTS); the values add up to `file_bytes` exactly."""
        out = {name: 0 for name in COMPONENTS}
        for name, size in self.tensor_bytes.items():
            out[self.manifest["tensors"][name]["component"]] += size
        out["manifest"] = self.header_bytes
        return out


@dataclass(frozen=True)
class _Tensor:
    array: np.ndarray
    component: str
    quant_axis: int | None  # axis sharing one int8 scale; None = never quantised
    union: np.ndarray | None = None  # bool (out, in): store only these entries (layout "union")


# ===== writing ===============================================================================
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
    structure = _structure(model)
    tensors = _flatten(model)
    stored: dict[str, np.ndarray] = {}
    table: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        for stored_name, array, entry in _store(name, tensor, weights):
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
        table[f"layers.{l}.masks"] = _entry("uint8", (len(blob),), "expert_masks")
        structure["layers"][l]["masks"] = entries
    if len(stored) > MAX_TENSORS:
        raise ArtifactError(f"the model has {len(stored)} tensors, more than the {MAX_TENSORS} an artifact may hold; use fewer categorical fields")
    # The model must read back: compare what we store with what the structure implies.
    _compare_tables(_expected_tensors(structure, weights, table), table, "cannot write the artifact")

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
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "metadata": _jsonable(dict(model.metadata)),
    }
    manifest["manifest_sha256"] = _sha256_text(_canonical(manifest))
    data = st_save(stored, metadata={METADATA_KEY: _canonical(manifest)})
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
    for name, tensor in _flatten(model).items():
        if tensor.quant_axis is None:
            arrays[name] = tensor.array
            continue
        stored, scale, axis = _quantise(name, tensor.array, weights, tensor.quant_axis)
        arrays[name] = _dequantise(stored, scale, axis)
    masks = {l: layer.masks for l, layer in enumerate(model.layers)}
    return _build(_structure(model), arrays, masks, model.spec, dict(model.metadata))


def check_weights(weights: str) -> None:
    """Raise ConfigError unless `weights` is one of WEIGHT_FORMATS."""
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"--weights {weights!r} is unknown; use one of {', '.join(WEIGHT_FORMATS)}")


def _entry(
    dtype: str, shape: tuple[int, ...], component: str, scale: str | None = None, axis: int | None = None, layout: str = "dense"
) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [int(s) for s in shape], "component": component, "scale": scale, "axis": axis, "layout": layout}


def _store(name: str, tensor: _Tensor, weights: str) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """One logical tensor -> the stored tensor(s): itself, or int8 values plus scales.

    A tensor with a union mask (MoME base weights) is quantised as the dense (out, in) array,
    then only the entries some expert uses are kept, row-major: the rest are zero by
    construction and the reader knows where they are from the masks.
    """
    stored, scale, axis = _quantise(name, tensor.array, weights if tensor.quant_axis is not None else "fp32", tensor.quant_axis)
    layout = "dense"
    if tensor.union is not None:
        stored, layout = np.ascontiguousarray(stored[tensor.union]), "union"
    entry = _entry(stored.dtype.name, stored.shape, tensor.component, layout=layout)
    if scale is None:
        return [(name, stored, entry)]
    entry.update(scale=f"{name}.scale", axis=axis)
    return [(name, stored, entry), (f"{name}.scale", scale, _entry("float32", scale.shape, tensor.component))]


def _quantise(name: str, array: np.ndarray, weights: str, axis: int | None) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """float32 -> (stored array, int8 scales or None, scale axis or None)."""
    if weights == "fp32":
        return np.ascontiguousarray(array), None, None
    if weights == "fp16":
        if np.abs(array).max(initial=0.0) > FP16_MAX:
            raise ConfigError(f"{name} has values beyond the float16 range (+-{FP16_MAX:g}); use --weights fp32 or int8")
        return array.astype(np.float16), None, None
    amax = np.abs(array).max(axis=axis, initial=0.0)  # one scale per slice along `axis`
    scale = (amax / INT8_LEVELS).astype(np.float32)
    scale[scale == 0] = 1.0  # an all-zero slice: any scale gives q = 0
    q = np.rint(array.astype(np.float64) / np.expand_dims(scale, axis).astype(np.float64))
    return np.clip(q, -INT8_LEVELS, INT8_LEVELS).astype(np.int8), scale, axis


def _dequantise(stored: np.ndarray, scale: np.ndarray | None, axis: int | None) -> np.ndarray:
    if stored.dtype == np.int8:
        with np.errstate(over="ignore", invalid="ignore"):  # a corrupt scale overflows; the reader rejects non-finite values
            return stored.astype(np.float32) * np.expand_dims(scale, axis)
    if stored.dtype == np.float16:
        return stored.astype(np.float32)
    return stored


def _flatten(model: CompiledModel) -> dict[str, _Tensor]:
    """Every tensor of the model but the masks, by artifact name (docs section 4)."""
    out: dict[str, _Tensor] = {}
    for j, table in enumerate(model.embeddings):
        out[f"embeddings.{j}"] = _Tensor(_f32(table), "embeddings", 0)
    out["numerical_keep"] = _Tensor(_i64(model.numerical_keep), "indices", None)
    for l, layer in enumerate(model.layers):
        _expert_layer(out, f"layers.{l}", layer)
    if model.gates is not None:
        _linear(out, "gates", model.gates, "task_gates")
    for i, level in enumerate(model.ple_levels):
        _expert_layer(out, f"ple.{i}", level.experts)
        _linear(out, f"ple.{i}.task_gates", level.task_gates, "task_gates")
        if level.shared_gate is not None:
            _linear(out, f"ple.{i}.shared_gate", level.shared_gate, "task_gates")
        out[f"ple.{i}.expert_owner"] = _Tensor(_i64(level.expert_owner), "indices", None)
        out[f"ple.{i}.task_selection"] = _Tensor(_i64(level.task_selection), "indices", None)
    for i, tower in enumerate(model.towers):
        _linear(out, f"towers.{i}", tower, "towers")
    return out


def _expert_layer(out: dict[str, _Tensor], prefix: str, layer: ExpertLayer) -> None:
    weight = _f32(layer.weight)
    union = None if layer.masks is None else np.asarray(layer.masks, dtype=bool).any(axis=0)  # (out, in)
    if union is not None and np.any(weight[~union] != 0):
        # A weight no expert uses never reaches an output; the union layout drops it.
        weight = np.where(union, weight, np.float32(0))
    out[f"{prefix}.weight"] = _Tensor(weight, "base_weights", weight.ndim - 1, union)
    out[f"{prefix}.scale"] = _Tensor(_f32(layer.scale), "expert_affine", None)
    out[f"{prefix}.shift"] = _Tensor(_f32(layer.shift), "expert_affine", None)
    if layer.input_index is not None:
        out[f"{prefix}.input_index"] = _Tensor(_i64(layer.input_index), "indices", None)


def _linear(out: dict[str, _Tensor], prefix: str, linear: Linear, component: str) -> None:
    weight = _f32(linear.weight)
    out[f"{prefix}.weight"] = _Tensor(weight, component, weight.ndim - 1)
    out[f"{prefix}.bias"] = _Tensor(_f32(linear.bias), component, None)


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _i64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int64)


def _structure(model: CompiledModel) -> dict[str, Any]:
    """The manifest's description of the model's shapes (everything but tensors and checksums)."""
    if model.kind not in KINDS:
        raise ArtifactError(f"model kind {model.kind!r} is not one of {', '.join(KINDS)}; cannot write it")
    tasks = list(model.spec.tasks)
    width = sum(int(t.shape[1]) for t in model.embeddings) + int(len(model.numerical_keep))
    layers = [
        {
            "experts": layer.experts,
            "out": int(layer.scale.shape[1]),
            "in": int(layer.weight.shape[-1]),
            "shared_weight": layer.shared_weight,
            "input_index": layer.input_index is not None,
            "masks": None,
        }
        for layer in model.layers
    ]
    levels = [
        {
            "experts": level.experts.experts,
            "out": int(level.experts.scale.shape[1]),
            "in": int(level.experts.weight.shape[-1]),
            "input_index": level.experts.input_index is not None,
            "task_gate_width": int(level.task_gates.weight.shape[1]),
            "shared_gate": level.shared_gate is not None,
        }
        for level in model.ple_levels
    ]
    return {
        "kind": model.kind,
        "routing": model.routing,
        "fixed_expert": None if model.fixed_expert is None else [int(e) for e in model.fixed_expert],
        "tasks": tasks,
        "feature_spec": model.spec.to_json(),
        "input": {
            "field_index": [int(f) for f in model.field_index],
            "embedding_dims": [int(t.shape[1]) for t in model.embeddings],
            "numerical_keep": int(len(model.numerical_keep)),
            "width": width,
        },
        "layers": layers,
        "gates": None if model.gates is None else {"experts": int(model.gates.weight.shape[1]), "in": int(model.gates.weight.shape[2])},
        "ple_levels": levels,
        "towers": [{"out": int(t.weight.shape[1]), "in": int(t.weight.shape[2])} for t in model.towers],
    }


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _assemble_object(members: Mapping[str, str]) -> str:
    """The canonical JSON of an object from its members' canonical texts (keys sorted)."""
    return "{" + ",".join(f"{json.dumps(key)}:{text}" for key, text in sorted(members.items())) + "}"


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _jsonable(obj: Any) -> Any:
    """Plain JSON values (numpy scalars/arrays become numbers/lists, NaN/inf become null)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


# ===== reading ===============================================================================
MESSAGE_LIMIT = 600  # characters of an ArtifactError message: one readable line, whatever the file holds


def _bounded_messages(read):
    """Every ArtifactError of `read` is one line of at most MESSAGE_LIMIT characters.

    Messages quote what the file holds (names, shapes, values); a hostile file may hold
    megabytes there or newlines. The start (the problem) and the end (the fix) are kept.
    """

    @functools.wraps(read)
    def wrapper(*args, **kwargs):
        try:
            return read(*args, **kwargs)
        except ArtifactError as exc:
            message = str(exc)
            if len(message) <= MESSAGE_LIMIT and "\n" not in message and "\r" not in message:
                raise
            message = " ".join(message.split())
            if len(message) > MESSAGE_LIMIT:
                half = (MESSAGE_LIMIT - 5) // 2
                message = f"{message[:half]} ... {message[-half:]}"
            raise ArtifactError(message) from None

    return wrapper


@_bounded_messages
def read_artifact(path: str | Path) -> LoadedArtifact:
    """Read and fully validate an artifact file.

    Args:
        path: a file written by `write_artifact` / `mome-edge compile`.
    Returns:
        LoadedArtifact with the float32 model, the manifest and the raw stored tensors.
    Raises:
        ArtifactError: missing or unreadable file, not a mome-edge artifact, unsupported
            version, truncated file, trailing bytes, oversized header, checksum mismatch,
            shapes inconsistent with the manifest or with each other, bad mask bitsets.
    """
    path = Path(path)
    source = str(path)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            header_len = _check_prefix(prefix, size, source)
            header = handle.read(header_len)
            index, data_len = _parse_index(header, source)
            _check_total(size, header_len, data_len, source)
            body = handle.read(data_len)
    except FileNotFoundError:
        raise ArtifactError(f"{source} does not exist; check the path, or create it with `mome-edge compile RUN_DIR -o {source}`") from None
    except IsADirectoryError:
        raise ArtifactError(f"{source} is a folder, not an artifact file; pass the .mome file written by `mome-edge compile`") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {source} ({exc.strerror}); check the path and its permissions") from None
    if len(body) != data_len:  # the file shrank while we read it
        raise ArtifactError(f"{source} is truncated: its data section ends early; re-create it with `mome-edge compile`")
    return _parse(prefix + header + body, index, header_len, source)


@_bounded_messages
def parse_artifact(data: bytes, *, source: str = "artifact") -> LoadedArtifact:
    """`read_artifact` for bytes already in memory (same checks, same errors)."""
    data = bytes(data)
    header_len = _check_prefix(data[:8], len(data), source)
    index, data_len = _parse_index(data[8 : 8 + header_len], source)
    _check_total(len(data), header_len, data_len, source)
    return _parse(data, index, header_len, source)


def _check_prefix(prefix: bytes, size: int, source: str) -> int:
    if len(prefix) < 8 or size < 8:
        raise ArtifactError(f"{source} is truncated ({size} bytes, shorter than the 8-byte header length); re-create it with `mome-edge compile`")
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > HEADER_CAP:
        raise ArtifactError(
            f"{source}: header claims {header_len} bytes, more than the {HEADER_CAP} byte cap; "
            "the file is corrupt or not a mome-edge artifact, re-create it with `mome-edge compile`"
        )
    if 8 + header_len > size:
        raise ArtifactError(f"{source} is truncated: the header needs {8 + header_len} bytes, the file has {size}; re-create it")
    return header_len


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # linear: a header may hold a million keys
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"repeated key {key!r:.80}")
            seen.add(key)
    return obj


def _parse_json(text: bytes | str, what: str, source: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # safetensors headers are UTF-8; json.loads would guess
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{source} is not a mome-edge artifact: its {what} is not valid JSON ({exc}); re-create it with `mome-edge compile`") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_index(header: bytes, source: str) -> tuple[dict[str, dict[str, Any]], int]:
    """Validate the safetensors header's tensor index; returns it and the data length."""
    # Counted before parsing (an unescaped `"data_offsets"` is a key, never inside a string):
    # a header of a million tiny entries would cost seconds and a gigabyte to parse.
    if header.count(b'"data_offsets"') > MAX_TENSORS:
        raise ArtifactError(f"{source}: its header lists more than {MAX_TENSORS} tensors; the file is corrupt or hostile, re-create it with `mome-edge compile`")
    parsed = _parse_json(header, "header", source)
    if not isinstance(parsed, dict):
        raise ArtifactError(f"{source} is not a mome-edge artifact: its header is not a JSON object; re-create it")
    if len(parsed) > MAX_TENSORS + 1:  # + __metadata__
        raise ArtifactError(f"{source}: its header has {len(parsed)} entries, more than {MAX_TENSORS} tensors; the file is corrupt, re-create it")
    spans = []
    index = {}
    for name, entry in parsed.items():
        if name == "__metadata__":
            continue
        bad = f"{source}: tensor entry {name!r:.80} in the header is malformed; the artifact is corrupt, re-create it"
        if type(entry) is not dict or entry.keys() != _ENTRY_KEYS:
            raise ArtifactError(bad)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        # type(dtype) first: a list or object as dtype is unhashable and must not raise TypeError
        if type(dtype) is not str or dtype not in _ST_DTYPES or not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise ArtifactError(bad)
        begin, end = offsets
        if end < begin or _nbytes(shape, _ITEMSIZE[_ST_DTYPES[dtype]], end - begin) != end - begin:
            raise ArtifactError(
                f"{source}: tensor {name!r:.80} has offsets {offsets} that do not match its shape {shape!r:.80}; the artifact is corrupt"
            )
        spans.append((begin, end, name))
        index[name] = {"dtype": _ST_DTYPES[dtype], "shape": shape}
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise ArtifactError(f"{source}: tensor {name!r:.80} starts at {begin}, expected {position} (gap or overlap); the artifact is corrupt")
        position = end
    metadata = parsed.get("__metadata__")
    return {"tensors": index, "metadata": metadata}, position


def _nbytes(shape: list[int], itemsize: int, limit: int) -> int:
    """prod(shape) * itemsize, or any number > limit once it exceeds `limit`.

    Stops early: a hostile shape of a million huge dimensions must not become a
    multi-megabit integer product (quadratic time) before being compared with the offsets.
    """
    if 0 in shape:
        return 0
    size = itemsize
    for dim in shape:
        size *= dim
        if size > limit:
            return limit + 1
    return size


def _int_list(value: Any) -> bool:
    if type(value) is not list:
        return False
    for v in value:  # a plain loop: headers may hold a million entries
        if type(v) is not int or v < 0:  # type(True) is bool, so booleans are refused
            return False
    return True


def _check_total(size: int, header_len: int, data_len: int, source: str) -> None:
    expected = 8 + header_len + data_len
    if size < expected:
        raise ArtifactError(f"{source} is truncated: {size} bytes, its header describes {expected}; re-create it with `mome-edge compile`")
    if size > expected:
        raise ArtifactError(f"{source} has {size - expected} trailing bytes after its data section; the file is corrupt, re-create it")


def _parse(data: bytes, index: dict[str, Any], header_len: int, source: str) -> LoadedArtifact:
    metadata = index["metadata"]
    if not isinstance(metadata, dict) or set(metadata) != {METADATA_KEY} or not isinstance(metadata[METADATA_KEY], str):
        raise ArtifactError(
            f"{source} is a safetensors file but not a mome-edge artifact (no {METADATA_KEY!r} manifest); "
            "compile a run with `mome-edge compile RUN_DIR -o MODEL.mome`"
        )
    manifest_text = metadata[METADATA_KEY]
    manifest = _parse_json(manifest_text, "manifest", source)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{source} is not a mome-edge artifact (format {found!r}, expected {FORMAT_NAME!r}); compile a run with `mome-edge compile`")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        hint = "upgrade mome-edge to read it" if isinstance(version, int) and version > FORMAT_VERSION else "re-create it with this mome-edge"
        raise ArtifactError(f"{source} has artifact format version {version!r}; this mome-edge reads version {FORMAT_VERSION}: {hint}")
    claimed = manifest.pop("manifest_sha256", None)
    try:
        # Each top-level value encoded once; the texts with and without the checksum key are
        # assembled from the same pieces (exactly what _canonical gives, at half the cost).
        members = {key: _canonical(value) for key, value in manifest.items()}
        canonical = _assemble_object(members)
        stored_form = _assemble_object({**members, "manifest_sha256": _canonical(claimed)})
    except (ValueError, RecursionError) as exc:  # 1e999 parses to inf; JSON nested too deep to re-encode
        raise ArtifactError(f"{source}: manifest is not canonical JSON ({exc}); re-create it with `mome-edge compile`") from None
    if claimed != _sha256_text(canonical):
        raise ArtifactError(f"{source}: manifest checksum mismatch (the file was modified or corrupted); re-create it with `mome-edge compile`")
    manifest["manifest_sha256"] = claimed
    if manifest_text != stored_form:
        # Other spellings of the same values (1.0167299942239983 for ...82, spaces, escapes) hash
        # alike: only the canonical bytes are the checksummed manifest.
        raise ArtifactError(f"{source}: manifest is not in canonical form (the file was modified); re-create it with `mome-edge compile`")
    payload = data[8 + header_len :]
    if manifest.get("payload_sha256") != hashlib.sha256(payload).hexdigest():
        raise ArtifactError(f"{source}: payload checksum mismatch (tensor data was modified or corrupted); re-create it with `mome-edge compile`")
    try:
        return _interpret(data, index["tensors"], manifest, header_len, source)
    except MomeError as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RecursionError) as exc:
        raise ArtifactError(
            f"{source}: manifest is malformed or inconsistent ({type(exc).__name__}: {exc}); re-create it with `mome-edge compile`"
        ) from None


def _interpret(data: bytes, index: dict[str, Any], manifest: dict[str, Any], header_len: int, source: str) -> LoadedArtifact:
    weights = manifest["weights"]
    if weights not in WEIGHT_FORMATS:
        raise ArtifactError(f"{source}: unknown weight precision {weights!r}; re-create the artifact")
    if manifest.get("bit_order") != BIT_ORDER:
        raise ArtifactError(f"{source}: mask bit order {manifest.get('bit_order')!r} is not {BIT_ORDER!r}; re-create the artifact")
    table = manifest["tensors"]
    if not isinstance(table, dict):
        raise ArtifactError(f"{source}: manifest has no tensor table; re-create the artifact")
    # The safetensors index must describe exactly the manifest's tensors.
    _compare_tables({n: {"dtype": e["dtype"], "shape": e["shape"]} for n, e in table.items()}, index, f"{source}: header and manifest disagree")
    spec = FeatureSpec.from_json(manifest["feature_spec"])
    structure = {k: manifest[k] for k in ("kind", "routing", "fixed_expert", "tasks", "feature_spec", "input", "layers", "gates", "ple_levels", "towers")}
    try:
        expected = _expected_tensors(structure, weights, table, spec=spec)
    except ArtifactError as exc:
        raise ArtifactError(f"{source}: {exc}; the artifact is corrupt, re-create it with `mome-edge compile`") from None
    _compare_tables(expected, table, f"{source}: shapes inconsistent with the manifest")
    metadata = manifest.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{source}: manifest metadata is {type(metadata).__name__}, not a JSON object; re-create the artifact")
    # Masks are compressed: bound what they decode to before decoding them (size trusted only once checked).
    decoded = sum((layer["experts"] + 4) * layer["out"] * layer["in"] for layer in structure["layers"] if layer["masks"] is not None)
    if decoded > MASK_DECODE_ALLOWANCE + MASK_EXPANSION_CAP * len(data):
        raise ArtifactError(
            f"{source}: its expert masks would decode to {decoded} bytes, far more than a {len(data)}-byte artifact can hold; "
            "the file is corrupt or hostile, re-create it with `mome-edge compile`"
        )

    try:
        stored = st_load(data)
    except SafetensorError as exc:
        raise ArtifactError(f"{source}: safetensors rejected the file ({exc}); re-create it with `mome-edge compile`") from None
    masks: dict[int, np.ndarray | None] = {}
    for l, layer in enumerate(structure["layers"]):
        if layer["masks"] is None:
            masks[l] = None
            continue
        shape = (layer["out"], layer["in"])
        blob = stored[f"layers.{l}.masks"].tobytes()  # length = sum of the byte counts (checked)
        decoded, previous, offset = [], None, 0
        for e, info in enumerate(layer["masks"]):
            where = f"{source}: layers.{l} expert {e} mask"
            if info["xor_previous"] and e == 0:
                raise ArtifactError(f"{where} is XOR-coded but belongs to the first expert; re-create the artifact")
            mask = decode_mask(
                blob[offset : offset + info["bytes"]], encoding=info["encoding"], shape=shape, previous=previous,
                xor_previous=info["xor_previous"], where=where,
            )
            offset += info["bytes"]
            decoded.append(mask)
            previous = mask
        masks[l] = np.stack(decoded)
    arrays: dict[str, np.ndarray] = {}
    for name, entry in expected.items():
        if entry["component"] == "expert_masks" or name.endswith(".scale") and _is_quant_scale(name, table):
            continue
        value = stored[name]
        if entry["layout"] == "union":
            value = _unpack_union(value, masks[int(name.split(".")[1])], f"{source}: {name}")
        scale = stored[entry["scale"]] if entry["scale"] else None
        arrays[name] = _dequantise(value, scale, entry["axis"])
    model = _build(structure, arrays, masks, spec, metadata)
    _check_index_values(model, source)
    _check_finite(arrays, spec, source)
    for array in stored.values():
        array.setflags(write=False)
    return LoadedArtifact(
        model=model,
        manifest=manifest,
        stored=stored,
        tensor_bytes={name: int(stored[name].nbytes) for name in stored},
        header_bytes=8 + header_len,
        file_bytes=len(data),
    )


def _unpack_union(values: np.ndarray, masks: np.ndarray, where: str) -> np.ndarray:
    """Stored entries at the union of the expert masks -> the dense (out, in) tensor (zeros elsewhere)."""
    union = masks.any(axis=0)  # (out, in)
    if values.shape != (int(union.sum()),):
        raise ArtifactError(
            f"{where} holds {values.size} values but its expert masks use {int(union.sum())} weights; "
            "shapes inconsistent, re-create the artifact"
        )
    dense = np.zeros(union.shape, dtype=values.dtype)
    dense[union] = values
    return dense


def _is_quant_scale(name: str, table: Mapping[str, Any]) -> bool:
    parent = name[: -len(".scale")]
    return parent in table and table[parent].get("scale") == name


def _compare_tables(expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]], context: str) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        raise ArtifactError(
            f"{context}: tensors missing {_short(missing[:5])}, unexpected {_short(extra[:5])}; re-create the artifact with `mome-edge compile`"
        )
    for name, want in expected.items():
        have = actual[name]
        for key in want:
            # Every key must be there: readers (components(), stored_dense) index the entries.
            if not isinstance(have, Mapping) or key not in have or _listify(have[key]) != _listify(want[key]):
                found = have.get(key, "nothing") if isinstance(have, Mapping) else have
                raise ArtifactError(
                    f"{context}: tensor {_short(name)} has {key} {_short(found)}, expected {_short(want[key])}; "
                    "re-create the artifact with `mome-edge compile`"
                )


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: hostile files hold megabyte names and shapes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _pos(value: Any, what: str, *, zero: bool = True) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise ArtifactError(f"shapes inconsistent: {what} is {_short(value)}, expected a {'non-negative' if zero else 'positive'} integer")
    return value


def _expected_tensors(structure: Mapping[str, Any], weights: str, table: Mapping[str, Any], *, spec: FeatureSpec | None = None) -> dict[str, dict[str, Any]]:
    """Every tensor (name -> dtype, shape, component, scale, axis) that `structure` implies.

    Also checks that the structure's shapes chain (layer l's input is layer l-1's output,
    experts and tasks agree, the towers end in one logit): the "consistent with each other"
    half of the read checks. Mask byte lengths come from `table` (they depend on encoding).
    """
    spec = spec or FeatureSpec.from_json(structure["feature_spec"])
    kind, routing = structure["kind"], structure["routing"]
    if kind not in KINDS or routing not in ROUTINGS:
        raise ArtifactError(f"shapes inconsistent: unknown model kind {_short(kind)} or routing {_short(routing)}")
    tasks = len(spec.tasks)
    if list(structure["tasks"]) != list(spec.tasks):
        raise ArtifactError(f"shapes inconsistent: tasks {_short(structure['tasks'])} differ from the feature spec's {_short(list(spec.tasks))}")
    quant = _STORED_FLOAT[weights]
    out: dict[str, dict[str, Any]] = {}

    def add(
        name: str, shape: tuple[int, ...], component: str, *, quantised: bool = False, axis: int = -1, dtype: str = "float32",
        packed: int | None = None,
    ) -> None:
        # `shape` is the logical (dense) shape; a union-layout tensor stores `packed` entries.
        stored_shape, layout = (shape, "dense") if packed is None else ((packed,), "union")
        if quantised and weights != "fp32":
            axis = axis % len(shape)
            if weights == "int8":
                out[name] = _entry("int8", stored_shape, component, scale=f"{name}.scale", axis=axis, layout=layout)
                out[f"{name}.scale"] = _entry("float32", shape[:axis] + shape[axis + 1 :], component)
                return
            dtype = quant
        out[name] = _entry(dtype, stored_shape, component, layout=layout)

    inp = structure["input"]
    field_index = [_pos(f, "field index") for f in inp["field_index"]]
    dims = [_pos(d, "embedding width") for d in inp["embedding_dims"]]
    n_num = _pos(inp["numerical_keep"], "numerical features")
    if len(field_index) != len(dims) or sorted(set(field_index)) != field_index or any(f >= len(spec.categorical) for f in field_index):
        raise ArtifactError(f"shapes inconsistent: field index {_short(field_index)} does not fit {len(spec.categorical)} categorical fields")
    width = _pos(inp["width"], "input width")
    if width != sum(dims) + n_num:
        raise ArtifactError(f"shapes inconsistent: input width {width} != embedding widths {sum(dims)} + numerical {n_num}")
    for j, (f, d) in enumerate(zip(field_index, dims)):
        add(f"embeddings.{j}", (spec.vocab_sizes[f], d), "embeddings", quantised=True, axis=0)
    add("numerical_keep", (n_num,), "indices", dtype="int64")

    def expert_layer(prefix: str, info: Mapping[str, Any], in_width: int, *, dense_only: bool) -> tuple[int, int]:
        experts, n_out, n_in = _pos(info["experts"], "experts", zero=False), _pos(info["out"], "layer width"), _pos(info["in"], "layer input")
        has_index = info["input_index"]
        if not isinstance(has_index, bool) or (not has_index and n_in != in_width):
            raise ArtifactError(f"shapes inconsistent: {prefix} reads {n_in} inputs, the previous stage gives {in_width}")
        shared = info.get("shared_weight", False)
        if shared is not False and (dense_only or shared is not True):
            raise ArtifactError(f"shapes inconsistent: {prefix} shared_weight={_short(shared)}")
        # Shared (MoME) base weights store only the entries some expert uses ("union" layout);
        # their count is checked against the decoded masks once those are read.
        packed = _pos(_table_length(table, f"{prefix}.weight"), f"{prefix}.weight length") if shared else None
        add(f"{prefix}.weight", (n_out, n_in) if shared else (experts, n_out, n_in), "base_weights", quantised=True, packed=packed)
        add(f"{prefix}.scale", (experts, n_out), "expert_affine")
        add(f"{prefix}.shift", (experts, n_out), "expert_affine")
        if has_index:
            add(f"{prefix}.input_index", (n_in,), "indices", dtype="int64")
        masks = info.get("masks")
        if shared:
            if not isinstance(masks, list) or len(masks) != experts:
                raise ArtifactError(f"shapes inconsistent: {prefix} needs {experts} expert masks, the manifest lists {masks!r:.40}")
            total = 0
            for e, entry in enumerate(masks):
                if not isinstance(entry, dict) or set(entry) != {"encoding", "xor_previous", "bytes"} or not isinstance(entry["xor_previous"], bool):
                    raise ArtifactError(f"shapes inconsistent: {prefix} expert {e} mask entry {entry!r:.60} is malformed")
                total += _pos(entry["bytes"], f"{prefix} expert {e} mask length")
            add(f"{prefix}.masks", (total,), "expert_masks", dtype="uint8")
        elif masks is not None:
            raise ArtifactError(f"shapes inconsistent: {prefix} has dense weights but lists masks")
        return experts, n_out

    trunk_width = None
    if kind == "ple":
        levels = structure["ple_levels"]
        if not levels or structure["layers"] or structure["gates"] is not None or routing != "softmax":
            raise ArtifactError("shapes inconsistent: a ple model has PLE levels only (no trunk layers, no top-level gates)")
        branch_width = width
        for i, level in enumerate(levels):
            experts, n_out = expert_layer(f"ple.{i}", level, branch_width, dense_only=True)
            k = _pos(level["task_gate_width"], "task gate width", zero=False)
            add(f"ple.{i}.task_gates.weight", (tasks, k, branch_width), "task_gates", quantised=True)
            add(f"ple.{i}.task_gates.bias", (tasks, k), "task_gates")
            last = i == len(levels) - 1
            if level["shared_gate"] is not (not last):
                raise ArtifactError(f"shapes inconsistent: PLE level {i} {'must not' if last else 'must'} have a shared gate")
            if not last:
                add(f"ple.{i}.shared_gate.weight", (1, experts, branch_width), "task_gates", quantised=True)
                add(f"ple.{i}.shared_gate.bias", (1, experts), "task_gates")
            add(f"ple.{i}.expert_owner", (experts,), "indices", dtype="int64")
            add(f"ple.{i}.task_selection", (tasks, k), "indices", dtype="int64")
            branch_width = n_out
        trunk_width = branch_width
    else:
        layers = structure["layers"]
        if not layers or structure["ple_levels"]:
            raise ArtifactError(f"shapes inconsistent: a {kind} model needs trunk layers and no PLE levels")
        in_width, experts_seen = width, None
        for l, info in enumerate(layers):
            if l > 0 and info["input_index"]:
                raise ArtifactError("shapes inconsistent: only the first layer may select its inputs")
            experts, in_width = expert_layer(f"layers.{l}", info, in_width, dense_only=kind != "mome")
            if kind == "mome" and not info["shared_weight"]:
                raise ArtifactError(f"shapes inconsistent: mome layer {l} must have a shared base weight and masks")
            if experts_seen is not None and experts != experts_seen:
                raise ArtifactError(f"shapes inconsistent: layer {l} has {experts} experts, layer 0 has {experts_seen}")
            experts_seen = experts
        trunk_width = in_width
        gates, fixed = structure["gates"], structure["fixed_expert"]
        if routing == "softmax":
            if gates is None or fixed is not None or gates["experts"] != experts_seen or gates["in"] != width:
                raise ArtifactError(f"shapes inconsistent: softmax routing needs gates over {experts_seen} experts from {width} inputs")
            add("gates.weight", (tasks, experts_seen, width), "task_gates", quantised=True)
            add("gates.bias", (tasks, experts_seen), "task_gates")
        elif gates is not None or not isinstance(fixed, list) or len(fixed) != tasks or not all(
            isinstance(e, int) and not isinstance(e, bool) and 0 <= e < experts_seen for e in fixed
        ):
            raise ArtifactError(f"shapes inconsistent: fixed routing needs one expert index in [0, {experts_seen}) per task")
    towers = structure["towers"]
    in_width = trunk_width
    for i, info in enumerate(towers):
        n_out, n_in = _pos(info["out"], "tower width", zero=False), _pos(info["in"], "tower input")
        if n_in != in_width:
            raise ArtifactError(f"shapes inconsistent: tower layer {i} reads {n_in} inputs, the previous stage gives {in_width}")
        add(f"towers.{i}.weight", (tasks, n_out, n_in), "towers", quantised=True)
        add(f"towers.{i}.bias", (tasks, n_out), "towers")
        in_width = n_out
    if not towers or in_width != 1:
        raise ArtifactError("shapes inconsistent: the towers must end in one logit per task")
    return out


def _table_length(table: Mapping[str, Any], name: str) -> Any:
    """The length a 1-D tensor claims in the manifest (validated by the caller)."""
    entry = table.get(name)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return shape[0] if isinstance(shape, list) and len(shape) == 1 else None


def _build(structure: Mapping[str, Any], arrays: Mapping[str, np.ndarray], masks: Mapping[int, np.ndarray | None], spec: FeatureSpec, metadata: Mapping[str, Any]) -> CompiledModel:
    def expert_layer(prefix: str, mask: np.ndarray | None) -> ExpertLayer:
        return ExpertLayer(
            weight=arrays[f"{prefix}.weight"], masks=mask, scale=arrays[f"{prefix}.scale"], shift=arrays[f"{prefix}.shift"],
            input_index=arrays.get(f"{prefix}.input_index"),
        )

    def linear(prefix: str) -> Linear:
        return Linear(weight=arrays[f"{prefix}.weight"], bias=arrays[f"{prefix}.bias"])

    inp = structure["input"]
    levels = []
    for i, level in enumerate(structure["ple_levels"]):
        levels.append(
            PleLevel(
                experts=expert_layer(f"ple.{i}", None),
                task_gates=linear(f"ple.{i}.task_gates"),
                shared_gate=linear(f"ple.{i}.shared_gate") if level["shared_gate"] else None,
                expert_owner=arrays[f"ple.{i}.expert_owner"],
                task_selection=arrays[f"ple.{i}.task_selection"],
            )
        )
    fixed = structure["fixed_expert"]
    return CompiledModel(
        kind=structure["kind"],
        spec=spec,
        field_index=tuple(int(f) for f in inp["field_index"]),
        embeddings=tuple(arrays[f"embeddings.{j}"] for j in range(len(inp["field_index"]))),
        numerical_keep=arrays["numerical_keep"],
        towers=tuple(linear(f"towers.{i}") for i in range(len(structure["towers"]))),
        layers=tuple(expert_layer(f"layers.{l}", masks.get(l)) for l in range(len(structure["layers"]))),
        routing=structure["routing"],
        gates=linear("gates") if structure["gates"] is not None else None,
        fixed_expert=None if fixed is None else tuple(int(e) for e in fixed),
        ple_levels=tuple(levels),
        metadata=metadata,
    )


def _check_index_values(model: CompiledModel, source: str) -> None:
    """Index tensors must stay in range: the forward pass gathers with them."""
    def check(values: np.ndarray, upper: int, what: str) -> None:
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise ArtifactError(f"{source}: {what} holds values outside [0, {upper}); the artifact is corrupt, re-create it")

    check(model.numerical_keep, len(model.spec.numerical), "numerical_keep")
    width = sum(t.shape[1] for t in model.embeddings) + len(model.numerical_keep)
    for l, layer in enumerate(model.layers):
        if layer.input_index is not None:
            check(layer.input_index, width, f"layers.{l}.input_index")
    tasks = len(model.tasks)
    for i, level in enumerate(model.ple_levels):
        if level.experts.input_index is not None:
            check(level.experts.input_index, width if i == 0 else model.ple_levels[i - 1].experts.scale.shape[1], f"ple.{i}.input_index")
        check(level.expert_owner, tasks + 1, f"ple.{i}.expert_owner")
        check(level.task_selection, level.experts.experts, f"ple.{i}.task_selection")


def _check_finite(arrays: Mapping[str, np.ndarray], spec: FeatureSpec, source: str) -> None:
    """Every float tensor and every numerical statistic must be finite: NaN or inf is corruption."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ArtifactError(f"{source}: {name} holds NaN or infinite values; the artifact is corrupt (or its model diverged), re-create it")
    for scaler in spec.numerical:
        if not (math.isfinite(scaler.mean) and math.isfinite(scaler.std)):
            raise ArtifactError(f"{source}: numerical feature {scaler.name!r} has a non-finite mean or std; re-create the artifact")


def check_compiled_model(model: CompiledModel) -> None:
    """Raise ArtifactError unless `model`'s shapes chain and its indices are in range.

    The same checks a reader applies, for models built in memory (compilers, tests), so that
    a model that would not read back is never written.
    """
    for l, layer in enumerate(model.layers):
        masks = layer.masks
        if masks is not None and (masks.dtype != bool or masks.shape != (layer.experts, *layer.weight.shape)):
            raise ArtifactError(f"inconsistent compiled model: layers.{l}.masks must be bool (E, out, in) matching its weight")
    table = {n: entry for name, t in _flatten(model).items() for n, _, entry in _store(name, t, "fp32")}
    table.update(_mask_table(model))
    try:
        expected = _expected_tensors(_structure_with_masks(model), "fp32", table)
    except ArtifactError as exc:
        raise ArtifactError(f"inconsistent compiled model, not written: {exc}") from None
    _compare_tables(expected, table, "inconsistent compiled model")
    _check_index_values(model, "compiled model")
    _check_finite({name: t.array for name, t in _flatten(model).items()}, model.spec, "compiled model")


def _structure_with_masks(model: CompiledModel) -> dict[str, Any]:
    structure = _structure(model)
    for l, layer in enumerate(model.layers):
        if layer.masks is not None:
            n_bytes = (int(layer.weight.size) + 7) // 8
            structure["layers"][l]["masks"] = [{"encoding": "raw", "xor_previous": False, "bytes": n_bytes}] * layer.experts
    return structure


def _mask_table(model: CompiledModel) -> dict[str, dict[str, Any]]:
    table = {}
    for l, layer in enumerate(model.layers):
        if layer.masks is not None:
            n_bytes = (int(layer.weight.size) + 7) // 8
            table[f"layers.{l}.masks"] = _entry("uint8", (layer.experts * n_bytes,), "expert_masks")
    return table
