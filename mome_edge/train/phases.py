"""Training phases: one typed value, one table of transitions, and MoME's model transitions.

    dense (baselines) -------------------------------------------------------------> done
    neuron masking --remove_closed_neurons--> expert masking --start_hardening--> hardening --> done

The model transitions each return a new model; the old one is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch

from mome_edge.config import TrainConfig
from mome_edge.encoding import FeatureSpec
from mome_edge.train.layers import ExpertBatchNorm
from mome_edge.train.model import MoME, Phase


class TrainingPhase(str, Enum):
    """What the trainer is doing; MoME's three phases share their values with `model.Phase`."""

    DENSE = "dense"  # every baseline: one phase, no masks
    NEURON_MASKING = Phase.NEURON_MASKING.value
    EXPERT_MASKING = Phase.EXPERT_MASKING.value
    HARDENING = Phase.HARDENING.value

    @classmethod
    def first(cls, kind: str) -> "TrainingPhase":
        return cls.NEURON_MASKING if kind == "mome" else cls.DENSE


@dataclass(frozen=True)
class PhaseRule:
    """How long a phase lasts, what follows it, and the penalty weight (lambda) it trains with."""

    next: TrainingPhase | None  # None: training ends after this phase
    epochs: Callable[[TrainConfig], int]
    early_stopping: bool  # patience on validation AUC may end the phase early
    penalty_weight: Callable[[TrainConfig], float]


# The one table of transitions.
TRANSITIONS: dict[TrainingPhase, PhaseRule] = {
    TrainingPhase.DENSE: PhaseRule(next=None, epochs=lambda c: c.epochs, early_stopping=True, penalty_weight=lambda c: 0.0),
    TrainingPhase.NEURON_MASKING: PhaseRule(
        next=TrainingPhase.EXPERT_MASKING, epochs=lambda c: c.neuron_epochs, early_stopping=False,
        penalty_weight=lambda c: c.lambda_neuron,
    ),
    TrainingPhase.EXPERT_MASKING: PhaseRule(
        next=TrainingPhase.HARDENING, epochs=lambda c: c.expert_epochs("mome"), early_stopping=True,
        penalty_weight=lambda c: c.lambda_expert,
    ),
    # binary masks are frozen: nothing to penalise
    TrainingPhase.HARDENING: PhaseRule(next=None, epochs=lambda c: c.harden_epochs, early_stopping=False, penalty_weight=lambda c: 0.0),
}


def phase_over(phase: TrainingPhase, config: TrainConfig, *, epochs_in_phase: int, bad_epochs: int) -> bool:
    rule = TRANSITIONS[phase]
    return epochs_in_phase >= rule.epochs(config) or (rule.early_stopping and bad_epochs >= config.patience)


@dataclass(frozen=True)
class NeuronPruningReport:
    """How many input neurons each base layer kept at the phase switch."""

    kept: tuple[int, ...]
    nominal: tuple[int, ...]
    fractional_gates: float  # share of neuron gates strictly in (0, 1), folded into weights


def expected_gate_value(mu: torch.Tensor, sigma: float, points: int = 64) -> torch.Tensor:
    """E[clamp(mu + eps, 0, 1)], eps ~ N(0, sigma^2) = integral over t in (0, 1) of Phi((mu - t) / sigma)."""
    t = (torch.arange(points, dtype=mu.dtype) + 0.5) / points  # midpoint rule
    return torch.special.ndtr((mu.unsqueeze(-1) - t) / sigma).mean(-1)


@torch.no_grad()
def remove_closed_neurons(
    model: MoME, spec: FeatureSpec, *, expert_mu_init: float | None = None, keep: list[torch.Tensor] | None = None,
) -> tuple[MoME, NeuronPruningReport]:
    """Freeze the neuron gates, fold them into the weights and drop closed neurons.

    Input i of layer l is closed when clamp(mu_l[i], 0, 1) == 0. Open gate values scale
    columns of W_l (exact in eval). For l > 1 the matching output of layer l-1 (weight row,
    bias, normalisation channel) goes too; for l = 1 the embedding dimension or numerical
    feature is removed from the input. With output gates (config.gate_outputs) a closed
    output of the last layer removes its row and a column of every tower's first layer; open
    output gates fold into those columns. Returns an EXPERT_MASKING model whose experts all
    start as the pruned base, with normalisation statistics copied to every expert.

    `keep` (bool, one per tensor of `model.gate_mus()`) overrides which neurons stay: the
    budget's top-k. A kept neuron whose gate is closed in eval (mu <= 0) is folded with its
    expected training-time value E[clamp(mu + eps, 0, 1)], the scale it was trained with.
    """
    if model.phase is not Phase.NEURON_MASKING:
        raise ValueError(f"neurons are removed once, after phase {Phase.NEURON_MASKING.value}; this model is in {model.phase.value}")
    config = model.config
    mus = model.gate_mus()
    gates = [torch.clamp(mu, 0.0, 1.0) for mu in mus]
    if keep is None:
        keeps = [g > 0 for g in gates]
    else:
        keeps = [k.to(torch.bool) for k in keep]
        if [k.shape for k in keeps] != [g.shape for g in gates]:
            raise ValueError("keep needs one bool tensor per gate tensor, of the same shape")
        gates = [torch.where(k & (g == 0), expected_gate_value(mu, config.gate_sigma), g) for k, g, mu in zip(keeps, gates, mus)]
    fractional = float(torch.cat([((g > 0) & (g < 1)).float() for g in gates]).mean())
    layers = len(model.base)
    output_gate = gates[layers] if model.has_output_gates else None
    output_keep = keeps[layers] if model.has_output_gates else torch.ones(model.hidden[-1], dtype=torch.bool)

    # Layer 1's inputs are the embedding dimensions (field by field) then the numericals.
    first_keep = keeps[0]
    embed_dims, offset = [], 0
    kept_embedding_columns: list[torch.Tensor] = []
    for dim in model.embeddings.embed_dims:
        field_keep = first_keep[offset : offset + dim]
        embed_dims.append(int(field_keep.sum()))
        kept_embedding_columns.append(torch.nonzero(field_keep).flatten())
        offset += dim
    numerical_keep = model.embeddings.numerical_keep[first_keep[offset:]].tolist()

    hidden = [int(k.sum()) for k in keeps[1:layers]] + [int(output_keep.sum())]
    structure = {**model.structure(), "phase": Phase.EXPERT_MASKING.value, "embed_dims": embed_dims,
                 "numerical_keep": numerical_keep, "hidden": hidden}
    pruned = MoME(config, spec, structure)

    # Embedding tables: keep the open dimensions of each surviving field.
    old_tables = dict(zip(model.embeddings.field_index, model.embeddings.tables))
    new_tables = dict(zip(pruned.embeddings.field_index, pruned.embeddings.tables))
    for field, table in new_tables.items():
        table.weight.copy_(old_tables[field].weight[:, kept_embedding_columns[field]])

    # Base layers: fold gates into columns, drop closed columns and the rows feeding them.
    for l, (old, new) in enumerate(zip(model.base, pruned.base)):
        weight = (old.weight * gates[l])[:, keeps[l]]
        bias = old.bias
        out_keep = keeps[l + 1] if l + 1 < layers else output_keep
        new.weight.copy_(weight[out_keep])
        new.bias.copy_(bias[out_keep])
        if expert_mu_init is not None:
            new.gate_mu.fill_(expert_mu_init)
        old_norm, new_norm = model.norms[l], pruned.norms[l]
        if isinstance(old_norm, ExpertBatchNorm):
            for name in ("weight", "bias", "running_mean", "running_var"):
                source = getattr(old_norm, name)[:, out_keep]  # (1, C) -> expand to (E, C)
                getattr(new_norm, name).copy_(source.expand_as(getattr(new_norm, name)))

    towers = model.towers.state_dict()
    if output_gate is not None:
        # relu(.) * g_j feeds column j of each tower's first layer: fold g_j there (exact in eval)
        first = towers["layers.0.weight"] * output_gate  # (T, out, in)
        towers["layers.0.weight"] = first[:, :, output_keep]
    pruned.towers.load_state_dict(towers)
    report = NeuronPruningReport(
        kept=tuple(int(k.sum()) for k in keeps),
        nominal=tuple(int(k.numel()) for k in keeps),
        fractional_gates=fractional,
    )
    return pruned, report


@torch.no_grad()
def start_hardening(model: MoME, spec: FeatureSpec) -> MoME:
    """Same parameters, expert masks now exactly 0/1 and frozen.

    The weights are then fine-tuned under the binary masks, so that the model selected on
    validation is bit for bit the one that compiles into bitsets. (Letting masks flip while
    fine-tuning keeps normalisation statistics chasing a moving target.)
    """
    if model.phase is not Phase.EXPERT_MASKING:
        raise ValueError(f"hardening follows {Phase.EXPERT_MASKING.value}; this model is in {model.phase.value}")
    hardened = MoME(model.config, spec, {**model.structure(), "phase": Phase.HARDENING.value})
    hardened.load_state_dict(model.state_dict())
    return hardened
