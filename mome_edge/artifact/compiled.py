"""The compiled model: plain numpy arrays, no torch, and its reference forward pass.

This is the contract between the compiler (torch -> CompiledModel), the artifact file
(CompiledModel <-> bytes), the ONNX exporter and the device runtime. `reference_forward` is
the numpy reference that every later stage is checked against.

Trunk of the mixture kinds (mome, mmoe, shared-bottom, single-task), per expert e and layer l:

    h_e <- relu((h_e[:, input_index] @ (M_{l,e} * W_l)^T) * scale_l[e] + shift_l[e])

with h_e = x0 for every expert at the first layer. MoME stores one shared W_l (out, in) and
binary masks M_l (E, out, in); dense kinds store W_l (E, out, in) and no masks.
Normalisation and biases are folded into the per-expert (scale, shift) vectors, so the
shared base weight stays shared. Routing: "softmax" gates over experts from x0 (MoME, MMoE)
or a fixed expert per task (shared-bottom: all 0; single-task: expert t for task t).
PLE keeps its own level structure (see PleLevel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from mome_edge.encoding import FeatureSpec
from mome_edge.errors import DataError

ROUTINGS = ("softmax", "fixed")


@dataclass(frozen=True, kw_only=True, eq=False)  # array fields: == is identity (an elementwise __eq__ could only raise)
class ExpertLayer:
    weight: np.ndarray  # float32 (out, in) shared [MoME] | (E, out, in) per expert [dense]
    masks: np.ndarray | None  # bool (E, out, in) [MoME] | None [dense]
    scale: np.ndarray  # float32 (E, out)
    shift: np.ndarray  # float32 (E, out)
    input_index: np.ndarray | None = None  # int64 columns of the layer input read; None = all

    @property
    def experts(self) -> int:
        return int(self.scale.shape[0])

    @property
    def shared_weight(self) -> bool:
        return self.weight.ndim == 2

    def expert_weights(self) -> np.ndarray:
        """Materialised (E, out, in) float32 weights of every expert."""
        if self.masks is None:
            return self.weight
        return self.masks.astype(self.weight.dtype) * self.weight[None, :, :]

    def apply(self, h: np.ndarray) -> np.ndarray:
        """h: (B, in) shared or (E, B, in) per expert -> (E, B, out), ReLU applied."""
        if self.input_index is not None:
            h = h[..., self.input_index]
        weights = self.expert_weights()  # (E, out, in)
        if h.ndim == 2:
            y = np.einsum("bi,eoi->ebo", h, weights, optimize=True)
        else:
            y = np.einsum("ebi,eoi->ebo", h, weights, optimize=True)
        return np.maximum(y * self.scale[:, None, :] + self.shift[:, None, :], 0.0)


@dataclass(frozen=True, kw_only=True, eq=False)  # array fields: == is identity (an elementwise __eq__ could only raise)
class Linear:
    """Per-task (or per-gate) affine maps stacked on a leading axis: y[t] = x[t] @ W[t]^T + b[t]."""

    weight: np.ndarray  # float32 (G, out, in)
    bias: np.ndarray  # float32 (G, out)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x: (B, in) shared or (G, B, in) per group -> (G, B, out)."""
        if x.ndim == 2:
            y = np.einsum("bi,goi->gbo", x, self.weight, optimize=True)
        else:
            y = np.einsum("gbi,goi->gbo", x, self.weight, optimize=True)
        return y + self.bias[:, None, :]


@dataclass(frozen=True, kw_only=True, eq=False)  # array fields: == is identity (an elementwise __eq__ could only raise)
class PleLevel:
    """One CGC level: T*K task experts then S shared experts (single layer each)."""

    experts: ExpertLayer  # dense, E = T*K + S
    task_gates: Linear  # (T, K+S, in): softmax over task t's experts then the shared ones
    shared_gate: Linear | None  # (1, E, in) on the shared branch; None at the last level
    expert_owner: np.ndarray  # int64 (E,): branch feeding each expert (0..T-1 tasks, T shared)
    task_selection: np.ndarray  # int64 (T, K+S): experts mixed by each task's gate


@dataclass(frozen=True, kw_only=True, eq=False)  # array fields: == is identity (an elementwise __eq__ could only raise)
class CompiledModel:
    kind: str
    spec: FeatureSpec
    field_index: tuple[int, ...]  # categorical fields that keep a table, in input order
    embeddings: tuple[np.ndarray, ...]  # float32 (V_f, k_f) per kept field
    numerical_keep: np.ndarray  # int64 indices of the numerical features read
    towers: tuple[Linear, ...]  # (T, out, in) each; ReLU between layers, none after the last
    layers: tuple[ExpertLayer, ...] = ()  # mixture kinds
    routing: str = "softmax"
    gates: Linear | None = None  # (T, E, d0) softmax routing from x0
    fixed_expert: tuple[int, ...] | None = None  # fixed routing: expert index per task
    ple_levels: tuple[PleLevel, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.spec.tasks


def embed_inputs(model: CompiledModel, categorical: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """(B, F) int64 ids + (B, D) float32 -> x0 (B, d0). Out-of-range ids read the OOV row 0."""
    parts = []
    for field_id, table in zip(model.field_index, model.embeddings):
        ids = categorical[:, field_id].astype(np.int64)
        ids = np.where((ids >= 0) & (ids < table.shape[0]), ids, 0)
        parts.append(table[ids])
    if len(model.numerical_keep):
        parts.append(numerical[:, model.numerical_keep].astype(np.float32))
    if not parts:  # every input pruned away: x0 has no columns (the gates and experts see only biases)
        return np.zeros((categorical.shape[0], 0), dtype=np.float32)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _ple_trunk(model: CompiledModel, x0: np.ndarray) -> np.ndarray:
    tasks = len(model.tasks)
    branches = np.broadcast_to(x0, (tasks + 1, *x0.shape))  # (T+1, B, d)
    for i, level in enumerate(model.ple_levels):
        expert_in = x0 if i == 0 else branches[level.expert_owner]
        out = level.experts.apply(expert_in)  # (E, B, h)
        task_w = _softmax(level.task_gates.apply(branches[:tasks]))  # (T, B, K+S)
        chosen = out[level.task_selection]  # (T, K+S, B, h)
        task_out = np.einsum("tbk,tkbh->tbh", task_w, chosen)
        if level.shared_gate is not None:
            shared_w = _softmax(level.shared_gate.apply(branches[tasks])[0])  # (B, E)
            shared_out = np.einsum("be,ebh->bh", shared_w, out)
            branches = np.concatenate([task_out, shared_out[None]], axis=0)
        else:
            branches = task_out
    return branches  # (T, B, h)


def trunk_forward(model: CompiledModel, x0: np.ndarray) -> np.ndarray:
    """x0 (B, d0) -> per-task representation (T, B, d)."""
    if model.kind == "ple":
        return _ple_trunk(model, x0)
    h = x0
    for layer in model.layers:
        h = layer.apply(h)  # (E, B, out)
    if model.routing == "softmax":
        assert model.gates is not None
        weights = _softmax(model.gates.apply(x0))  # (T, B, E)
        return np.einsum("tbe,ebd->tbd", weights, h)
    assert model.fixed_expert is not None
    return h[list(model.fixed_expert)]


def tower_forward(model: CompiledModel, h: np.ndarray) -> np.ndarray:
    """(T, B, d) -> logits (B, T)."""
    for i, layer in enumerate(model.towers):
        h = layer.apply(h)
        if i < len(model.towers) - 1:
            h = np.maximum(h, 0.0)
    return h[..., 0].T


def check_inputs(model: CompiledModel, categorical: Any, numerical: Any) -> tuple[np.ndarray, np.ndarray]:
    """The encoded inputs as (int64 (B, F), float32 (B, D)) arrays, or one DataError.

    The same checks and the same input policy as the device runtime
    (`mome_edge.runtime.inputs.check_inputs`): integer ids, one column per field; ids outside
    a field's vocabulary (negative, too large, int64 extremes) read the OOV row 0, exactly as
    the trained model's embeddings do; NaN/inf numerical values follow each field's recorded
    missing-value policy ("mean" -> 0.0, "error" -> DataError). One difference: an empty
    batch gives empty arrays here (an empty output), where the online Predictor refuses it.
    """
    from mome_edge.runtime.inputs import check_inputs as check_runtime_inputs  # numpy only; lazy: runtime imports this module

    try:
        return check_runtime_inputs(model.spec, categorical, numerical)
    except DataError as exc:
        if not str(exc).startswith("empty batch"):  # raised last: every other check passed
            raise
    return np.zeros((0, len(model.spec.categorical)), np.int64), np.zeros((0, len(model.spec.numerical)), np.float32)


def reference_forward(model: CompiledModel, categorical: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """Probabilities float32 (B, T): the numpy reference of a compiled model.

    Args:
        categorical: int (B, F) ids; out-of-vocabulary ids read the OOV row (see check_inputs).
        numerical: float (B, D) scaled values; NaN/inf follow the recorded missing-value policy.
    Raises:
        DataError: inputs of the wrong rank, dtype, field count or row count, a non-finite
            value in a field with the "error" policy, or outputs that are not finite (extreme
            inputs or weights overflowing float32): a clear error instead of NaN probabilities.
    """
    from mome_edge.runtime.inputs import check_outputs

    categorical, numerical = check_inputs(model, categorical, numerical)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by check_outputs, once, as an error
        x0 = embed_inputs(model, categorical, numerical)
        logits = tower_forward(model, trunk_forward(model, x0)).astype(np.float64)
        probs = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return check_outputs(probs)
