"""The artifact file: round trips, golden bytes, every rejection, atomic writes, no torch."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from compiled_factory import KINDS, make_compiled, sample_inputs
from mome_edge.artifact.format import FORMAT_VERSION, HEADER_CAP, METADATA_KEY
from mome_edge.artifact.canonical import canonical_json as _canonical, sha256_text as _sha256_text
from mome_edge.artifact.writer import artifact_bytes, quantize_model, write_artifact
from mome_edge.artifact.reader import parse_artifact, read_artifact
from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, Linear, reference_forward
from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler
from mome_edge.errors import ArtifactError, ConfigError

QUANTISED_PROB_TOLERANCE = {"fp16": 2e-3, "int8": 3e-2}  # max |dp| vs fp32 on random factory models

# sha256 of the golden model's artifact bytes. A change here is a format change: bump
# FORMAT_VERSION or explain in docs/artifact-format.md why version-1 readers are unaffected.
GOLDEN_SHA256 = {
    "fp32": "06ffa6e9dbdd8530cc9fb4baf5a7d2e1f5a4223649d415b822ca80c293dcb295",
    "int8": "6285e5122757a2796cefc969110df80de89bb3806c71c62d98ce6df6ff98f910",
}
GOLDEN_LENGTH = {"fp32": 4526, "int8": 5622}


def golden_model() -> CompiledModel:
    """A hand-built 2-expert MoME: one 2-word field (3 rows with OOV), one numerical, two tasks."""
    spec = FeatureSpec(
        dataset="golden",
        categorical=(CategoricalEncoder(name="color", vocabulary=("red", "blue")),),
        numerical=(NumericalScaler(name="age", mean=40.0, std=10.0),),
        tasks=("click", "buy"),
    )

    def values(*shape: int, start: float = 0.0) -> np.ndarray:  # exact binary fractions
        return ((np.arange(np.prod(shape), dtype=np.float32) + start) / 8 - 0.5).reshape(shape)

    masks0 = np.array([[[1, 0, 1], [1, 1, 0], [0, 0, 1]], [[0, 1, 1], [1, 0, 0], [1, 1, 0]]], dtype=bool)  # (E, out, in)
    masks1 = np.array([[[1, 1, 0], [0, 1, 1]], [[1, 0, 1], [1, 1, 1]]], dtype=bool)
    layers = (
        ExpertLayer(weight=values(3, 3), masks=masks0, scale=values(2, 3, start=9), shift=values(2, 3, start=1)),
        ExpertLayer(weight=values(2, 3, start=2), masks=masks1, scale=values(2, 2, start=8), shift=values(2, 2, start=3)),
    )
    return CompiledModel(
        kind="mome",
        spec=spec,
        field_index=(0,),
        embeddings=(values(3, 2, start=4),),
        numerical_keep=np.array([0], dtype=np.int64),
        layers=layers,
        gates=Linear(weight=values(2, 2, 3, start=5), bias=values(2, 2, start=6)),
        towers=(Linear(weight=values(2, 1, 2, start=7), bias=values(2, 1)),),
        metadata={"source_run": "golden-run"},
    )


@pytest.fixture(scope="module")
def golden_bytes() -> bytes:
    return artifact_bytes(golden_model(), weights="fp32")


# --- golden bytes ----------------------------------------------------------------------------
@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_golden_bytes_pin_the_format(weights: str) -> None:
    data = artifact_bytes(golden_model(), weights=weights)
    assert data == artifact_bytes(golden_model(), weights=weights)  # deterministic
    assert (len(data), hashlib.sha256(data).hexdigest()) == (GOLDEN_LENGTH[weights], GOLDEN_SHA256[weights])


def test_golden_layout_is_plain_safetensors_with_one_manifest_key(golden_bytes: bytes) -> None:
    (header_len,) = struct.unpack("<Q", golden_bytes[:8])
    assert header_len % 8 == 0
    header = json.loads(golden_bytes[8 : 8 + header_len])
    assert list(header["__metadata__"]) == [METADATA_KEY]
    manifest = json.loads(header["__metadata__"][METADATA_KEY])
    assert header["__metadata__"][METADATA_KEY] == _canonical(manifest)
    assert (manifest["format"], manifest["format_version"], manifest["bit_order"]) == ("mome-edge-artifact", 1, "big")
    assert manifest["layers"][0]["masks"] == [
        {"encoding": "raw", "xor_previous": False, "bytes": 2}, {"encoding": "raw", "xor_previous": False, "bytes": 2},
    ]
    # expert 0 of layer 0: 101 110 001 -> 10111000 1(0000000)
    assert st_load(golden_bytes)["layers.0.masks"][:2].tolist() == [0b10111000, 0b10000000]
    # the shared base weight keeps only entries some expert uses: layer 0's union misses (1, 2)
    assert manifest["tensors"]["layers.0.weight"] == {
        "axis": None, "component": "base_weights", "dtype": "float32", "layout": "union", "scale": None, "shape": [8],
    }
    assert manifest["payload_sha256"] == hashlib.sha256(golden_bytes[8 + header_len :]).hexdigest()


# --- round trips ----------------------------------------------------------------------------------
def _assert_same_model(a: CompiledModel, b: CompiledModel) -> None:
    assert (a.kind, a.routing, a.fixed_expert, a.field_index, a.tasks) == (b.kind, b.routing, b.fixed_expert, b.field_index, b.tasks)
    assert a.spec.to_json() == b.spec.to_json()
    for x, y in zip(a.embeddings, b.embeddings, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.numerical_keep, b.numerical_keep)
    layers_a = list(a.layers) + [level.experts for level in a.ple_levels]
    layers_b = list(b.layers) + [level.experts for level in b.ple_levels]
    for x, y in zip(layers_a, layers_b, strict=True):
        np.testing.assert_array_equal(x.expert_weights(), y.expert_weights())
        for name in ("masks", "scale", "shift", "input_index"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    linears_a = list(a.towers) + ([a.gates] if a.gates else []) + [g for lv in a.ple_levels for g in (lv.task_gates, lv.shared_gate) if g]
    linears_b = list(b.towers) + ([b.gates] if b.gates else []) + [g for lv in b.ple_levels for g in (lv.task_gates, lv.shared_gate) if g]
    for x, y in zip(linears_a, linears_b, strict=True):
        np.testing.assert_array_equal(x.weight, y.weight)
        np.testing.assert_array_equal(x.bias, y.bias)


@pytest.mark.parametrize("kind", KINDS)
def test_fp32_round_trip_is_exact(kind: str, tmp_path: Path) -> None:
    model = make_compiled(kind, seed=3)
    path = tmp_path / "model.mome"
    size = write_artifact(path, model)
    loaded = read_artifact(path)
    assert size == path.stat().st_size == loaded.file_bytes
    _assert_same_model(model, loaded.model)
    assert loaded.model.metadata == dict(model.metadata)
    cat, num = sample_inputs(model.spec, 64, invalid=True)
    np.testing.assert_array_equal(reference_forward(model, cat, num), reference_forward(loaded.model, cat, num))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_quantised_round_trip_reads_back_quantize_model(kind: str, weights: str) -> None:
    model = make_compiled(kind, seed=4)
    loaded = parse_artifact(artifact_bytes(model, weights=weights))
    _assert_same_model(quantize_model(model, weights), loaded.model)
    assert loaded.weights == weights
    cat, num = sample_inputs(model.spec, 256)
    diff = np.abs(reference_forward(model, cat, num) - reference_forward(loaded.model, cat, num)).max()
    assert diff <= QUANTISED_PROB_TOLERANCE[weights]


def test_int8_keeps_raw_values_and_per_channel_scales_for_runtimes() -> None:
    model = make_compiled("mome", seed=5)
    loaded = parse_artifact(artifact_bytes(model, weights="int8"))
    entry = loaded.manifest["tensors"]["layers.0.weight"]
    assert (entry["dtype"], entry["layout"], entry["axis"]) == ("int8", "union", 1)
    q = loaded.stored_dense("layers.0.weight")  # (out, in) int8, zeros where no expert reads
    scale = loaded.stored[entry["scale"]]  # (out,) float32
    assert q.dtype == np.int8 and q.shape == model.layers[0].weight.shape and scale.shape == (q.shape[0],)
    np.testing.assert_array_equal(q.astype(np.float32) * scale[:, None], loaded.model.layers[0].weight)
    assert np.abs(q).max() == 127
    emb = loaded.manifest["tensors"]["embeddings.0"]
    assert (emb["axis"], loaded.stored[emb["scale"]].shape) == (0, (model.embeddings[0].shape[1],))
    assert loaded.stored["layers.0.scale"].dtype == np.float32  # affine vectors stay float32


def test_fp16_rejects_values_it_cannot_hold() -> None:
    model = make_compiled("mmoe", seed=1)
    big = model.towers[0].weight.copy()
    big[0, 0, 0] = 1e6
    model = dataclasses.replace(model, towers=(Linear(weight=big, bias=model.towers[0].bias), *model.towers[1:]))
    with pytest.raises(ConfigError, match="beyond the float16 range"):
        artifact_bytes(model, weights="fp16")


def test_unknown_weights_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--weights 'fp8' is unknown; use one of fp32, fp16, int8"):
        artifact_bytes(golden_model(), weights="fp8")


def test_an_inconsistent_model_is_never_written(tmp_path: Path) -> None:
    model = golden_model()
    bad = dataclasses.replace(model, numerical_keep=np.array([0, 0], dtype=np.int64))
    with pytest.raises(ArtifactError, match="inconsistent compiled model, not written: shapes inconsistent: layers.0 reads 3 inputs, the previous stage gives 4"):
        write_artifact(tmp_path / "bad.mome", bad)
    assert not any(tmp_path.iterdir())


# --- corruption: every class raises ArtifactError with its own message ----------------------------
def _parts(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    return json.loads(header["__metadata__"][METADATA_KEY]), {k: v.copy() for k, v in st_load(data).items()}


def _recraft(data: bytes, edit: Callable[[dict, dict], None], *, fix_checksums: bool = True) -> bytes:
    """Re-write an artifact after `edit(manifest, tensors)`, with valid checksums by default:
    the file is then well-formed and only the edited inconsistency can be caught."""
    manifest, tensors = _parts(data)
    edit(manifest, tensors)
    if fix_checksums:
        draft = st_save(tensors)
        (n,) = struct.unpack("<Q", draft[:8])
        manifest["payload_sha256"] = hashlib.sha256(draft[8 + n :]).hexdigest()
        manifest.pop("manifest_sha256")
        manifest["manifest_sha256"] = _sha256_text(_canonical(manifest))
    return st_save(tensors, metadata={METADATA_KEY: _canonical(manifest)})


def _set(manifest: dict, path: str, value) -> None:
    *keys, last = path.split("/")
    target = manifest
    for key in keys:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value


def _grow_mask(manifest: dict, tensors: dict) -> None:
    tensors["layers.0.masks"] = np.insert(tensors["layers.0.masks"], 2, np.uint8(0))  # expert 0: 3 bytes
    manifest["layers"][0]["masks"][0]["bytes"] = 3
    manifest["tensors"]["layers.0.masks"]["shape"] = [5]


def _set_padding_bit(manifest: dict, tensors: dict) -> None:
    tensors["layers.0.masks"][1] |= 1  # expert 0's last byte


def _open_unused_weight(manifest: dict, tensors: dict) -> None:
    tensors["layers.0.masks"][0] |= 0b00000100  # bit 5 = weight (1, 2), which no expert used


def _header(prefix_len: int, body: bytes) -> bytes:
    return struct.pack("<Q", prefix_len) + body


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not-json": (lambda d: _header(8, b"GIF89a!!"), "not a mome-edge artifact: its header is not valid JSON"),
    "json-list": (lambda d: _header(8, b"[1,2,3] "), "its header is not a JSON object"),
    "repeated-key": (lambda d: _header(16, b'{"a":1,"a":2}   '), "repeated key 'a'"),
    "plain-safetensors": (lambda d: st_save({"x": np.zeros(2, np.float32)}), "not a mome-edge artifact \\(no 'mome_edge_artifact' manifest\\)"),
    "checkpoint": (lambda d: st_save({"x": np.zeros(2, np.float32)}, metadata={"mome_edge": "{}"}), "safetensors file but not a mome-edge artifact"),
    "wrong-format": (lambda d: _recraft(d, lambda m, t: _set(m, "format", "onnx")), "not a mome-edge artifact \\(format 'onnx'"),
    "newer-version": (lambda d: _recraft(d, lambda m, t: _set(m, "format_version", FORMAT_VERSION + 1)),
                      "format version 2; this mome-edge reads version 1: upgrade mome-edge"),
    "older-version": (lambda d: _recraft(d, lambda m, t: _set(m, "format_version", 0)), "format version 0; .* re-create it"),
    "manifest-checksum": (lambda d: _recraft(d, lambda m, t: _set(m, "metadata/source_run", "other"), fix_checksums=False),
                          "manifest checksum mismatch"),
    "payload-checksum": (lambda d: d[:-1] + bytes([d[-1] ^ 0x01]), "payload checksum mismatch"),
    "truncated-prefix": (lambda d: d[:5], "truncated \\(5 bytes, shorter than the 8-byte header length\\)"),
    "truncated-header": (lambda d: d[:100], "truncated: the header needs"),
    "truncated-data": (lambda d: d[:-1], "truncated: .* its header describes"),
    "trailing-bytes": (lambda d: d + b"\x00\x00", "has 2 trailing bytes after its data section"),
    "header-cap": (lambda d: struct.pack("<Q", HEADER_CAP + 1) + d[8:], f"header claims {HEADER_CAP + 1} bytes, more than the {HEADER_CAP} byte cap"),
    "manifest-vs-header": (lambda d: _recraft(d, lambda m, t: _set(m, "tensors/towers.0.bias/shape", [2, 2])),
                           "header and manifest disagree: tensor 'towers.0.bias' has shape"),
    "manifest-shape": (lambda d: _recraft(d, lambda m, t: _set(m, "layers/1/out", 3)), "shapes inconsistent"),
    "chain": (lambda d: _recraft(d, lambda m, t: _set(m, "towers/0/in", 3)), "shapes inconsistent: tower layer 0 reads 3 inputs"),
    "experts": (lambda d: _recraft(d, lambda m, t: _set(m, "gates/experts", 3)), "shapes inconsistent: softmax routing needs gates over 2 experts"),
    "index-range": (lambda d: _recraft(d, lambda m, t: t["numerical_keep"].__setitem__(0, 5)), "numerical_keep holds values outside \\[0, 1\\)"),
    "bitset-length": (lambda d: _recraft(d, _grow_mask), "raw bitset is 3 bytes, expected 2"),
    "padding-bits": (lambda d: _recraft(d, _set_padding_bit), "padding bits of the last byte are not zero"),
    "union-count": (lambda d: _recraft(d, _open_unused_weight), "holds 8 values but its expert masks use 9 weights"),
    "weights-mode": (lambda d: _recraft(d, lambda m, t: _set(m, "weights", "fp4")), "unknown weight precision 'fp4'"),
    "spec": (lambda d: _recraft(d, lambda m, t: _set(m, "feature_spec/schema_version", 9)), "feature spec schema version 9"),
    "malformed": (lambda d: _recraft(d, lambda m, t: _set(m, "layers/0", "oops")), "manifest is malformed or inconsistent"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_raises_its_artifact_error(name: str, golden_bytes: bytes, tmp_path: Path) -> None:
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / "bad.mome"
    path.write_bytes(corrupt(golden_bytes))
    with pytest.raises(ArtifactError, match=message):
        read_artifact(path)


def test_the_golden_file_itself_reads(golden_bytes: bytes) -> None:
    loaded = parse_artifact(golden_bytes)
    assert loaded.manifest["metadata"] == {"source_run": "golden-run"}
    _assert_same_model(golden_model(), loaded.model)


@pytest.mark.parametrize(("make", "message"), [(lambda p: p / "missing.mome", "does not exist"), (lambda p: p, "is a folder")],
                         ids=["missing", "folder"])
def test_paths_that_are_not_files(make, message: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=message):
        read_artifact(make(tmp_path))


_mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=8)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(_mutations, min_size=1, max_size=3))
def test_random_damage_only_ever_raises_artifact_error(mutations, golden_bytes: bytes) -> None:
    data = bytearray(golden_bytes)
    for kind, position, value in mutations:
        if not data and kind != "insert":
            continue
        position %= len(data) + (kind == "insert")
        if kind == "flip" and data:
            data[position % len(data)] ^= value
        elif kind == "truncate":
            del data[position:]
        elif kind == "insert":
            data[position:position] = value
    try:
        parse_artifact(bytes(data))
    except ArtifactError:
        pass


# --- atomic writes ---------------------------------------------------------------------------------
def test_an_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mome_edge.atomic as atomic

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    path = tmp_path / "model.mome"
    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_artifact(path, golden_model())
    assert list(tmp_path.iterdir()) == []  # neither the destination nor a temp file


def test_an_interrupted_overwrite_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mome_edge.atomic as atomic

    path = tmp_path / "model.mome"
    write_artifact(path, golden_model(), weights="int8")
    before = path.read_bytes()

    def failing_replace(src, dst) -> None:
        raise KeyboardInterrupt  # the user pressed Ctrl-C just before the rename

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(path, golden_model(), weights="fp32")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.mome"]


# --- the device side needs no torch ---------------------------------------------------------------
TORCH_FREE_SCRIPT = """
import sys
from mome_edge.artifact.reader import read_artifact
from mome_edge.artifact.compiled import reference_forward
from mome_edge.artifact.describe import describe_artifact
from mome_edge.runtime.predict import predict_artifact
from mome_edge.cli.main import main

loaded = read_artifact(sys.argv[1])
cat, num = loaded.model.spec.encode_rows([{}, {"x": 1}])
probs = reference_forward(loaded.model, cat, num)
assert probs.shape == (2, len(loaded.model.tasks))
describe_artifact(sys.argv[1])
predict_artifact(sys.argv[1], input_csv=sys.argv[2])
for argv in (["inspect", sys.argv[1], "--json"], ["predict", sys.argv[1], "--input", sys.argv[2], "--output", sys.argv[3]]):
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
assert "torch" not in sys.modules, "torch was imported"
assert "sklearn" not in sys.modules, "scikit-learn was imported"
print("torch-free")
"""


def test_reading_predicting_and_inspecting_do_not_import_torch(tiny_artifact, tmp_path: Path) -> None:
    path = tiny_artifact("mome", "int8")
    csv = tmp_path / "rows.csv"
    spec = read_artifact(path).model.spec
    columns = ",".join([*spec.field_names, *spec.numerical_names])
    csv.write_text(columns + "\n" + ",".join("1" for _ in columns.split(",")) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_SCRIPT, str(path), str(csv), str(tmp_path / "out.csv")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("torch-free")
