"""Reading `.mome` files: every size and checksum verified before anything is trusted.

    read_artifact(path) -> LoadedArtifact         .model (float32 CompiledModel), .manifest, .stored
    parse_artifact(data) -> LoadedArtifact        the same for bytes in memory

No torch on this path: numpy, bitarray and safetensors only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from mome_edge.artifact.canonical import assemble_object, canonical_json, sha256_text
from mome_edge.artifact.compiled import CompiledModel
from mome_edge.artifact.container import bounded_messages, check_prefix, check_total, parse_index, parse_json
from mome_edge.artifact.format import (
    COMPONENTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    MASK_DECODE_ALLOWANCE,
    MASK_EXPANSION_CAP,
    METADATA_KEY,
    WEIGHT_FORMATS,
)
from mome_edge.artifact.masks import BIT_ORDER, decode_mask
from mome_edge.artifact.quantise import dequantise
from mome_edge.artifact.schema import (
    build_model,
    check_finite,
    check_index_values,
    compare_tables,
    expected_tensors,
    is_quant_scale,
    unpack_union,
)
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError, MomeError
from mome_edge.onnx_contract import ONNX_SUFFIXES
from mome_edge.sha256 import sha256_hex

if TYPE_CHECKING:
    from pathlib import Path  # not at run time: pathlib costs ~5 ms of a device's cold start

@dataclass(frozen=True, kw_only=True, eq=False)  # array fields: == is identity (an elementwise __eq__ could only raise)
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
        return unpack_union(value, self.model.layers[int(name.split(".")[1])].masks, name)

    def components(self) -> dict[str, int]:
        """Bytes per component (COMPONENTS); the values add up to `file_bytes` exactly."""
        out = {name: 0 for name in COMPONENTS}
        for name, size in self.tensor_bytes.items():
            out[self.manifest["tensors"][name]["component"]] += size
        out["manifest"] = self.header_bytes
        return out


@bounded_messages
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
    source = os.fspath(path)
    suffix = os.path.splitext(source)[1]
    if suffix.lower() in ONNX_SUFFIXES:
        # An ONNX protobuf or ORT flatbuffer read as safetensors would "claim" an absurd header size.
        raise ArtifactError(
            f"{source} is an ONNX model ({suffix}), not a .mome artifact; this reads .mome files written by "
            "`mome-edge compile` (inspect the .mome it was exported from; run the ONNX file with `mome-edge predict` or `bench`)"
        )
    try:
        with open(source, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            header_len = check_prefix(prefix, size, source)
            header = handle.read(header_len)
            index, data_len = parse_index(header, source)
            check_total(size, header_len, data_len, source)
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


@bounded_messages
def parse_artifact(data: bytes, *, source: str = "artifact") -> LoadedArtifact:
    """`read_artifact` for bytes already in memory (same checks, same errors)."""
    data = bytes(data)
    header_len = check_prefix(data[:8], len(data), source)
    index, data_len = parse_index(data[8 : 8 + header_len], source)
    check_total(len(data), header_len, data_len, source)
    return _parse(data, index, header_len, source)


def _parse(data: bytes, index: dict[str, Any], header_len: int, source: str) -> LoadedArtifact:
    metadata = index["metadata"]
    if not isinstance(metadata, dict) or set(metadata) != {METADATA_KEY} or not isinstance(metadata[METADATA_KEY], str):
        raise ArtifactError(
            f"{source} is a safetensors file but not a mome-edge artifact (no {METADATA_KEY!r} manifest); "
            "compile a run with `mome-edge compile RUN_DIR -o MODEL.mome`"
        )
    manifest_text = metadata[METADATA_KEY]
    manifest = parse_json(manifest_text, "manifest", source)
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
        # assembled from the same pieces (exactly what canonical_json gives, at half the cost).
        members = {key: canonical_json(value) for key, value in manifest.items()}
        canonical = assemble_object(members)
        stored_form = assemble_object({**members, "manifest_sha256": canonical_json(claimed)})
    except (ValueError, RecursionError) as exc:  # 1e999 parses to inf; JSON nested too deep to re-encode
        raise ArtifactError(f"{source}: manifest is not canonical JSON ({exc}); re-create it with `mome-edge compile`") from None
    if claimed != sha256_text(canonical):
        raise ArtifactError(f"{source}: manifest checksum mismatch (the file was modified or corrupted); re-create it with `mome-edge compile`")
    manifest["manifest_sha256"] = claimed
    if manifest_text != stored_form:
        # Other spellings of the same values (1.0167299942239983 for ...82, spaces, escapes) hash
        # alike: only the canonical bytes are the checksummed manifest.
        raise ArtifactError(f"{source}: manifest is not in canonical form (the file was modified); re-create it with `mome-edge compile`")
    payload = data[8 + header_len :]
    if manifest.get("payload_sha256") != sha256_hex(payload):
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
    compare_tables({n: {"dtype": e["dtype"], "shape": e["shape"]} for n, e in table.items()}, index, f"{source}: header and manifest disagree")
    spec = FeatureSpec.from_json(manifest["feature_spec"])
    structure = {k: manifest[k] for k in ("kind", "routing", "fixed_expert", "tasks", "feature_spec", "input", "layers", "gates", "ple_levels", "towers")}
    try:
        expected = expected_tensors(structure, weights, table, spec=spec)
    except ArtifactError as exc:
        raise ArtifactError(f"{source}: {exc}; the artifact is corrupt, re-create it with `mome-edge compile`") from None
    compare_tables(expected, table, f"{source}: shapes inconsistent with the manifest")
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
        if entry["component"] == "expert_masks" or name.endswith(".scale") and is_quant_scale(name, table):
            continue
        value = stored[name]
        if entry["layout"] == "union":
            value = unpack_union(value, masks[int(name.split(".")[1])], f"{source}: {name}")
        scale = stored[entry["scale"]] if entry["scale"] else None
        arrays[name] = dequantise(value, scale, entry["axis"])
    model = build_model(structure, arrays, masks, spec, metadata)
    check_index_values(model, source)
    check_finite(arrays, spec, source)
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
