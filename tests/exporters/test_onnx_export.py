"""ONNX export: parity with reference_forward for every kind, expert storage and deployment
mode (speed / memory), OOV handling, bitset storage (size, survives onnxsim and ONNX Runtime's
folding as designed), int8/fp16 storage, metadata, ORT format of both modes, golden rows, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import onnxruntime as ort

from mome_edge.artifact.reader import read_artifact
from mome_edge.artifact.writer import write_artifact
from mome_edge.artifact.compiled import reference_forward
from mome_edge.encoding import CategoricalEncoder, FeatureSpec
from mome_edge.errors import ConfigError, ParityError
from mome_edge.exporters import onnx_export, onnx_graph
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
ONNX_GRAPH_ALLOWANCE_BYTES = 32_768  # nodes, names and metadata of a small model
SESSION_MODES = ("materialize", "on-demand")

# memory mode's two trunks: every expert of a small layer rebuilt at once per call, or one expert
# per Loop iteration (onnx_bitset.all_experts_at_once decides; tests force one with _memory_trunk)
MEMORY_TRUNKS = ("all_experts", "expert_loop")


def _memory_trunk(monkeypatch, trunk: str) -> None:
    """Force memory mode's trunk: the test models are too small for the export's own choice
    (onnx_bitset.all_experts_at_once, tested on its own) to be the one under test."""
    from mome_edge.exporters import onnx_bitset

    at_once = trunk == "all_experts"
    monkeypatch.setattr(onnx_bitset, "all_experts_at_once", lambda layers, opset=21: at_once)


@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
def test_memory_trunk_is_the_one_forced(monkeypatch, trunk: str) -> None:
    """_memory_trunk's force reaches the export: the all-experts trunk stores row-plane bitsets
    and no inner Loop, the expert Loop a Loop inside the row-block Loop."""
    _memory_trunk(monkeypatch, trunk)
    proto = export_onnx(make_compiled("mome", seed=4), mode="memory", simplify=False, validate=False)
    row_planes = any("_expert_row_bitsets" in init.name for init in proto.graph.initializer)
    (row_loop,) = [n for n in proto.graph.node if n.op_type == "Loop"]
    inner_loops = [n for n in onnx.helper.get_attribute_value(row_loop.attribute[0]).node if n.op_type == "Loop"]
    assert row_planes == (trunk == "all_experts") and bool(inner_loops) == (trunk == "expert_loop")


def test_memory_trunk_choice(census_mome) -> None:
    """All experts of a layer at once only when every masked layer is small and the largest
    layer's rebuild holds less than the speed file's experts; else the expert Loop."""
    from mome_edge.exporters import onnx_bitset

    assert onnx_bitset.all_experts_at_once(census_mome.layers)  # two balanced layers of ~1 MiB
    lopsided = make_compiled("mome", seed=24, hidden=(64, 2), experts=4)  # the first layer is nearly all of it
    assert not onnx_bitset.all_experts_at_once(lopsided.layers)
    balanced = make_compiled("mome", seed=24, hidden=(32, 32), experts=4)  # 11 -> 32 -> 32: 5.5 + 16 KiB of experts
    assert onnx_bitset.all_experts_at_once(balanced.layers)  # the second layer's rebuild: 1.25 x 16 KiB
    assert not onnx_bitset.all_experts_at_once(balanced.layers, 17)  # below opset 21 it holds 2 x 16 KiB


def _onnx_probs(model: onnx.ModelProto | bytes | str, cat: np.ndarray, num: np.ndarray, tasks, mode: str) -> np.ndarray:
    outputs = ort_session(model, mode=mode).run(list(tasks), {"categorical": cat, "numerical": num})
    return np.stack(outputs, axis=1)


@pytest.fixture(scope="module")
def census_mome():
    return make_compiled("mome", census_like=True, seed=3)


# --- parity --------------------------------------------------------------------------------------


EXPORTS = [("bitset", "speed"), ("bitset", "memory"), ("dense", "speed")]  # (experts, mode)


@pytest.mark.parametrize(("experts", "mode"), EXPORTS)
@pytest.mark.parametrize("kind", KINDS)
def test_parity_with_reference_every_kind(kind: str, experts: str, mode: str) -> None:
    model = make_compiled(kind, seed=1, hidden=(13, 6))  # 13: an output width that needs pad bits
    if mode == "memory" and kind != "mome":
        with pytest.raises(ConfigError, match="has none"):
            export_onnx(model, mode=mode, simplify=False, validate=False)
        return
    proto = export_onnx(model, experts=experts, mode=mode, simplify=False, validate=False)
    cat, num = sample_inputs(model.spec, 40, seed=2, invalid=True)
    reference = reference_forward(model, cat, num)
    for mode in SESSION_MODES:
        probs = _onnx_probs(proto, cat, num, model.tasks, mode)
        assert probs.dtype == np.float32 and probs.shape == (40, len(model.tasks))
        np.testing.assert_allclose(probs, reference, rtol=0, atol=PARITY_ATOL_FP32)


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes and those of every subgraph (Loop bodies), recursively."""
    found = []
    for node in graph.node:
        found.append(node)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _all_nodes(attr.g)
    return found


def _ops(proto: onnx.ModelProto) -> set[str]:
    """Op types of the graph and of every subgraph (Loop bodies)."""
    found: set[str] = set()
    for node in proto.graph.node if isinstance(proto, onnx.ModelProto) else proto.node:
        found.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found |= _ops(attr.g)
    return found


@pytest.mark.parametrize("large", [False, True])
def test_speed_mode_expands_large_layers_expert_by_expert(monkeypatch, large: bool) -> None:
    """Above FOLD_AFFINE_MAX_BYTES a layer's experts are expanded (and multiplied) one by one;
    below it one chain expands them all. Either way one bit per weight and expert is stored."""
    from mome_edge.exporters import onnx_bitset

    model = make_compiled("mome", seed=4, hidden=(13, 6))
    if large:
        monkeypatch.setattr(onnx_bitset, "FOLD_AFFINE_MAX_BYTES", 0)
    report = export_onnx_with_report(model, simplify=False, validate=False)
    per_layer = [layer.experts if large else 1 for layer in model.layers]
    assert report.report.bitset_initializers == sum(per_layer)
    matmuls = sum(1 for n in report.model.graph.node if n.op_type == "MatMul" and "layer" in n.output[0])
    assert matmuls == (sum(layer.experts for layer in model.layers) if large else len(model.layers))
    cat, num = sample_inputs(model.spec, 16, seed=5, invalid=True)
    for session in SESSION_MODES:
        np.testing.assert_allclose(_onnx_probs(report.model, cat, num, model.tasks, session),
                                   reference_forward(model, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("routing", ["softmax", "fixed"])
def test_speed_mode_with_large_layers_runs_each_expert_through_the_whole_trunk(monkeypatch, routing: str) -> None:
    """Large speed-mode layers: expert e's layer-i matmul reads expert e's layer-(i-1) output
    directly, with no (E, B, width) stack between layers (no Concat, no Gather of a stack):
    ONNX Runtime can then reuse one expert's activation buffers for the next, which bounds
    the session's peak at large batches. Exact against the reference, softmax and fixed routing."""
    import dataclasses
    import re

    from mome_edge.exporters import onnx_bitset

    monkeypatch.setattr(onnx_bitset, "FOLD_AFFINE_MAX_BYTES", 0)
    model = make_compiled("mome", seed=4, hidden=(13, 6, 5), later_index=True)
    if routing == "fixed":
        model = dataclasses.replace(model, routing="fixed", fixed_expert=tuple(range(len(model.tasks))), gates=None)
    proto = export_onnx(model, mode="speed", simplify=False, validate=False)
    producer = {o: n for n in proto.graph.node for o in n.output}
    e_count = model.layers[0].experts
    for i in range(1, len(model.layers)):
        for e in range(e_count):
            matmul = next(n for n in proto.graph.node if re.fullmatch(rf"mome/layer{i}_expert{e}_matmul_\d+", n.output[0]))
            source = producer[matmul.input[0]]
            while source.op_type == "Gather" and re.search(rf"layer{i}_expert{e}_input", source.output[0]):
                source = producer[source.input[0]]  # the next layer's kept input columns
            assert re.fullmatch(rf"mome/layer{i - 1}_expert{e}_out_\d+", source.output[0]), source.output[0]
    stacks = [n.output[0].split("/")[-1].rsplit("_", 1)[0] for n in proto.graph.node if n.op_type == "Concat"]
    assert [s for s in stacks if s != "x0_grouped"] == ["experts_by_row"]  # x0_grouped: the embedding's, before the trunk
    cat, num = sample_inputs(model.spec, 24, seed=8, invalid=True)
    for session in SESSION_MODES:
        np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, session), reference_forward(model, cat, num),
                                   rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
def test_speed_mode_folds_its_whole_decoder_at_load(tmp_path: Path, monkeypatch, large: bool, weights: str) -> None:
    """After a default session's optimisation (as an app opens the file) no decoder node is
    left: the experts are constant (in, out) weights, one per expert (large layers) or all E
    side by side (small), and a call runs matmuls only. Parity through onnxsim too."""
    from mome_edge.exporters import onnx_bitset

    if large:
        monkeypatch.setattr(onnx_bitset, "FOLD_AFFINE_MAX_BYTES", 0)
    model = make_compiled("mome", seed=4, hidden=(13, 6))
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    onnx_path = tmp_path / "model.onnx"
    export_artifact(artifact, onnx_path, mode="speed")  # simplified and validated
    optimised = tmp_path / "optimised.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimised)
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(optimised).graph
    assert not [n.op_type for n in graph.node if n.op_type in {"Cast", "Where"} and "ids" not in n.output[0]]
    experts = [list(t.dims) for t in graph.initializer if "expert" in t.name and t.data_type == onnx.TensorProto.FLOAT]
    layer0 = model.layers[0]
    if large:
        assert [in_out for in_out in experts if in_out[0] == layer0.weight.shape[1]] == [[layer0.weight.shape[1], -(-layer0.weight.shape[0] // 8) * 8]] * layer0.experts
    else:
        assert [layer0.weight.shape[1], layer0.experts * layer0.weight.shape[0]] in experts
    dequantised = read_artifact(artifact).model
    cat, num = sample_inputs(model.spec, 24, seed=9, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(onnx_path), cat, num, model.tasks, "materialize"),
                               reference_forward(dequantised, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("mode", ["speed", "memory"])
@pytest.mark.parametrize("opset", [17, 18, 20, 21])
@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
def test_parity_across_opsets(monkeypatch, opset: int, mode: str, trunk: str) -> None:
    if mode == "speed" and trunk != MEMORY_TRUNKS[0]:
        pytest.skip("the trunk choice is memory mode's")
    _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=4)
    proto = export_onnx(model, opset=opset, mode=mode, simplify=False, validate=False)
    assert proto.opset_import[0].version == opset
    ops = _ops(proto)
    assert ("Loop" in ops) == (mode == "memory")
    if mode == "memory":  # one fused pass per expert from opset 21, Cast + Mul below
        assert ("DequantizeLinear" in ops) == (opset >= 21)
    cat, num = sample_inputs(model.spec, 16, seed=5, invalid=True)
    for session in SESSION_MODES:
        np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, session), reference_forward(model, cat, num),
                                   rtol=0, atol=PARITY_ATOL_FP32)


def test_memory_mode_defaults_to_opset_21() -> None:
    model = make_compiled("mome", seed=4)
    assert export_onnx(model, mode="memory", simplify=False, validate=False).opset_import[0].version == 21
    assert export_onnx(model, simplify=False, validate=False).opset_import[0].version == 18


@pytest.mark.parametrize(("mode", "trunk"), [("speed", None), *(("memory", t) for t in MEMORY_TRUNKS)])
def test_parity_with_input_index_on_every_layer(monkeypatch, mode: str, trunk: str | None) -> None:
    """The CompiledModel contract allows input_index on later layers (the artifact does not);
    memory mode's all-experts rebuild then pads the gathered 7 and 6 columns to 8."""
    if trunk is not None:
        _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=6, hidden=(8, 7, 6), later_index=True)
    assert all(layer.input_index is not None for layer in model.layers)
    proto = export_onnx(model, mode=mode, simplify=False, validate=False)
    cat, num = sample_inputs(model.spec, 16, seed=7)
    np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, "materialize"), reference_forward(model, cat, num),
                               rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize(("experts", "mode"), EXPORTS)
@pytest.mark.parametrize("weights", ["fp16", "int8"])
@pytest.mark.parametrize("kind", ["mome", "mmoe", "ple"])
@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
def test_quantised_storage_parity_and_nodes(tmp_path: Path, monkeypatch, kind: str, weights: str, experts: str, mode: str,
                                            trunk: str) -> None:
    if mode == "memory" and kind != "mome":
        pytest.skip("memory mode needs masked layers (refusal tested in test_parity_with_reference_every_kind)")
    if (mode != "memory" or kind != "mome") and trunk != MEMORY_TRUNKS[0]:
        pytest.skip("the trunk choice is memory mode's")
    _memory_trunk(monkeypatch, trunk)
    model = make_compiled(kind, seed=8)
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    report = export_artifact(artifact, tmp_path / "model.onnx", experts=experts, simplify=False, mode=mode)
    assert report["weights"] == weights and weights in report["storage"]
    assert report["quantised_nodes"], "fp16/int8 weights must be decoded by Cast (and scale Mul) nodes"
    proto = onnx.load(tmp_path / "model.onnx")
    decoded_by = {"fp16": {"Cast"}, "int8": {"Cast", "Mul"}}[weights]
    names = set(report["quantised_nodes"])
    assert {n.op_type for n in proto.graph.node if n.name in names} == decoded_by
    assert all(n.op_type != "DequantizeLinear" or n.input[0] not in {t.name for t in proto.graph.initializer}
               for n in proto.graph.node), "a DequantizeLinear of stored weights would not fold at load"
    stored = {"fp16": onnx.TensorProto.FLOAT16, "int8": onnx.TensorProto.INT8}[weights]
    assert any(t.data_type == stored for t in proto.graph.initializer)
    dequantised = read_artifact(artifact).model  # what the numpy runtime computes with
    cat, num = sample_inputs(model.spec, 32, seed=9, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(tmp_path / "model.onnx"), cat, num, model.tasks, "materialize"),
                               reference_forward(dequantised, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


# --- embedding lookups ------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("mode", ["speed", "memory"])
@pytest.mark.parametrize("vocab", [9, 20_000])
def test_embedding_lookups_are_few_and_exact(tmp_path: Path, weights: str, mode: str, vocab: int) -> None:
    """9 categorical fields, one pruned away, widths alternating 4/3/4/...: fp32/fp16 tables are
    padded to width 4 and read by one lookup when the padding is small (vocab 9); otherwise
    (int8, or vocab 20,000 in two narrow fields: padding above PAD_MAX_SHARE of the model) one lookup per width, whose fields
    interleave. Either way x0 is put back in field order by a column Gather, exactly."""
    spec = make_spec(vocab_sizes=(9, 9, vocab, 3, vocab, 7, 6, 2, 8))  # fields 2 and 4 are narrow ones
    model = make_compiled("mome", spec=spec, seed=12, hidden=(64, 32))  # big enough that a little padding is < PAD_MAX_SHARE
    widths = [t.shape[1] for t in model.embeddings]
    assert len(widths) == 8 and len(set(widths)) == 2, "the factory's pruning must give two interleaved widths"
    padded = vocab == 9 and weights != "int8"
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    export_artifact(artifact, tmp_path / "model.onnx", simplify=False, mode=mode)
    proto = onnx.load(tmp_path / "model.onnx")
    lookups = [n for n in _all_nodes(proto.graph) if n.op_type == "Gather" and "embedded" in n.output[0]]  # memory mode: in the row-block Loop
    assert len(lookups) == (1 if padded else 2), [n.output[0] for n in lookups]
    assert any(n.output[0].startswith("mome/x0_") and n.op_type == "Gather" for n in _all_nodes(proto.graph))
    dequantised = read_artifact(artifact).model
    cat, num = sample_inputs(spec, 64, seed=13, invalid=True)  # out-of-range ids read each field's own OOV row
    for session in SESSION_MODES:  # folded at load, and not folded (stacked int8 tables decoded per call)
        np.testing.assert_allclose(_onnx_probs(str(tmp_path / "model.onnx"), cat, num, model.tasks, session),
                                   reference_forward(dequantised, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("weights", ["fp32", "int8"])
@pytest.mark.parametrize("zero_fields", [2, 4])
def test_fields_of_width_zero_are_not_looked_up(tmp_path: Path, weights: str, zero_fields: int) -> None:
    """The artifact format allows an embedding of width 0 (it owns no x0 column): the export
    reads no table for it, in the padded plan (fp32) and in the per-width plan (int8, where
    4 of them would once have formed a stacked group of width 0)."""
    import dataclasses

    base = make_compiled("mome", seed=14)
    extra = tuple(CategoricalEncoder(name=f"empty{i}", vocabulary=("a", "b")) for i in range(zero_fields))
    spec = base.spec.replace(categorical=base.spec.categorical + extra)
    first_new = len(base.spec.categorical)
    model = dataclasses.replace(
        base, spec=spec, field_index=base.field_index + tuple(range(first_new, first_new + zero_fields)),
        embeddings=base.embeddings + tuple(np.zeros((3, 0), np.float32) for _ in range(zero_fields)),
    )
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    export_artifact(artifact, tmp_path / "model.onnx", simplify=False)
    cat, num = sample_inputs(spec, 32, seed=15, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(tmp_path / "model.onnx"), cat, num, model.tasks, "materialize"),
                               reference_forward(read_artifact(artifact).model, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("fold_affine_max_bytes", [0, 2**30])
def test_speed_layers_with_and_without_the_normalisation_folded_at_load(monkeypatch, fold_affine_max_bytes: int) -> None:
    """Small speed-mode layers fold scale and pad removal into the load-time chain, larger ones
    apply them per call (onnx_bitset.FOLD_AFFINE_MAX_BYTES): both exact, with pad columns (13)."""
    from mome_edge.exporters import onnx_bitset

    monkeypatch.setattr(onnx_bitset, "FOLD_AFFINE_MAX_BYTES", fold_affine_max_bytes)
    model = make_compiled("mome", seed=16, hidden=(13, 6))
    proto = export_onnx(model, mode="speed", simplify=False, validate=False)
    import re

    per_call_slices = [n for n in proto.graph.node if re.fullmatch(r"mome/layer\d+(_expert\d+)?_unpadded_\d+", n.output[0])]  # on activations
    assert bool(per_call_slices) == (fold_affine_max_bytes == 0)
    cat, num = sample_inputs(model.spec, 40, seed=17, invalid=True)
    for session in SESSION_MODES:
        np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, session), reference_forward(model, cat, num),
                                   rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("weights", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("numerical", [8, 3])  # the first layer reads 16 columns (row planes) or 11 (bool masks)
def test_speed_small_layer_chains(tmp_path: Path, weights: str, numerical: int) -> None:
    """Both load-time chains of a small speed-mode layer (onnx_bitset.speed_layer): the first layer
    unpacks row planes when its input width is a multiple of 8, and bool masks otherwise. Each
    is folded whole by a default session (no Cast, Gather of a bit table or Mul of the masks is
    left) and matches the reference, with pad bits in the 13-wide first layer."""
    model = make_compiled("mome", seed=5, hidden=(13, 6), spec=make_spec(numerical=numerical))
    in_dim = model.layers[0].weight.shape[1]
    assert (in_dim % 8 == 0) == (numerical == 8)  # each parameter reaches the chain it names
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, model, weights=weights)
    path = tmp_path / "model.onnx"
    export_artifact(artifact, path, mode="speed")
    proto = onnx.load(path)
    row_planes = [t for t in proto.graph.initializer if t.name.startswith("mome/layer0_speed_row_bitsets")]
    assert bool(row_planes) == (in_dim % 8 == 0)
    if row_planes:  # the row-plane bytes unpack to the first layer's masks: bit k of byte (j, e, o) is row k*J + j
        planes = np.unpackbits(onnx.numpy_helper.to_array(row_planes[0])[None], axis=0, bitorder="big")  # (8, J, E, out)
        np.testing.assert_array_equal(planes.reshape(in_dim, *planes.shape[2:]).astype(bool),
                                      model.layers[0].masks.transpose(2, 0, 1))
    assert not any(n.op_type == "Where" for n in proto.graph.node if "ids" not in n.output[0])
    optimised = _optimised(tmp_path, path)
    decoder = ("bit_table", "row_bytes", "row_bits", "expert_bytes", "expert_bits", "expert_mask", "experts_masked", "experts_3d")
    left = [n.op_type for n in optimised.graph.node  # the folded weights (experts_3d, ...) are read per call, not made
            if n.op_type in DECODER_OPS or any(part in name for name in n.output for part in decoder)
            or any("bit_table" in name or "bitsets" in name for name in n.input)]
    assert not left, f"decoder nodes left after ONNX Runtime's folding: {left}"
    assert not [t.name for t in optimised.graph.initializer if "bitsets" in t.name]  # nothing reads the bits per call
    cat, num = sample_inputs(model.spec, 32, seed=18, invalid=True)
    np.testing.assert_allclose(_onnx_probs(str(path), cat, num, model.tasks, "materialize"),
                               reference_forward(read_artifact(artifact).model, cat, num), rtol=0, atol=PARITY_ATOL_FP32)


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


def test_bitset_file_is_much_smaller_than_dense_and_accounted_for(tmp_path: Path, census_mome) -> None:
    """Both modes store the experts as raw bitsets next to the base stored whole (fp32 here):
    the file is the artifact with its base and masks swapped for those, plus the graph."""
    artifact = tmp_path / "mome.mome"
    artifact_bytes = write_artifact(artifact, census_mome)
    bitset = export_artifact(artifact, tmp_path / "bitset.onnx", experts="bitset", simplify=False)
    memory = export_artifact(artifact, tmp_path / "memory.onnx", mode="memory", simplify=False)
    dense = export_artifact(artifact, tmp_path / "dense.onnx", experts="dense", simplify=False)
    assert dense["onnx_bytes"] / bitset["onnx_bytes"] >= BITSET_VS_DENSE_MIN_RATIO
    assert dense["onnx_bytes"] / memory["onnx_bytes"] >= BITSET_VS_DENSE_MIN_RATIO
    layers = census_mome.layers
    # one (E, ...) bitset per layer in both modes (census layers are small: one chain for all experts)
    assert bitset["bitset_initializers"] == memory["bitset_initializers"] == len(layers) and dense["bitset_initializers"] == 0
    padded = [layer.weight.shape[1] * -(-layer.weight.shape[0] // 8) for layer in layers]  # in * out8/8 bytes
    assert bitset["bitset_bytes"] == sum(p * layer.experts for p, layer in zip(padded, layers))
    row_padded = [-(-layer.weight.shape[1] // 8) * layer.weight.shape[0] for layer in layers]  # memory: in8/8 * out bytes
    assert memory["bitset_bytes"] == sum(p * layer.experts for p, layer in zip(row_padded, layers))
    components = read_artifact(artifact).components()
    whole_base = sum(4 * layer.weight.size for layer in layers)
    swapped = artifact_bytes - components["base_weights"] - components["expert_masks"] + whole_base + bitset["bitset_bytes"]
    assert bitset["onnx_bytes"] <= swapped + ONNX_GRAPH_ALLOWANCE_BYTES


@pytest.mark.parametrize("mode", ["speed", "memory"])
def test_simplification_keeps_bitset_storage(census_mome, mode: str) -> None:
    opset = 21 if mode == "memory" else 18
    raw, _ = build_model(census_mome, experts="bitset", opset=opset, mode=mode)
    result = export_onnx_with_report(census_mome, experts="bitset", validate=True, mode=mode)
    report = result.report
    assert report.simplified
    assert "kept out of constant folding" in report.simplify_note  # memory: its DequantizeLinear zero points, expanded at load
    assert report.bytes_after <= report.bytes_before + SIMPLIFY_GROWTH_BYTES
    assert report.parity_max_abs is not None and report.parity_max_abs <= PARITY_ATOL_FP32
    before = {t.name: t.raw_data for t in raw.graph.initializer if t.data_type == onnx.TensorProto.UINT8 and "bitset" in t.name}
    after = {t.name: t.raw_data for t in result.model.graph.initializer if t.name in before}
    assert before and after == before
    assert not any(p.key.startswith("onnxsim.") for p in result.model.metadata_props)


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_memory_mode_with_a_quantised_base_is_simplified(tmp_path: Path, census_mome, weights: str) -> None:
    """A memory-mode export whose base is dequantised at load: the decoder's outputs that only
    the Loop reads are not outputs onnxsim's graph must produce (before the fix onnxsim
    failed on them and the export shipped unsimplified)."""
    artifact = tmp_path / "model.mome"
    write_artifact(artifact, census_mome, weights=weights)
    report = export_artifact(artifact, tmp_path / "memory.onnx", mode="memory")
    assert report["simplified"], report["simplify_note"]
    assert "kept out of constant folding" in report["simplify_note"]


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
    ({"mode": "fast"}, "not a deployment mode"),
    ({"mode": "memory", "experts": "dense"}, "rebuilds experts from bitsets"),
])
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        export_onnx(make_compiled("mome"), **kwargs)


def test_task_named_like_an_input_is_rejected() -> None:
    model = make_compiled("mmoe", spec=make_spec(tasks=("categorical", "ctr")))
    with pytest.raises(ConfigError, match="cannot name ONNX outputs"):
        export_onnx(model, validate=False, simplify=False)


# --- files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["speed", "memory"])
def test_ort_format_behaves_like_its_onnx(tmp_path: Path, census_mome, mode: str) -> None:
    """An .ort runs what a default session of its .onnx runs after load: speed stores the folded
    experts (ONNX Runtime does not optimise .ort files at load), memory keeps its bitsets and Loop."""
    path = tmp_path / "model.onnx"
    onnx_export.save_onnx(export_onnx(census_mome, mode=mode, simplify=False, validate=False), path)
    files = write_ort_format(path, mode=mode)
    assert files.model == tmp_path / "model.ort" and files.config == tmp_path / "model.required_operators.config"
    config = files.config.read_text()
    assert str(tmp_path) not in config and '{"inputs": {' in config  # type reduction
    if mode == "memory":
        assert "Loop" in config and "Clip" in config and "DequantizeLinear" in config
        # nothing folded into the file: one layer's dense experts would add more than the .ort's
        # own graph overhead (nested Loop bodies carry per-node metadata: ~11 % of this small file)
        one_layer = min(4 * layer.experts * layer.weight.size for layer in census_mome.layers)
        assert files.keeps_bitset and files.model_bytes < path.stat().st_size + one_layer / 4
    else:
        assert not files.keeps_bitset and "Clip" not in config
        assert files.model_bytes > 3 * path.stat().st_size  # the experts are stored expanded
    assert is_ort_format(files.model.read_bytes()) and not is_ort_format(path.read_bytes())  # .ort: no checksum of its own
    cat, num = sample_inputs(census_mome.spec, 8, seed=14, invalid=True)
    reference = reference_forward(census_mome, cat, num)
    for model in (str(path), str(files.model)):  # ParityTest: .onnx and .ort against the numpy reference
        np.testing.assert_allclose(_onnx_probs(model, cat, num, census_mome.tasks, "materialize"), reference,
                                   rtol=0, atol=PARITY_ATOL_FP32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.ort", "model.required_operators.config"]


def test_export_artifact_rejects_bad_outputs(tmp_path: Path) -> None:
    artifact = tmp_path / "m.mome"
    write_artifact(artifact, make_compiled("mome"))
    with pytest.raises(ConfigError, match="must be an .onnx file"):
        export_artifact(artifact, tmp_path / "m.txt")
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        export_artifact(artifact, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ConfigError, match="has none"):
        export_artifact(artifact.with_name("d.mome"), tmp_path / "d.onnx", mode="memory") if write_artifact(
            artifact.with_name("d.mome"), make_compiled("mmoe")) else None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.mome", "m.mome"]


DECODER_OPS = {"BitShift", "BitwiseAnd", "Mod", "CumSum", "ReduceMax", "DequantizeLinear", "Cast", "ConstantOfShape"}


def _optimised(tmp_path: Path, path: Path) -> onnx.ModelProto:
    """The graph a default ONNX Runtime session runs (its load-time optimisations saved)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(tmp_path / "optimized.onnx")


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_onnx_runtime_folds_the_whole_speed_decoder_at_load(tmp_path: Path, weights: str) -> None:
    """speed relies on ORT's constant folding: no decoder node may survive it (an op ORT does
    not fold, such as NonZero, would rebuild the experts on every call)."""
    artifact = tmp_path / "m.mome"
    write_artifact(artifact, make_compiled("mome", seed=16), weights=weights)
    export_artifact(artifact, tmp_path / "m.onnx", simplify=False)
    left = _ops(_optimised(tmp_path, tmp_path / "m.onnx")) & DECODER_OPS
    assert not left, f"decoder ops not folded by ONNX Runtime: {sorted(left)}"


@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
def test_memory_mode_fixed_routing(monkeypatch, trunk: str) -> None:
    """A masked model with fixed routing (task t reads one expert) in memory mode, both trunks:
    the reference's probabilities."""
    import dataclasses

    _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=41, hidden=(13, 6))
    model = dataclasses.replace(model, routing="fixed", fixed_expert=(2, 0), gates=None)
    proto = export_onnx(model, mode="memory", simplify=True, validate=False)
    cat, num = sample_inputs(model.spec, 20, seed=42, invalid=True)
    np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, "materialize"), reference_forward(model, cat, num),
                               rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_memory_mode_survives_default_constant_folding(tmp_path: Path, monkeypatch, weights: str, trunk: str) -> None:
    """memory: ORT's default optimisations fold the load-time part (int8 base, zero points) and
    nothing of the per-call rebuild: the Loop, its uint8 Mul/Clip and DequantizeLinear stay, and
    the optimised graph stays as small as the file (a folded decoder would multiply the expert
    bytes by 32). Both trunks: the all-experts one is kept from folding by a value computed
    from the call, the expert Loop by its iteration number."""
    _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=16, hidden=(64, 32), experts=8)
    artifact = tmp_path / "m.mome"
    write_artifact(artifact, model, weights=weights)
    export_artifact(artifact, tmp_path / "m.onnx", simplify=False, mode="memory")
    optimised = _optimised(tmp_path, tmp_path / "m.onnx")
    assert {"Loop", "Clip", "DequantizeLinear"} <= _ops(optimised)
    assert not {"Cast", "Clip"} & {n.op_type for n in optimised.graph.node}  # only inside the Loop
    dense_experts = sum(4 * layer.experts * layer.weight.size for layer in model.layers)
    assert optimised.ByteSize() < (tmp_path / "m.onnx").stat().st_size + dense_experts / 4


@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
def test_memory_mode_isolates_every_bit_of_every_byte(monkeypatch, trunk: str) -> None:
    """The uint8 Mul (mod 256) + Clip + Sub bit isolation, against numpy's unpacking: masks at
    density 0.5 over the second layer (4 experts x 256 inputs x 128 outputs) give every one of
    the 256 byte values many times, and the rebuilt experts (hence the probabilities) must
    equal the reference's."""
    from mome_edge.exporters import onnx_bitset

    _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=31, hidden=(256, 128), experts=4, density=0.5, prune=False)
    packed = (onnx_bitset.row_plane_bitsets(model.layers[1], first=False) if trunk == "all_experts"
              else onnx_bitset.plane_bitsets(model.layers[1]))
    assert len(np.unique(packed)) == 256
    proto = export_onnx(model, mode="memory", simplify=False, validate=False)
    cat, num = sample_inputs(model.spec, 32, seed=32)
    np.testing.assert_allclose(_onnx_probs(proto, cat, num, model.tasks, "materialize"), reference_forward(model, cat, num),
                               rtol=0, atol=PARITY_ATOL_FP32)


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("in_dim", [16, 13])
def test_row_plane_bitsets_unpack_to_the_masks(first: bool, in_dim: int) -> None:
    """The all-experts rebuild's packing: plane k of byte (j, o) is input row k*J + j, so the
    unpacked (8, J, ..) planes reshape to the (in8, ..) matmul operand without moving a byte;
    an input width that is not a multiple of 8 gets zero pad rows."""
    from mome_edge.exporters import onnx_bitset

    model = make_compiled("mome", seed=35, hidden=(in_dim, 6), experts=3, density=0.5, prune=False)
    layer = model.layers[1]
    e_count, out_dim, _ = layer.masks.shape
    in8 = onnx_bitset.padded_rows(in_dim)
    packed = onnx_bitset.row_plane_bitsets(layer, first=first)
    assert packed.shape == ((1, in8 // 8, e_count, out_dim) if first else (e_count, 1, in8 // 8, out_dim))
    planes = np.unpackbits(packed, axis=0 if first else 1, bitorder="big")  # (8, J, E, out) | (E, 8, J, out)
    rows = planes.reshape(in8, e_count, out_dim).transpose(1, 0, 2) if first else planes.reshape(e_count, in8, out_dim)
    np.testing.assert_array_equal(rows[:, :in_dim], layer.masks.transpose(0, 2, 1))
    assert not rows[:, in_dim:].any()


@pytest.mark.parametrize("trunk", MEMORY_TRUNKS)
@pytest.mark.parametrize("rows", [0, 1, 2 * onnx_graph.MEMORY_ROW_BLOCK + 5])
def test_memory_mode_row_blocks(monkeypatch, rows: int, trunk: str) -> None:
    """memory mode runs a batch in blocks of MEMORY_ROW_BLOCK (expert Loop) or
    MEMORY_ROW_BLOCK_ALL_EXPERTS rows: an empty batch, one row and a ragged last block give the
    reference's probabilities, in row order."""
    _memory_trunk(monkeypatch, trunk)
    model = make_compiled("mome", seed=33)
    proto = export_onnx(model, mode="memory", simplify=True, validate=False)
    cat, num = sample_inputs(model.spec, max(rows, 1), seed=34, invalid=True)
    cat, num = cat[:rows], num[:rows]
    probs = _onnx_probs(proto, cat, num, model.tasks, "materialize")
    assert probs.shape == (rows, len(model.tasks))
    if rows:
        np.testing.assert_allclose(probs, reference_forward(model, cat, num), rtol=0, atol=PARITY_ATOL_FP32)
