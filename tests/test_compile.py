"""The compiler: torch model -> CompiledModel, parity for every kind, dead-neuron folding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mome_edge.artifact.reader import parse_artifact
from mome_edge.artifact.writer import artifact_bytes, quantize_model
from mome_edge.compile.compiler import FP32_PARITY_TOLERANCE, compile_model, compile_run, compile_to_file
from mome_edge.config import MODEL_KINDS, ModelConfig
from mome_edge.errors import ConfigError
from mome_edge.train.layers import ExpertBatchNorm
from mome_edge.metrics import task_metrics
from mome_edge.train.model import MoME, Phase, build_model
from mome_edge.train.phases import remove_closed_neurons, start_hardening
from mome_edge.runtime.predict import reference_predict
from mome_edge.train.loop import predict_proba

FP16_PROB_TOLERANCE = 5e-3  # max |dp| of fp16 storage vs fp32 on random tiny models
INT8_PROB_TOLERANCE = 3e-2  # max |dp| of int8 per-channel storage vs fp32 on random tiny models
INT8_AUC_TOLERANCE = 5e-3  # |test AUC change| of a trained tiny run at int8 (600 test rows)
FP16_AUC_TOLERANCE = 1e-3


# --- random models of every kind (no training: parity does not need good weights) -----------
@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "gate_mu" in name:
            continue
        param.copy_(torch.randn(param.shape, generator=gen) * 0.4)
    for module in model.modules():
        if isinstance(module, ExpertBatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.3)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) * 1.5 + 0.3)
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)


@torch.no_grad()
def hardened_mome(spec, config: ModelConfig, seed: int = 0, *, open_share: float = 0.5, closed_neurons: float = 0.2) -> MoME:
    """A MoME model in phase HARDENING with some closed neurons and random binary masks."""
    gen = torch.Generator().manual_seed(seed)
    model = build_model(config, spec)
    for layer in model.base:  # close a share of input neurons, keep the rest fractional
        mu = torch.rand(layer.gate_mu.shape, generator=gen)
        layer.gate_mu.copy_(torch.where(mu < closed_neurons, torch.full_like(mu, -1.0), mu))
    model, _ = remove_closed_neurons(model, spec)
    model = start_hardening(model, spec)
    _randomise(model, seed)
    for layer in model.base:
        layer.gate_mu.copy_((torch.rand(layer.gate_mu.shape, generator=gen) < open_share).float())
    return model.eval()


def random_model(kind: str, spec, seed: int = 0):
    config = ModelConfig(kind=kind, hidden=(12, 8), experts=3, embedding_dim=4, tower_hidden=(6,),
                         ple_shared_experts=2, ple_task_experts=1)
    if kind == "mome":
        return hardened_mome(spec, config, seed)
    model = build_model(config, spec)
    _randomise(model, seed)
    return model.eval()


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)))


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_compiled_fp32_matches_torch_eval_for_every_kind(kind: str, tiny_splits) -> None:
    model = random_model(kind, tiny_splits.spec)
    compiled = compile_model(model, tiny_splits.spec, metadata={"test": kind})
    data = tiny_splits.test
    diff = _max_diff(reference_predict(compiled, data.categorical, data.numerical), predict_proba(model, data))
    assert diff <= FP32_PARITY_TOLERANCE
    assert compiled.kind == kind and compiled.metadata["test"] == kind
    assert compiled.metadata["nominal"]["hidden"] == [12, 8]


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize(("weights", "tolerance"), [("fp16", FP16_PROB_TOLERANCE), ("int8", INT8_PROB_TOLERANCE)], ids=["fp16", "int8"])
def test_quantised_storage_stays_close_to_torch(kind: str, weights: str, tolerance: float, tiny_splits) -> None:
    model = random_model(kind, tiny_splits.spec, seed=1)
    compiled = quantize_model(compile_model(model, tiny_splits.spec, metadata={}), weights)
    data = tiny_splits.test
    diff = _max_diff(reference_predict(compiled, data.categorical, data.numerical), predict_proba(model, data))
    assert 0 < diff <= tolerance


def test_only_a_hardened_mome_compiles(tiny_splits) -> None:
    config = ModelConfig(kind="mome", hidden=(8, 4), experts=2, embedding_dim=4)
    model, _ = remove_closed_neurons(build_model(config, tiny_splits.spec), tiny_splits.spec)
    assert model.phase is Phase.EXPERT_MASKING
    with pytest.raises(ConfigError, match="phase expert-masking; only a model in phase hardening"):
        compile_model(model, tiny_splits.spec, metadata={})


# --- dead-neuron folding -----------------------------------------------------------------------
@torch.no_grad()
def test_dead_and_unread_neurons_are_removed_exactly(tiny_splits) -> None:
    """Layer sizes (12, 10, 6). Layer 1 rows 0-2 closed in every expert (their constant relu(shift)
    must move into layer 2's shift), layer 2 row 4 closed, layer 2 column 7 read by no expert
    (layer 1 output 7 goes), x0 columns 0-4 read by no expert (input_index), and layer 3 row 0
    closed: kept, because the last layer feeds the gate mixture."""
    spec = tiny_splits.spec
    config = ModelConfig(kind="mome", hidden=(12, 10, 6), experts=3, embedding_dim=4, tower_hidden=(5,))
    model = hardened_mome(spec, config, seed=3, open_share=0.6, closed_neurons=0.0)
    first, second, third = model.base
    assert first.weight.shape[0] == 12 and second.weight.shape == (10, 12)
    first.gate_mu[:, :3, :] = 0.0
    model.norms[0].bias[:, :3] = 1.5  # relu(shift) > 0: dropping without folding would be wrong
    first.gate_mu[:, :, :5] = 0.0
    second.gate_mu[:, 4, :] = 0.0
    second.gate_mu[:, :, 7] = 0.0
    third.gate_mu[:, 0, :] = 0.0
    width = first.weight.shape[1]

    compiled = compile_model(model, spec, metadata={})
    data = tiny_splits.test
    diff = _max_diff(reference_predict(compiled, data.categorical, data.numerical), predict_proba(model, data))
    assert diff <= FP32_PARITY_TOLERANCE
    l1, l2, l3 = compiled.layers
    assert l1.weight.shape == (12 - 3 - 1, width - 5)
    assert l2.weight.shape == (10 - 1, 8) and l2.masks.shape == (3, 9, 8)
    assert l3.weight.shape == (6, 9)
    np.testing.assert_array_equal(l1.input_index, np.arange(5, width))
    assert compiled.metadata["compile"] == {
        "dead_neurons_removed": [3, 1, 0], "unread_neurons_removed": [1, 0, 0], "input_columns_removed": 0,
    }
    # Without the folded constants the outputs would move: the test exercises the folding.
    unfolded = dataclasses.replace(l2, shift=_shift_without_constants(model))
    broken = dataclasses.replace(compiled, layers=(l1, unfolded, l3))
    assert _max_diff(reference_predict(broken, data.categorical, data.numerical), predict_proba(model, data)) > 1e-3


def _shift_without_constants(model) -> np.ndarray:
    """Layer 2's (E, out) shift before folding, restricted to the kept rows (all but row 4)."""
    linear, norm = model.base[1], model.norms[1]
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = (linear.bias - norm.running_mean) * scale + norm.bias  # (E, 10)
    keep = [j for j in range(10) if j != 4]
    return shift[:, keep].numpy().astype(np.float32)


@torch.no_grad()
def test_x0_columns_nothing_reads_leave_the_embeddings(tiny_splits) -> None:
    """A whole field that neither the first layer nor any gate reads loses its table."""
    spec = tiny_splits.spec
    model = hardened_mome(spec, ModelConfig(kind="mome", hidden=(8, 4), experts=2, embedding_dim=4), seed=5)
    dims = model.embeddings.embed_dims
    field = next(f for f, d in enumerate(dims) if d > 0)
    start = sum(dims[:field])
    cols = slice(start, start + dims[field])
    model.base[0].gate_mu[:, :, cols] = 0.0
    model.gates.linear.weight[:, cols] = 0.0
    compiled = compile_model(model, spec, metadata={})
    assert field not in compiled.field_index
    assert compiled.metadata["compile"]["input_columns_removed"] == dims[field]
    data = tiny_splits.test
    diff = _max_diff(reference_predict(compiled, data.categorical, data.numerical), predict_proba(model, data))
    assert diff <= FP32_PARITY_TOLERANCE


@torch.no_grad()
def test_weights_no_expert_uses_are_stored_as_zero(tiny_splits) -> None:
    model = hardened_mome(tiny_splits.spec, ModelConfig(kind="mome", hidden=(8, 4), experts=2, embedding_dim=4), seed=2)
    layer = compile_model(model, tiny_splits.spec, metadata={}).layers[1]
    unused = ~layer.masks.any(axis=0)
    assert unused.any() and np.all(layer.weight[unused] == 0)


# --- run folders ---------------------------------------------------------------------------------
def test_compile_run_records_names_not_paths(tiny_run) -> None:
    run_dir = tiny_run("mome")
    meta = compile_run(run_dir).metadata
    assert meta["source_run"] == run_dir.name
    assert "data_dir" not in meta["dataset"] and "spec_path" not in meta["dataset"]
    assert str(run_dir.parent) not in repr(meta)
    assert meta["model_config"]["kind"] == "mome" and meta["train_config"]["epochs"] == 5
    assert set(meta["training"]["test"]) == {"task1", "task2"}


@pytest.mark.parametrize("weights", ["fp16", "int8"])
def test_compile_run_returns_what_the_artifact_reads_back(weights: str, tiny_run) -> None:
    run_dir = tiny_run("mome")
    compiled = compile_run(run_dir, weights)
    loaded = parse_artifact(artifact_bytes(compile_run(run_dir), weights=weights)).model
    for a, b in zip(compiled.layers, loaded.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.masks, b.masks)
    for a, b in zip(compiled.embeddings, loaded.embeddings):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["mome", "mmoe"])
def test_compile_to_file_checks_parity_and_reports_auc_change(kind: str, tiny_run, tmp_path, record_property) -> None:
    out = tmp_path / f"{kind}.mome"
    fp32 = compile_to_file(tiny_run(kind), out, weights="fp32")
    assert fp32.parity_max_abs_diff <= FP32_PARITY_TOLERANCE
    assert fp32.file_bytes == out.stat().st_size == sum(fp32.components.values())
    assert all(change == 0 for change in fp32.auc_change.values())
    for weights, bound in (("fp16", FP16_AUC_TOLERANCE), ("int8", INT8_AUC_TOLERANCE)):
        report = compile_to_file(tiny_run(kind), tmp_path / f"{kind}-{weights}.mome", weights=weights)
        record_property(f"auc_change_{weights}", report.auc_change)
        assert report.file_bytes < fp32.file_bytes
        assert all(abs(change) <= bound for change in report.auc_change.values()), report.auc_change


# --- census-income (real data): the parity claim on its own test split ------------------
@pytest.mark.real_data
@pytest.mark.parametrize("kind", ["mome", "mmoe"])
def test_census_parity_of_a_small_run(kind: str, shared_data_dir, tmp_path) -> None:
    from mome_edge.config import TrainConfig
    from mome_edge.runs import DatasetRef
    from mome_edge.train.loop import train

    ref = DatasetRef(name="census-income", data_dir=str(shared_data_dir), max_rows=4000)
    data = ref.load()
    config = ModelConfig(kind=kind, hidden=(16, 8), experts=3, embedding_dim=4, tower_hidden=(8,))
    run = train(run_dir=tmp_path / "run", data=data, model_config=config, dataset=ref, progress=False,
                train_config=TrainConfig(epochs=3, neuron_epochs=1, harden_epochs=1, batch_size=256, lr=1e-2))
    report = compile_to_file(run.run_dir, tmp_path / "census.mome")
    assert report.parity_max_abs_diff <= FP32_PARITY_TOLERANCE
    assert report.test_auc_fp32 == pytest.approx({t: m["auc"] for t, m in task_metrics(
        data.test.labels, predict_proba(run.model, data.test), data.spec.tasks).items()}, abs=1e-6)
