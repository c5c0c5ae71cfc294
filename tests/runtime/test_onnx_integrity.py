"""The SHA-256 inside exported .onnx files: what save_onnx writes is what protobuf means, a
damaged or edited file is refused before it predicts, and the error says what to do."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mome_edge.errors import ArtifactError
from mome_edge.exporters.onnx_export import export_onnx, onnx_bytes, save_onnx
from mome_edge.runtime import Predictor
from mome_edge.runtime.onnx_integrity import META_SHA256, UNSIGNED, checksum_offset, checksum_problem, sign_onnx_bytes

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import make_compiled, sample_inputs  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return make_compiled("mome", seed=31)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "mome.onnx"
    save_onnx(export_onnx(model, simplify=False, validate=False), path)
    return path


def _props(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _with_props(proto: onnx.ModelProto, **changes: str | None) -> onnx.ModelProto:
    """A copy of `proto` whose metadata_props are changed (None removes a key), order kept."""
    edited = onnx.ModelProto()
    edited.CopyFrom(proto)
    props = _props(proto)
    for key, value in changes.items():
        if value is None:
            props.pop(key)
        else:
            props[key] = value
    del edited.metadata_props[:]
    onnx.helper.set_model_props(edited, props)
    return edited


def test_the_stored_digest_is_the_sha256_of_the_model_with_an_unsigned_entry(saved: Path) -> None:
    # computed independently through protobuf, not through the byte-level signer
    proto = onnx.load(str(saved))
    stored = _props(proto)[META_SHA256]
    unsigned = _with_props(proto, **{META_SHA256: UNSIGNED.decode()}).SerializeToString()
    assert stored == hashlib.sha256(unsigned).hexdigest()
    assert checksum_problem(saved.read_bytes()) is None
    with pytest.raises(ValueError, match="no unsigned mome.sha256 entry"):
        sign_onnx_bytes(saved.read_bytes())  # a signed model is not signed twice


def test_a_flipped_weight_byte_is_refused_and_would_otherwise_predict_other_numbers(model, saved: Path, tmp_path: Path) -> None:
    data = bytearray(saved.read_bytes())
    proto = onnx.load(str(saved))
    floats = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    weight = max(floats, key=lambda t: len(t.raw_data))  # the largest float tensor's bytes
    assert numpy_helper.to_array(weight).dtype == np.float32 and weight.raw_data
    values = numpy_helper.to_array(weight).reshape(-1)
    largest = int(np.argmax(np.abs(values)))  # a weight the model reads (a base stored whole has zeros no expert reads)
    at = bytes(data).find(weight.raw_data) + 4 * largest + 2  # inside that float32
    data[at] ^= 0x40
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"damaged\.onnx: its SHA-256 does not match .*export it again"):
        Predictor(damaged)
    with pytest.raises(ArtifactError, match="does not match"):
        Predictor(bytes(data))

    # what the checksum prevents: the same damage, re-signed, loads and predicts other numbers
    start = checksum_offset(bytes(data))
    resigned = sign_onnx_bytes(bytes(data[:start]) + UNSIGNED + bytes(data[start + len(UNSIGNED):]))
    cat, num = sample_inputs(model.spec, 64, seed=3)
    intact = Predictor(saved).predict_array(cat, num)
    assert not np.array_equal(Predictor(resigned).predict_array(cat, num), intact)


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.01])
def test_a_truncated_copy_is_refused_before_onnx_runtime_parses_it(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    with pytest.raises(ArtifactError, match=r"mome\.sha256 checksum|truncated|does not match"):
        Predictor(data[: int(len(data) * keep)])


def test_unsigned_bytes_are_refused(model) -> None:
    raw = export_onnx(model, simplify=False, validate=False).SerializeToString()
    with pytest.raises(ArtifactError, match="checksum was never filled in"):
        Predictor(raw)


def test_an_export_without_its_checksum_entry_is_refused(saved: Path) -> None:
    stripped = _with_props(onnx.load(str(saved)), **{META_SHA256: None}).SerializeToString()
    with pytest.raises(ArtifactError, match=r"not a mome-edge ONNX export of format 2: it has no mome\.sha256 checksum"):
        Predictor(stripped)


def test_a_format_1_export_asks_for_a_re_export(saved: Path) -> None:
    # what format-1 exports looked like: no checksum entry at all
    old = _with_props(onnx.load(str(saved)), **{"mome.format_version": "1", META_SHA256: None}).SerializeToString()
    with pytest.raises(ArtifactError, match="an older export.*export it again with `mome-edge export`"):
        Predictor(old)


def test_an_older_format_version_asks_for_a_re_export(saved: Path) -> None:
    old = _with_props(onnx.load(str(saved)), **{"mome.format_version": "1", META_SHA256: UNSIGNED.decode()})
    with pytest.raises(ArtifactError, match="format version '1'; this runtime reads 2: re-export it"):
        Predictor(onnx_bytes(old))  # signed: the version check itself speaks
