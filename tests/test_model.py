"""Models: shapes and gradients of every kind, the structure() round trip, MoME's phase switch
(physical neuron removal), hardening, per-expert normalisation, and vectorised experts."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mome_edge.config import MODEL_KINDS, ModelConfig
from mome_edge.train.gates import binary_gate
from mome_edge.train.layers import ExpertBatchNorm, MaskedExpertLinear
from mome_edge.train.model import MoME, MultiTaskModel, Phase, build_model, count_parameters
from mome_edge.train.phases import remove_closed_neurons, start_hardening

BATCH = 64
EMBED_DIM = 4  # tiny_model_config.embedding_dim
FIELDS, NUMERICALS = 4, 32  # the tiny synthetic data
D0 = FIELDS * EMBED_DIM + NUMERICALS  # 48 inputs of the first base layer


@pytest.fixture(scope="module")
def batch(tiny_splits) -> tuple[torch.Tensor, torch.Tensor]:
    data = tiny_splits.validation
    categorical = torch.from_numpy(data.categorical[:BATCH]).clone()
    categorical[0, 0] = 10_000  # one out-of-vocabulary id on the way
    return categorical, torch.from_numpy(data.numerical[:BATCH])


def _config(base: ModelConfig, **changes) -> ModelConfig:
    return dataclasses.replace(base, **changes)


def _warm_norm_statistics(model: MultiTaskModel, batch) -> None:
    """A few training-mode forwards so that running statistics are not the identity."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(*batch)
    model.eval()


def _randomise_expert_gates(model: MoME, low: float = -0.5, high: float = 1.5, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.base:
            layer.gate_mu.copy_(torch.rand(layer.gate_mu.shape, generator=g) * (high - low) + low)


def _all_models(config: ModelConfig, spec) -> list[tuple[str, MultiTaskModel]]:
    models = []
    for kind in MODEL_KINDS:
        if kind == "mome":
            for phase in Phase:
                models.append((f"mome-{phase.value}", MoME(_config(config, kind=kind), spec, phase=phase)))
        else:
            models.append((kind, build_model(_config(config, kind=kind), spec)))
    return models


MODEL_IDS = [f"mome-{p.value}" for p in Phase] + [k for k in MODEL_KINDS if k != "mome"]


@pytest.mark.parametrize("index", range(len(MODEL_IDS)), ids=MODEL_IDS)
def test_forward_shape_and_backward(index: int, tiny_splits, tiny_model_config, batch) -> None:
    torch.manual_seed(0)
    name, model = _all_models(tiny_model_config, tiny_splits.spec)[index]
    assert name == MODEL_IDS[index]
    model.train()
    logits = model(*batch)
    assert logits.shape == (BATCH, len(tiny_splits.spec.tasks))
    assert torch.isfinite(logits).all()
    labels = torch.from_numpy(tiny_splits.validation.labels[:BATCH])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + model.penalty()
    loss.backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    model.eval()
    with torch.no_grad():
        assert model(*batch).shape == (BATCH, len(tiny_splits.spec.tasks))


@pytest.mark.parametrize("index", range(len(MODEL_IDS)), ids=MODEL_IDS)
def test_structure_round_trip_gives_identical_outputs(index: int, tiny_splits, tiny_model_config, batch) -> None:
    torch.manual_seed(1)
    _, model = _all_models(tiny_model_config, tiny_splits.spec)[index]
    if isinstance(model, MoME) and model.phase is not Phase.NEURON_MASKING:
        _randomise_expert_gates(model)
    _warm_norm_statistics(model, batch)
    rebuilt = build_model(model.config, tiny_splits.spec, model.structure())
    assert type(rebuilt) is type(model)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    if isinstance(model, MoME):
        assert rebuilt.phase is model.phase
    with torch.no_grad():
        assert torch.equal(rebuilt(*batch), model(*batch))
    assert count_parameters(rebuilt) == count_parameters(model)


# --- phase switch: physical neuron removal ------------------------------------------------

PHASE_SWITCH_ATOL = 1e-5  # METHOD.md section 2: eval outputs must not change
CLOSED_FIELD = 1  # every embedding dimension of this field gets a closed gate
CLOSED_NUMERICALS = (0, 5, 31)


def _phase_one_model(tiny_model_config, spec, batch) -> MoME:
    """A phase-1 MoME with warmed norms and gate mus spread over closed, fractional and open values."""
    torch.manual_seed(2)
    model = MoME(tiny_model_config, spec)
    assert model.phase is Phase.NEURON_MASKING
    _warm_norm_statistics(model, batch)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for norm in model.norms:  # non-trivial affine parameters too
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=g) + 0.5)
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=g) * 0.1)
        for layer in model.base:
            n = layer.gate_mu.numel()
            mu = torch.rand(n, generator=g) * 2.0 - 0.5  # (-0.5, 1.5): closed, fractional and > 1
            mu[::4] = -0.3  # closed in every layer, for sure
            mu[1::9] = 0.0  # exactly 0 is closed as well
            mu[2::4] = 0.7  # and open ones
            layer.gate_mu.copy_(mu)
        first = model.base[0].gate_mu
        first[CLOSED_FIELD * EMBED_DIM : (CLOSED_FIELD + 1) * EMBED_DIM] = -1.0
        first[0 : EMBED_DIM] = torch.tensor([0.6, -0.2, 1.3, 0.05])  # field 0 keeps 3 of 4 dims
        numerical_mu = first[FIELDS * EMBED_DIM :]
        numerical_mu[list(CLOSED_NUMERICALS)] = -0.1
        numerical_mu[[1, 2, 3]] = 0.8
    model.eval()
    return model


def test_remove_closed_neurons_keeps_eval_outputs(tiny_splits, tiny_model_config, batch) -> None:
    spec = tiny_splits.spec
    model = _phase_one_model(tiny_model_config, spec, batch)
    before_state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        expected = model(*batch)

    pruned, report = remove_closed_neurons(model, spec, expert_mu_init=1.0)
    pruned.eval()
    assert pruned.phase is Phase.EXPERT_MASKING
    with torch.no_grad():
        torch.testing.assert_close(pruned(*batch), expected, atol=PHASE_SWITCH_ATOL, rtol=0)

    # hardening of all-open experts (mu = 1 -> mask 1) is the same function as well
    hardened = start_hardening(pruned, spec).eval()
    with torch.no_grad():
        torch.testing.assert_close(hardened(*batch), expected, atol=PHASE_SWITCH_ATOL, rtol=0)

    # the old model is left untouched
    after_state = model.state_dict()
    assert all(torch.equal(before_state[k], after_state[k]) for k in before_state)


def test_remove_closed_neurons_drops_the_right_neurons(tiny_splits, tiny_model_config, batch) -> None:
    spec = tiny_splits.spec
    model = _phase_one_model(tiny_model_config, spec, batch)
    open_masks = [(torch.clamp(layer.gate_mu.detach(), 0, 1) > 0) for layer in model.base]
    kept = [int(m.sum()) for m in open_masks]
    assert all(k < m.numel() for k, m in zip(kept, open_masks))  # something closed in every layer

    pruned, report = remove_closed_neurons(model, spec, expert_mu_init=1.0)
    assert report.nominal == (D0, tiny_model_config.hidden[0])
    assert report.kept == tuple(kept)

    first = open_masks[0]
    expected_dims = [int(first[f * EMBED_DIM : (f + 1) * EMBED_DIM].sum()) for f in range(FIELDS)]
    assert expected_dims[CLOSED_FIELD] == 0 and expected_dims[0] == 3
    structure = pruned.structure()
    assert structure["embed_dims"] == expected_dims
    assert structure["phase"] == Phase.EXPERT_MASKING.value
    assert structure["hidden"] == [kept[1], tiny_model_config.hidden[-1]]
    # the closed field keeps no table
    assert CLOSED_FIELD not in pruned.embeddings.field_index
    assert len(pruned.embeddings.tables) == FIELDS - 1
    # closed numericals leave numerical_keep
    numerical_open = first[FIELDS * EMBED_DIM :]
    expected_keep = [i for i in range(NUMERICALS) if bool(numerical_open[i])]
    assert pruned.embeddings.numerical_keep.tolist() == expected_keep
    assert not set(CLOSED_NUMERICALS) & set(expected_keep)
    assert pruned.embeddings.out_features == kept[0]
    # weights: (out kept, in kept); every expert gate mu is the requested 1.0
    assert pruned.base[0].weight.shape == (kept[1], kept[0])
    assert pruned.base[1].weight.shape == (tiny_model_config.hidden[-1], kept[1])
    for layer in pruned.base:
        assert layer.gate_mu.shape[0] == tiny_model_config.experts
        assert torch.all(layer.gate_mu == 1.0)
    # normalisation statistics: per expert, copied from the base channel that survived
    assert pruned.norms[0].running_mean.shape == (tiny_model_config.experts, kept[1])
    base_mean = model.norms[0].running_mean[0, open_masks[1]]
    for e in range(tiny_model_config.experts):
        assert torch.equal(pruned.norms[0].running_mean[e], base_mean)
    # a pruned structure round-trips like any other
    rebuilt = build_model(pruned.config, spec, structure)
    rebuilt.load_state_dict(pruned.state_dict())
    pruned.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(*batch), pruned(*batch))


def test_remove_closed_neurons_refuses_a_later_phase(tiny_splits, tiny_model_config) -> None:
    model = MoME(tiny_model_config, tiny_splits.spec, phase=Phase.EXPERT_MASKING)
    with pytest.raises(ValueError, match="neurons are removed once"):
        remove_closed_neurons(model, tiny_splits.spec)
    with pytest.raises(ValueError, match="hardening follows"):
        start_hardening(MoME(tiny_model_config, tiny_splits.spec), tiny_splits.spec)


# --- hardening: exact binary masks ---------------------------------------------------------


def test_start_hardening_makes_masks_binary_and_frozen(tiny_splits, tiny_model_config, batch) -> None:
    spec = tiny_splits.spec
    config = _config(tiny_model_config, mask_threshold=0.3)
    torch.manual_seed(4)
    soft = MoME(config, spec, phase=Phase.EXPERT_MASKING)
    _randomise_expert_gates(soft, seed=5)
    _warm_norm_statistics(soft, batch)

    hard = start_hardening(soft, spec)
    assert hard.phase is Phase.HARDENING
    for mode in ("eval", "train"):
        getattr(hard, mode)()
        for layer, soft_layer in zip(hard.base, soft.base):
            masks = layer.masks()
            assert set(torch.unique(masks).tolist()) == {0.0, 1.0}, mode
            assert torch.equal(masks, binary_gate(soft_layer.gate_mu.detach(), 0.3))
    assert all(not mu.requires_grad for mu in hard.gate_mus())

    # the same function as the soft model whose gates sit exactly on the binary values
    reference = copy.deepcopy(soft)
    with torch.no_grad():
        for layer in reference.base:
            layer.gate_mu.copy_(binary_gate(layer.gate_mu, config.mask_threshold))
    hard.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(hard(*batch), reference(*batch))

    # gates get no gradient; the weights do
    hard.train()
    hard(*batch).sum().backward()
    assert all(layer.gate_mu.grad is None for layer in hard.base)
    assert all(layer.weight.grad is not None for layer in hard.base)


# --- per-expert normalisation --------------------------------------------------------------


@pytest.mark.parametrize("phase", [Phase.EXPERT_MASKING, Phase.HARDENING], ids=lambda p: p.value)
def test_mome_norms_hold_separate_statistics_per_expert(phase: Phase, tiny_splits, tiny_model_config, batch) -> None:
    torch.manual_seed(6)
    model = MoME(tiny_model_config, tiny_splits.spec, phase=phase)
    _randomise_expert_gates(model, seed=7)  # experts compute different functions
    experts = tiny_model_config.experts
    seen: list[torch.Tensor] = []
    hooks = [norm.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach())) for norm in model.norms]
    model.train()
    with torch.no_grad():
        model(*batch)
    for hook in hooks:
        hook.remove()
    momentum = 0.1
    for norm, h, width in zip(model.norms, seen, tiny_model_config.hidden):
        assert isinstance(norm, ExpertBatchNorm)
        assert h.shape == (experts, BATCH, width)
        for name in ("weight", "bias", "running_mean", "running_var"):
            assert getattr(norm, name).shape == (experts, width)
        # one update from zero: running_mean[e] = momentum * mean of expert e's own batch
        torch.testing.assert_close(norm.running_mean, momentum * h.mean(dim=1), atol=1e-6, rtol=1e-5)
        assert not torch.allclose(norm.running_mean[0], norm.running_mean[1])


# --- experts are a tensor axis, not a Python loop ------------------------------------------

MATMUL_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::matmul", "aten::linear")


def _op_counts(model: MultiTaskModel, batch) -> Counter:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(*batch)
    return Counter(event.name for event in prof.events())


@pytest.mark.parametrize("kind", ["mome-expert-masking", "mome-hardening", "mmoe"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_op_count_does_not_grow_with_experts(kind: str, mode: str, tiny_splits, tiny_model_config, batch) -> None:
    counts = {}
    for experts in (2, 16):
        config = _config(tiny_model_config, experts=experts, kind="mmoe" if kind == "mmoe" else "mome")
        torch.manual_seed(0)
        if kind == "mmoe":
            model = build_model(config, tiny_splits.spec)
        else:
            model = MoME(config, tiny_splits.spec, phase=Phase(kind.removeprefix("mome-")))
        getattr(model, mode)()
        with torch.no_grad():
            counts[experts] = _op_counts(model, batch)
    matmuls = {e: {op: c[op] for op in MATMUL_OPS} for e, c in counts.items()}
    assert sum(matmuls[2].values()) > 0
    assert matmuls[2] == matmuls[16]
    assert sum(counts[2].values()) == sum(counts[16].values())  # no op at all runs once per expert


def test_masked_layers_are_expert_stacks(tiny_splits, tiny_model_config) -> None:
    model = MoME(tiny_model_config, tiny_splits.spec, phase=Phase.EXPERT_MASKING)
    sizes = [D0, *tiny_model_config.hidden]
    for layer, (a, b) in zip(model.base, zip(sizes[:-1], sizes[1:])):
        assert isinstance(layer, MaskedExpertLinear)
        assert layer.weight.shape == (b, a)  # one shared base weight
        assert layer.gate_mu.shape == (tiny_model_config.experts, b, a)  # one gate per weight per expert
