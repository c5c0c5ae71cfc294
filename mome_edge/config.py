"""Frozen, keyword-only configs per stage, validated on construction, with a JSON round trip."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from mome_edge.contract import MODEL_KINDS, WEIGHT_FORMATS
from mome_edge.errors import ConfigError

CONFIG_SCHEMA_VERSION = 1
NORM_KINDS = ("batch", "none")
GATE_SCHEDULES = ("per-sample", "per-step")
# gate_lr is the per-step Adam rate of the gates at these reference sizes; the "per-sample"
# schedule rescales it to the actual batch size and epoch length (see TrainConfig).
GATE_LR_REFERENCE_BATCH = 512
GATE_LR_REFERENCE_ROWS = 60_000


def _require(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{field}={value!r} is not allowed; {allowed}")


def _positive_sizes(field: str, sizes: tuple[int, ...], *, allow_empty: bool = False) -> None:
    _require(
        (allow_empty or len(sizes) > 0) and all(isinstance(s, int) and s > 0 for s in sizes),
        field, sizes, "use a comma-separated list of positive integers, e.g. 256,128",
    )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture. `hidden` is the base MLP of MoME, the MLP of each MMoE expert, the
    bottom of SharedBottom, each single-task network, and the per-level expert width of PLE,
    so that models compare at equal nominal sizes."""

    kind: str = "mome"
    embedding_dim: int = 8
    hidden: tuple[int, ...] = (256, 128)
    experts: int = 8
    tower_hidden: tuple[int, ...] = (64,)
    norm: str = "batch"
    gate_sigma: float = 0.5
    mask_threshold: float = 0.5
    ple_shared_experts: int = 4
    ple_task_experts: int = 2
    # MoME: also gate the last base layer's outputs in the neuron phase (they feed the towers,
    # the largest part of a small model); the budgeted trainer turns this on.
    gate_outputs: bool = False

    def __post_init__(self) -> None:
        _require(self.kind in MODEL_KINDS, "model", self.kind, f"use one of {', '.join(MODEL_KINDS)}")
        _require(self.norm in NORM_KINDS, "norm", self.norm, f"use one of {', '.join(NORM_KINDS)}")
        _require(isinstance(self.embedding_dim, int) and self.embedding_dim > 0, "embedding_dim", self.embedding_dim, "use a positive integer")
        _positive_sizes("hidden", self.hidden)
        _positive_sizes("tower_hidden", self.tower_hidden, allow_empty=True)
        _require(isinstance(self.experts, int) and 1 <= self.experts <= 256, "experts", self.experts, "use an integer in 1..256")
        _require(self.gate_sigma > 0 and math.isfinite(self.gate_sigma), "gate_sigma", self.gate_sigma, "use a positive number")
        _require(0.0 <= self.mask_threshold < 1.0, "mask_threshold", self.mask_threshold, "use a number in [0, 1)")
        _require(self.ple_shared_experts >= 1, "ple_shared_experts", self.ple_shared_experts, "use an integer >= 1")
        _require(self.ple_task_experts >= 1, "ple_task_experts", self.ple_task_experts, "use an integer >= 1")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation. For MoME, `epochs` is the total budget: `neuron_epochs` of phase 1
    (neuron masking), then expert masking, then `harden_epochs` with exact binary masks."""

    epochs: int = 12
    neuron_epochs: int = 2
    harden_epochs: int = 2
    batch_size: int = 512
    lr: float = 2e-3
    gate_lr: float = 5e-3
    weight_decay: float = 0.0
    lambda_neuron: float = 0.1
    lambda_expert: float = 0.1
    patience: int = 3
    seed: int = 0
    max_train_rows: int | None = None
    # Gates: "per-sample" (default): Adam's per-step rate for the gates is
    # gate_lr * sqrt(B / 512) * 60,000 / N (N training rows), so that an epoch moves a gate
    # the same distance whatever the batch size and epoch length (train/gate_schedule.py);
    # "per-step": gate_lr per step (before issue 11: pruning grew with the number of steps).
    gate_schedule: str = "per-sample"
    # --budget: bytes of the compiled .mome file (with budget_weights), or None
    budget_bytes: int | None = None
    budget_weights: str = "fp32"

    def __post_init__(self) -> None:
        _require(isinstance(self.epochs, int) and self.epochs >= 1, "epochs", self.epochs, "use an integer >= 1")
        _require(self.neuron_epochs >= 0, "neuron_epochs", self.neuron_epochs, "use an integer >= 0")
        _require(self.harden_epochs >= 1, "harden_epochs", self.harden_epochs, "use an integer >= 1")
        _require(self.batch_size >= 2, "batch_size", self.batch_size, "use an integer >= 2 (batch norm needs 2 rows)")
        for name in ("lr", "gate_lr"):
            value = getattr(self, name)
            _require(value > 0 and math.isfinite(value), name, value, "use a positive number")
        for name in ("weight_decay", "lambda_neuron", "lambda_expert"):
            value = getattr(self, name)
            _require(value >= 0 and math.isfinite(value), name, value, "use a number >= 0")
        _require(self.patience >= 1, "patience", self.patience, "use an integer >= 1")
        _require(self.max_train_rows is None or self.max_train_rows >= 2, "max_train_rows", self.max_train_rows, "use an integer >= 2")
        _require(self.gate_schedule in GATE_SCHEDULES, "gate_schedule", self.gate_schedule, f"use one of {', '.join(GATE_SCHEDULES)}")
        _require(self.budget_bytes is None or (isinstance(self.budget_bytes, int) and self.budget_bytes > 0), "budget",
                 self.budget_bytes, "use a positive size such as 100KB")
        _require(self.budget_weights in WEIGHT_FORMATS, "budget_weights", self.budget_weights, f"use one of {', '.join(WEIGHT_FORMATS)}")

    def expert_epochs(self, kind: str) -> int:
        """Phase-2 epochs of MoME; raises when the budget leaves none."""
        n = self.epochs - self.neuron_epochs - self.harden_epochs
        if kind == "mome" and n < 1:
            raise ConfigError(
                f"epochs={self.epochs} leaves no expert-masking epoch after neuron_epochs={self.neuron_epochs} "
                f"and harden_epochs={self.harden_epochs}; raise --epochs to at least {self.neuron_epochs + self.harden_epochs + 1}"
            )
        return n


C = TypeVar("C", ModelConfig, TrainConfig)


def config_to_json(config: ModelConfig | TrainConfig) -> dict:
    data = dataclasses.asdict(config)
    data = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    return {"schema_version": CONFIG_SCHEMA_VERSION, **data}


def config_from_json(cls: type[C], data: Mapping[str, Any]) -> C:
    data = dict(data)
    version = data.pop("schema_version", None)
    if version != CONFIG_SCHEMA_VERSION:
        raise ConfigError(f"{cls.__name__} schema version {version!r} is not supported; re-create the run with this mome-edge")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__} has no fields {unknown}; the run was written by another mome-edge version")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)
