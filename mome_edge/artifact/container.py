"""The safetensors container, read defensively: the length prefix, the header index and
the sizes are checked before anything is trusted, and every problem is one ArtifactError line.
"""

from __future__ import annotations

import functools
import json
import struct
from typing import Any

from mome_edge.artifact.format import ENTRY_KEYS, HEADER_CAP, ITEMSIZE, MAX_TENSORS, MESSAGE_LIMIT, ST_DTYPES
from mome_edge.errors import ArtifactError

def bounded_messages(read):
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


def check_prefix(prefix: bytes, size: int, source: str) -> int:
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


def parse_json(text: bytes | str, what: str, source: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # safetensors headers are UTF-8; json.loads would guess
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{source} is not a mome-edge artifact: its {what} is not valid JSON ({exc}); re-create it with `mome-edge compile`") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_index(header: bytes, source: str) -> tuple[dict[str, dict[str, Any]], int]:
    """Validate the safetensors header's tensor index; returns it and the data length."""
    # Counted before parsing (an unescaped `"data_offsets"` is a key, never inside a string):
    # a header of a million tiny entries would cost seconds and a gigabyte to parse.
    if header.count(b'"data_offsets"') > MAX_TENSORS:
        raise ArtifactError(f"{source}: its header lists more than {MAX_TENSORS} tensors; the file is corrupt or hostile, re-create it with `mome-edge compile`")
    parsed = parse_json(header, "header", source)
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
        if type(entry) is not dict or entry.keys() != ENTRY_KEYS:
            raise ArtifactError(bad)
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        # type(dtype) first: a list or object as dtype is unhashable and must not raise TypeError
        if type(dtype) is not str or dtype not in ST_DTYPES or not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise ArtifactError(bad)
        begin, end = offsets
        if end < begin or _nbytes(shape, ITEMSIZE[ST_DTYPES[dtype]], end - begin) != end - begin:
            raise ArtifactError(
                f"{source}: tensor {name!r:.80} has offsets {offsets} that do not match its shape {shape!r:.80}; the artifact is corrupt"
            )
        spans.append((begin, end, name))
        index[name] = {"dtype": ST_DTYPES[dtype], "shape": shape}
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


def check_total(size: int, header_len: int, data_len: int, source: str) -> None:
    expected = 8 + header_len + data_len
    if size < expected:
        raise ArtifactError(f"{source} is truncated: {size} bytes, its header describes {expected}; re-create it with `mome-edge compile`")
    if size > expected:
        raise ArtifactError(f"{source} has {size - expected} trailing bytes after its data section; the file is corrupt, re-create it")
