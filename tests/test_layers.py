"""Layers against per-expert Python-loop references: expert_matmul, the masked and dense expert
linears, per-expert batch normalisation, and out-of-range ids in the field embeddings."""

from __future__ import annotations

import pytest
import torch

from mome_edge.train.gates import binary_gate
from mome_edge.train.layers import (
    DenseExpertLinear,
    ExpertBatchNorm,
    FieldEmbeddings,
    GateMode,
    MaskedExpertLinear,
    NeuronGatedLinear,
    expert_matmul,
)

EXPERTS, BATCH, IN, OUT = 3, 11, 7, 5

# Tolerances: the vectorised and the looped computations sum the same products in a
# different order; inputs are O(1), so float32 differences stay around 1e-7.
FLOAT32_ATOL = 1e-6
FLOAT32_RTOL = 1e-6
FLOAT64_ATOL = 1e-12
FLOAT64_RTOL = 1e-12
TOLERANCES = {torch.float32: (FLOAT32_ATOL, FLOAT32_RTOL), torch.float64: (FLOAT64_ATOL, FLOAT64_RTOL)}


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    atol, rtol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- expert_matmul ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_expert_matmul_shared_input_equals_loop(dtype: torch.dtype) -> None:
    g = _generator(1)
    h = torch.rand(BATCH, IN, generator=g, dtype=dtype) * 2 - 1  # (B, in)
    weights = torch.rand(EXPERTS, OUT, IN, generator=g, dtype=dtype) * 2 - 1  # (E, out, in)
    out = expert_matmul(h, weights)
    expected = torch.stack([h @ weights[e].t() for e in range(EXPERTS)])  # (E, B, out)
    assert out.shape == (EXPERTS, BATCH, OUT)
    _close(out, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_expert_matmul_per_expert_input_equals_loop(dtype: torch.dtype) -> None:
    g = _generator(2)
    h = torch.rand(EXPERTS, BATCH, IN, generator=g, dtype=dtype) * 2 - 1  # (E, B, in)
    weights = torch.rand(EXPERTS, OUT, IN, generator=g, dtype=dtype) * 2 - 1
    out = expert_matmul(h, weights)
    expected = torch.stack([h[e] @ weights[e].t() for e in range(EXPERTS)])
    assert out.shape == (EXPERTS, BATCH, OUT)
    _close(out, expected)


def test_expert_matmul_single_expert_and_single_row() -> None:
    g = _generator(3)
    h = torch.rand(1, IN, generator=g, dtype=torch.float64)
    weights = torch.rand(1, OUT, IN, generator=g, dtype=torch.float64)
    _close(expert_matmul(h, weights), (h @ weights[0].t()).unsqueeze(0))


# --- MaskedExpertLinear -------------------------------------------------------------------


def _masked_layer(mode: GateMode, dtype: torch.dtype, threshold: float = 0.5) -> MaskedExpertLinear:
    layer = MaskedExpertLinear(EXPERTS, IN, OUT, sigma=0.5, mode=mode, threshold=threshold).to(dtype)
    with torch.no_grad():
        # gates spread over both clamp edges and the inside
        layer.gate_mu.copy_(torch.rand(layer.gate_mu.shape, generator=_generator(4), dtype=dtype) * 2.0 - 0.5)
    return layer


def _masked_reference(layer: MaskedExpertLinear, h: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    outs = []
    for e in range(masks.shape[0]):
        h_e = h if h.dim() == 2 else h[e]
        outs.append(h_e @ (masks[e] * layer.weight).t() + layer.bias)
    return torch.stack(outs)  # (E, B, out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", [GateMode.SOFT, GateMode.HARD], ids=["soft", "hard"])
@pytest.mark.parametrize("shared_input", [True, False], ids=["shared-input", "per-expert-input"])
def test_masked_expert_linear_eval_equals_loop(mode: GateMode, dtype: torch.dtype, shared_input: bool) -> None:
    threshold = 0.4
    layer = _masked_layer(mode, dtype, threshold).eval()
    shape = (BATCH, IN) if shared_input else (EXPERTS, BATCH, IN)
    h = torch.rand(shape, generator=_generator(5), dtype=dtype) * 2 - 1
    mu = layer.gate_mu.detach()
    masks = binary_gate(mu, threshold) if mode is GateMode.HARD else torch.clamp(mu, 0, 1)
    assert torch.equal(layer.masks(), masks)
    with torch.no_grad():
        _close(layer(h), _masked_reference(layer, h, masks))


def test_masked_expert_linear_hard_masks_are_binary_in_training_too() -> None:
    layer = _masked_layer(GateMode.HARD, torch.float32).train()
    masks = layer.masks()
    assert set(torch.unique(masks).tolist()) == {0.0, 1.0}
    assert torch.equal(masks, layer.masks())  # no noise: the same masks on every call


def test_masked_expert_linear_soft_training_uses_the_stochastic_gate() -> None:
    layer = _masked_layer(GateMode.SOFT, torch.float64).train()
    h = torch.rand(BATCH, IN, generator=_generator(6), dtype=torch.float64)
    torch.manual_seed(99)
    out = layer(h)
    torch.manual_seed(99)
    masks = torch.clamp(layer.gate_mu.detach() + 0.5 * torch.randn_like(layer.gate_mu), 0, 1)
    _close(out.detach(), _masked_reference(layer, h, masks).detach())


def test_neuron_gated_linear_scales_input_columns() -> None:
    layer = NeuronGatedLinear(IN, OUT, sigma=0.5).double().eval()
    with torch.no_grad():
        layer.gate_mu.copy_(torch.tensor([-0.3, 0.0, 0.2, 0.5, 0.9, 1.0, 1.7], dtype=torch.float64))
    h = torch.rand(BATCH, IN, generator=_generator(7), dtype=torch.float64)
    z = torch.clamp(layer.gate_mu.detach(), 0, 1)
    with torch.no_grad():
        _close(layer(h), h @ (layer.weight * z).t() + layer.bias)


# --- DenseExpertLinear --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shared_input", [True, False], ids=["shared-input", "per-expert-input"])
def test_dense_expert_linear_equals_loop(dtype: torch.dtype, shared_input: bool) -> None:
    torch.manual_seed(0)
    layer = DenseExpertLinear(EXPERTS, IN, OUT).to(dtype).eval()
    shape = (BATCH, IN) if shared_input else (EXPERTS, BATCH, IN)
    h = torch.rand(shape, generator=_generator(8), dtype=dtype) * 2 - 1
    expected = torch.stack(
        [(h if shared_input else h[e]) @ layer.weight[e].t() + layer.bias[e] for e in range(EXPERTS)]
    )
    with torch.no_grad():
        _close(layer(h), expected)
    assert not torch.equal(layer.weight[0], layer.weight[1])  # experts are initialised independently


# --- ExpertBatchNorm ----------------------------------------------------------------------

BATCHNORM_ATOL = 1e-5  # float32, unit-scale activations
BATCHNORM_RTOL = 1e-5
BATCHNORM_STEPS = 4


def _batchnorm_pair(channels: int) -> tuple[ExpertBatchNorm, list[torch.nn.BatchNorm1d]]:
    ours = ExpertBatchNorm(EXPERTS, channels)
    refs = [torch.nn.BatchNorm1d(channels, momentum=0.1, eps=1e-5) for _ in range(EXPERTS)]
    g = _generator(9)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(EXPERTS, channels, generator=g) + 0.5)
        ours.bias.copy_(torch.randn(EXPERTS, channels, generator=g))
        for e, ref in enumerate(refs):
            ref.weight.copy_(ours.weight[e])
            ref.bias.copy_(ours.bias[e])
    return ours, refs


def test_expert_batchnorm_equals_separate_batchnorms() -> None:
    channels = OUT
    ours, refs = _batchnorm_pair(channels)
    g = _generator(10)
    # every expert sees data of another location and scale: shared statistics would be wrong
    offsets = torch.arange(EXPERTS, dtype=torch.float32).view(EXPERTS, 1, 1) * 3.0
    scales = torch.arange(1, EXPERTS + 1, dtype=torch.float32).view(EXPERTS, 1, 1)
    ours.train()
    for ref in refs:
        ref.train()
    for _ in range(BATCHNORM_STEPS):
        h = torch.randn(EXPERTS, 32, channels, generator=g) * scales + offsets  # (E, B, C)
        out = ours(h)
        expected = torch.stack([refs[e](h[e]) for e in range(EXPERTS)])
        torch.testing.assert_close(out, expected, atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL)
    torch.testing.assert_close(
        ours.running_mean, torch.stack([r.running_mean for r in refs]), atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL
    )
    torch.testing.assert_close(
        ours.running_var, torch.stack([r.running_var for r in refs]), atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL
    )
    assert not torch.allclose(ours.running_mean[0], ours.running_mean[-1])  # separate statistics

    ours.eval()
    for ref in refs:
        ref.eval()
    h = torch.randn(EXPERTS, 9, channels, generator=g) * scales + offsets
    with torch.no_grad():
        expected = torch.stack([refs[e](h[e]) for e in range(EXPERTS)])
        torch.testing.assert_close(ours(h), expected, atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL)


def test_expert_batchnorm_backward_matches_separate_batchnorms() -> None:
    ours, refs = _batchnorm_pair(OUT)
    h = torch.randn(EXPERTS, 16, OUT, generator=_generator(11))
    h1 = h.clone().requires_grad_(True)
    h2 = h.clone().requires_grad_(True)
    weights = torch.randn(EXPERTS, 16, OUT, generator=_generator(12))
    (ours(h1) * weights).sum().backward()
    sum((refs[e](h2[e]) * weights[e]).sum() for e in range(EXPERTS)).backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL)
    torch.testing.assert_close(ours.weight.grad, torch.stack([r.weight.grad for r in refs]), atol=BATCHNORM_ATOL, rtol=BATCHNORM_RTOL)


# --- FieldEmbeddings ----------------------------------------------------------------------

INT64_MAX = torch.iinfo(torch.int64).max
INT64_MIN = torch.iinfo(torch.int64).min


@pytest.mark.parametrize(
    "bad_id",
    [-1, -7, 5, 6, 1_000_000, INT64_MAX, INT64_MIN],
    ids=["minus-1", "minus-7", "vocab", "vocab+1", "huge", "int64-max", "int64-min"],
)
def test_field_embeddings_map_out_of_range_ids_to_row_zero(bad_id: int) -> None:
    torch.manual_seed(0)
    vocab = (5, 9, 4)
    emb = FieldEmbeddings(vocab, (3, 0, 2), numerical_keep=[1])  # field 1 has no table
    categorical = torch.tensor([[bad_id, bad_id, bad_id], [2, 8, 3]], dtype=torch.int64)
    numerical = torch.tensor([[0.5, -1.5], [2.0, 3.0]])
    with torch.no_grad():
        out = emb(categorical, numerical)
    assert out.shape == (2, 3 + 2 + 1) == (2, emb.out_features)
    table0, table2 = emb.tables[0].weight, emb.tables[1].weight
    # every bad id is outside [0, 5) and [0, 4): it becomes the OOV row 0 of its own table
    expected_bad_row = torch.cat([table0[0], table2[0], torch.tensor([-1.5])])
    assert torch.equal(out[0], expected_bad_row)
    expected_good_row = torch.cat([table0[2], table2[3], torch.tensor([3.0])])
    assert torch.equal(out[1], expected_good_row)


def test_field_embeddings_in_range_ids_use_their_rows() -> None:
    torch.manual_seed(0)
    emb = FieldEmbeddings((4, 6), (2, 3), numerical_keep=[])
    categorical = torch.tensor([[0, 0], [3, 5], [1, 4]])
    with torch.no_grad():
        out = emb(categorical, torch.zeros(3, 0))
    for r, (a, b) in enumerate(categorical.tolist()):
        assert torch.equal(out[r], torch.cat([emb.tables[0].weight[a], emb.tables[1].weight[b]]))
    # an id equal to vocab_size - 1 is the last valid row, vocab_size itself is OOV
    with torch.no_grad():
        edge = emb(torch.tensor([[3, 6]]), torch.zeros(1, 0))
    assert torch.equal(edge[0], torch.cat([emb.tables[0].weight[3], emb.tables[1].weight[0]]))
