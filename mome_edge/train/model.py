"""MoME and the baselines it is compared with, on one shared skeleton:

    embeddings(categorical, numerical) -> x0 (B, d0)
    trunk(x0)                          -> per-task representation (T, B, d)
    towers                             -> logits (B, T)

Only the trunk differs between model kinds. MoME's training phase is an explicit
constructor value; moving to the next phase builds a new model (see `phases.py`) instead
of rewriting parameters behind the caller's back.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mome_edge.config import ModelConfig
from mome_edge.encoding import FeatureSpec
from mome_edge.train.gates import GATE_MU_INIT, open_probability_sum, stochastic_gate
from mome_edge.train.layers import (
    DenseExpertLinear,
    FieldEmbeddings,
    GateMode,
    MaskedExpertLinear,
    NeuronGatedLinear,
    make_norm,
)


class Phase(str, Enum):
    """MoME training phases, in order."""

    NEURON_MASKING = "neuron-masking"
    EXPERT_MASKING = "expert-masking"
    HARDENING = "hardening"


class Towers(nn.Module):
    """One MLP per task, vectorised over tasks: (T, B, d) -> logits (B, T)."""

    def __init__(self, tasks: int, in_features: int, hidden: Sequence[int]) -> None:
        super().__init__()
        sizes = [in_features, *hidden, 1]
        self.layers = nn.ModuleList(DenseExpertLinear(tasks, a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return h.squeeze(-1).t()  # (B, T)


class TaskGates(nn.Module):
    """MMoE gates: per task a softmax over E experts computed from the shared input."""

    def __init__(self, tasks: int, experts: int, in_features: int) -> None:
        super().__init__()
        self.tasks, self.experts = tasks, experts
        self.linear = nn.Linear(in_features, tasks * experts)

    def forward(self, x0: torch.Tensor, expert_out: torch.Tensor) -> torch.Tensor:
        # x0 (B, d0), expert_out (E, B, d) -> (T, B, d)
        weights = torch.softmax(self.linear(x0).view(-1, self.tasks, self.experts), dim=-1)  # (B, T, E)
        return torch.einsum("bte,ebd->tbd", weights, expert_out)


class MultiTaskModel(nn.Module):
    """Shared skeleton. Subclasses define `trunk`, `structure` and (optionally) `penalty`."""

    kind: str = ""

    def __init__(self, config: ModelConfig, spec: FeatureSpec, embed_dims: Sequence[int], numerical_keep: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        self.task_names = tuple(spec.tasks)
        self.embeddings = FieldEmbeddings(spec.vocab_sizes, embed_dims, numerical_keep)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        """Logits (B, T)."""
        return self.towers(self.trunk(self.embeddings(categorical, numerical)))

    def penalty(self, weight: float = 0.0) -> torch.Tensor:
        """`weight` (lambda of the current phase, chosen by the trainer) x the mask sparsity
        penalty; zero for dense models and for a zero weight."""
        return torch.zeros(())

    def structure(self) -> dict[str, Any]:
        """What, beyond the config, is needed to rebuild this module's shapes."""
        return {
            "kind": self.kind,
            "embed_dims": list(self.embeddings.embed_dims),
            "numerical_keep": self.embeddings.numerical_keep.tolist(),
        }


def _mlp_sizes(in_features: int, hidden: Sequence[int]) -> list[tuple[int, int]]:
    sizes = [in_features, *hidden]
    return list(zip(sizes[:-1], sizes[1:]))


class DenseExpertsTrunk(nn.Module):
    """E dense MLP experts run as one stack: first layer on the shared input, bmm after."""

    def __init__(self, experts: int, in_features: int, hidden: Sequence[int], norm: str) -> None:
        super().__init__()
        self.linears = nn.ModuleList(DenseExpertLinear(experts, a, b) for a, b in _mlp_sizes(in_features, hidden))
        self.norms = nn.ModuleList(make_norm(norm, experts, b) for _, b in _mlp_sizes(in_features, hidden))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        h = x0
        for linear, norm in zip(self.linears, self.norms):
            h = torch.relu(norm(linear(h)))  # (E, B, out)
        return h


class MMoE(MultiTaskModel):
    kind = "mmoe"

    def __init__(self, config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None = None) -> None:
        embed_dims, numerical_keep = _input_structure(config, spec, structure)
        super().__init__(config, spec, embed_dims, numerical_keep)
        d0 = self.embeddings.out_features
        self.experts = DenseExpertsTrunk(config.experts, d0, config.hidden, config.norm)
        self.gates = TaskGates(self.num_tasks, config.experts, d0)
        self.towers = Towers(self.num_tasks, config.hidden[-1], config.tower_hidden)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        return self.gates(x0, self.experts(x0))


class SharedBottom(MultiTaskModel):
    kind = "shared-bottom"

    def __init__(self, config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None = None) -> None:
        embed_dims, numerical_keep = _input_structure(config, spec, structure)
        super().__init__(config, spec, embed_dims, numerical_keep)
        self.bottom = DenseExpertsTrunk(1, self.embeddings.out_features, config.hidden, config.norm)
        self.towers = Towers(self.num_tasks, config.hidden[-1], config.tower_hidden)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        h = self.bottom(x0)  # (1, B, d)
        return h.expand(self.num_tasks, -1, -1)


class SingleTask(MultiTaskModel):
    """One independent network per task (trained jointly, sharing nothing but embeddings)."""

    kind = "single-task"

    def __init__(self, config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None = None) -> None:
        embed_dims, numerical_keep = _input_structure(config, spec, structure)
        super().__init__(config, spec, embed_dims, numerical_keep)
        self.networks = DenseExpertsTrunk(self.num_tasks, self.embeddings.out_features, config.hidden, config.norm)
        self.towers = Towers(self.num_tasks, config.hidden[-1], config.tower_hidden)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        return self.networks(x0)  # (T, B, d)


class PLE(MultiTaskModel):
    """Progressive Layered Extraction: CGC levels with task-specific and shared experts.

    Level i has T*K task experts and S shared experts, all of width hidden[i], run as one
    vectorised stack. Task t's gate mixes its K experts and the S shared ones; a shared
    gate over all experts feeds the shared branch of the next level.
    """

    kind = "ple"

    def __init__(self, config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None = None) -> None:
        embed_dims, numerical_keep = _input_structure(config, spec, structure)
        super().__init__(config, spec, embed_dims, numerical_keep)
        tasks, k, s = self.num_tasks, config.ple_task_experts, config.ple_shared_experts
        experts = tasks * k + s
        owner = [t for t in range(tasks) for _ in range(k)] + [tasks] * s  # branch feeding each expert
        selected = [[t * k + j for j in range(k)] + [tasks * k + j for j in range(s)] for t in range(tasks)]
        self.register_buffer("expert_owner", torch.tensor(owner, dtype=torch.long))
        self.register_buffer("task_selection", torch.tensor(selected, dtype=torch.long))  # (T, K+S)
        self.levels = len(config.hidden)
        sizes = _mlp_sizes(self.embeddings.out_features, config.hidden)
        self.linears = nn.ModuleList(DenseExpertLinear(experts, a, b) for a, b in sizes)
        self.norms = nn.ModuleList(make_norm(config.norm, experts, b) for _, b in sizes)
        self.task_gates = nn.ModuleList(DenseExpertLinear(tasks, a, k + s) for a, _ in sizes)
        self.shared_gates = nn.ModuleList(nn.Linear(a, experts) for a, _ in sizes[:-1])
        self.towers = Towers(tasks, config.hidden[-1], config.tower_hidden)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        tasks = self.num_tasks
        branches = x0.unsqueeze(0).expand(tasks + 1, -1, -1)  # (T+1, B, d): tasks..., shared
        for level in range(self.levels):
            first = level == 0
            expert_in = x0 if first else branches.index_select(0, self.expert_owner)  # (B, d) | (E, B, d)
            out = torch.relu(self.norms[level](self.linears[level](expert_in)))  # (E, B, h)
            task_w = torch.softmax(self.task_gates[level](branches[:tasks]), dim=-1)  # (T, B, K+S)
            chosen = out[self.task_selection]  # (T, K+S, B, h)
            task_out = torch.einsum("tbk,tkbh->tbh", task_w, chosen)
            if level < self.levels - 1:
                shared_w = torch.softmax(self.shared_gates[level](branches[tasks]), dim=-1)  # (B, E)
                shared_out = torch.einsum("be,ebh->bh", shared_w, out)
                branches = torch.cat([task_out, shared_out.unsqueeze(0)], dim=0)
            else:
                branches = task_out
        return branches  # (T, B, h)


class MoME(MultiTaskModel):
    """Mixture of Masked Experts: one base MLP, experts carved out of it by binary masks.

    NEURON_MASKING: the base MLP with a stochastic gate per input neuron of every layer,
    feeding the towers directly (all experts would be identical to the base anyway).
    EXPERT_MASKING / HARDENING: E experts = base weights x per-weight expert gates (soft,
    then exactly binary), mixed per task by softmax gates as in MMoE.
    """

    kind = "mome"

    def __init__(
        self,
        config: ModelConfig,
        spec: FeatureSpec,
        structure: Mapping[str, Any] | None = None,
        *,
        phase: Phase | None = None,
    ) -> None:
        embed_dims, numerical_keep = _input_structure(config, spec, structure)
        super().__init__(config, spec, embed_dims, numerical_keep)
        self.phase = Phase(phase or (structure or {}).get("phase", Phase.NEURON_MASKING))
        self.hidden = tuple((structure or {}).get("hidden", config.hidden))
        sizes = _mlp_sizes(self.embeddings.out_features, self.hidden)
        if self.phase is Phase.NEURON_MASKING:
            self.base = nn.ModuleList(NeuronGatedLinear(a, b, sigma=config.gate_sigma) for a, b in sizes)
            self.norms = nn.ModuleList(make_norm(config.norm, 1, b) for _, b in sizes)
            if config.gate_outputs:
                # one gate per output of the last base layer: a closed one removes that layer's
                # row, its per-expert affine and a column of every tower's first layer
                self.output_gate_mu = nn.Parameter(torch.full((self.hidden[-1],), GATE_MU_INIT))
        else:
            mode = GateMode.SOFT if self.phase is Phase.EXPERT_MASKING else GateMode.HARD
            self.base = nn.ModuleList(
                MaskedExpertLinear(config.experts, a, b, sigma=config.gate_sigma, mode=mode, threshold=config.mask_threshold)
                for a, b in sizes
            )
            if mode is GateMode.HARD:
                for layer in self.base:
                    layer.gate_mu.requires_grad_(False)  # binary masks are final
            self.norms = nn.ModuleList(make_norm(config.norm, config.experts, b) for _, b in sizes)
            self.gates = TaskGates(self.num_tasks, config.experts, self.embeddings.out_features)
        self.towers = Towers(self.num_tasks, self.hidden[-1], config.tower_hidden)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        if self.phase is Phase.NEURON_MASKING:
            h = x0
            for linear, norm in zip(self.base, self.norms):
                h = torch.relu(norm(linear(h).unsqueeze(0))).squeeze(0)  # (B, out)
            if self.has_output_gates:
                h = h * stochastic_gate(self.output_gate_mu, self.config.gate_sigma, training=self.training)  # (B, out)
            return h.unsqueeze(0).expand(self.num_tasks, -1, -1)
        h = x0
        for linear, norm in zip(self.base, self.norms):
            h = torch.relu(norm(linear(h)))  # (E, B, out)
        return self.gates(x0, h)

    @property
    def has_output_gates(self) -> bool:
        return self.phase is Phase.NEURON_MASKING and self.config.gate_outputs

    def gate_mus(self) -> list[torch.Tensor]:
        """Every gate parameter of the current phase: one tensor per base layer (inputs, or
        expert weights), then the output gates when the model has them."""
        mus = [layer.gate_mu for layer in self.base]
        return [*mus, self.output_gate_mu] if self.has_output_gates else mus

    def expected_open_fraction(self) -> torch.Tensor:
        """Mean of Phi(mu / sigma) over every gate of the current phase (count-weighted)."""
        sigma = self.config.gate_sigma
        total = sum(open_probability_sum(mu, sigma) for mu in self.gate_mus())
        return total / sum(mu.numel() for mu in self.gate_mus())

    def penalty(self, weight: float = 0.0) -> torch.Tensor:
        if weight == 0.0:
            return torch.zeros(())
        return weight * self.expected_open_fraction()

    def structure(self) -> dict[str, Any]:
        return {**super().structure(), "phase": self.phase.value, "hidden": list(self.hidden)}


MODEL_CLASSES: dict[str, type[MultiTaskModel]] = {
    "mome": MoME,
    "mmoe": MMoE,
    "ple": PLE,
    "shared-bottom": SharedBottom,
    "single-task": SingleTask,
}


def _input_structure(config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None) -> tuple[list[int], list[int]]:
    if structure is None:
        return [config.embedding_dim] * len(spec.categorical), list(range(len(spec.numerical)))
    return [int(d) for d in structure["embed_dims"]], [int(i) for i in structure["numerical_keep"]]


def build_model(config: ModelConfig, spec: FeatureSpec, structure: Mapping[str, Any] | None = None) -> MultiTaskModel:
    """A fresh model of `config.kind`; `structure` (from `model.structure()`) restores shapes."""
    return MODEL_CLASSES[config.kind](config, spec, structure)


def count_parameters(model: nn.Module, *, include_gates: bool = True) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if include_gates or "gate_mu" not in name)
