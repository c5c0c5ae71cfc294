"""How gates move: a schedule per sample seen, not per optimizer step.

The problem (METHOD.md section 7): with the sparsity penalty inside Adam's gradient, Adam
divides each gate's update by its running gradient scale, so a gate whose task signal is weak
drifts towards closing by about gate_lr per *step* whatever lambda is: the number of steps,
not the data, decided how much was pruned.

The "per-sample" schedule (default):
- Adam sees the task gradient only, at a per-step rate gate_lr * sqrt(B / B_ref) * N_ref / N.
  For a noise-dominated gate Adam's step is ~ rate x mean / (per-batch noise) and the
  per-batch noise falls as 1 / sqrt(B), so one epoch moves a gate by ~ gate_lr x N_ref /
  sqrt(B_ref) x (mean / per-row noise): the same for any batch size B and any epoch length
  N, and the random walk of a signal-free gate shrinks as 1 / sqrt(N).
- The penalty is a decoupled step (as AdamW decouples weight decay), applied a fraction B / N
  of an epoch's worth at every step: each epoch pushes gate g towards closing by
  lambda x w_g x phi(mu / sigma) / phi(0), with w_g the bytes the gate keeps alive relative to
  the average gate of its phase. Lambda thus means "mu per epoch" for an average gate.
- With a budget, lambda is steered by the expected bytes (the dual variable of the size
  constraint): lambda = LAMBDA_GAIN x max(0, E[bytes share] / target share - 1), recomputed
  after every step, with E[bytes share] = sum_g P(open_g) c_g / sum_g c_g. The gates
  integrate lambda, so a proportional lambda already drives the share to the target; an
  integrating one (dual ascent proper) overshot on census-income: it kept pushing while the
  gates were still moving and closed 99 % of them within the second epoch.

"per-step" keeps the old behaviour (penalty in the loss, a fixed per-step rate) for comparison.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mome_edge.config import GATE_LR_REFERENCE_BATCH, GATE_LR_REFERENCE_ROWS, TrainConfig
from mome_edge.train.gates import open_probability
from mome_edge.train.model import MoME, MultiTaskModel, Phase

LAMBDA_GAIN = 1.0  # lambda (mu per epoch) per 100 % of excess expected bytes
LAMBDA_MAX = 2.0  # mu per epoch: beyond this every gate closes within the phase whatever its signal
_PHI0 = 1.0 / math.sqrt(2.0 * math.pi)
_WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def gate_step_rate(config: TrainConfig, train_rows: int) -> float:
    """Adam's per-step rate for the gates."""
    if config.gate_schedule == "per-step":
        return config.gate_lr
    return config.gate_lr * math.sqrt(config.batch_size / GATE_LR_REFERENCE_BATCH) * GATE_LR_REFERENCE_ROWS / max(train_rows, 1)


def neuron_gate_costs(model: MoME, weights: str = "fp32") -> list[torch.Tensor]:
    """Bytes each neuron gate keeps alive in the compiled file (one tensor per `gate_mus()`).

    Input i of layer l keeps its column of W_l (out_l weights, each with E mask bits); for the
    first layer also its embedding column (vocabulary rows) or nothing (a numerical) plus a
    column of the task gates; for later layers the row of W_{l-1} and the per-expert affine
    that computes it. An output gate keeps the last layer's row, its affine and a column of
    every tower's first layer.
    """
    wb = _WEIGHT_BYTES[weights]
    experts, tasks = model.config.experts, model.num_tasks
    per_weight = wb + experts / 8.0
    affine = 2 * experts * 4
    sizes = [model.embeddings.out_features, *model.hidden]
    costs = []
    for l, layer in enumerate(model.base):
        column = float(sizes[l + 1]) * per_weight
        if l == 0:
            emb = model.embeddings
            vocab = [float(emb.vocab_sizes[f]) for f in emb.field_index for _ in range(emb.embed_dims[f])]  # one per embedding dim
            extra = torch.tensor(vocab + [0.0] * int(model.embeddings.numerical_keep.numel())) * wb + tasks * experts * wb
        else:
            extra = torch.full((sizes[l],), sizes[l - 1] * per_weight + affine)
        costs.append(extra + column)
    if model.has_output_gates:
        tower_width = model.config.tower_hidden[0] if model.config.tower_hidden else 1
        costs.append(torch.full((model.hidden[-1],), sizes[-2] * per_weight + affine + tasks * tower_width * wb))
    return costs


class GateSchedule:
    """Moves the gates of the current phase after each optimizer step (see module docstring)."""

    def __init__(self, config: TrainConfig, train_rows: int, *, weights: str = "fp32") -> None:
        self.config, self.train_rows, self.weights = config, max(int(train_rows), 1), weights

    @property
    def decoupled(self) -> bool:
        return self.config.gate_schedule == "per-sample"

    def loss_penalty(self, model: MultiTaskModel, weight: float) -> torch.Tensor:
        """The penalty term of the loss: only in the "per-step" schedule."""
        return torch.zeros(()) if self.decoupled else model.penalty(weight)

    def relative_costs(self, model: MoME) -> list[torch.Tensor]:
        if model.phase is Phase.NEURON_MASKING:
            costs = neuron_gate_costs(model, self.weights)
            mean = torch.cat(costs).mean()
            return [c / mean for c in costs]
        return [torch.ones(()) for _ in model.gate_mus()]  # expert weights: one cost class

    @torch.no_grad()
    def after_step(self, model: MultiTaskModel, weight: float, batch_rows: int, costs: Sequence[torch.Tensor] | None) -> None:
        """The decoupled penalty step of one batch: `batch_rows / N` of an epoch's push."""
        if not self.decoupled or weight == 0.0 or not isinstance(model, MoME):
            return
        fraction = batch_rows / self.train_rows
        sigma = model.config.gate_sigma
        for mu, cost in zip(model.gate_mus(), costs or [torch.ones(())] * len(model.gate_mus())):
            density = torch.exp(-0.5 * (mu / sigma) ** 2)  # phi(mu / sigma) / phi(0)
            mu.sub_(fraction * weight * cost * density)

    @torch.no_grad()
    def steer(self, model: MoME, costs: Sequence[torch.Tensor], target_share: float) -> float:
        """lambda for the next step, from the expected bytes share against `target_share`."""
        sigma = model.config.gate_sigma
        expected = sum(float((open_probability(mu, sigma) * c).sum()) for mu, c in zip(model.gate_mus(), costs))
        total = sum(float(c.expand_as(mu).sum()) for mu, c in zip(model.gate_mus(), costs))
        excess = expected / total / max(target_share, 1e-9) - 1.0
        return min(LAMBDA_MAX, LAMBDA_GAIN * max(0.0, excess))
