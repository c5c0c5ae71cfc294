"""ONNX export: parity with reference_forward for every kind and expert mode, OOV handling,
bitset storage (size, survives onnxsim), int8/fp16 storage, metadata, ORT format, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mome_edge.artifact.reader import read_artifact
from mome_edge.artifact.writer import write_artifact
from mome_edge.artifact.compiled import reference_forward
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ConfigError, ParityError
from mome_edge.exporters import onnx_export
from mome_edge.exporters.onnx_export import (
    PARITY_ATOL_FP32,
    SIMPLIFY_GROWTH_BYTES,
    check_onnx,
    export_artifact,
    export_onnx,
    export_onnx_with_report,
    ort_session,
    validate_onnx,
    write_ort_format,
)
from mome_edge.exporters.onnx_graph import META_FEATURE_SPEC, META_TASKS, build_model
from mome_edge.runtime.onnx_integrity import is_ort_format

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import KINDS, make_compiled, make_spec, sample_inputs  # noqa: E402

# A bitset MoME file holds 32n + En bits against the dense file's 32En (n base weights, E
# experts): 6.4x at E = 8 before any pruning; graph and embedding bytes eat some of it.
BITSET_VS_DENSE_MIN_RATIO = 4.0
# The ONNX file of a bitset export against its artifact: same tensors, protobuf framing.
ONNX_VS_ARTIFACT_MAX_RATIO = 1.10
ONNX_GRAPH_ALLOWANCE_BYTES = 16_384  # nodes, names and metadata of a small model
SESSION_MODES = ("materialize", "on-demand")


def _onnx_probs(model: onnx.ModelProto | bytes | str, cat: np.ndarray, num: np.ndarray, tasks, mode: str) -> np.ndarray:
    outputs = ort_session(model, mode=mode).run(list(tasks), {"categorical": cat, "numerical": num})
    return np.stack(outputs, axis=1)


@pytest.fixture(scope="module")
def census_mome():
    return make_compiled("mome", census_like=True, seed=3)


# --- parity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("experts", ["bitset", "dense"])
@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_reference_every_kind(kind: str, experts: str) -> None:
    model = make_compiled(kind, seed=1)
    proto = export_onnx(model, experts=experts, simplify=False, validate=False)
    cat, num = sample_inputs(model.spec, 40, seed=2, invalid=True)
    reference = reference_forward(model, cat, num)
    for mode in SESSION_MODES:
        probs = _onnx_probs(proto, cat, num, model.tasks, mode)
        assert probs.dtype == np.float32 and probs.shape == (40, len(model.tasks))
        np.testing.assert_allclose(probs, reference, rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("opset", [17, 18, 21])
def test_parity_across_opsets(opset: int) -> None:
    model = make_compiled("mome", seed=4)
    proto = export_onnx(model, opset=opset, simplify=False, validate=False)
    assert proto.opset_import[0].version == opset
    ops = {n.op_type for n in proto.graph.node}
    assert ("BitwiseAnd" in ops) == (opset >= 18) and ("Mod" in ops) == (opset < 18)
    cat, num = sample_inputs(model.spec, 16, seed=5, invalid=True)
    np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, "on-demand"), reference_forward(model, cat, num),
                               rtol=0, atol=PARITY_ATOL_FP32)


def test_parity_with_input_index_on_every_layer() -> None:
    """The CompiledModel contract allows input_index on later layers (the artifact does not)."""
    model = make_compiled("mome", seed=6, hidden=(8, 7, 6), later_index=True)
    assert all(layer.input_index is not None for layer in model.layers)
    proto = export_onnx(model, simplify=False, validate=False)
    cat, num = sample_inputs(model.spec, 16, seed=7)
    np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, "materialize"), reference_forward(model, cat, num),
                               rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("experts", ["bitset", "dense"])
@pytest.mark.parametrize("weights", ["fp16", "int8"])
@pytest.mark.parametrize("kind", ["mome", "mmoe", "ple"])
def test_quantised_storage_parity_and_nodes(tmp_path: Path, kind: str, weights: str, experts: str) -> None:
    model = make_compiled(kind, seed=8)
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    report = export_artifact(artifact, tmp_path / "model.onnx", experts=experts, simplify=False)
    assert report["weights"] == weights and weights in report["storage"]
    assert report["quantised_nodes"], "fp16/int8 weights must be decoded by Cast (and scale Mul) nodes"
    proto = onnx.load(tmp_path / "model.onnx")
    decoded_by = {"fp16": {"Cast"}, "int8": {"Cast", "Mul"}}[weights]
    names = set(report["quantised_nodes"])
    assert {n.op_type for n in proto.graph.node if n.name in names} == decoded_by
    stored = {"fp16": onnx.TensorProto.FLOAT16, "int8": onnx.TensorProto.INT8}[weights]
    assert any(t.data_type == stored for t in proto.graph.initializer)
    dequantised = read_artifact(artifact).model  # what the numpy runtime computes with
    cat, num = sample_inputs(model.spec, 32, seed=9, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(tmp_path / "model.onnx"), cat, num, model.tasks, "materialize"),
                               reference_forward(dequantised, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


# --- out-of-vocabulary ids -------------------------------------------------------------------------


def test_invalid_ids_read_the_oov_row() -> None:
    model = make_compiled("mome", seed=10)
    proto = export_onnx(model, simplify=False, validate=False)
    sizes = np.array(model.spec.vocab_sizes, dtype=np.int64)
    extremes = np.array([-1, -(2**40), np.iinfo(np.int64).min, np.iinfo(np.int64).max], dtype=np.int64)
    cat = np.concatenate([sizes[None, :], np.repeat(extremes[:, None], len(sizes), axis=1)])  # (5, F)
    num = np.zeros((len(cat), len(model.spec.numerical)), dtype=np.float32)
    oov = np.zeros_like(cat)
    for mode in SESSION_MODES:
        probs = _onnx_probs(proto, cat, num, model.tasks, mode)
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs, _onnx_probs(proto, oov, num, model.tasks, mode), rtol=0, atol=0)
        np.testing.assert_allclose(probs, reference_forward(model, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


# --- bitset storage ---------------------------------------------------------------------------------


def test_bitset_file_is_much_smaller_than_dense_and_close_to_the_artifact(tmp_path: Path, census_mome) -> None:
    artifact = tmp_path / "mome.mome"
    artifact_bytes = write_artifact(artifact, census_mome)
    bitset = export_artifact(artifact, tmp_path / "bitset.onnx", experts="bitset", simplify=False)
    dense = export_artifact(artifact, tmp_path / "dense.onnx", experts="dense", simplify=False)
    assert dense["onnx_bytes"] / bitset["onnx_bytes"] >= BITSET_VS_DENSE_MIN_RATIO
    assert bitset["onnx_bytes"] / artifact_bytes <= ONNX_VS_ARTIFACT_MAX_RATIO
    assert bitset["bitset_initializers"] == len(census_mome.layers) and dense["bitset_initializers"] == 0
    expected_bits = sum(layer.masks.size for layer in census_mome.layers)
    assert bitset["bitset_bytes"] == sum((layer.masks.size + 7) // 8 for layer in census_mome.layers) >= expected_bits // 8


def test_simplification_keeps_bitset_storage(census_mome) -> None:
    raw, _ = build_model(census_mome, experts="bitset", opset=18)
    result = export_onnx_with_report(census_mome, experts="bitset", validate=True)
    report = result.report
    assert report.simplified and "kept out of constant folding" in report.simplify_note
    assert report.bytes_after <= report.bytes_before + SIMPLIFY_GROWTH_BYTES
    assert report.parity_max_abs is not None and report.parity_max_abs <= PARITY_ATOL_FP32
    before = {t.name: t.raw_data for t in raw.graph.initializer if t.data_type == onnx.TensorProto.UINT8 and "bitset" in t.name}
    after = {t.name: t.raw_data for t in result.model.graph.initializer if t.name in before}
    assert before and after == before
    assert not any(p.key.startswith("onnxsim.") for p in result.model.metadata_props)


def test_plain_onnxsim_would_fold_the_bitsets(census_mome) -> None:
    """Why the decoder is protected: onnxsim on the whole graph stores the experts dense."""
    import onnxsim

    raw, info = build_model(census_mome, experts="bitset", opset=18)
    folded, ok = onnxsim.simplify(raw)
    assert ok
    names = {t.name for t in folded.graph.initializer}
    assert not set(info.bitset_initializers) & names
    assert folded.ByteSize() > 3 * raw.ByteSize()


def test_simplification_falls_back_when_the_file_would_grow(monkeypatch, census_mome) -> None:
    import onnxsim

    real = onnxsim.simplify

    def bloated(model, **kwargs):
        out, ok = real(model, **kwargs)
        out.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(200_000, np.float32), "bloat"))
        return out, ok

    monkeypatch.setattr(onnxsim, "simplify", bloated)
    report = export_onnx_with_report(census_mome, validate=False).report
    assert not report.simplified and "would have undone the bitset storage" in report.simplify_note
    assert report.bytes_after == report.bytes_before


# --- graph contract ----------------------------------------------------------------------------------


def test_graph_interface_and_metadata() -> None:
    model = make_compiled("ple", seed=11)
    proto = export_onnx(model, simplify=False, validate=False)
    check_onnx(proto)
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert inputs["categorical"].elem_type == onnx.TensorProto.INT64 and inputs["numerical"].elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param for d in inputs["categorical"].shape.dim][0] == "batch"
    assert [o.name for o in proto.graph.output] == list(model.tasks)
    for out in proto.graph.output:
        assert [d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert FeatureSpec.from_json(json.loads(meta[META_FEATURE_SPEC])) == model.spec
    assert json.loads(meta[META_TASKS]) == list(model.tasks)
    assert meta["mome.format_version"] == "2" and meta["mome.kind"] == "ple"
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)


def test_validation_failure_raises_parity_error() -> None:
    model = make_compiled("mmoe", seed=12)
    other = make_compiled("mmoe", seed=13)
    proto = export_onnx(model, simplify=False, validate=False)
    with pytest.raises(ParityError, match=r"disagrees with the numpy reference: max \|p_onnx - p_ref\|"):
        validate_onnx(proto, other)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"experts": "sparse"}, "not an expert storage mode"),
    ({"opset": 16}, "opset=16 is not supported"),
    ({"opset": 22}, "opset=22 is not supported"),
])
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        export_onnx(make_compiled("mome"), **kwargs)


def test_task_named_like_an_input_is_rejected() -> None:
    model = make_compiled("mmoe", spec=make_spec(tasks=("categorical", "ctr")))
    with pytest.raises(ConfigError, match="cannot name ONNX outputs"):
        export_onnx(model, validate=False, simplify=False)


# --- files ------------------------------------------------------------------------------------------


def test_ort_format_keeps_bitsets_and_predicts_the_same(tmp_path: Path, census_mome) -> None:
    path = tmp_path / "model.onnx"
    onnx_export.save_onnx(export_onnx(census_mome, simplify=False, validate=False), path)
    files = write_ort_format(path)
    assert files.model == tmp_path / "model.ort" and files.config == tmp_path / "model.required_operators.config"
    config = files.config.read_text()
    assert "BitShift" in config and "BitwiseAnd" in config and str(tmp_path) not in config
    assert files.model_bytes <= 1.1 * path.stat().st_size  # the decoder was not folded into the file
    assert is_ort_format(files.model.read_bytes()) and not is_ort_format(path.read_bytes())  # .ort: no checksum of its own
    cat, num = sample_inputs(census_mome.spec, 8, seed=14, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(files.model), cat, num, census_mome.tasks, "materialize"),
                               reference_forward(census_mome, cat, num), rtol=0, atol=PARITY_ATOL_FP32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ort", "model.required_operators.config"]


def test_ort_format_through_the_tool_folds_the_bitsets(tmp_path: Path) -> None:
    model = make_compiled("mome", seed=15, hidden=(128, 64), experts=8)
    path = tmp_path / "model.onnx"
    onnx_export.save_onnx(export_onnx(model, simplify=False, validate=False), path)
    kept = write_ort_format(path).model_bytes
    tool = write_ort_format(path, keep_bitset=False)
    assert not tool.keeps_bitset and tool.model_bytes > 2 * kept


def test_export_artifact_rejects_bad_outputs(tmp_path: Path) -> None:
    artifact = tmp_path / "m.mome"
    write_artifact(artifact, make_compiled("mome"))
    with pytest.raises(ConfigError, match="must be an .onnx file"):
        export_artifact(artifact, tmp_path / "m.txt")
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        export_artifact(artifact, tmp_path / "missing" / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mome"]


DECODER_OPS = {"BitShift", "BitwiseAnd", "Mod", "CumSum", "ReduceMax", "DequantizeLinear", "Cast", "ConstantOfShape"}


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_onnx_runtime_folds_the_whole_decoder_at_load(tmp_path: Path, weights: str) -> None:
    """'materialize' relies on ORT's constant folding: no decoder node may survive it (an op
    ORT does not fold, such as NonZero, would rebuild the experts on every call)."""
    import onnxruntime as ort

    artifact = tmp_path / "m.mome"
    write_artifact(artifact, make_compiled("mome", seed=16), weights=weights)
    export_artifact(artifact, tmp_path / "m.onnx", simplify=False)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    left = {n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node} & DECODER_OPS
    assert not left, f"decoder ops not folded by ONNX Runtime: {sorted(left)}"


def test_union_layout_stores_only_the_weights_some_expert_uses(tmp_path: Path) -> None:
    model = make_compiled("mome", seed=17, hidden=(256, 128), experts=4, density=0.05)
    artifact = tmp_path / "m.mome"
    artifact_bytes = write_artifact(artifact, model)
    report = export_artifact(artifact, tmp_path / "m.onnx", simplify=False)
    union = [int(layer.masks.any(axis=0).sum()) for layer in model.layers]
    assert sum(union) < sum(layer.weight.size for layer in model.layers) / 4  # the case the union layout is for
    values = {t.name: onnx.numpy_helper.to_array(t).size for t in onnx.load(tmp_path / "m.onnx").graph.initializer
              if "base_values" in t.name}
    assert sorted(values.values()) == sorted(union)
    # The artifact may compress sparse masks (sc/zlib); ONNX stores them raw, plus the graph.
    masks_stored = read_artifact(artifact).components()["expert_masks"]
    assert report["onnx_bytes"] <= artifact_bytes - masks_stored + report["bitset_bytes"] + ONNX_GRAPH_ALLOWANCE_BYTES
