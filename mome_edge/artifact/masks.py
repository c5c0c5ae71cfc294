"""Expert masks as bitsets: the one declared bit order, encodings, and mask statistics.

In memory a layer's masks are a bool array (E, out, in); on disk each expert's mask is a
bitset, row-major over (out, in) of the compiled layer, bit order BIT_ORDER, zero padding
bits, stored raw or compressed (see docs/artifact-format.md, section 3). numpy + bitarray
only: the device side decodes masks with this module.

bitarray is imported by the functions that use it (encoding, the sc format, statistics):
raw and zlib masks decode with numpy alone, and `bitarray.util` (which imports `random`)
costs ~1.3 ms of a device's cold start that a zlib-encoded model never needs.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mome_edge.errors import ArtifactError

if TYPE_CHECKING:
    from bitarray import bitarray

BIT_ORDER = "big"  # first weight = most significant bit of byte 0 (numpy.packbits' default)
ENCODINGS = ("raw", "sc", "zlib")
ZLIB_LEVEL = 9
_SC_BIG_ENDIAN_FLAG = 0x10  # sc header byte: bit 4 = big-endian, low nibble = length bytes


class EncodedMask(NamedTuple):
    """One expert's mask as stored: `data` in `encoding`, optionally XOR-ed with the previous expert's.

    (A NamedTuple, immutable like a frozen dataclass: it is built ~7x faster at import, and
    the reader imports this module on every cold start.)"""

    encoding: str
    xor_previous: bool
    data: bytes

    def to_json(self) -> dict:
        return {"encoding": self.encoding, "xor_previous": self.xor_previous, "bytes": len(self.data)}


def to_bitarray(mask: np.ndarray) -> bitarray:
    """bool (out, in) -> bitarray of out*in bits, row-major, bit order BIT_ORDER."""
    from bitarray import bitarray

    bits = bitarray(endian=BIT_ORDER)
    bits.pack(np.ascontiguousarray(mask, dtype=bool).reshape(-1).tobytes())  # one byte 0/1 per bit
    return bits


def from_bitarray(bits: bitarray, shape: tuple[int, int]) -> np.ndarray:
    """bitarray of out*in bits -> bool (out, in), writable.

    numpy's unpackbits over the packed bytes: 0.003 ms for a 255 x 128 mask, against 0.1 ms
    for bitarray.unpack + a copy (16 masks of the census model: 1.6 ms of every load)."""
    n_bits = int(shape[0]) * int(shape[1])
    if len(bits) != n_bits:  # unpackbits would pad a short bitset with zeros instead of failing
        raise ArtifactError(f"a mask has {len(bits)} bits, expected {n_bits} for {shape[0]}x{shape[1]}; re-create the artifact")
    if bits.endian != BIT_ORDER:  # its bytes are read in BIT_ORDER below
        raise ArtifactError(f"a mask bitset is {bits.endian}-endian, expected {BIT_ORDER}; re-create the artifact")
    return _unpack(bits.tobytes(), shape)


def _unpack(packed: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Packed bytes (BIT_ORDER, zero padding) -> bool (out, in), writable."""
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=int(shape[0]) * int(shape[1]), bitorder=BIT_ORDER)
    return bits.view(bool).reshape(shape)


def packed_masks(masks: np.ndarray) -> np.ndarray:
    """bool (E, out, in) -> uint8 (E, ceil(out*in/8)): each expert's raw bitset (zero padding).

    The layout of the `raw` encoding, for consumers that rebuild experts from bits (ONNX).
    """
    experts = masks.shape[0]
    flat = np.ascontiguousarray(masks, dtype=bool).reshape(experts, -1)
    return np.packbits(flat, axis=1, bitorder=BIT_ORDER)


def encode_mask(mask: np.ndarray, previous: np.ndarray | None = None) -> EncodedMask:
    """The smallest stored form of one expert's mask (bool (out, in)).

    Candidates: raw packed bits, sc_encode, zlib; each also on the XOR with the previous
    expert's mask when `previous` is given (overlapping experts differ in few bits). Ties
    prefer raw, then sc, then zlib, and plain over XOR: the simplest form that is smallest.
    """
    from bitarray.util import sc_encode

    candidates: list[EncodedMask] = []
    sources = [(False, mask)] if previous is None else [(False, mask), (True, mask ^ previous)]
    for xor, source in sources:
        bits = to_bitarray(source)
        raw = bits.tobytes()
        candidates.append(EncodedMask(encoding="raw", xor_previous=xor, data=raw))
        candidates.append(EncodedMask(encoding="sc", xor_previous=xor, data=sc_encode(bits)))
        candidates.append(EncodedMask(encoding="zlib", xor_previous=xor, data=zlib.compress(raw, ZLIB_LEVEL)))
    return min(candidates, key=lambda c: len(c.data))  # min keeps the first of equal sizes


def decode_mask(
    data: bytes,
    *,
    encoding: str,
    shape: tuple[int, int],
    previous: np.ndarray | None = None,
    xor_previous: bool = False,
    where: str = "mask",
) -> np.ndarray:
    """Stored bytes -> bool (out, in), checking every size before trusting it.

    Args:
        data: the stored bytes.
        encoding: "raw", "sc" or "zlib".
        shape: (out, in) of the compiled layer.
        previous: the previous expert's decoded mask (required when xor_previous).
        xor_previous: the stored bits are the XOR with `previous`.
        where: names the mask in error messages.
    Returns:
        bool array of `shape`.
    Raises:
        ArtifactError: unknown encoding, wrong byte length, bad compressed stream, nonzero
            padding bits, or xor_previous without a previous mask.
    """
    n_bits = int(shape[0]) * int(shape[1])
    n_bytes = (n_bits + 7) // 8
    if encoding == "raw":
        if len(data) != n_bytes:
            raise ArtifactError(
                f"{where}: raw bitset is {len(data)} bytes, expected {n_bytes} for {shape[0]}x{shape[1]} bits; "
                "the artifact is corrupt, re-create it with `mome-edge compile`"
            )
        raw = bytes(data)
    elif encoding == "zlib":
        raw = _inflate(data, n_bytes, where)
    elif encoding == "sc":
        return _finish(from_bitarray(_sc_bits(data, n_bits, where), shape), previous, xor_previous, where)
    else:
        raise ArtifactError(f"{where}: unknown mask encoding {encoding!r} (known: {', '.join(ENCODINGS)}); re-create the artifact")
    pad = n_bytes * 8 - n_bits
    if pad and raw[-1] & ((1 << pad) - 1):
        raise ArtifactError(
            f"{where}: the {pad} padding bits of the last byte are not zero; the artifact is corrupt, re-create it"
        )
    return _finish(_unpack(raw, shape), previous, xor_previous, where)


def _finish(mask: np.ndarray, previous, xor_previous: bool, where: str) -> np.ndarray:
    if xor_previous:
        if previous is None:
            raise ArtifactError(f"{where}: marked xor_previous but there is no previous expert mask; re-create the artifact")
        mask ^= previous
    return mask


def _inflate(data: bytes, n_bytes: int, where: str) -> bytes:
    # Cap the output: a corrupt or hostile stream must not inflate into gigabytes.
    decoder = zlib.decompressobj()
    try:
        raw = decoder.decompress(data, n_bytes + 1)
    except zlib.error as exc:
        raise ArtifactError(f"{where}: zlib stream is corrupt ({exc}); re-create the artifact") from None
    if len(raw) != n_bytes or not decoder.eof or decoder.unused_data or decoder.unconsumed_tail:
        raise ArtifactError(
            f"{where}: zlib stream does not decode to exactly {n_bytes} bytes; the artifact is corrupt, re-create it"
        )
    return raw


def _sc_bits(data: bytes, n_bits: int, where: str) -> bitarray:
    # Check the header (bit order, length) ourselves before sc_decode allocates anything.
    if not data:
        raise ArtifactError(f"{where}: empty sc stream; the artifact is corrupt, re-create it")
    head = data[0]
    length_bytes = head & 0x0F
    if head & ~(0x0F | _SC_BIG_ENDIAN_FLAG) or not head & _SC_BIG_ENDIAN_FLAG or length_bytes > 8 or len(data) < 1 + length_bytes:
        raise ArtifactError(f"{where}: sc header byte 0x{head:02x} is not a big-endian sc bitset; the artifact is corrupt")
    length = int.from_bytes(data[1 : 1 + length_bytes], "little")
    if length != n_bits:
        raise ArtifactError(f"{where}: sc bitset holds {length} bits, expected {n_bits}; the artifact is corrupt")
    from bitarray.util import sc_decode, sc_encode

    try:
        bits = sc_decode(data)
    except Exception as exc:  # bitarray raises ValueError, StopIteration, ... on bad streams
        raise ArtifactError(f"{where}: sc stream is corrupt ({type(exc).__name__}: {exc}); re-create the artifact") from None
    if bits.endian != BIT_ORDER or len(bits) != n_bits or sc_encode(bits) != bytes(data):
        # Canonical form only: no trailing bytes, no alternative block layouts.
        raise ArtifactError(f"{where}: sc stream is not in canonical form; the artifact is corrupt, re-create it")
    return bits


# ----- statistics --------------------------------------------------------------------------
def densities(masks: np.ndarray) -> list[float]:
    """Share of open weights per expert of one layer (bool (E, out, in))."""
    size = masks.shape[1] * masks.shape[2]
    return [float(m.sum()) / size if size else 0.0 for m in masks]


def jaccard_matrix(bitsets: list[bitarray]) -> list[list[float]]:
    """Pairwise |a & b| / |a | b| of equal-length bitsets (1.0 for two empty sets)."""
    from bitarray.util import count_and, count_or

    n = len(bitsets)
    out = [[1.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            union = count_or(bitsets[i], bitsets[j])
            value = count_and(bitsets[i], bitsets[j]) / union if union else 1.0
            out[i][j] = out[j][i] = value
    return out
