"""A SHA-256 of an exported .onnx file, stored inside the file, checked without parsing protobuf.

The ONNX format has no checksum: a flipped bit in a weight or a mask loads and predicts
wrong numbers silently. So the exporter writes ``metadata_props["mome.sha256"]`` = 64 ASCII
zeros, serialises the model, hashes those bytes and writes the hex digest over the zeros
(same length: no protobuf length changes). A reader finds that entry by its exact protobuf
encoding, puts the zeros back and hashes again. Only a SHA-256 is needed (mome_edge.sha256), so the on-device
runtime still imports no onnx package.

ORT-format files (.ort) are rewritten by ONNX Runtime from a checked .onnx file and carry no
checksum of their own.
"""

from __future__ import annotations

from mome_edge.onnx_contract import META_SHA256
from mome_edge.sha256 import sha256

UNSIGNED = b"0" * 64
SIGNED_SINCE_FORMAT = 2  # the mome-edge ONNX format version that introduced the checksum
# the protobuf encoding of StringStringEntryProto(key="mome.sha256", value=<64 bytes>) up to the
# value: field 1 (key) tag + length + key, field 2 (value) tag + length 64
_ENTRY = b"\x0a" + bytes([len(META_SHA256)]) + META_SHA256.encode("ascii") + b"\x12\x40"
_ORT_FORMAT_ID = b"ORTM"  # flatbuffer file identifier of ORT-format models, at bytes 4..8


def _sha256_hex(data: bytes, start: int) -> bytes:
    """SHA-256 (hex, ASCII) of `data` with the 64 bytes at `start` read as zeros; no copy of `data`."""
    view = memoryview(data)
    digest = sha256(len(view))
    digest.update(view[:start])
    digest.update(UNSIGNED)
    digest.update(view[start + len(UNSIGNED):])
    return digest.hexdigest().encode("ascii")


def is_ort_format(data: bytes) -> bool:
    return data[4:8] == _ORT_FORMAT_ID


def checksum_offset(data: bytes) -> int | None:
    """Where the 64 hex digits of the checksum start in `data` (None without the entry)."""
    at = data.rfind(_ENTRY)
    return None if at < 0 else at + len(_ENTRY)


def sign_onnx_bytes(data: bytes) -> bytes:
    """`data` (a serialised model with the unsigned checksum entry) with its digest filled in."""
    start = checksum_offset(data)
    if start is None or data[start:start + len(UNSIGNED)] != UNSIGNED:
        raise ValueError(f"the serialised model has no unsigned {META_SHA256} entry to sign")
    return data[:start] + _sha256_hex(data, start) + data[start + len(UNSIGNED):]


def checksum_problem(data: bytes) -> str | None:
    """None when `data` is an intact signed export; otherwise what is wrong, in a few words."""
    start = checksum_offset(data)
    if start is None:
        return (
            f"it is not a mome-edge ONNX export of format {SIGNED_SINCE_FORMAT}: it has no {META_SHA256} checksum "
            "(another tool's model, an older export, or a damaged or truncated copy)"
        )
    stored = data[start:start + len(UNSIGNED)]
    if len(stored) < len(UNSIGNED):
        return "it is truncated"
    if stored == UNSIGNED:
        return "its checksum was never filled in (serialised with SerializeToString instead of onnx_bytes / save_onnx)"
    if _sha256_hex(data, start) != stored:
        return "its SHA-256 does not match the one stored at export (the file changed: damaged or edited)"
    return None
