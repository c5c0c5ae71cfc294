"""numpy execution of a CompiledModel, with experts materialised at load or rebuilt on demand.

"materialize": every expert's weights W_e = M_e * W * s_e are built once at load; the first
    layer's experts sit side by side, (in, E*out), for one matmul. Fastest; holds E dense
    copies of every masked layer.
"on-demand": only the shared base weights and the packed masks (1 bit per weight and
    expert) stay resident, plus a FIXED subset of rebuilt experts chosen at load (layer by
    layer, expert by expert, while they fit in the memory budget). Every other expert is
    rebuilt (unpack bits, select, scale) each time a forward pass needs it and dropped
    after use. Softmax routing reads every expert of every layer in a fixed cycle, which
    is an LRU's worst case (any budget below the whole set evicted each expert just before
    its next use: every read a rebuild); a fixed subset instead turns a budget of k experts
    into exactly E_total - k rebuilds per call. Budget >= the whole set: "materialize".
Dense layers (MMoE, shared-bottom, single-task, PLE) have nothing to rebuild and run the
same way in both modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, trunk_forward
from mome_edge.errors import ConfigError
from mome_edge.artifact.masks import BIT_ORDER
from mome_edge.onnx_contract import EXPERT_MODES

if TYPE_CHECKING:
    from mome_edge.runtime.cache import CacheStats


class _DenseLayer:
    """Experts held materialised: (in, E*out) for the first layer, (E, in, out) after."""

    def __init__(self, layer: ExpertLayer, first: bool) -> None:
        e_count, out_dim = layer.scale.shape
        with np.errstate(over="ignore", invalid="ignore"):  # extreme weights overflow; Predictor reports it once, as a DataError
            # one pass to build and one to scale, in place: each temporary of the census model's
            # first layer is ~1 MiB of fresh pages, and page faults are most of a cold build
            if layer.masks is None:
                dense = np.array(layer.weight, dtype=np.float32)  # (E, out, in), a copy
            else:
                dense = np.multiply(layer.masks, layer.weight[None, :, :], dtype=np.float32)  # (E, out, in); m * w is exact
            dense *= layer.scale[:, :, None]
        in_dim = dense.shape[2]
        self.first = first
        self.index = layer.input_index
        self.shape = (e_count, out_dim)
        if first:
            self.weight = np.ascontiguousarray(dense.transpose(2, 0, 1).reshape(in_dim, e_count * out_dim))
            self.shift = np.ascontiguousarray(layer.shift.reshape(-1), dtype=np.float32)  # (E*out,)
        else:
            self.weight = np.ascontiguousarray(dense.transpose(0, 2, 1))  # (E, in, out)
            self.shift = np.ascontiguousarray(layer.shift[:, None, :], dtype=np.float32)  # (E, 1, out)

    @property
    def nbytes(self) -> int:
        return int(self.weight.nbytes)

    def apply(self, h: np.ndarray) -> np.ndarray:
        if self.index is not None:
            h = h[..., self.index]
        if self.first:
            y = h @ self.weight + self.shift  # (B, E*out)
            np.maximum(y, 0.0, out=y)
            return y.reshape(h.shape[0], *self.shape).transpose(1, 0, 2)  # (E, B, out)
        y = np.matmul(h, self.weight) + self.shift  # (E, B, out)
        return np.maximum(y, 0.0, out=y)


class _ResidentBudget:
    """Bytes of rebuilt expert weights held for the engine's lifetime, handed out once at load."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self.used_bytes = 0

    def take(self, nbytes: int) -> bool:
        if self.used_bytes + nbytes > self.capacity_bytes:
            return False
        self.used_bytes += nbytes
        return True


class _OnDemandLayer:
    """Shared base weight + packed masks; a fixed subset of experts held rebuilt, the rest rebuilt per use."""

    def __init__(self, layer: ExpertLayer, budget: _ResidentBudget, packed: np.ndarray | None = None) -> None:
        if layer.masks is None or layer.weight.ndim != 2:
            raise ConfigError("on-demand rebuild needs a shared base weight and expert masks")
        e_count, out_dim = layer.scale.shape
        self.index = layer.input_index
        self.base = np.ascontiguousarray(layer.weight, dtype=np.float32)  # (out, in), shared
        self.out_in = self.base.shape
        # (E, ceil(out*in/8)) raw bitsets, row-major over (out, in), big-endian bit order
        self.packed = packed if packed is not None else np.packbits(
            layer.masks.reshape(e_count, -1), axis=1, bitorder=BIT_ORDER)
        self.scale = np.ascontiguousarray(layer.scale[:, :, None], dtype=np.float32)  # (E, out, 1)
        self.shift = np.ascontiguousarray(layer.shift, dtype=np.float32)  # (E, out)
        self.experts = e_count
        self.rebuilds = 0
        self.hits = 0
        # the fixed resident subset: rebuilt once, now, while the budget lasts
        self.resident = {e: self._rebuild(e) for e in range(e_count) if budget.take(self.expert_bytes)}

    @property
    def resident_bytes(self) -> int:
        """Always-resident bytes (shared weight, masks, affine); the rebuilt subset is counted by the budget."""
        return int(self.base.nbytes + self.packed.nbytes + self.scale.nbytes + self.shift.nbytes)

    @property
    def expert_bytes(self) -> int:
        return int(self.base.nbytes)

    def _rebuild(self, e: int) -> np.ndarray:
        bits = np.unpackbits(self.packed[e], count=self.base.size, bitorder=BIT_ORDER)  # uint8 0/1
        weight = self.base * self.scale[e]  # (out, in) float32, a new array
        weight *= bits.reshape(self.out_in)  # 3x faster than np.where on the bool view
        return weight

    def expert(self, e: int) -> np.ndarray:
        """W_e * s_e, (out, in) float32: the resident copy, or rebuilt from the bits (not kept)."""
        weight = self.resident.get(e)
        if weight is not None:
            self.hits += 1  # (racy under threads: statistics, not invariants)
            return weight
        self.rebuilds += 1
        return self._rebuild(e)

    def apply(self, h: np.ndarray) -> np.ndarray:
        """h (B, in) shared or (E, B, in) per expert -> (E, B, out)."""
        if self.index is not None:
            h = h[..., self.index]
        rows = h.shape[-2]
        y = np.empty((self.experts, rows, self.out_in[0]), dtype=np.float32)
        for e in range(self.experts):
            x = h if h.ndim == 2 else h[e]
            np.matmul(x, self.expert(e).T, out=y[e])  # one rebuilt expert alive at a time
            y[e] += self.shift[e]
        return np.maximum(y, 0.0, out=y)


def masked_expert_bytes(model: CompiledModel) -> int:
    """float32 bytes of every masked layer's E rebuilt experts (what "materialize" holds)."""
    return sum(4 * layer.experts * int(np.prod(layer.weight.shape)) for layer in model.layers if layer.masks is not None)


class NumpyEngine:
    """Runs a CompiledModel: (int64 (B, F), float32 (B, D)) -> probabilities float32 (B, T)."""

    def __init__(self, model: CompiledModel, *, experts: str = "materialize", memory_budget_bytes: int = 0,
                 packed_masks: dict[int, np.ndarray] | None = None) -> None:
        if experts not in EXPERT_MODES:
            raise ConfigError(f"experts={experts!r} is not a runtime expert mode; use one of {', '.join(EXPERT_MODES)}")
        self.experts = experts
        self.kind = model.kind
        self.tasks = model.tasks
        self.spec = model.spec
        self.budget = _ResidentBudget(memory_budget_bytes)
        self._tables = [(f, np.ascontiguousarray(t, dtype=np.float32)) for f, t in zip(model.field_index, model.embeddings)]
        self._numerical_keep = np.asarray(model.numerical_keep, dtype=np.int64)
        self._towers = [
            (np.ascontiguousarray(t.weight.transpose(0, 2, 1), dtype=np.float32), t.bias[:, None, :].astype(np.float32))
            for t in model.towers
        ]  # (T, in, out), (T, 1, out)
        self._ple = model if model.kind == "ple" else None  # PLE: dense, single-layer experts, reference trunk
        self._layers: list[_DenseLayer | _OnDemandLayer] = []
        for i, layer in enumerate(model.layers):
            if experts == "on-demand" and layer.masks is not None and layer.weight.ndim == 2:
                packed = None if packed_masks is None else packed_masks.get(i)
                self._layers.append(_OnDemandLayer(layer, self.budget, packed))
            else:
                self._layers.append(_DenseLayer(layer, first=i == 0))
        self.routing = model.routing
        if model.routing == "softmax" and model.kind != "ple":
            if model.gates is None:
                raise ConfigError("softmax routing without gates in the compiled model; recompile it")
            g, e, d = model.gates.weight.shape
            self._gates = np.ascontiguousarray(model.gates.weight.transpose(2, 0, 1).reshape(d, g * e))  # (d0, T*E)
            self._gate_bias = model.gates.bias.reshape(-1).astype(np.float32)
            self._gate_shape = (g, e)
        self._fixed = None if model.fixed_expert is None else list(model.fixed_expert)

    # --- memory -------------------------------------------------------------------------------
    def resident_bytes(self) -> int:
        """Bytes of weights always held (the fixed subset of rebuilt experts is `cache_stats().bytes`)."""
        total = sum(t.nbytes for _, t in self._tables) + sum(w.nbytes + b.nbytes for w, b in self._towers)
        for layer in self._layers:
            total += layer.resident_bytes if isinstance(layer, _OnDemandLayer) else layer.nbytes
        if hasattr(self, "_gates"):
            total += self._gates.nbytes
        return int(total)

    def rebuilds(self) -> int:
        return sum(layer.rebuilds for layer in self._layers if isinstance(layer, _OnDemandLayer))

    def resident_experts(self) -> int:
        return sum(len(layer.resident) for layer in self._layers if isinstance(layer, _OnDemandLayer))

    def rebuilt_experts(self) -> int:
        """Experts rebuilt on every call (those outside the resident subset)."""
        return sum(layer.experts - len(layer.resident) for layer in self._layers if isinstance(layer, _OnDemandLayer))

    def cache_stats(self) -> CacheStats:
        """The resident subset in the shape of the former LRU's statistics (entries = resident experts,
        misses = rebuilds, uncacheable = experts outside the subset, no evictions)."""
        from mome_edge.runtime.cache import CacheStats  # statistics only: not on the load path

        layers = [layer for layer in self._layers if isinstance(layer, _OnDemandLayer)]
        return CacheStats(
            capacity_bytes=self.budget.capacity_bytes, bytes=self.budget.used_bytes, peak_bytes=self.budget.used_bytes,
            entries=self.resident_experts(), hits=sum(layer.hits for layer in layers), misses=self.rebuilds(),
            evictions=0, uncacheable=self.rebuilt_experts(),
        )


    # --- forward --------------------------------------------------------------------------------
    def _embed(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        parts = []
        for field_id, table in self._tables:
            ids = cat[:, field_id]
            ids = np.where((ids >= 0) & (ids < table.shape[0]), ids, 0)  # out of range -> OOV row 0
            parts.append(table[ids])
        if len(self._numerical_keep):
            parts.append(num[:, self._numerical_keep])
        if not parts:  # every input pruned away (a valid, if useless, artifact): x0 has no columns
            return np.zeros((cat.shape[0], 0), dtype=np.float32)
        return np.concatenate(parts, axis=1, dtype=np.float32)  # (B, d0)

    def _trunk(self, x0: np.ndarray) -> np.ndarray:
        if self._ple is not None:
            return trunk_forward(self._ple, x0).astype(np.float32)
        h = x0
        for layer in self._layers:
            h = layer.apply(h)  # (E, B, d)
        if self.routing == "softmax":
            g, e = self._gate_shape
            logits = (x0 @ self._gates + self._gate_bias).reshape(x0.shape[0], g, e)  # (B, T, E)
            logits -= logits.max(axis=-1, keepdims=True)
            weights = np.exp(logits)
            weights /= weights.sum(axis=-1, keepdims=True)
            mixed = np.matmul(weights, h.transpose(1, 0, 2))  # (B, T, d)
            return mixed.transpose(1, 0, 2)  # (T, B, d)
        return h[self._fixed]  # (T, B, d)

    def forward(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """Checked inputs -> probabilities float32 (B, T)."""
        h = self._trunk(self._embed(cat, num))
        for i, (weight, bias) in enumerate(self._towers):
            h = np.matmul(h, weight) + bias  # (T, B, out)
            if i < len(self._towers) - 1:
                np.maximum(h, 0.0, out=h)
        logits = h[..., 0].T.astype(np.float64)  # (B, T)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as intended
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
