"""Expert masks as bitsets: bit order, encodings, round trips and rejection of bad bytes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from bitarray import bitarray
from bitarray.util import sc_encode

from mome_edge.errors import ArtifactError
from mome_edge.artifact.masks import BIT_ORDER, decode_mask, densities, encode_mask, jaccard_matrix, packed_masks, to_bitarray

SHAPES = [(0, 5), (1, 1), (1, 7), (3, 3), (2, 8), (5, 13), (64, 33)]


def test_the_declared_bit_order_is_big_endian_row_major() -> None:
    mask = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1]], dtype=bool)  # 101 100 001 + 7 zero pad bits
    assert BIT_ORDER == "big"
    assert to_bitarray(mask).tobytes() == bytes([0b10110000, 0b10000000])
    np.testing.assert_array_equal(packed_masks(mask[None]), [[0b10110000, 0b10000000]])


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{a}x{b}" for a, b in SHAPES])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_every_encoding_round_trips(shape: tuple[int, int], density: float) -> None:
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    previous = rng.random(shape) < 0.5
    mask = rng.random(shape) < density
    bits = to_bitarray(mask)
    forms = {
        ("raw", False): bits.tobytes(),
        ("sc", False): sc_encode(bits),
        ("zlib", False): zlib.compress(bits.tobytes(), 9),
        ("raw", True): to_bitarray(mask ^ previous).tobytes(),
    }
    for (encoding, xor), data in forms.items():
        decoded = decode_mask(data, encoding=encoding, shape=shape, previous=previous, xor_previous=xor)
        np.testing.assert_array_equal(decoded, mask)
    chosen = encode_mask(mask, previous)
    assert len(chosen.data) == min(len(d) for d in forms.values()) or chosen.xor_previous
    decoded = decode_mask(chosen.data, encoding=chosen.encoding, shape=shape, previous=previous, xor_previous=chosen.xor_previous)
    np.testing.assert_array_equal(decoded, mask)


def test_sparse_masks_choose_a_compressed_encoding_and_dense_ones_raw() -> None:
    rng = np.random.default_rng(0)
    assert encode_mask(rng.random((64, 64)) < 0.01).encoding in ("sc", "zlib")
    assert encode_mask(rng.random((64, 64)) < 0.5).encoding == "raw"
    base = rng.random((64, 64)) < 0.5
    twin = base.copy()
    twin[0, :3] ^= True  # an expert that differs from the previous one in 3 bits
    assert encode_mask(twin, base).xor_previous


def test_nonzero_padding_bits_are_rejected() -> None:
    with pytest.raises(ArtifactError, match="the 7 padding bits of the last byte are not zero"):
        decode_mask(bytes([0b10110000, 0b10000001]), encoding="raw", shape=(3, 3))
    with pytest.raises(ArtifactError, match="padding bits"):
        decode_mask(zlib.compress(bytes([0xFF, 0xFF])), encoding="zlib", shape=(3, 3))


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        (b"\x00", "raw", "raw bitset is 1 bytes, expected 2"),
        (b"\x00\x00\x00", "raw", "raw bitset is 3 bytes, expected 2"),
        (b"\x00\x00", "rle", "unknown mask encoding 'rle'"),
        (b"not zlib", "zlib", "zlib stream is corrupt"),
        (zlib.compress(b"\x00\x00\x00"), "zlib", "does not decode to exactly 2 bytes"),
        (zlib.compress(b"\x00\x00") + b"x", "zlib", "does not decode to exactly 2 bytes"),
        (b"", "sc", "empty sc stream"),
        (bytes([0x01, 9, 0]), "sc", "not a big-endian sc bitset"),
        (bytes([0x11, 10, 0]), "sc", "sc bitset holds 10 bits, expected 9"),
        (bytes([0x1F]), "sc", "not a big-endian sc bitset"),
        (bytes([0x11, 9, 0xFF]), "sc", "sc stream is corrupt"),
        (bytes([0x11, 9]), "sc", "sc stream is corrupt"),
        (sc_encode(to_bitarray(np.ones((3, 3), bool))) + b"\x00", "sc", "not in canonical form"),
    ],
    ids=["raw-short", "raw-long", "unknown", "zlib-garbage", "zlib-long", "zlib-trailing", "sc-empty",
         "sc-little-endian", "sc-length", "sc-length-bytes", "sc-bad-block", "sc-cut", "sc-trailing"],
)
def test_bad_mask_bytes_raise_artifact_error(data: bytes, encoding: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        decode_mask(data, encoding=encoding, shape=(3, 3), where="layers.0.mask.0")


def test_xor_without_a_previous_mask_is_rejected() -> None:
    with pytest.raises(ArtifactError, match="no previous expert mask"):
        decode_mask(bytes(2), encoding="raw", shape=(3, 3), xor_previous=True)


def test_statistics_use_bitarray_counts() -> None:
    masks = np.array([[[1, 1], [0, 0]], [[1, 0], [1, 0]], [[0, 0], [0, 0]]], dtype=bool)  # (3, 2, 2)
    assert densities(masks) == [0.5, 0.5, 0.0]
    overlap = jaccard_matrix([to_bitarray(m) for m in masks])
    assert overlap[0][1] == pytest.approx(1 / 3) and overlap[0][2] == 0.0 and overlap[2][2] == 1.0
    assert isinstance(to_bitarray(masks[0]), bitarray)
