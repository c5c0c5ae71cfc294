"""How gates move: a rate per sample seen, not per optimizer step.

The problem (METHOD.md section 7): Adam divides each gate's update by its running gradient
scale, so a gate whose task signal is weak drifts towards closing by about gate_lr per
*step* whatever lambda is: the number of steps, not the data, decided how much was pruned.

The "per-sample" schedule (default) keeps Adam and the penalty in the gradient, and sets
Adam's per-step rate for the gates to gate_lr * sqrt(B / B_ref) * N_ref / N (B the batch
size, N the training rows of an epoch; B_ref = 512, N_ref = 60,000, census-income's size, so
census trains as before). For a gate whose gradient is dominated by batch noise -- the
weak-signal gates that decide the size -- Adam's step is ~ rate x mean / (per-batch noise)
and the per-batch noise falls as 1 / sqrt(B): one epoch then moves the gate by
~ gate_lr x N_ref / sqrt(B_ref) x mean / (per-row noise), the same for any batch size and any
epoch length, and a signal-free gate's random walk shrinks as 1 / sqrt(N). (A gate whose
signal dominates the noise moves at most the rate per step; it is open anyway.)

Tried first and dropped: the penalty as a decoupled step of lambda per epoch (as AdamW
decouples weight decay) with Adam on the task gradient alone. It is step-invariant, but the
gates then drift slowly through (0, 1), where the evaluated model (clamp(mu)) is not the
trained one (noisy gates, batch statistics of noisy gates): on census-income validation AUC
fell to 0.17-0.73 during expert masking.

With a budget, the penalty weights each gate by the bytes it keeps alive (relative to the
average gate), and lambda is steered by the expected bytes during neuron masking:
lambda = min(lambda_neuron, LAMBDA_GAIN x max(0, E[bytes share] / target share - 1)), recomputed
after every step, E[bytes share] = sum_g P(open_g) c_g / sum_g c_g. The gates integrate
lambda, so a proportional lambda drives the share towards the target; the cut at the phase
switch then enforces the budget exactly. lambda never exceeds the unbudgeted run's
lambda_neuron: a budget decides how much the switch cuts, not how hard weak gates are pushed
shut. (A cap of 3x lambda_neuron closed a few more inputs of the MMoE generator than the
default run does, inputs its second task needed; docs/budgets.md has the comparison.)

"per-step" keeps the fixed per-step rate (the behaviour before issue 11) for comparison.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mome_edge.config import GATE_LR_REFERENCE_BATCH, GATE_LR_REFERENCE_ROWS, TrainConfig
from mome_edge.train.gates import open_probability
from mome_edge.train.model import MoME, MultiTaskModel, Phase

LAMBDA_GAIN = 0.3  # lambda per 100 % of excess expected bytes
_WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


MAX_ROWS_FACTOR = 1.25  # N_ref / N is capped here: short epochs train at about the reference per-step rate


def gate_step_rate(config: TrainConfig, train_rows: int) -> float:
    """Adam's per-step rate for the gates.

    The epoch-length factor N_ref / N is capped at MAX_ROWS_FACTOR: on epochs much shorter
    than N_ref rows the per-sample rate would make each Adam step a large random jump (at
    3,600 rows, 4x gate_lr per step left census income AUC at 0.59; at 1,800 rows 0.12 per
    step closed every gate within two epochs), so small sets train at about the per-step
    rate, as before. The step invariance holds from about N_ref / 1.25 = 48,000 rows up."""
    if config.gate_schedule == "per-step":
        return config.gate_lr
    rows_factor = min(GATE_LR_REFERENCE_ROWS / max(train_rows, 1), MAX_ROWS_FACTOR)
    return config.gate_lr * math.sqrt(config.batch_size / GATE_LR_REFERENCE_BATCH) * rows_factor


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
    """The penalty term of the loss for the current phase, and lambda's steering (see module docstring)."""

    def __init__(self, config: TrainConfig, train_rows: int, *, weights: str = "fp32") -> None:
        self.config, self.train_rows, self.weights = config, max(int(train_rows), 1), weights

    def loss_penalty(self, model: MultiTaskModel, weight: float, costs: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """weight x the expected open share of the gates, each weighted by its relative bytes
        (`costs`, mean 1; None = every gate alike, the model's own penalty)."""
        if costs is None or not isinstance(model, MoME) or weight == 0.0:
            return model.penalty(weight)
        sigma = model.config.gate_sigma
        total = sum(float(c.expand_as(mu).sum()) for mu, c in zip(model.gate_mus(), costs))
        expected = sum((open_probability(mu, sigma) * c).sum() for mu, c in zip(model.gate_mus(), costs))
        return weight * expected / total

    def relative_costs(self, model: MoME) -> list[torch.Tensor] | None:
        """Bytes of each neuron gate relative to the average one; None (all alike) for expert gates."""
        if model.phase is not Phase.NEURON_MASKING:
            return None
        costs = neuron_gate_costs(model, self.weights)
        mean = torch.cat(costs).mean()
        return [c / mean for c in costs]

    @torch.no_grad()
    def steer(self, model: MoME, costs: Sequence[torch.Tensor], target_share: float) -> float:
        """lambda for the next step, from the expected bytes share against `target_share`."""
        sigma = model.config.gate_sigma
        expected = sum(float((open_probability(mu, sigma) * c).sum()) for mu, c in zip(model.gate_mus(), costs))
        total = sum(float(c.expand_as(mu).sum()) for mu, c in zip(model.gate_mus(), costs))
        excess = expected / total / max(target_share, 1e-9) - 1.0
        return min(self.config.lambda_neuron, LAMBDA_GAIN * max(0.0, excess))
