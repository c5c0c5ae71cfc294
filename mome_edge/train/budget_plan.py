"""The trainer's side of `--budget`: plan the model before training, steer MoME's phase
switches to it, and report where the bytes went.

What the trainer shrinks (the budget covers the whole file):
- mmoe, ple, shared-bottom, single-task: hidden widths by one multiplier (up or down; towers
  keep theirs); MMoE/PLE trade experts for width when the last layer would be narrower than
  16; the embedding width only when widths of 1 do not fit (compile/sizing.fit_dense_config).
- mome: the neuron phase also gates the base's output neurons (they feed the towers and the
  per-expert affine); the penalty weighs each gate by the bytes it keeps alive and lambda is
  steered by the expected bytes, never above lambda_neuron (gate_schedule.py); at the phase
  switch every input the neuron phase left open stays and the hidden and output widths keep
  their most open neurons, at least NEURON_FLOOR per layer, as many as keep the fully open
  model under the ceiling (inputs are cut too only when the floor does not fit; embedding
  dimensions, numerical inputs, task-gate columns and tower columns go with their neurons,
  compile/sizing.mome_neuron_keep); the experts are then carved as without a budget (the
  expert penalty), and at the switch to hardening the binary masks are opened or closed by
  gate value so that the compiled file lands in the range (compile/sizing.trim_expert_masks),
  then fine-tuned.
- Not shrunk: the manifest's feature spec (the device needs it to encode raw rows) and the
  tower hidden width of MoME.
Every size is measured by compiling and serialising (the compiler's own bytes).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mome_edge.budget import budget_range
from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.encoding import FeatureSpec
from mome_edge.runs import DatasetRef, RunInfo
from mome_edge.artifact.format import COMPONENTS

_PLACEHOLDER = 0.12345678901234567
MOME_HEADROOM = 1.5  # a MoME base at least this many times the budget's ceiling, fully open  # a float as long as any metric's JSON text


@dataclass
class BudgetPlan:
    budget_bytes: int
    weights: str
    low_bytes: int  # accepted range of the final file
    ceiling_bytes: int  # what estimates made before the final metadata may reach
    smallest_bytes: int
    changes: list[str] = field(default_factory=list)
    target_share: float | None = None  # mome: bytes share of the neuron gates the dual ascent aims at

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def placeholder_summary(tasks: tuple[str, ...], kind: str) -> dict[str, Any]:
    """A summary with the shape (and JSON length) the final one will have, for size estimates."""
    metrics = {t: {"auc": _PLACEHOLDER, "logloss": _PLACEHOLDER} for t in tasks}
    summary: dict[str, Any] = {
        "validation": metrics, "test": metrics, "selected_epoch": 10, "epochs_run": 12, "phase": "hardening",
        "parameters": 1_000_000,
        "budget": {"bytes": 10**9, "weights": "fp32", "range": [10**9, 10**9], "achieved_bytes": 10**9, "within_range": False,
                   "components": {k: 10**8 for k in COMPONENTS},
                   "shrunk": "x" * 360},
    }
    if kind == "mome":
        summary.update(
            before_hardening={"epoch": 10, "validation": metrics, "test": metrics, "fractional_gates": _PLACEHOLDER},
            hardening_auc_change={t: _PLACEHOLDER for t in tasks},
            neuron_pruning={"kept": [1000, 1000, 1000], "nominal": [1000, 1000, 1000], "fractional_gates": _PLACEHOLDER},
            masks={k: _PLACEHOLDER for k in ("expected_open", "eval_nonzero", "fractional", "binary_density")},
        )
    return summary


def artifact_metadata(run_dir: Path, info: RunInfo, summary: dict[str, Any]) -> dict[str, Any]:
    """Exactly what `mome-edge compile` records about the run (compile.compiler.run_metadata)."""
    from mome_edge.compile.compiler import run_metadata

    return run_metadata(run_dir, info, json.loads(json.dumps(summary)))


def plan_budget(
    model_config: ModelConfig, train_config: TrainConfig, spec: FeatureSpec, dataset: DatasetRef, run_dir: Path,
) -> tuple[ModelConfig, BudgetPlan]:
    """The model config to train for `train_config.budget_bytes`; ConfigError when unreachable."""
    from mome_edge.compile import sizing
    from mome_edge.train.model import MoME

    budget, weights = int(train_config.budget_bytes), train_config.budget_weights
    low, _ = budget_range(budget)
    ceiling = sizing.target_ceiling(budget)
    if model_config.kind == "mome":
        config = dataclasses.replace(model_config, gate_outputs=True)
    else:
        config = model_config
    metadata = artifact_metadata(run_dir, RunInfo(model_config=config, train_config=train_config, dataset=dataset, feature_spec=spec),
                                 placeholder_summary(spec.tasks, config.kind))
    if config.kind != "mome":
        smallest = smallest_budget(sizing.dense_size(sizing.smallest_config(config), spec, weights, metadata))
        if smallest > budget:
            raise sizing.unreachable_budget(budget, smallest, config.kind, weights)
        fitted, estimate, changes = sizing.fit_dense_config(config, spec, budget_bytes=budget, weights=weights, metadata=metadata)
        plan = BudgetPlan(budget_bytes=budget, weights=weights, low_bytes=low, ceiling_bytes=ceiling, smallest_bytes=smallest,
                          changes=[*changes, f"estimated {estimate:,} bytes"])
        return fitted, plan
    def fresh(cfg: ModelConfig) -> MoME:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return MoME(cfg, spec)

    def full_bytes(cfg: ModelConfig) -> int:
        m = fresh(cfg)
        return sizing.compiled_size(sizing.dense_equivalent(m, spec, [torch.ones_like(mu, dtype=torch.bool) for mu in m.gate_mus()]),
                                    spec, weights=weights, metadata=metadata).bytes

    # A budget above the configured base: widen the base (never narrow it: pruning does that)
    # so that the neuron phase has MOME_HEADROOM x the ceiling to choose from.
    if full_bytes(config) < MOME_HEADROOM * ceiling:
        multiplier = sizing.largest_multiplier(lambda m: full_bytes(sizing.scaled_hidden(config, m)), int(MOME_HEADROOM * ceiling), 1.0, 2.0)
        config = sizing.scaled_hidden(config, multiplier or 1.0)
    model = fresh(config)
    smallest = smallest_budget(sizing.mome_smallest_bytes(model, spec, weights=weights, metadata=metadata))
    if smallest > budget:
        raise sizing.unreachable_budget(budget, smallest, "mome", weights)
    keep, _ = sizing.mome_neuron_keep(model, spec, target_bytes=ceiling, weights=weights, metadata=metadata)
    from mome_edge.train.gate_schedule import neuron_gate_costs

    costs = neuron_gate_costs(model, weights)
    share = float(sum((k.float() * c).sum() for k, c in zip(keep, costs)) / sum(c.sum() for c in costs))
    full = sizing.compiled_size(sizing.dense_equivalent(model, spec, [torch.ones_like(k) for k in keep]), spec,
                                weights=weights, metadata=metadata).bytes
    plan = BudgetPlan(budget_bytes=budget, weights=weights, low_bytes=low, ceiling_bytes=ceiling, smallest_bytes=smallest,
                      target_share=share, changes=[f"configured base with all neurons: {full:,} bytes; neuron gates aim at "
                                                   f"{100 * share:.1f}% of their bytes"])
    return config, plan


def smallest_budget(smallest_bytes: int) -> int:
    """The smallest --budget whose ceiling holds a model of `smallest_bytes` estimated bytes."""
    from mome_edge.compile.sizing import target_ceiling

    budget = smallest_bytes
    while target_ceiling(budget) < smallest_bytes:
        budget = max(budget + 1, int(budget + (smallest_bytes - target_ceiling(budget))))
    return budget
