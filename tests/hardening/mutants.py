"""Seeded mutants of valid `.mome` artifacts, and the property every mutant must satisfy.

Shared by the corruption suite (tests/hardening/test_corrupt_artifacts.py), the benchmark
(benchmarks/corruption.py, which puts this folder on sys.path) and the fuzz target (fuzz/).

    base = ArtifactParts.parse(valid_bytes)
    for mutant in random_mutants(base, random.Random(seed), count=500): ...
    for mutant in boundary_mutants(base): ...            # deterministic: every field boundary
    outcome = check_mutant(mutant.data)                   # raises MutantFailure on a violation

A loaded mutant whose re-signed weights are finite but extreme may overflow float32 on some
rows: the reference then raises a DataError saying so (status "overflow"), never NaN.

Two families:
- raw mutants damage the bytes as a disk, a network or a careless tool would (bit flips,
  truncation, header-length values, trailing bytes, non-UTF-8): the checksums catch most;
- structural mutants edit the safetensors index, the manifest or the tensors and then
  *re-sign* the file (`resign`: payload_sha256 and manifest_sha256 recomputed exactly as
  docs/artifact-format.md section 2 defines them), so that they get past the checksums and
  exercise the deeper validators (offsets, shapes, bitsets, index ranges, value checks).

The property (`check_mutant`): `parse_artifact` raises ArtifactError, or it loads and the
numpy reference predicts finite probabilities in [0, 1] for valid and hostile ids alike
(and `describe_artifact`, the `inspect` path, works on it); no other exception. Time and
peak traced memory are measured per load and returned for the caller to bound.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

METADATA_KEY = "mome_edge_artifact"  # docs/artifact-format.md section 1 (spelled out, not imported)
ST_DTYPES = ("F32", "F16", "I8", "U8", "I64")
ITEMSIZE = {"F32": 4, "F16": 2, "I8": 1, "U8": 1, "I64": 8}
U64_MAX = 2**64 - 1
_ST_CODE = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int64": "I64"}  # manifest dtype -> header tag
HEADER_LENGTHS = (0, 7, 2**63, U64_MAX)  # the values the issue names; more are added per file
RUNTIME_ATOL = 1e-5  # runtime numpy engine vs reference_forward (tests/runtime/test_predictor.py)
SANE_MAGNITUDE = 1e6  # |parameter| below which no float32 overflow can make the two disagree
MESSAGE_MAX_CHARS = 600  # an error is one readable line, whatever the file holds (artifact.MESSAGE_LIMIT)
WIDE = 1_000_000  # "10^6-entry JSON"
DEEP = (64, 512, 900, 990, 1_000, 5_000, 100_000)  # nesting depths around the recursion limit


@dataclass(frozen=True)
class Mutant:
    """One corrupted file: its mutation class, a description to reproduce it, and the bytes."""

    cls: str
    detail: str
    data: bytes


# A loaded model whose (re-signed, extreme) weights overflow float32 on some rows: the numpy
# reference raises this DataError instead of returning NaN. Only value mutants may do that.
OVERFLOW_MESSAGE = "the model's outputs are not finite"  # mome_edge.runtime.inputs.OVERFLOW_MESSAGE
OVERFLOW_CLASSES = ("value-flip", "value-set")


@dataclass(frozen=True)
class Outcome:
    status: str  # "rejected" (ArtifactError), "loaded" (finite probabilities) or "overflow" (see OVERFLOW_MESSAGE)
    seconds: float  # parse_artifact wall time
    peak_bytes: int  # tracemalloc peak during parse_artifact (0 when not traced)
    message: str = ""


class MutantFailure(AssertionError):
    """A mutant broke the property (wrong exception type, bad message, non-finite output)."""


# ===== the file, taken apart and put back together ===========================================
def canonical(obj: Any) -> str:
    """The manifest's canonical JSON (docs section 2): sorted keys, `,` `:`, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class ArtifactParts:
    """A valid artifact split into the pieces mutants edit (never mutated in place)."""

    data: bytes
    header_len: int
    entries: dict[str, dict[str, Any]]  # safetensors index: name -> dtype, shape, data_offsets
    manifest_text: str
    payload: bytes

    @classmethod
    def parse(cls, data: bytes) -> "ArtifactParts":
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        manifest_text = header.pop("__metadata__")[METADATA_KEY]
        return cls(data=data, header_len=n, entries=header, manifest_text=manifest_text, payload=data[8 + n :])

    def manifest(self) -> dict[str, Any]:
        """A fresh, mutable copy of the manifest."""
        return json.loads(self.manifest_text)

    def tensors(self) -> dict[str, bytearray]:
        """name -> a mutable copy of the tensor's bytes."""
        return {name: bytearray(self.payload[e["data_offsets"][0] : e["data_offsets"][1]]) for name, e in self.entries.items()}

    def spans(self) -> list[tuple[str, int, int]]:
        """(name, begin, end) in the data section, in file order."""
        return sorted(((n, *e["data_offsets"]) for n, e in self.entries.items()), key=lambda s: (s[1], s[2]))

    def boundaries(self) -> list[int]:
        """Every field boundary as a file offset: inside and after the 8-byte length, the end of
        the JSON header, and each tensor's start and end."""
        start = 8 + self.header_len
        points = {*range(0, 9), start, len(self.data)}
        for _, begin, end in self.spans():
            points.update((start + begin, start + end))
        return sorted(points)


def resign(
    manifest: dict[str, Any] | str,
    tensors: dict[str, bytes | bytearray],
    *,
    entries: dict[str, dict[str, Any]] | None = None,
    payload: bytes | None = None,
    sign_payload: bool = True,
    sign_manifest: bool = True,
) -> bytes:
    """A complete artifact file with consistent checksums (docs sections 1-2).

    Args:
        manifest: the manifest dict (its `manifest_sha256` is replaced), or canonical text
            that already carries the hostile content (see `resign_text`).
        tensors: name -> bytes; laid out back to back in the given order unless `entries`
            and `payload` are given.
        entries: a hand-made safetensors index (hostile offsets/shapes/dtypes); the
            default derives it from `tensors` and the manifest's tensor table.
        payload: the data section to use with `entries`.
        sign_payload / sign_manifest: recompute that checksum (False keeps the old one).
    Returns:
        The file's bytes: 8-byte length, JSON header padded with spaces to 8, data section.
    """
    if payload is None:
        payload = b"".join(bytes(t) for t in tensors.values())
    if isinstance(manifest, str):
        text = manifest
    else:
        manifest = dict(manifest)
        if sign_payload:
            manifest["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        if sign_manifest:
            manifest.pop("manifest_sha256", None)
            manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest).encode("ascii")).hexdigest()
        text = canonical(manifest)
    if entries is None:
        entries, offset = {}, 0
        table = manifest.get("tensors", {}) if isinstance(manifest, dict) else {}
        for name, blob in tensors.items():
            info = table.get(name, {}) if isinstance(table, dict) else {}
            dtype = _ST_CODE.get(info.get("dtype"), "U8") if isinstance(info, dict) and isinstance(info.get("dtype"), str) else "U8"
            shape = info.get("shape") if isinstance(info, dict) and isinstance(info.get("shape"), list) else [len(blob)]
            entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
            offset += len(blob)
    return pack_header({"__metadata__": {METADATA_KEY: text}, **entries}) + payload


def resign_text(manifest: dict[str, Any], placeholder: str, raw: str) -> str:
    """Canonical manifest text with the string `placeholder` replaced by raw JSON text `raw`
    (deep nesting, 10^6 entries, 1e999...), carrying the checksum of exactly that text.

    `manifest` holds `placeholder` once, as a string value; `payload_sha256` must be set.
    """
    body = dict(manifest)
    body.pop("manifest_sha256", None)
    token = json.dumps(placeholder)
    text = canonical(body).replace(token, raw)
    body["manifest_sha256"] = hashlib.sha256(text.encode("ascii", "backslashreplace")).hexdigest()
    return canonical(body).replace(token, raw)


def pack_header(header: dict[str, Any] | str | bytes, *, length: int | None = None) -> bytes:
    """8-byte little-endian length + the JSON header padded with spaces to a multiple of 8."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8", "surrogatepass")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header) if length is None else length) + header


# ===== raw mutants: bytes damaged without re-signing ==========================================
def boundary_mutants(parts: ArtifactParts) -> Iterator[Mutant]:
    """Deterministic: truncation at (and one byte either side of) every field boundary, the
    header length set to 0, 7, 2^63, 2^64-1 and its neighbours, trailing bytes."""
    data = parts.data
    for point in parts.boundaries():
        for cut in {point - 1, point, point + 1}:
            if 0 <= cut < len(data):
                yield Mutant("truncate", f"truncate at byte {cut} (boundary {point})", data[:cut])
    n = parts.header_len
    for value in (*HEADER_LENGTHS, 1, 8, n - 8, n - 1, n + 1, n + 8, len(data) - 8, len(data), 2**26, 2**26 + 1, 2**32, 2**62):
        if value != n and 0 <= value <= U64_MAX:
            yield Mutant("header-length", f"header length = {value}", struct.pack("<Q", value) + data[8:])
    for extra in (b"\x00", b" ", b"\x00" * 7, b"\x00" * 8, data[:8], data):
        yield Mutant("trailing", f"{len(extra)} trailing bytes", data + extra)


def _bit_flip(parts: ArtifactParts, rng: random.Random) -> Mutant:
    data = bytearray(parts.data)
    flips = [rng.randrange(len(data) * 8) for _ in range(rng.choice((1, 1, 2, 3, 8)))]
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    return Mutant("bit-flip", f"flip bits {flips}", bytes(data))


def _bit_flip_header(parts: ArtifactParts, rng: random.Random) -> Mutant:
    data = bytearray(parts.data)
    flips = [rng.randrange((8 + parts.header_len) * 8) for _ in range(rng.choice((1, 1, 2, 4)))]
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    return Mutant("bit-flip-header", f"flip header bits {flips}", bytes(data))


_SPECIAL_BYTES = b'\x00\xff\x80"{}[]\\:,0-9 \n'


def _byte_set(parts: ArtifactParts, rng: random.Random) -> Mutant:
    data = bytearray(parts.data)
    at = rng.randrange(8 + parts.header_len)
    value = rng.choice(_SPECIAL_BYTES)
    data[at] = value
    return Mutant("byte-set", f"byte {at} = {value:#04x}", bytes(data))


def _truncate(parts: ArtifactParts, rng: random.Random) -> Mutant:
    cut = rng.randrange(len(parts.data))
    return Mutant("truncate", f"truncate at byte {cut}", parts.data[:cut])


def _splice(parts: ArtifactParts, rng: random.Random) -> Mutant:
    data = bytearray(parts.data)
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        run = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        data[at:at] = run
        return Mutant("splice", f"insert {run!r} at {at}", bytes(data))
    count = rng.randint(1, 16)
    del data[at : at + count]
    return Mutant("splice", f"delete {count} bytes at {at}", bytes(data))


def _trailing(parts: ArtifactParts, rng: random.Random) -> Mutant:
    extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    return Mutant("trailing", f"{len(extra)} random trailing bytes", parts.data + extra)


def _header_length(parts: ArtifactParts, rng: random.Random) -> Mutant:
    value = rng.choice((*HEADER_LENGTHS, rng.randrange(2**64), rng.randrange(len(parts.data) + 64), parts.header_len + rng.randint(-64, 64)))
    value = min(max(value, 0), U64_MAX)
    if value == parts.header_len:  # never the unchanged file
        value += 1
    return Mutant("header-length", f"header length = {value}", struct.pack("<Q", value) + parts.data[8:])


_BAD_UTF8 = (b"\xff", b"\x80", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xfe\xfe")


def _non_utf8(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Invalid UTF-8 bytes inside a JSON string of the header (a tensor name or the manifest)."""
    data = bytearray(parts.data)
    header = data[8 : 8 + parts.header_len]
    quotes = [i for i, b in enumerate(header) if b == ord('"')]
    at = 8 + rng.choice(quotes) + 1
    bad = rng.choice(_BAD_UTF8)
    data[at : at + len(bad)] = bad  # same length: the header length stays right
    return Mutant("non-utf8", f"{bad!r} at byte {at}", bytes(data))


# ===== structural mutants: edited, then re-signed ==============================================
def _json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _json_paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:12]):  # long vocabularies: a few entries suffice
            out += _json_paths(value, (*prefix, i))
    return out


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _hostile_values(rng: random.Random, current: Any) -> list[Any]:
    values: list[Any] = [
        None, True, False, 0, -1, 1, 2, 3, 7, 255, 2**31, 2**32, 2**53 + 1, 2**63, U64_MAX, 2**64, 10**100, -(2**63),
        0.5, -0.0, 1e308, "", "x", "raw", "sc", "zlib", "mome", "mmoe", "ple", "fixed", "softmax", "int8", "fp16",
        [], {}, [0], [-1], [2**63], [[]], {"": None}, "\u0000", "\ud800", "\U0010ffff" * 3,
    ]
    if isinstance(current, bool):
        values += [not current]
    elif isinstance(current, int):
        values += [current + rng.choice((-2, -1, 1, 2, 8)), current * 2, current * 1000, -current]
    elif isinstance(current, float):
        values += [current * 1e30, -current, 0.0]
    elif isinstance(current, list):
        values += [current[:-1], current + current[-1:] if current else [0], current[::-1], current * 2]
    elif isinstance(current, str):
        values += [current.upper(), current + "x", current[:-1]]
    return values


def _manifest_value(parts: ArtifactParts, rng: random.Random) -> Mutant:
    manifest = parts.manifest()
    top = rng.choice([k for k in manifest if k not in ("manifest_sha256", "payload_sha256")])
    path = rng.choice(_json_paths(manifest[top], (top,)))
    value = rng.choice(_hostile_values(rng, _get(manifest, path)))
    parent = _get(manifest, path[:-1])
    parent[path[-1]] = value
    return Mutant("manifest-value", f"manifest{list(path)} = {value!r:.60}", resign(manifest, parts.tensors()))


def _manifest_drop(parts: ArtifactParts, rng: random.Random) -> Mutant:
    manifest = parts.manifest()
    paths = [p for p in _json_paths(manifest) if p and p[0] != "manifest_sha256"]
    path = rng.choice(paths)
    del _get(manifest, path[:-1])[path[-1]]
    return Mutant("manifest-drop", f"delete manifest{list(path)}", resign(manifest, parts.tensors()))


def _manifest_numbers(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Numbers JSON allows but Python turns into trouble: 1e999 (inf), 5000-digit integers, -0."""
    manifest = parts.manifest()
    top = rng.choice(["layers", "towers", "input", "gates", "metadata", "feature_spec", "tensors"])
    paths = [p for p in _json_paths(manifest[top], (top,)) if isinstance(_get(manifest, p), (int, float)) and not isinstance(_get(manifest, p), bool)]
    if not paths:
        paths = [(top,)]
    path = rng.choice(paths)
    raw = rng.choice(("1e999", "-1e999", "9" * 5_000, "-0", "1.0", "1E2", "0.0000001e-400", "123456789012345678901234567890"))
    _get(manifest, path[:-1])[path[-1]] = "@@NUMBER@@"
    manifest["payload_sha256"] = hashlib.sha256(parts.payload).hexdigest()
    return Mutant("json-numbers", f"manifest{list(path)} = {raw[:20]}", resign(resign_text(manifest, "@@NUMBER@@", raw), {}, entries=parts.entries, payload=parts.payload))


def _offsets(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Overlapping, gapped, reversed, out-of-range, huge and ill-typed data_offsets (manifest re-signed)."""
    entries = json.loads(json.dumps(parts.entries))
    spans = parts.spans()
    name, begin, end = rng.choice(spans)
    size = end - begin
    choices = {
        "overlap-previous": [max(begin - rng.randint(1, 8), 0), end],
        "shift-back": [max(begin - 1, 0), max(end - 1, 0)],
        "shift-forward": [begin + 1, end + 1],
        "reversed": [end, begin],
        "past-end": [begin, len(parts.payload) + rng.randint(1, 64)],
        "beyond": [len(parts.payload) + 8, len(parts.payload) + 8 + size],
        "huge": [2**63, 2**63 + size],
        "u64": [U64_MAX - size, U64_MAX],
        "over-u64": [2**64, 2**64 + size],
        "negative": [-size, 0],
        "float": [float(begin), float(end)],
        "string": [str(begin), str(end)],
        "bool": [False, True],
        "three": [begin, end, end],
        "one": [end],
        "null": None,
        "same-as-other": list(entries[rng.choice(spans)[0]]["data_offsets"]),
    }
    how = rng.choice(sorted(choices))
    entries[name]["data_offsets"] = choices[how]
    manifest = parts.manifest()
    return Mutant("offsets", f"{name} data_offsets {how} = {choices[how]}", resign(manifest, {}, entries=entries, payload=parts.payload))


def _dtype(parts: ArtifactParts, rng: random.Random) -> Mutant:
    entries = json.loads(json.dumps(parts.entries))
    name = rng.choice(sorted(entries))
    value = rng.choice((*ST_DTYPES, "F64", "BF16", "U64", "BOOL", "f32", "", 5, None, ["F32"], {"F32": 1}))
    entries[name]["dtype"] = value
    keep_offsets = rng.random() < 0.5
    if not keep_offsets and isinstance(value, str) and value in ITEMSIZE:  # also resize the shape so that the offsets match
        old = ITEMSIZE[parts.entries[name]["dtype"]]
        nbytes = int(np.prod(entries[name]["shape"], dtype=object)) * old
        if nbytes % ITEMSIZE[value] == 0:
            entries[name]["shape"] = [nbytes // ITEMSIZE[value]]
    return Mutant("dtype", f"{name} dtype = {value!r}", resign(parts.manifest(), {}, entries=entries, payload=parts.payload))


_HUGE_SHAPES = (
    [2**31], [2**32, 2**32], [2**63], [U64_MAX], [2**64], [10**100], [-1], [], [0], [1, 0], [0, 2**63], [2**63, 0],
    [2**62, 2**62, 2**62, 0], [1] * 10_000, [2**63] * 1_000, [3, -3], [1.0], ["4"], [True], None, {}, "4",
)


def _shape(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Huge, empty, negative and ill-typed shapes, in the header and/or the manifest table."""
    entries = json.loads(json.dumps(parts.entries))
    manifest = parts.manifest()
    name = rng.choice(sorted(entries))
    shape = rng.choice(_HUGE_SHAPES + ([*entries[name]["shape"], 1], [1, *entries[name]["shape"]], entries[name]["shape"][::-1]))
    where = rng.choice(("header", "manifest", "both"))
    if where in ("header", "both"):
        entries[name]["shape"] = shape
    if where in ("manifest", "both"):
        manifest["tensors"][name]["shape"] = shape
    return Mutant("shape", f"{name} shape = {shape!r:.50} in {where}", resign(manifest, {}, entries=entries, payload=parts.payload))


def _layout(manifest: dict[str, Any], tensors: dict[str, bytearray]) -> dict[str, dict[str, Any]]:
    """A consistent safetensors index for `tensors` (back to back, manifest dtypes/shapes)."""
    code = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int64": "I64"}
    entries, offset = {}, 0
    for name, blob in tensors.items():
        info = manifest["tensors"][name]
        entries[name] = {"dtype": code[info["dtype"]], "shape": info["shape"], "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    return entries


def _mask_layers(manifest: dict[str, Any]) -> list[int]:
    return [l for l, layer in enumerate(manifest.get("layers") or []) if layer.get("masks")]


def _random_mask(manifest: dict[str, Any], rng: random.Random) -> tuple[int, int] | None:
    """(layer, expert) of a random stored expert mask, or None for a model without masks."""
    layers = _mask_layers(manifest)
    if not layers:
        return None
    l = rng.choice(layers)
    return l, rng.randrange(len(manifest["layers"][l]["masks"]))


def _mask_length(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Wrong bitset lengths: one expert's stored bytes grow or shrink, with the manifest's byte
    count, the tensor table and the header all updated consistently (re-signed)."""
    manifest, tensors = parts.manifest(), parts.tensors()
    picked = _random_mask(manifest, rng)
    if picked is None:
        return _value_flip(parts, rng)
    l, e = picked
    entries = manifest["layers"][l]["masks"]
    start = sum(m["bytes"] for m in entries[:e])
    blob = tensors[f"layers.{l}.masks"]
    delta = rng.choice((-8, -2, -1, 1, 2, 8, 64))
    if delta > 0:
        blob[start + entries[e]["bytes"] : start + entries[e]["bytes"]] = bytes(rng.randrange(256) if rng.random() < 0.5 else 0 for _ in range(delta))
    else:
        delta = max(delta, -entries[e]["bytes"])
        del blob[start + entries[e]["bytes"] + delta : start + entries[e]["bytes"]]
    entries[e]["bytes"] += delta
    manifest["tensors"][f"layers.{l}.masks"]["shape"] = [len(blob)]
    if rng.random() < 0.2:  # the byte count lies: the tensor changed, the manifest did not say so
        entries[e]["bytes"] -= delta
    return Mutant("mask-length", f"layers.{l} expert {e} mask {delta:+d} bytes", resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _mask_padding(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Nonzero padding bits in the last byte of a raw bitset (or any set bit past the end)."""
    manifest, tensors = parts.manifest(), parts.tensors()
    picked = _random_mask(manifest, rng)
    if picked is None:
        return _value_flip(parts, rng)
    l, e = picked
    layer = manifest["layers"][l]
    entry = layer["masks"][e]
    end = sum(m["bytes"] for m in layer["masks"][: e + 1])
    pad = (-layer["out"] * layer["in"]) % 8
    blob = tensors[f"layers.{l}.masks"]
    bit = rng.randrange(pad) if pad else rng.randrange(8)
    blob[end - 1] |= 1 << bit
    detail = f"layers.{l} expert {e} ({entry['encoding']}, pad {pad}) last byte |= 1<<{bit}"
    return Mutant("mask-padding", detail, resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _mask_encoding(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Re-encode an expert's mask as another encoding (sc/zlib/raw) with tampered streams, or
    change the encoding label / xor flag without touching the bytes."""
    import zlib

    from bitarray import bitarray
    from bitarray.util import sc_encode

    manifest, tensors = parts.manifest(), parts.tensors()
    picked = _random_mask(manifest, rng)
    if picked is None:
        return _value_flip(parts, rng)
    l, e = picked
    layer = manifest["layers"][l]
    entry = layer["masks"][e]
    start = sum(m["bytes"] for m in layer["masks"][:e])
    blob = tensors[f"layers.{l}.masks"]
    old = bytes(blob[start : start + entry["bytes"]])
    how = rng.choice(("label", "xor-flag", "zlib", "zlib-bomb", "zlib-extra", "sc", "sc-little", "sc-length", "sc-trailing", "raw-random"))
    n_bits = layer["out"] * layer["in"]
    bits = bitarray(n_bits, endian="big")
    bits.setall(0)
    for i in rng.sample(range(n_bits), k=min(n_bits, rng.randint(0, 5))) if n_bits else []:
        bits[i] = 1
    new: bytes | None = None
    if how == "label":
        entry["encoding"] = rng.choice(("raw", "sc", "zlib", "lz4", "", 0, None))
    elif how == "xor-flag":
        entry["xor_previous"] = rng.choice((not entry["xor_previous"], 1, "true", None))
    elif how == "zlib":
        new, entry["encoding"] = zlib.compress(bits.tobytes(), 9), "zlib"
    elif how == "zlib-bomb":  # decompresses far beyond the expected length
        new, entry["encoding"] = zlib.compress(b"\x00" * (len(bits.tobytes()) * 1000 + 10**6), 9), "zlib"
    elif how == "zlib-extra":
        new, entry["encoding"] = zlib.compress(bits.tobytes(), 9) + b"\x00junk", "zlib"
    elif how == "sc":
        new, entry["encoding"] = sc_encode(bits), "sc"
    elif how == "sc-little":
        little = bitarray(bits, endian="little")
        new, entry["encoding"] = sc_encode(little), "sc"
    elif how == "sc-length":  # the stream claims another length
        stream = bytearray(sc_encode(bits))
        stream[1] ^= 1 << rng.randrange(8)
        new, entry["encoding"] = bytes(stream), "sc"
    elif how == "sc-trailing":
        new, entry["encoding"] = sc_encode(bits) + b"\x00", "sc"
    else:
        new = bytes(rng.randrange(256) for _ in range(len(old)))
    if new is not None:
        blob[start : start + entry["bytes"]] = new
        entry["bytes"] = len(new)
        manifest["tensors"][f"layers.{l}.masks"]["shape"] = [len(blob)]
    return Mutant("mask-encoding", f"layers.{l} expert {e}: {how}", resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _value_flip(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Bit flips inside one tensor's values (weights, scales, indices, masks), re-signed."""
    manifest, tensors = parts.manifest(), parts.tensors()
    name = rng.choice([n for n, t in tensors.items() if t])
    blob = tensors[name]
    flips = [rng.randrange(len(blob) * 8) for _ in range(rng.choice((1, 1, 2, 4)))]
    for bit in flips:
        blob[bit // 8] ^= 1 << (bit % 8)
    return Mutant("value-flip", f"{name}: flip bits {flips}", resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _value_set(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Extreme values written into one tensor: NaN, inf, float32 max, int64 extremes, 0x80..."""
    manifest, tensors = parts.manifest(), parts.tensors()
    name = rng.choice([n for n, t in tensors.items() if t])
    dtype = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "uint8": np.uint8, "int64": np.int64}[manifest["tensors"][name]["dtype"]]
    array = np.frombuffer(bytes(tensors[name]), dtype=dtype).copy()
    if dtype in (np.float32, np.float16):
        value = rng.choice((np.nan, np.inf, -np.inf, np.finfo(dtype).max, -np.finfo(dtype).max, np.finfo(dtype).tiny, 1e30, -1e30, 0.0))
    else:
        info = np.iinfo(dtype)
        value = rng.choice((int(info.min), int(info.max), max(int(info.min), -1), 0, 1, min(int(info.max), 2**31 - 1)))
    index = rng.randrange(array.size)
    array[index] = value
    tensors[name] = bytearray(array.tobytes())
    return Mutant("value-set", f"{name}[{index}] = {value!r}", resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _tensor_table(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Rename, drop, duplicate or swap tensors (header and manifest kept in step, re-signed)."""
    manifest, tensors = parts.manifest(), parts.tensors()
    names = list(tensors)
    how = rng.choice(("rename", "drop", "swap", "extra", "empty-name"))
    a, b = rng.sample(names, 2)
    if how == "rename":
        new = rng.choice((a + "x", a.replace("0", "1"), "layers.9.weight", "__metadata__x", a.upper()))
        tensors = {new if n == a else n: t for n, t in tensors.items()}
        manifest["tensors"][new] = manifest["tensors"].pop(a)
    elif how == "drop":
        del tensors[a]
        del manifest["tensors"][a]
    elif how == "swap":
        tensors[a], tensors[b] = tensors[b], tensors[a]
        manifest["tensors"][a], manifest["tensors"][b] = manifest["tensors"][b], manifest["tensors"][a]
    elif how == "extra":
        tensors["extra"] = bytearray(16)
        manifest["tensors"]["extra"] = {"dtype": "float32", "shape": [4], "component": "towers", "scale": None, "axis": None, "layout": "dense"}
    else:
        tensors[""] = tensors.pop(a)
        manifest["tensors"][""] = manifest["tensors"].pop(a)
    return Mutant("tensor-table", f"{how} {a} / {b}", resign(manifest, tensors, entries=_layout(manifest, tensors)))


def _checksums(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """Valid structure, stale or malformed checksums."""
    manifest, tensors = parts.manifest(), parts.tensors()
    how = rng.choice(("stale-payload", "stale-manifest", "payload-null", "manifest-missing", "uppercase"))
    if how == "stale-payload":
        name = rng.choice(list(tensors))
        if tensors[name]:
            tensors[name][0] ^= 1
        return Mutant("checksums", how, resign(manifest, tensors, entries=_layout(manifest, tensors), sign_payload=False))
    if how == "stale-manifest":
        manifest["metadata"] = {"edited": True}
        return Mutant("checksums", how, resign(manifest, tensors, entries=_layout(manifest, tensors), sign_manifest=False))
    if how == "payload-null":
        manifest["payload_sha256"] = None
        return Mutant("checksums", how, resign(manifest, tensors, entries=_layout(manifest, tensors), sign_payload=False))
    if how == "manifest-missing":
        manifest.pop("manifest_sha256", None)
        return Mutant("checksums", how, resign(canonical(manifest), {}, entries=parts.entries, payload=parts.payload))
    manifest["payload_sha256"] = hashlib.sha256(parts.payload).hexdigest().upper()
    return Mutant("checksums", how, resign(manifest, tensors, entries=_layout(manifest, tensors), sign_payload=False))


def _header_json(parts: ArtifactParts, rng: random.Random) -> Mutant:
    """The safetensors header itself: extra or repeated keys, metadata shapes, non-objects."""
    how = rng.choice(("repeat-tensor", "repeat-metadata", "metadata-list", "metadata-two-keys", "manifest-not-string",
                      "entry-extra-key", "top-list", "top-string", "empty-object", "bom", "nul-key"))
    meta = {METADATA_KEY: parts.manifest_text}
    body = json.dumps(parts.entries, separators=(",", ":"))[1:-1]
    if how == "repeat-tensor":
        name = rng.choice(sorted(parts.entries))
        text = "{" + body + "," + json.dumps(name) + ":" + json.dumps(parts.entries[name]) + ',"__metadata__":' + json.dumps(meta) + "}"
    elif how == "repeat-metadata":
        text = '{"__metadata__":' + json.dumps(meta) + "," + body + ',"__metadata__":' + json.dumps(meta) + "}"
    elif how == "metadata-list":
        text = json.dumps({"__metadata__": [parts.manifest_text], **parts.entries})
    elif how == "metadata-two-keys":
        text = json.dumps({"__metadata__": {**meta, "x": "y"}, **parts.entries})
    elif how == "manifest-not-string":
        text = json.dumps({"__metadata__": {METADATA_KEY: json.loads(parts.manifest_text)}, **parts.entries})
    elif how == "entry-extra-key":
        entries = json.loads(json.dumps(parts.entries))
        entries[rng.choice(sorted(entries))]["extra"] = 1
        text = json.dumps({"__metadata__": meta, **entries})
    elif how == "top-list":
        text = json.dumps([meta, parts.entries])
    elif how == "top-string":
        text = json.dumps(parts.manifest_text)
    elif how == "empty-object":
        text = "{}"
    elif how == "bom":
        return Mutant("header-json", how, pack_header(b"\xef\xbb\xbf" + json.dumps({"__metadata__": meta, **parts.entries}).encode()) + parts.payload)
    else:
        text = json.dumps({"__metadata__": meta, **parts.entries, "\u0000": parts.entries[rng.choice(sorted(parts.entries))]})
    return Mutant("header-json", how, pack_header(text) + parts.payload)


RandomMutator = Callable[[ArtifactParts, random.Random], Mutant]
RANDOM_MUTATORS: dict[str, RandomMutator] = {
    "bit-flip": _bit_flip,
    "bit-flip-header": _bit_flip_header,
    "byte-set": _byte_set,
    "truncate": _truncate,
    "splice": _splice,
    "trailing": _trailing,
    "header-length": _header_length,
    "non-utf8": _non_utf8,
    "header-json": _header_json,
    "checksums": _checksums,
    "offsets": _offsets,
    "dtype": _dtype,
    "shape": _shape,
    "tensor-table": _tensor_table,
    "manifest-value": _manifest_value,
    "manifest-drop": _manifest_drop,
    "json-numbers": _manifest_numbers,
    "mask-length": _mask_length,
    "mask-padding": _mask_padding,
    "mask-encoding": _mask_encoding,
    "value-flip": _value_flip,
    "value-set": _value_set,
}


def random_mutants(parts: ArtifactParts, rng: random.Random, count: int, classes: tuple[str, ...] | None = None) -> Iterator[Mutant]:
    """`count` mutants, the classes taken in turn (so every class gets count/len(classes)).

    Mask classes on a dense base (no masks) fall back to value flips and say so in `cls`.
    """
    names = classes or tuple(RANDOM_MUTATORS)
    for i in range(count):
        yield RANDOM_MUTATORS[names[i % len(names)]](parts, rng)


# ===== big JSON: deep nesting and a million entries ============================================
def json_mutants(parts: ArtifactParts, *, wide: int = WIDE, depths: tuple[int, ...] = DEEP) -> Iterator[Mutant]:
    """Deterministic: deeply nested and `wide`-entry JSON in the header and in a re-signed manifest."""
    payload_sha = hashlib.sha256(parts.payload).hexdigest()

    def in_manifest(key: str, raw: str) -> bytes:
        manifest = parts.manifest()
        manifest["metadata"] = {**manifest.get("metadata", {}), key: "@@RAW@@"}
        manifest["payload_sha256"] = payload_sha
        return resign(resign_text(manifest, "@@RAW@@", raw), {}, entries=parts.entries, payload=parts.payload)

    def manifest_at(path: tuple, raw: str) -> bytes:
        manifest = parts.manifest()
        _get(manifest, path[:-1])[path[-1]] = "@@RAW@@"
        manifest["payload_sha256"] = payload_sha
        return resign(resign_text(manifest, "@@RAW@@", raw), {}, entries=parts.entries, payload=parts.payload)

    meta = {METADATA_KEY: parts.manifest_text}
    for depth in depths:
        yield Mutant("json-deep", f"header: list nested {depth} deep", pack_header('{"x":' + "[" * depth + "]" * depth + "}") + parts.payload)
        yield Mutant("json-deep", f"header entry nested {depth} deep",
                     pack_header(json.dumps({"__metadata__": meta, **parts.entries})[:-1] + ',"x":' + '{"a":' * depth + "1" + "}" * depth + "}") + parts.payload)
        yield Mutant("json-deep", f"manifest metadata nested {depth} deep (re-signed)", in_manifest("deep", "[" * depth + "]" * depth))
        yield Mutant("json-deep", f"manifest tasks nested {depth} deep (re-signed)", manifest_at(("tasks",), "[" * depth + "0" + "]" * depth))
    zeros = "[" + ",".join(["0"] * wide) + "]"
    keys = "{" + ",".join(f'"k{i:07d}":0' for i in range(wide)) + "}"
    yield Mutant("json-wide", f"manifest metadata list of {wide} (re-signed)", in_manifest("wide", zeros))
    yield Mutant("json-wide", f"manifest metadata object of {wide} keys (re-signed)", in_manifest("wide", keys))
    yield Mutant("json-wide", f"manifest tasks list of {wide} (re-signed)", manifest_at(("tasks",), zeros))
    yield Mutant("json-wide", f"manifest layer 0 out list of {wide} (re-signed)", manifest_at(("layers", 0, "out"), zeros))
    yield Mutant("json-wide", f"header tensor shape of {wide} ones",
                 pack_header(json.dumps({"__metadata__": meta, **parts.entries, "x": {"dtype": "U8", "shape": [1] * wide, "data_offsets": [0, 1]}})) + parts.payload)
    yield Mutant("json-wide", f"header tensor shape of {wide} x 2^63",
                 pack_header(json.dumps({"__metadata__": meta, **parts.entries, "x": {"dtype": "U8", "shape": [2**63] * wide, "data_offsets": [0, 1]}})) + parts.payload)
    yield Mutant("json-wide", f"header with {wide} keys", pack_header(keys) + parts.payload)
    yield Mutant("json-wide", f"header with {wide} repeated keys", pack_header("{" + ",".join(['"k":0'] * wide) + "}") + parts.payload)
    empty = ',"t{}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'
    yield Mutant("json-wide", f"header with {wide} zero-size tensor entries",
                 pack_header(json.dumps({"__metadata__": meta, **parts.entries})[:-1] + "".join(empty.format(i) for i in range(wide)) + "}") + parts.payload)
    yield Mutant("json-wide", f"__metadata__ with {wide} keys",
                 pack_header('{"__metadata__":' + keys[:-1] + f',"{METADATA_KEY}":' + json.dumps(parts.manifest_text) + "}" + json.dumps(parts.entries).replace("{", ",", 1)) + parts.payload)


# ===== the property ===========================================================================
def hostile_ids(vocab_sizes: tuple[int, ...], rows: int, seed: int = 0) -> np.ndarray:
    """int64 (rows, F): in-range ids mixed with -1, V, 10^9 and the int64 extremes."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(vocab_sizes, dtype=np.int64)
    cat = (rng.random((rows, len(sizes))) * sizes).astype(np.int64) if len(sizes) else np.zeros((rows, 0), np.int64)
    extremes = np.array([-1, 0, 10**9, np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
    if len(sizes):
        cat[: len(extremes)] = extremes[:, None]
        cat[len(extremes)] = sizes  # one past each table
    return cat


def predict_loaded(loaded: Any, rows: int = 16, *, runtime: bool = True) -> np.ndarray:
    """The numpy reference on hostile ids and random numericals; checks shape and range, and
    with `runtime` that the device runtime's numpy engine agrees (both expert modes)."""
    from mome_edge.artifact.compiled import reference_forward

    spec = loaded.model.spec
    cat = hostile_ids(spec.vocab_sizes, rows)
    num = np.random.default_rng(1).standard_normal((rows, len(spec.numerical))).astype(np.float32)
    for name, entry in loaded.manifest["tensors"].items():  # what runtimes that keep int8 read
        if entry["layout"] == "union":
            loaded.stored_dense(name)
    probs = reference_forward(loaded.model, cat, num)
    if probs.shape != (rows, len(spec.tasks)) or probs.dtype != np.float32:
        raise MutantFailure(f"predictions have shape {probs.shape} {probs.dtype}, expected ({rows}, {len(spec.tasks)}) float32")
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise MutantFailure(f"predictions are not finite probabilities in [0, 1]: {probs[:2]}")
    if runtime:  # the device runtime's numpy engine on the same model
        from mome_edge.errors import DataError
        from mome_edge.runtime import Predictor

        # The engine folds each expert's scale into its weights, the reference scales after the
        # matmul: the same numbers unless float32 overflows on the way, which only absurd
        # (re-signed) weights can make happen. Then both must still be finite or refuse.
        sane = all(np.abs(a).max(initial=0.0) <= SANE_MAGNITUDE for a in _float_arrays(loaded.model))
        for experts in ("materialize", "on-demand"):
            try:
                engine = Predictor.from_compiled(loaded.model, experts=experts).predict_array(cat, num)
            except DataError as exc:
                if sane or not str(exc).startswith(OVERFLOW_MESSAGE):
                    raise
                continue
            if not (np.isfinite(engine).all() and (engine >= 0).all() and (engine <= 1).all()):
                raise MutantFailure(f"the runtime's numpy engine ({experts}) predicted values that are not probabilities")
            if sane and not np.allclose(engine, probs, rtol=0, atol=RUNTIME_ATOL):
                raise MutantFailure(f"the runtime's numpy engine ({experts}) differs from the reference by {np.abs(engine - probs).max():.3g}")
    return probs


def _float_arrays(model: Any) -> list[np.ndarray]:
    arrays = [*model.embeddings]
    for layer in model.layers:
        arrays += [layer.weight, layer.scale, layer.shift]
    for linear in (model.gates, *model.towers):
        if linear is not None:
            arrays += [linear.weight, linear.bias]
    for level in model.ple_levels:
        arrays += [level.experts.weight, level.experts.scale, level.experts.shift, level.task_gates.weight, level.task_gates.bias]
    return arrays


def _timed_parse(data: bytes, trace_memory: bool) -> tuple[Any, BaseException | None, float, int]:
    """(loaded or None, the exception or None, seconds, peak bytes allocated while parsing)."""
    from mome_edge.artifact.reader import parse_artifact

    started_here = trace_memory and not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    baseline = 0
    if trace_memory:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    loaded, error = None, None
    try:
        loaded = parse_artifact(data, source="mutant.mome")
    except Exception as exc:  # judged by the caller, once the clock and the tracer are stopped
        error = exc
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - baseline if trace_memory else 0
    if started_here:
        tracemalloc.stop()
    return loaded, error, seconds, peak


def check_mutant(data: bytes, *, trace_memory: bool = True, describe: bool = True) -> Outcome:
    """Apply the property to one file's bytes; MutantFailure (with the cause) on a violation.

    The load is timed without tracing; with `trace_memory` it runs a second time under
    tracemalloc (which sees numpy's buffers too) for the peak, since tracing slows it down.
    """
    from mome_edge.errors import ArtifactError, DataError, MomeError

    loaded, error, seconds, _ = _timed_parse(data, False)
    peak = _timed_parse(data, True)[3] if trace_memory else 0
    if isinstance(error, ArtifactError):
        message = str(error)
        if "\n" in message or len(message) > MESSAGE_MAX_CHARS or not message.startswith("mutant.mome"):
            raise MutantFailure(f"ArtifactError message is not one short line naming the file: {message[:300]!r}") from error
        return Outcome("rejected", seconds, peak, message)
    if error is not None:  # the property: nothing but ArtifactError
        raise MutantFailure(f"parse_artifact raised {type(error).__name__}: {str(error)[:300]}") from error
    try:
        predict_loaded(loaded)
        if describe:
            from mome_edge.artifact.describe import describe_artifact

            json.dumps(describe_artifact(loaded).to_json())
    except MutantFailure:
        raise
    except DataError as exc:
        if str(exc).startswith(OVERFLOW_MESSAGE):  # a clear error instead of NaN probabilities
            return Outcome("overflow", seconds, peak, str(exc))
        raise MutantFailure(f"a loaded mutant failed later with DataError: {str(exc)[:300]}") from exc
    except MomeError as exc:
        raise MutantFailure(f"a loaded mutant failed later with {type(exc).__name__}: {str(exc)[:300]}") from exc
    except Exception as exc:
        raise MutantFailure(f"a loaded mutant crashed predict/describe with {type(exc).__name__}: {str(exc)[:300]}") from exc
    return Outcome("loaded", seconds, peak)


def resign_onnx(data: bytes) -> bytes:
    """`data` with its mome.sha256 recomputed when the checksum entry is still whole, so that a
    mutant gets past the checksum and reaches ONNX Runtime's parser; otherwise unchanged."""
    from mome_edge.runtime.onnx_integrity import UNSIGNED, checksum_offset, sign_onnx_bytes

    start = checksum_offset(data)
    if start is None or len(data) < start + len(UNSIGNED):
        return data
    return sign_onnx_bytes(data[:start] + UNSIGNED + data[start + len(UNSIGNED):])


def check_onnx(data: bytes) -> str:
    """The property for the runtime's ONNX path; returns the outcome, raises MutantFailure."""
    from mome_edge.errors import ArtifactError, DataError
    from mome_edge.runtime import Predictor

    try:
        predictor = Predictor(data)
    except ArtifactError as exc:
        if "\n" in str(exc):
            raise MutantFailure(f"multi-line ArtifactError: {str(exc)[:300]!r}") from exc
        return "rejected"
    except Exception as exc:
        raise MutantFailure(f"Predictor(bytes) raised {type(exc).__name__}: {str(exc)[:300]}") from exc
    cat = hostile_ids(predictor.spec.vocab_sizes, 16)
    num = np.random.default_rng(1).standard_normal((16, len(predictor.spec.numerical))).astype(np.float32)
    try:
        probs = predictor.predict_array(cat, num)
    except (ArtifactError, DataError):
        return "refused-at-predict"  # a corrupt graph that fails at run time, or overflows: one clear error
    except Exception as exc:
        raise MutantFailure(f"predict_array raised {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not (np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()):
        raise MutantFailure("an ONNX model predicted probabilities that are not finite in [0, 1]")
    return "loaded"


# ===== a crafted base artifact: padding bits and every mask encoding ============================
def crafted_model(seed: int = 0):
    """A small MoME CompiledModel whose masks exercise every stored form.

    The trained tiny runs compile to layers whose bit counts are multiples of 8 and whose
    masks are all stored raw; this one has padding bits in every layer (out*in % 8 != 0) and
    sparse, dense and nearly repeated expert masks, so that raw, sc, zlib and xor_previous
    encodings all occur (checked by the suite).
    """
    from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, Linear
    from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler

    rng = np.random.default_rng(seed)
    spec = FeatureSpec(
        dataset="crafted",
        categorical=(CategoricalEncoder(name="color", vocabulary=("red", "blue")), CategoricalEncoder(name="city", vocabulary=tuple("abcdefg"))),
        numerical=(NumericalScaler(name="age", mean=40.0, std=10.0), NumericalScaler(name="spend", mean=1.0, std=2.0, log1p=True)),
        tasks=("click", "buy"),
    )

    def f32(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    def masks(out: int, inp: int) -> np.ndarray:  # (4, out, in): sparse, nearly sparse, dense random, periodic
        sparse = rng.random((out, inp)) < 0.03
        near = sparse.copy()
        near[0, 0] = ~near[0, 0]
        dense = rng.random((out, inp)) < 0.5
        periodic = (np.arange(out * inp).reshape(out, inp) % 2).astype(bool)  # repeating bytes: zlib wins
        stack = np.stack([sparse, near, dense, periodic])
        stack[2, :, 0] = True  # every row of the union is used
        return stack

    width = 3 + 2 + 2  # embeddings 3 + 2, numericals 2
    layers = (
        ExpertLayer(weight=f32(45, width), masks=masks(45, width), scale=f32(4, 45) + 1, shift=f32(4, 45)),  # 315 bits: 5 pad
        ExpertLayer(weight=f32(13, 45), masks=masks(13, 45), scale=f32(4, 13) + 1, shift=f32(4, 13)),  # 585 bits: 7 pad
    )
    return CompiledModel(
        kind="mome",
        spec=spec,
        field_index=(0, 1),
        embeddings=(f32(3, 3), f32(8, 2)),
        numerical_keep=np.array([0, 1], dtype=np.int64),
        layers=layers,
        gates=Linear(weight=f32(2, 4, width), bias=f32(2, 4)),
        towers=(Linear(weight=f32(2, 3, 13), bias=f32(2, 3)), Linear(weight=f32(2, 1, 3), bias=f32(2, 1))),
        metadata={"source_run": "crafted", "nominal": {"hidden": [45, 13], "experts": 4}},
    )


def mask_bomb(width: int = 6_000, weights: str = "fp32") -> bytes:
    """A consistent, correctly signed MoME artifact whose middle layer is `width` x `width`
    with 4 experts and all-zero masks stored sc-encoded: a few hundred KB on disk that would
    decode to (4 + 4) * width^2 bytes (288 MB at 6000) of masks and dense weights."""
    import dataclasses

    from bitarray import bitarray
    from bitarray.util import sc_encode

    from mome_edge.artifact.writer import artifact_bytes
    from mome_edge.artifact.compiled import ExpertLayer

    model = crafted_model()
    small = 3

    def layer(out: int, inp: int) -> ExpertLayer:
        return ExpertLayer(weight=np.zeros((out, inp), np.float32), masks=np.zeros((4, out, inp), bool),
                           scale=np.ones((4, out), np.float32), shift=np.zeros((4, out), np.float32))

    layers = (layer(small, 7), layer(small, small), layer(13, small))
    parts = ArtifactParts.parse(artifact_bytes(dataclasses.replace(model, layers=layers), weights=weights))
    manifest, tensors = parts.manifest(), parts.tensors()
    shapes = [(width, 7), (width, width), (13, width)]
    for l, (out, inp) in enumerate(shapes):
        info = manifest["layers"][l]
        info["out"], info["in"] = out, inp
        zeros = bitarray(out * inp, endian="big")
        zeros.setall(0)
        stream = sc_encode(zeros)
        info["masks"] = [{"encoding": "sc", "xor_previous": False, "bytes": len(stream)} for _ in range(4)]
        tensors[f"layers.{l}.masks"] = bytearray(stream * 4)
        manifest["tensors"][f"layers.{l}.masks"]["shape"] = [4 * len(stream)]
        for name, fill in (("scale", 1.0), ("shift", 0.0)):
            tensors[f"layers.{l}.{name}"] = bytearray(np.full((4, out), fill, np.float32).tobytes())
            manifest["tensors"][f"layers.{l}.{name}"]["shape"] = [4, out]
        if weights == "int8":
            tensors[f"layers.{l}.weight.scale"] = bytearray(np.ones(out, np.float32).tobytes())
            manifest["tensors"][f"layers.{l}.weight.scale"]["shape"] = [out]
    return resign(manifest, tensors, entries=_layout(manifest, tensors))
