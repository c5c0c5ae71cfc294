"""Building blocks: field embeddings, neuron-gated and expert-masked linear layers, per-expert
batch normalisation. Experts are always a leading tensor axis, never a Python loop.

Layouts: base weights are (out, in) like nn.Linear; expert tensors are (E, out, in);
activations of E experts are (E, B, features).
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Sequence

import torch
from torch import nn

from mome_edge.train.distributed import all_reduce_sum, is_distributed
from mome_edge.train.gates import (
    GATE_MU_INIT,
    binary_gate,
    gate_penalty,
    stochastic_gate,
    stochastic_masked_weight,
)


class GateMode(str, Enum):
    """How expert gates act: SOFT = stochastic gates in [0, 1]; HARD = exact, frozen 0/1."""

    SOFT = "soft"
    HARD = "hard"


class FieldEmbeddings(nn.Module):
    """Categorical ids -> concatenated embeddings, followed by the kept numerical features.

    Each field has its own table and its own width (physical neuron removal can shrink a
    field's width; a field of width 0 keeps no table). Ids outside [0, vocab) map to the
    out-of-vocabulary row 0, so hostile or stale ids never index out of bounds.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        embed_dims: Sequence[int],
        numerical_keep: Sequence[int],
    ) -> None:
        super().__init__()
        if len(vocab_sizes) != len(embed_dims):
            raise ValueError("one embedding width per categorical field is required")
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.embed_dims = tuple(int(d) for d in embed_dims)
        self.field_index = tuple(f for f, d in enumerate(self.embed_dims) if d > 0)
        self.tables = nn.ModuleList(
            nn.Embedding(self.vocab_sizes[f], self.embed_dims[f]) for f in self.field_index
        )
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.05)
        self.register_buffer("numerical_keep", torch.as_tensor(list(numerical_keep), dtype=torch.long))
        self.register_buffer("vocab_limit", torch.as_tensor([self.vocab_sizes[f] for f in self.field_index], dtype=torch.long))

    @property
    def out_features(self) -> int:
        return sum(self.embed_dims) + int(self.numerical_keep.numel())

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.field_index:
            ids = categorical[:, list(self.field_index)]  # (B, F_used)
            ids = torch.where((ids >= 0) & (ids < self.vocab_limit), ids, torch.zeros_like(ids))
            parts.extend(table(ids[:, j]) for j, table in enumerate(self.tables))
        if self.numerical_keep.numel():
            parts.append(numerical.index_select(1, self.numerical_keep))
        return torch.cat(parts, dim=1)  # (B, out_features)


class ExpertBatchNorm(nn.Module):
    """Batch normalisation with separate statistics and affine per expert, on (E, B, C).

    One BatchNorm shared by all experts (the reference code) mixes the statistics of
    experts that compute different functions; its eval statistics then match none of them.
    """

    def __init__(self, experts: int, channels: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(experts, channels))
        self.bias = nn.Parameter(torch.zeros(experts, channels))
        self.register_buffer("running_mean", torch.zeros(experts, channels))
        self.register_buffer("running_var", torch.ones(experts, channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: (E, B, C)
        if self.training and h.shape[1] > 1:
            if is_distributed():  # statistics of the global batch, as one process would see it
                n_local = torch.tensor([float(h.shape[1])])
                sums = all_reduce_sum(torch.stack([h.sum(dim=1), (h * h).sum(dim=1)]))  # (2, E, C)
                n = int(all_reduce_sum(n_local).item())
                mean = sums[0] / n
                var = (sums[1] / n - mean * mean).clamp_min(0.0)
            else:
                n = h.shape[1]
                mean = h.mean(dim=1)  # (E, C)
                var = h.var(dim=1, unbiased=False)  # (E, C)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)  # (E, C)
        return (h - mean.unsqueeze(1)) * scale.unsqueeze(1) + self.bias.unsqueeze(1)


def expert_matmul(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Apply E weight matrices (E, out, in) to a shared input (B, in) or per-expert inputs (E, B, in).

    A shared input costs one matmul against the stacked (E*out, in) matrix; per-expert inputs
    one batched matmul. Returns (E, B, out).
    """
    experts, out_features, in_features = weights.shape
    if h.dim() == 2:
        y = h @ weights.reshape(experts * out_features, in_features).t()  # (B, E*out)
        return y.view(h.shape[0], experts, out_features).transpose(0, 1)  # (E, B, out)
    return torch.bmm(h, weights.transpose(1, 2))  # (E, B, out)


def _init_linear_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    fan_in = weight.shape[-1]
    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


class NeuronGatedLinear(nn.Module):
    """Phase 1: y = (x * z) W^T + b with one stochastic gate z per input neuron."""

    def __init__(self, in_features: int, out_features: int, *, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.gate_mu = nn.Parameter(torch.full((in_features,), GATE_MU_INIT))
        _init_linear_(self.weight, self.bias)

    def gate(self) -> torch.Tensor:
        return stochastic_gate(self.gate_mu, self.sigma, training=self.training)

    def penalty(self) -> torch.Tensor:
        return gate_penalty(self.gate_mu, self.sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., in)
        return torch.nn.functional.linear(x * self.gate(), self.weight, self.bias)


class MaskedExpertLinear(nn.Module):
    """Phase 2: E experts carved from one shared base weight by per-weight gates.

    Expert e computes h_e (Z_e * W)^T + b. Z_e is stochastic in [0, 1] in SOFT mode and
    exactly 0/1 in HARD mode, in training and evaluation alike (the masks are then frozen:
    what is trained is what is evaluated and shipped).
    """

    def __init__(
        self,
        experts: int,
        in_features: int,
        out_features: int,
        *,
        sigma: float,
        mode: GateMode,
        threshold: float,
    ) -> None:
        super().__init__()
        self.sigma, self.mode, self.threshold = sigma, GateMode(mode), threshold
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.gate_mu = nn.Parameter(torch.full((experts, out_features, in_features), GATE_MU_INIT))
        _init_linear_(self.weight, self.bias)

    def masks(self) -> torch.Tensor:
        """The gate values the forward pass uses now: (E, out, in)."""
        if self.mode is GateMode.HARD:
            return binary_gate(self.gate_mu, self.threshold)
        return stochastic_gate(self.gate_mu, self.sigma, training=self.training)

    def penalty(self) -> torch.Tensor:
        return gate_penalty(self.gate_mu, self.sigma)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mode is GateMode.SOFT:
            weights = stochastic_masked_weight(self.gate_mu, self.weight, self.sigma, training=self.training)
        else:
            weights = binary_gate(self.gate_mu, self.threshold) * self.weight  # (E, out, in)
        return expert_matmul(h, weights) + self.bias.view(1, 1, -1)  # (E, B, out)


class DenseExpertLinear(nn.Module):
    """E independent dense experts (MMoE, PLE, single-task towers), vectorised."""

    def __init__(self, experts: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(experts, out_features))
        for e in range(experts):  # initialisation only, not the forward pass
            _init_linear_(self.weight.data[e], self.bias.data[e])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return expert_matmul(h, self.weight) + self.bias.unsqueeze(1)  # (E, B, out)


def make_norm(kind: str, experts: int, channels: int) -> nn.Module:
    if kind == "batch":
        return ExpertBatchNorm(experts, channels)
    return nn.Identity()
