"""CompiledModel -> ONNX graph, node by node with onnx.helper (numpy in, no torch).

The graph has two parts, kept apart on purpose:

* the *weight-decoding* subgraph: nodes whose inputs are all initializers and whose outputs
  are float32 weights (speed mode: bitset -> expert weights; dequantise int8 (Cast, Mul by
  scales); cast fp16). ONNX Runtime folds it once at session
  start; the simplifier never sees it (see onnx_export._simplify), so the file keeps the
  bitsets;
* the *compute* subgraph: embeddings, expert layers (memory mode: a Loop that rebuilds one
  expert per iteration, see exporters.onnx_bitset), routing, towers.

Layouts inside the graph (B batch, E experts, T tasks):
  first trunk layer: one MatMul x0 (B, in) @ (in, E*out), the E experts side by side
                     (dense experts, small speed-mode layers), or E MatMuls (B, in) @ (in, out)
                     (large speed-mode layers; memory mode: one per Loop iteration);
  later layers:      batched MatMul (E, B, in) @ (E, in, out);
  routing:           softmax gates (B, T, E) @ expert outputs (B, E, d) -> (B, T, d);
  towers:            batched MatMul (T, B, in) @ (T, in, out).
Dense experts and small speed-mode layers have the per-expert normalisation scale folded in
(W_e = M_e * W * s_e); the other bitset experts apply it after the matmul.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mome_edge.exporters import onnx_bitset
from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, Linear
from mome_edge.errors import ConfigError
from mome_edge.runtime.onnx_integrity import META_SHA256, UNSIGNED
from mome_edge.artifact.masks import BIT_ORDER
from mome_edge.onnx_contract import (  # noqa: F401  (re-exported: the exporter's metadata keys)
    DEPLOY_MODES,
    EXPERT_STORAGE,
    INPUT_CATEGORICAL,
    INPUT_NUMERICAL,
    META_BIT_ORDER,
    META_EXPERTS,
    META_FEATURE_SPEC,
    META_FORMAT_VERSION,
    META_KIND,
    META_MODE,
    META_MODEL_METADATA,
    META_OOV_ID,
    META_RESIDENT_EXPERT_BYTES,
    META_STORAGE,
    META_TASKS,
)

BATCH_DIM = "batch"
ONNX_FORMAT_VERSION = 2  # 2: mome.sha256 over the file (mome_edge.runtime.onnx_integrity)
MIN_OPSET = 17



@dataclass(frozen=True)
class StoredTensor:
    """How one weight is stored in the file: float32 as is, float16 (+Cast) or int8 (+Cast, Mul by scales).

    `data` is in the compiled layout (e.g. (out, in) for a shared base weight). int8 follows
    the artifact's convention (docs/artifact-format.md, section 4): symmetric, zero point 0,
    x = data * expand_dims(scale, axis), i.e. `scale` has data's shape without `axis`
    (axis None: one scalar scale).
    """

    data: np.ndarray
    scale: np.ndarray | None = None
    axis: int | None = None

    @property
    def storage(self) -> str:
        return {np.dtype(np.float32): "fp32", np.dtype(np.float16): "fp16", np.dtype(np.int8): "int8"}[self.data.dtype]

    def dequantised(self) -> np.ndarray:
        """The float32 values, computed as the artifact reader does."""
        if self.storage != "int8":
            return self.data.astype(np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        return self.data.astype(np.float32) * (scale if self.axis is None else np.expand_dims(scale, self.axis))

    def with_masks(self, masks: np.ndarray) -> "StoredTensor":
        """Materialised experts (E, out, in) in the same storage: mask * weight is exact in fp16 and int8."""
        data = masks.astype(self.data.dtype) * self.data[None]  # (E, out, in)
        if self.storage != "int8":
            return StoredTensor(data=data)
        if self.axis is None:
            return StoredTensor(data=data, scale=self.scale, axis=None)
        scale = np.broadcast_to(np.expand_dims(np.asarray(self.scale, np.float32), 0), (masks.shape[0], *np.shape(self.scale)))
        return StoredTensor(data=data, scale=np.ascontiguousarray(scale), axis=self.axis + 1)


# key -> stored tensor; keys name arrays of the CompiledModel (see weight_keys)
WeightSource = Mapping[str, StoredTensor]


@dataclass
class GraphInfo:
    """What the builder knows about the graph it made (for simplification checks and reports)."""

    decode_nodes: set[str] = field(default_factory=set)
    decode_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # decoder outputs read by compute nodes
    bitset_initializers: list[str] = field(default_factory=list)
    quantised_nodes: list[str] = field(default_factory=list)  # Cast (from fp16/int8) and int8 scale Mul nodes
    storage: dict[str, str] = field(default_factory=dict)  # initializer -> fp32 | fp16 | int8 | bitset
    expert_bytes: int = 0  # float32 bytes of every masked layer's E dense experts (what speed / dense exports hold)
    one_expert_bytes: int = 0  # the most memory mode holds rebuilt at once: one group of one expert's bit planes (expert Loop, onnx_bitset.expert_bytes), or one layer's E experts (onnx_bitset.all_experts_bytes)

    def count_masked_layer(self, layer: ExpertLayer, held: int) -> None:
        """A masked layer stored as bitsets: its E dense experts' bytes (what a speed session
        holds) and `held`, what memory mode holds of it rebuilt at once."""
        self.expert_bytes += onnx_bitset.expert_bytes(layer)[0]
        self.one_expert_bytes = max(self.one_expert_bytes, held)

    def resident_expert_bytes(self, mode: str) -> int:
        """Bytes of masked experts a running session holds as dense float32 (layers without
        masks are the model's own stored weights and do not count)."""
        return self.one_expert_bytes if mode == "memory" else self.expert_bytes


class _Builder:
    def __init__(self, opset: int, mode: str = "speed") -> None:
        self.opset = opset
        self.mode = mode
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.info = GraphInfo()
        self._count = 0
        # while a Loop body is being built: the top-level node list, where load-time decode
        # nodes go (initializer-only: ORT folds them once at load, outside any Loop)
        self.decode_sink: list[onnx.NodeProto] | None = None
        self.last_node = ""

    def _fresh(self, stem: str) -> str:
        self._count += 1
        return f"mome/{stem}_{self._count}"

    def const(self, stem: str, array: np.ndarray, *, storage: str | None = None) -> str:
        name = self._fresh(stem)
        self.inits[name] = numpy_helper.from_array(np.asarray(array, order="C"), name)  # (ascontiguousarray would make a scalar 1-d)
        if storage is not None:
            self.info.storage[name] = storage
        return name

    def i64(self, stem: str, values) -> str:
        return self.const(stem, np.asarray(values, dtype=np.int64))

    def op(self, op_type: str, inputs: list[str], *, stem: str | None = None, output: str | None = None,
           decode: bool = False, **attrs) -> str:
        out = output or self._fresh(stem or op_type.lower())
        node_name = self._fresh(f"{stem or op_type.lower()}_node")
        sink = self.decode_sink if decode and self.decode_sink is not None else self.nodes
        sink.append(helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        self.last_node = node_name
        if decode:
            self.info.decode_nodes.add(node_name)
        return out


# --- weights -----------------------------------------------------------------------------------


def _stored(source: WeightSource | None, key: str, fallback: np.ndarray) -> StoredTensor:
    if source is not None and key in source:
        return source[key]
    return StoredTensor(data=np.asarray(fallback, dtype=np.float32))


def _decode(b: _Builder, stem: str, stored: StoredTensor) -> str:
    """Initializer + decode nodes -> name of a float32 tensor in the compiled layout.

    fp16: Cast. int8: Cast, then Mul by the per-channel scales. Not DequantizeLinear: ONNX
    Runtime's constant folding leaves DequantizeLinear in place (for QDQ fusions) unless the
    session sets session.disable_quant_qdq, so a device app with default options would
    dequantise on every call; Cast and Mul fold at load under any options.
    """
    if stored.storage == "fp32":
        return b.const(stem, stored.data, storage="fp32")
    raw = b.const(f"{stem}_{stored.storage}", stored.data, storage=stored.storage)
    return _to_float(b, stem, raw, stored)


def _to_float(b: _Builder, stem: str, raw: str, stored: StoredTensor, *, scale: np.ndarray | None = None) -> str:
    """A stored fp16/int8 tensor name -> float32 values (`scale`: the broadcastable int8 scales)."""
    out = b.op("Cast", [raw], stem=f"{stem}_f32" if stored.storage == "fp16" else f"{stem}_q_f32", to=TensorProto.FLOAT, decode=True)
    b.info.quantised_nodes.append(b.last_node)
    if stored.storage == "fp16":
        if b.decode_sink is not None:
            # read from inside a Loop body: ONNX Runtime 1.32's FuseInitializersTransformer fails
            # at session start on an fp16 -> fp32 Cast whose only readers are in a subgraph (an
            # implicit input of the Loop); a Reshape to the same shape (folded at load) reads it instead
            dims = [int(d) for d in b.inits[raw].dims]
            out = b.op("Reshape", [out, b.i64("shape", dims)], stem=f"{stem}_f32_outer", decode=True)
        return out
    if scale is None:
        scale = np.asarray(stored.scale, dtype=np.float32)
        scale = scale if stored.axis is None else np.expand_dims(scale, stored.axis)
    out = b.op("Mul", [out, b.const(f"{stem}_scale", np.asarray(scale, dtype=np.float32))], stem=f"{stem}_f32", decode=True)
    b.info.quantised_nodes.append(b.last_node)
    return out


def _expert_weights(b: _Builder, stem: str, layer: ExpertLayer, key: str, *, first: bool, experts_mode: str,
                    source: WeightSource | None) -> str:
    """Per-expert weights stored dense (layers without masks, or experts="dense"), with the
    normalisation scale folded in. (Masked layers stored as bitsets: exporters.onnx_bitset.)

    first=True  -> (in, E*out): the experts side by side for one MatMul on a shared input.
    first=False -> (E, in, out): for a batched MatMul on per-expert inputs.
    """
    e_count, out_dim = layer.scale.shape
    in_dim = layer.weight.shape[-1]
    stored = _stored(source, key, layer.weight)
    if layer.masks is not None and stored.storage != "fp32":
        stored = stored.with_masks(layer.masks)  # dense experts, still fp16/int8
    if stored.storage == "fp32":
        # dense: materialise M_e * W * s_e once, in numpy
        dense = layer.expert_weights().astype(np.float32) * layer.scale[:, :, None]  # (E, out, in)
        if first:
            return b.const(f"{stem}_weight", dense.transpose(2, 0, 1).reshape(in_dim, e_count * out_dim), storage="fp32")
        return b.const(f"{stem}_weight", dense.transpose(0, 2, 1), storage="fp32")

    dec = dict(decode=True)
    if stored.data.ndim == 2:
        # a quantised shared weight without masks (fp32 ones were materialised above): every
        # expert uses it, broadcast by the Mul with the per-expert scales
        base = _decode(b, f"{stem}_base", stored)  # (out, in)
        base_t = b.op("Transpose", [base], stem=f"{stem}_base_t", perm=[1, 0], **dec)
        if first:
            base_t = b.op("Unsqueeze", [base_t, b.i64("axis1", [1])], stem=f"{stem}_base_t3", **dec)  # (in, 1, out)
            scale = b.const(f"{stem}_scale", layer.scale[None, :, :])  # (1, E, out)
        else:
            base_t = b.op("Unsqueeze", [base_t, b.i64("axis0", [0])], stem=f"{stem}_base_t3", **dec)  # (1, in, out)
            scale = b.const(f"{stem}_scale", layer.scale[:, None, :])  # (E, 1, out)
        weights = b.op("Mul", [base_t, scale], stem=f"{stem}_scaled", **dec)
    else:
        # per-expert quantised weights (E, out, in)
        base = _decode(b, f"{stem}_base", stored)
        perm = [2, 0, 1] if first else [0, 2, 1]
        base_t = b.op("Transpose", [base], stem=f"{stem}_base_t", perm=perm, **dec)
        scale = b.const(f"{stem}_scale", layer.scale[None, :, :] if first else layer.scale[:, None, :])
        weights = b.op("Mul", [base_t, scale], stem=f"{stem}_expert_weight", **dec)
    if first:
        weights = b.op("Reshape", [weights, b.i64("shape", [in_dim, e_count * out_dim])], stem=f"{stem}_side_by_side", **dec)
        b.info.decode_shapes[weights] = (in_dim, e_count * out_dim)
    else:
        b.info.decode_shapes[weights] = (e_count, in_dim, out_dim)
    return weights


def _linear_weight(b: _Builder, stem: str, lin: Linear, key: str, source: WeightSource | None) -> str:
    """(G, out, in) -> a (G, in, out) float tensor."""
    stored = _stored(source, key, lin.weight)
    if stored.storage == "fp32":
        return b.const(f"{stem}_weight_t", stored.data.transpose(0, 2, 1), storage="fp32")
    base = _decode(b, stem, stored)
    out = b.op("Transpose", [base], stem=f"{stem}_weight_t", perm=[0, 2, 1], decode=True)
    g, o, i = lin.weight.shape
    b.info.decode_shapes[out] = (g, i, o)
    return out


def _linear_shared_input(b: _Builder, stem: str, lin: Linear, x: str, key: str, source: WeightSource | None) -> str:
    """x (B, in) -> (B, G*out): all groups side by side in one MatMul."""
    g, o, i = lin.weight.shape
    stored = _stored(source, key, lin.weight)
    if stored.storage == "fp32":
        w = b.const(f"{stem}_weight_side_by_side", stored.data.transpose(2, 0, 1).reshape(i, g * o), storage="fp32")
    else:
        w = _decode(b, stem, stored)  # (G, out, in)
        w = b.op("Transpose", [w], stem=f"{stem}_igo", perm=[2, 0, 1], decode=True)  # (in, G, out)
        w = b.op("Reshape", [w, b.i64("shape", [i, g * o])], stem=f"{stem}_side_by_side", decode=True)
        b.info.decode_shapes[w] = (i, g * o)
    y = b.op("MatMul", [x, w], stem=f"{stem}_matmul")
    return b.op("Add", [y, b.const(f"{stem}_bias", lin.bias.reshape(-1))], stem=f"{stem}_out")  # (B, G*out)


def _linear_grouped(b: _Builder, stem: str, lin: Linear, x: str, key: str, source: WeightSource | None) -> str:
    """x (G, B, in) -> (G, B, out)."""
    w = _linear_weight(b, stem, lin, key, source)  # (G, in, out)
    y = b.op("MatMul", [x, w], stem=f"{stem}_matmul")
    return b.op("Add", [y, b.const(f"{stem}_bias", lin.bias[:, None, :])], stem=f"{stem}_out")


# --- graph sections ------------------------------------------------------------------------------


def _embed(b: _Builder, model: CompiledModel, source: WeightSource | None, *, categorical: str = INPUT_CATEGORICAL,
           numerical: str = INPUT_NUMERICAL) -> str:
    """categorical (B, F) int64, numerical (B, D) -> x0 (B, d0). Invalid ids read row 0 (OOV).

    The ids are checked once for all fields, (B, F). Then the fewest row lookups:
    - all fields in one: their tables zero-padded to the widest and stacked, when the padding
      costs at most PAD_MAX_SHARE of the model's bytes (fp32/fp16 tables; neuron masking
      leaves widths 1..k, and census's 26 fields pad by 3.4 KB): ids + each field's first row ->
      (B, F, k_max), then a column Gather keeps x0's columns in field order;
    - otherwise one lookup per width shared by at least STACK_MIN_FIELDS fields, and one per
      remaining field (int8 tables have one scale per column and table: they stack per width
      after Cast and Mul, folded at session start).
    Per-field lookups cost 2 nodes per field, each set up at session start and run on every
    call: at batch 1 on census, node overhead is most of the latency. (A single flat table read element by element would need (B, d0) int64 index
    tensors: 8 bytes per embedding value per row, 40 MB of temporaries at batch 512 with
    16 x 128.)
    """
    parts: list[str] = []
    columns: list[np.ndarray] = []  # per part: the x0 column of each of its columns (-1: padding)
    d_embedded = 0
    if model.field_index:
        fields = b.i64("kept_fields", list(model.field_index))
        ids = b.op("Gather", [categorical, fields], stem="ids", axis=1)  # (B, F kept)
        vocab = [int(t.shape[0]) for t in model.embeddings]
        ok = b.op("And", [
            b.op("GreaterOrEqual", [ids, b.i64("zero", 0)], stem="ids_nonneg"),
            b.op("Less", [ids, b.i64("vocab_of_field", vocab)], stem="ids_in_vocab"),
        ], stem="ids_valid")
        safe = b.op("Where", [ok, ids, b.i64("oov_id", 0)], stem="ids_or_oov")  # (B, F), in range
        dims = [int(t.shape[1]) for t in model.embeddings]
        starts = np.concatenate([[0], np.cumsum(dims)]).astype(np.int64)  # x0 column where each field starts
        d_embedded = int(starts[-1])
        padded = _padded_table(b, model, source)
        for group in ([[m for m in range(len(dims)) if dims[m]]] if padded is not None else _lookup_groups(dims)):
            width = max(dims[m] for m in group)
            table = padded if padded is not None else _stacked_table(b, model, source, group, width)  # (sum V_f, width)
            columns.append(np.concatenate([
                np.concatenate([np.arange(starts[m], starts[m] + dims[m]), np.full(width - dims[m], -1)]) for m in group
            ]))
            parts.append(_lookup(b, safe, table, group, width, [vocab[m] for m in group], all_fields=group == list(range(len(dims)))))
    keep = np.asarray(model.numerical_keep, dtype=np.int64)
    if len(keep):
        if len(keep) == len(model.spec.numerical) and np.array_equal(keep, np.arange(len(keep))):
            parts.append(numerical)
        else:
            parts.append(b.op("Gather", [numerical, b.i64("numerical_keep", keep)], stem="numerical_kept", axis=1))
        columns.append(np.arange(d_embedded, d_embedded + len(keep)))
    if not parts:
        raise ConfigError("the compiled model reads no input feature; it cannot be exported")
    x = b.op("Identity", parts, stem="x0") if len(parts) == 1 else b.op("Concat", parts, stem="x0_grouped", axis=1)  # (B, d0 + padding)
    held = np.concatenate(columns)  # x0 column held by each column of x (-1: padding)
    if np.array_equal(held, np.arange(len(held))):
        return x
    where = np.empty(int(held.max()) + 1, dtype=np.int64)
    where[held[held >= 0]] = np.flatnonzero(held >= 0)  # x0 column -> its column of x
    return b.op("Gather", [x, b.i64("x0_columns", where)], stem="x0", axis=1)  # (B, d0) in field order


def _lookup(b: _Builder, safe: str, table: str, group: list[int], width: int, vocab: list[int], *, all_fields: bool) -> str:
    """The embeddings of `group`'s fields, (B, len(group) * width), from their stacked table."""
    if len(group) == 1:  # 2 nodes: the field's ids, its rows
        column = b.op("Gather", [safe, b.i64(f"field{group[0]}", group[0])], stem=f"ids_field{group[0]}", axis=1)  # (B,)
        return b.op("Gather", [table, column], stem=f"embedded{group[0]}", axis=0)  # (B, k_f)
    first_rows = np.concatenate([[0], np.cumsum(vocab)[:-1]]).astype(np.int64)  # each field's first row in the table
    group_ids = safe if all_fields else b.op("Gather", [safe, b.i64(f"fields_w{width}", group)], stem=f"ids_w{width}", axis=1)  # (B, F_g)
    rows = b.op("Add", [group_ids, b.i64(f"first_row_w{width}", first_rows)], stem=f"rows_w{width}")  # (B, F_g)
    looked_up = b.op("Gather", [table, rows], stem=f"embedded_w{width}", axis=0)  # (B, F_g, width)
    return b.op("Reshape", [looked_up, b.i64("keep_batch", [0, len(group) * width])], stem=f"embedded_w{width}_flat")


# Zero padding that buys one lookup for all fields, as a share of the model's stored bytes: it is
# downloaded with the file (census: 3.4 KB of a ~230 KB model, 1.5 %); a small budget model
# (1/40 of census's MMoE is ~80 KB) keeps its lookups per width instead.
PAD_MAX_SHARE = 0.02
STACK_MIN_FIELDS = 3  # a stacked lookup is 4 nodes (select ids, add first rows, Gather, Reshape); a field alone is 2


def _padded_table(b: _Builder, model: CompiledModel, source: WeightSource | None) -> str | None:
    """Every field's table (width 0 ones left out) zero-padded to the widest and stacked
    row-wise, stored in the tables' own format (fp32 or fp16), or None: int8 or mixed formats,
    fewer than 2 fields, or padding above PAD_MAX_SHARE of the model's stored bytes."""
    stored = [_stored(source, f"embeddings.{m}", table) for m, table in enumerate(model.embeddings) if table.shape[1]]
    formats = {s.storage for s in stored}
    if len(stored) < 2 or len(formats) != 1 or formats == {"int8"}:
        return None
    width = max(int(s.data.shape[1]) for s in stored)
    extra = sum(int(s.data.shape[0]) * (width - int(s.data.shape[1])) for s in stored) * stored[0].data.itemsize
    if extra > PAD_MAX_SHARE * _stored_bytes(model, source):
        return None
    data = np.concatenate([np.pad(s.data, ((0, 0), (0, width - s.data.shape[1]))) for s in stored], axis=0)  # (sum V_f, width)
    table = _decode(b, "embeddings_padded", StoredTensor(data=data))
    if formats != {"fp32"}:
        b.info.decode_shapes[table] = tuple(data.shape)
    return table


def _stored_bytes(model: CompiledModel, source: WeightSource | None) -> int:
    """An estimate of the model file's bytes for PAD_MAX_SHARE: embeddings, layers, towers and
    gates as stored (fp16/int8 when the source says so, else float32), one bit per mask entry.
    (It counts a MoME base weight whole, where the file keeps only the entries experts use:
    census 409 KB against a 229 KB file.)"""
    def stored(key: str, array: np.ndarray) -> int:
        held = None if source is None else source.get(key)
        return int(np.asarray(array).nbytes if held is None else held.data.nbytes)

    total = sum(stored(f"embeddings.{j}", t) for j, t in enumerate(model.embeddings))
    for i, layer in enumerate(model.layers):
        total += stored(f"layers.{i}.weight", layer.weight)
        total += 0 if layer.masks is None else layer.masks.size // 8
    total += sum(stored(f"towers.{i}.weight", t.weight) for i, t in enumerate(model.towers))
    if model.gates is not None:
        total += stored("gates.weight", model.gates.weight)
    return total


def _lookup_groups(dims: list[int]) -> list[list[int]]:
    """The kept fields (positions) looked up together: those of one width when there are at least
    STACK_MIN_FIELDS of them, every other field alone; ordered by their first field."""
    by_width: dict[int, list[int]] = {}
    for position, width in enumerate(dims):
        by_width.setdefault(width, []).append(position)
    by_width.pop(0, None)  # a field of width 0 owns no x0 column: nothing to read
    groups = [g for g in by_width.values() if len(g) >= STACK_MIN_FIELDS]
    groups += [[m] for g in by_width.values() if len(g) < STACK_MIN_FIELDS for m in g]
    return sorted(groups, key=lambda g: g[0])


def _stacked_table(b: _Builder, model: CompiledModel, source: WeightSource | None, group: list[int], width: int) -> str:
    """One float32 table: the group's tables stacked row-wise (field after field).

    fp32 and fp16 tables are stacked in the file. int8 tables carry one scale per column and
    table, so each is decoded (Cast, Mul) and the floats are concatenated: constant nodes,
    folded once at session start, never run per call."""
    stored = [_stored(source, f"embeddings.{m}", model.embeddings[m]) for m in group]
    formats = {s.storage for s in stored}
    shape = (sum(s.data.shape[0] for s in stored), width)
    if len(stored) == 1 or formats in ({"fp32"}, {"fp16"}):
        whole = stored[0] if len(stored) == 1 else StoredTensor(data=np.concatenate([s.data for s in stored], axis=0))
        table = _decode(b, f"embedding{group[0]}", whole)
        if formats != {"fp32"}:
            b.info.decode_shapes[table] = shape
        return table
    decoded = [_decode(b, f"embedding{m}", s) for m, s in zip(group, stored)]
    table = b.op("Concat", decoded, stem=f"embedding_w{width}", axis=0, decode=True)
    b.info.decode_shapes[table] = shape
    return table


def _select_columns(b: _Builder, h: str, index: np.ndarray | None, axis: int, stem: str) -> str:
    if index is None:
        return h
    return b.op("Gather", [h, b.i64(f"{stem}_input_index", index)], stem=f"{stem}_input", axis=axis)


def _first_layer(b: _Builder, stem: str, layer: ExpertLayer, x: str, key: str, experts_mode: str,
                 source: WeightSource | None) -> str:
    """x (B, in) shared -> (E, B, out)."""
    e_count, out_dim = layer.scale.shape
    x = _select_columns(b, x, layer.input_index, 1, stem)
    if layer.masks is not None and experts_mode == "bitset":
        return _bitset_layer(b, stem, layer, x, key, source, first=True)
    if layer.masks is not None:  # a masked layer exported with experts="dense": all E experts held
        b.info.expert_bytes += 4 * layer.experts * layer.scale.shape[1] * layer.weight.shape[-1]
    w = _expert_weights(b, stem, layer, key, first=True, experts_mode=experts_mode, source=source)  # (in, E*out)
    return dense_layer_call(b, stem, layer, x, w, first=True)


def _bitset_layer(b: _Builder, stem: str, layer: ExpertLayer, h: str, key: str, source: WeightSource | None, *,
                  first: bool) -> str:
    """A masked layer stored as bitsets, built for the export's deployment mode (exporters.onnx_bitset)."""
    stored = _stored(source, key, layer.weight)
    build = onnx_bitset.speed_layer if b.mode == "speed" else onnx_bitset.memory_layer
    b.info.count_masked_layer(layer, onnx_bitset.expert_bytes(layer)[1])
    return build(b, stem, layer, h, first=first, stored=stored)


def _later_layer(b: _Builder, stem: str, layer: ExpertLayer, h: str, key: str, experts_mode: str,
                 source: WeightSource | None) -> str:
    """h (E, B, in) per expert -> (E, B, out)."""
    h = _select_columns(b, h, layer.input_index, 2, stem)
    if layer.masks is not None and experts_mode == "bitset":
        return _bitset_layer(b, stem, layer, h, key, source, first=False)
    if layer.masks is not None:  # a masked layer exported with experts="dense": all E experts held
        b.info.expert_bytes += 4 * layer.experts * layer.scale.shape[1] * layer.weight.shape[-1]
    w = _expert_weights(b, stem, layer, key, first=False, experts_mode=experts_mode, source=source)  # (E, in, out)
    return dense_layer_call(b, stem, layer, h, w, first=False)


def dense_layer_call(b: _Builder, stem: str, layer: ExpertLayer, h: str, w: str, *, first: bool) -> str:
    """What a call runs for a layer whose experts are dense and scaled (stored dense, or folded at
    load by speed mode): MatMul + shift + ReLU, one Gemm after ONNX Runtime's fusions.

    first: h (B, in), w (in, E*out) -> (E, B, out); later: h (E, B, in), w (E, in, out) -> (E, B, out).
    """
    e_count, out_dim = layer.scale.shape
    y = b.op("MatMul", [h, w], stem=f"{stem}_matmul")  # (B, E*out) | (E, B, out)
    if not first:
        y = b.op("Add", [y, b.const(f"{stem}_shift", layer.shift[:, None, :])], stem=f"{stem}_affine")
        return b.op("Relu", [y], stem=f"{stem}_out")
    y = b.op("Add", [y, b.const(f"{stem}_shift", layer.shift.reshape(-1))], stem=f"{stem}_affine")
    y = b.op("Relu", [y], stem=f"{stem}_relu")
    y = b.op("Reshape", [y, b.i64("shape", [-1, e_count, out_dim])], stem=f"{stem}_by_expert")  # (B, E, out)
    return b.op("Transpose", [y], stem=f"{stem}_out", perm=[1, 0, 2])  # (E, B, out)


def _mixture_trunk(b: _Builder, model: CompiledModel, x0: str, experts_mode: str, source: WeightSource | None) -> str:
    """x0 (B, d0) -> per-task representation (T, B, d)."""
    if not model.layers:
        raise ConfigError(f"the compiled {model.kind} model has no expert layer; it cannot be exported")
    pipeline = b.mode == "speed" and experts_mode == "bitset" and any(
        layer.masks is not None and onnx_bitset.is_large(layer) for layer in model.layers)
    if pipeline:
        return _mix(b, model, x0, _speed_pipeline_experts(b, model, x0, source), source, rows_first=True)  # (B, E, d) in
    h = _first_layer(b, "layer0", model.layers[0], x0, "layers.0.weight", experts_mode, source)
    for i, layer in enumerate(model.layers[1:], start=1):
        h = _later_layer(b, f"layer{i}", layer, h, f"layers.{i}.weight", experts_mode, source)  # (E, B, d)
    return _mix(b, model, x0, h, source)


def _mix(b: _Builder, model: CompiledModel, x0: str, h: str, source: WeightSource | None, *, rows_first: bool = False) -> str:
    """The experts' outputs h (E, B, d), or (B, E, d) if rows_first -> per-task inputs (T, B, d)."""
    tasks = len(model.tasks)
    e_count = model.layers[-1].experts
    if model.routing == "softmax":
        weights = _gate_weights(b, model, x0, source, tasks, e_count)  # (B, T, E)
        h_be = h if rows_first else b.op("Transpose", [h], stem="experts_by_row", perm=[1, 0, 2])  # (B, E, d)
        mixed = b.op("MatMul", [weights, h_be], stem="mixed")  # (B, T, d)
        return b.op("Transpose", [mixed], stem="task_inputs", perm=[1, 0, 2])  # (T, B, d)
    if model.fixed_expert is None:
        raise ConfigError("fixed routing without fixed_expert in the compiled model; recompile it")
    fixed = list(model.fixed_expert)
    if rows_first:
        h = b.op("Gather", [h, b.i64("fixed_expert", fixed)], stem="task_inputs_bte", axis=1)  # (B, T, d)
        return b.op("Transpose", [h], stem="task_inputs", perm=[1, 0, 2])  # (T, B, d)
    if fixed == list(range(e_count)):
        return h
    return b.op("Gather", [h, b.i64("fixed_expert", fixed)], stem="task_inputs", axis=0)  # (T, B, d)


def _speed_pipeline_experts(b: _Builder, model: CompiledModel, x0: str, source: WeightSource | None) -> str:
    """x0 (B, d0) -> every expert's trunk output (B, E, d), speed mode with large layers: each
    expert runs through all its layers before the next starts (weights folded at load, one
    per expert and layer: onnx_bitset.speed_expert_weights).

    Not layer by layer: at batch 512 the (E, B, width) stacks of a layer-by-layer trunk (each
    expert's output, their concatenation, its normalised copies, each expert's slice of it for
    the next layer) held at once were most of the paper-size session's peak RSS; run expert by
    expert, ONNX Runtime reuses one expert's activation buffers for the next (its execution
    order follows the node order here) and only the E final outputs (B, d) are held together.
    """
    e_count = model.layers[0].experts
    weights: list[list[str]] = []  # [layer][expert] -> (in, out8) or (in, out) weight
    for i, layer in enumerate(model.layers):
        stem, key = f"layer{i}", f"layers.{i}.weight"
        if layer.masks is not None:
            b.info.count_masked_layer(layer, onnx_bitset.expert_bytes(layer)[1])
            weights.append(onnx_bitset.speed_expert_weights(b, stem, layer, _stored(source, key, layer.weight)))
            continue
        stacked = _expert_weights(b, stem, layer, key, first=False, experts_mode="bitset", source=source)  # (E, in, out), scaled
        per_expert = []
        for e in range(e_count):
            w = b.op("Gather", [stacked, b.i64(f"expert{e}", e)], stem=f"{stem}_expert{e}_weight", axis=0, decode=True)
            b.info.decode_shapes[w] = (layer.weight.shape[-1], layer.scale.shape[1])
            per_expert.append(w)
        weights.append(per_expert)
    x = _select_columns(b, x0, model.layers[0].input_index, 1, "layer0")  # (B, in0), shared
    index = {i: b.i64(f"layer{i}_input_index", layer.input_index)
             for i, layer in enumerate(model.layers) if i and layer.input_index is not None}
    outputs = []
    for e in range(e_count):
        h = x
        for i, layer in enumerate(model.layers):
            stem = f"layer{i}"
            if i in index:
                h = b.op("Gather", [h, index[i]], stem=f"{stem}_expert{e}_input", axis=1)
            if layer.masks is not None:
                h = onnx_bitset.speed_expert_call(b, stem, layer, h, weights[i][e], e)  # (B, out)
                continue
            y = b.op("MatMul", [h, weights[i][e]], stem=f"{stem}_expert{e}_matmul")
            y = b.op("Add", [y, b.const(f"{stem}_expert{e}_shift", layer.shift[e])], stem=f"{stem}_expert{e}_affine")
            h = b.op("Relu", [y], stem=f"{stem}_expert{e}_out")
        outputs.append(b.op("Unsqueeze", [h, b.i64("axis1", [1])], stem=f"expert{e}_trunk_out"))  # (B, 1, d)
    return b.op("Concat", outputs, stem="experts_by_row", axis=1)  # (B, E, d)


def _gate_weights(b: _Builder, model: CompiledModel, x0: str, source: WeightSource | None, tasks: int, e_count: int) -> str:
    """x0 (B, d0) -> softmax gate weights (B, T, E) of a softmax-routed mixture."""
    if model.gates is None:
        raise ConfigError("softmax routing without gates in the compiled model; recompile it")
    logits = _linear_shared_input(b, "gates", model.gates, x0, "gates.weight", source)  # (B, T*E)
    logits = b.op("Reshape", [logits, b.i64("shape", [-1, tasks, e_count])], stem="gate_logits")  # (B, T, E)
    return b.op("Softmax", [logits], stem="gate_weights", axis=-1)


def _memory_mixture_trunk(b: _Builder, model: CompiledModel, x0: str, source: WeightSource | None) -> str:
    """x0 (B, d0) -> per-task representation (T, B, d), memory mode: ONE Loop over the experts.

    Iteration e runs expert e through every trunk layer (masked layers rebuilt from their
    bitsets, exporters.onnx_bitset.memory_expert) and adds its routed share to a running
    sum carried from iteration to iteration:
        acc (T, B, d) += gate_weights[:, :, e] (T, B, 1) * h_e (B, d)
    so that at any time one expert's weights and one expert's activations exist, and no
    (E, B, width) tensor does (at batch 512 the stacked outputs of per-layer Loops and their
    concatenation were most of the session's peak).
    """
    tasks = len(model.tasks)
    e_count = model.layers[0].experts
    d_out = model.layers[-1].scale.shape[1]
    x = _select_columns(b, x0, model.layers[0].input_index, 1, "layer0")  # (B, in0), shared by the experts
    if model.routing == "softmax":
        weights = _gate_weights(b, model, x0, source, tasks, e_count)  # (B, T, E)
        weights = b.op("Transpose", [weights], stem="gate_weights_tbe", perm=[1, 0, 2])  # (T, B, E)
    else:
        if model.fixed_expert is None:
            raise ConfigError("fixed routing without fixed_expert in the compiled model; recompile it")
        onehot = np.zeros((tasks, 1, e_count), dtype=np.float32)
        onehot[np.arange(tasks), 0, list(model.fixed_expert)] = 1.0
        weights = b.const("fixed_routing", onehot)  # (T, 1, E)
    # what each layer reads from the outer graph, built before the body (load-time decode nodes stay outside)
    parts = []
    for i, layer in enumerate(model.layers):
        key = f"layers.{i}.weight"
        if layer.masks is not None:
            b.info.count_masked_layer(layer, onnx_bitset.expert_bytes(layer)[1])
            parts.append(onnx_bitset.memory_parts(b, f"layer{i}", layer, _stored(source, key, layer.weight)))
        else:  # dense per-expert weights (E, in, out), normalisation scale folded in
            parts.append(_expert_weights(b, f"layer{i}", layer, key, first=False, experts_mode="bitset", source=source))
    zero = b.op("ConstantOfShape", [b.op("Concat", [
        b.i64("tasks", [tasks]),
        b.op("Slice", [b.op("Shape", [x0], stem="x0_shape"), b.i64("start", [0]), b.i64("end", [1])], stem="batch_size"),
        b.i64("width", [d_out]),
    ], stem="sum_shape", axis=0)], stem="sum_zero", value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))  # (T, B, d)

    outer_nodes, b.nodes = b.nodes, []
    e = b._fresh("expert_index")
    cond_in, cond_out = b._fresh("cond_in"), b._fresh("cond_out")
    acc_in = b._fresh("sum_in")
    b.op("Identity", [cond_in], output=cond_out)
    h = x
    for i, (layer, part) in enumerate(zip(model.layers, parts)):
        stem = f"layer{i}"
        if i:
            h = _select_columns(b, h, layer.input_index, 1, stem)  # (B, in)
        if layer.masks is not None:
            h = onnx_bitset.memory_expert(b, stem, layer, h, e, part)  # (B, out)
        else:
            w = b.op("Gather", [part, e], stem=f"{stem}_weight_e", axis=0)  # (in, out)
            y = b.op("MatMul", [h, w], stem=f"{stem}_matmul_e")
            y = b.op("Add", [y, b.op("Gather", [b.const(f"{stem}_shift", layer.shift), e], stem=f"{stem}_shift_e", axis=0)],
                     stem=f"{stem}_affine")
            h = b.op("Relu", [y], stem=f"{stem}_out")
    share = b.op("Gather", [weights, e], stem="gate_weight_e", axis=2)  # (T, B) or (T, 1)
    share = b.op("Unsqueeze", [share, b.i64("axis2", [2])], stem="gate_weight_e_3d")  # (T, B, 1)
    acc_out = b.op("Add", [acc_in, b.op("Mul", [share, h], stem="routed_e")], stem="sum_out")  # (T, B, d)
    body_nodes, b.nodes = b.nodes, outer_nodes
    body = helper.make_graph(
        body_nodes, "expert_loop",
        [helper.make_tensor_value_info(e, TensorProto.INT64, []), helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(acc_in, TensorProto.FLOAT, [tasks, BATCH_DIM, d_out])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(acc_out, TensorProto.FLOAT, [tasks, BATCH_DIM, d_out])],
    )
    trips = b.const("expert_count", np.array(e_count, dtype=np.int64))
    return b.op("Loop", [trips, "", zero], stem="task_inputs", body=body)  # (T, B, d)


def _memory_layerwise_trunk(b: _Builder, model: CompiledModel, x0: str, source: WeightSource | None, live_zero: str) -> str:
    """x0 (r, d0) -> per-task representation (T, r, d), memory mode for small layers: layer by
    layer, every expert of a layer rebuilt inside the call at once
    (onnx_bitset.memory_layer_all_experts), then the mixture as in _mixture_trunk."""
    h = _select_columns(b, x0, model.layers[0].input_index, 1, "layer0")  # (r, in0), shared
    for i, layer in enumerate(model.layers):
        stem, key = f"layer{i}", f"layers.{i}.weight"
        if i:
            h = _select_columns(b, h, layer.input_index, 2, stem)  # (E, r, in)
        if layer.masks is not None:
            b.info.count_masked_layer(layer, onnx_bitset.all_experts_bytes(layer, b.opset))  # held while a call runs
            h = onnx_bitset.memory_layer_all_experts(b, stem, layer, h, first=i == 0, stored=_stored(source, key, layer.weight),
                                                     live_zero=live_zero)  # (E, r, out)
            continue
        w = _expert_weights(b, stem, layer, key, first=i == 0, experts_mode="bitset", source=source)
        h = dense_layer_call(b, stem, layer, h, w, first=i == 0)  # (E, r, out)
    return _mix(b, model, x0, h, source)


def _ple_trunk(b: _Builder, model: CompiledModel, x0: str, experts_mode: str, source: WeightSource | None) -> str:
    tasks = len(model.tasks)
    branches = None  # (T+1, B, d) after the first level; level 0 reads x0 everywhere
    for i, level in enumerate(model.ple_levels):
        stem = f"ple{i}"
        key = f"ple.{i}.weight"
        if branches is None:
            out = _first_layer(b, f"{stem}_experts", level.experts, x0, key, experts_mode, source)  # (E, B, h)
            g = len(model.tasks)
            k = level.task_gates.weight.shape[1]
            logits = _linear_shared_input(b, f"{stem}_task_gates", level.task_gates, x0, f"ple.{i}.task_gates.weight", source)
            logits = b.op("Reshape", [logits, b.i64("shape", [-1, g, k])], stem=f"{stem}_task_logits")  # (B, T, K+S)
            logits = b.op("Transpose", [logits], stem=f"{stem}_task_logits_t", perm=[1, 0, 2])  # (T, B, K+S)
            shared_in = x0
        else:
            expert_in = b.op("Gather", [branches, b.i64(f"{stem}_owner", level.expert_owner)], stem=f"{stem}_expert_in", axis=0)
            out = _later_layer(b, f"{stem}_experts", level.experts, expert_in, key, experts_mode, source)  # (E, B, h)
            task_in = b.op("Slice", [branches, b.i64("start", [0]), b.i64("end", [tasks]), b.i64("axes", [0])], stem=f"{stem}_task_in")
            logits = _linear_grouped(b, f"{stem}_task_gates", level.task_gates, task_in, f"ple.{i}.task_gates.weight", source)
            shared_in = b.op("Gather", [branches, b.i64(f"{stem}_shared_branch", tasks)], stem=f"{stem}_shared_in", axis=0)
        task_w = b.op("Softmax", [logits], stem=f"{stem}_task_weights", axis=-1)  # (T, B, K+S)
        chosen = b.op("Gather", [out, b.i64(f"{stem}_selection", level.task_selection)], stem=f"{stem}_chosen", axis=0)  # (T, K+S, B, h)
        chosen = b.op("Transpose", [chosen], stem=f"{stem}_chosen_t", perm=[0, 2, 1, 3])  # (T, B, K+S, h)
        task_w = b.op("Unsqueeze", [task_w, b.i64("axis2", [2])], stem=f"{stem}_task_weights_row")  # (T, B, 1, K+S)
        task_out = b.op("MatMul", [task_w, chosen], stem=f"{stem}_task_mix")  # (T, B, 1, h)
        task_out = b.op("Squeeze", [task_out, b.i64("axis2", [2])], stem=f"{stem}_task_out")  # (T, B, h)
        if level.shared_gate is None:
            branches = task_out
            continue
        shared_logits = _linear_shared_input(b, f"{stem}_shared_gate", level.shared_gate, shared_in, f"ple.{i}.shared_gate.weight", source)
        shared_w = b.op("Softmax", [shared_logits], stem=f"{stem}_shared_weights", axis=-1)  # (B, E)
        shared_w = b.op("Unsqueeze", [shared_w, b.i64("axis1", [1])], stem=f"{stem}_shared_weights_row")  # (B, 1, E)
        out_be = b.op("Transpose", [out], stem=f"{stem}_experts_by_row", perm=[1, 0, 2])  # (B, E, h)
        shared_out = b.op("MatMul", [shared_w, out_be], stem=f"{stem}_shared_mix")  # (B, 1, h)
        shared_out = b.op("Transpose", [shared_out], stem=f"{stem}_shared_out", perm=[1, 0, 2])  # (1, B, h)
        branches = b.op("Concat", [task_out, shared_out], stem=f"{stem}_branches", axis=0)  # (T+1, B, h)
    if branches is None:
        raise ConfigError("the compiled ple model has no level; it cannot be exported")
    return branches  # (T, B, h) after the last level


def _towers(b: _Builder, model: CompiledModel, h: str, source: WeightSource | None) -> None:
    _task_outputs(b, model, _tower_probabilities(b, model, h, source))


def _tower_probabilities(b: _Builder, model: CompiledModel, h: str, source: WeightSource | None) -> str:
    """h (T, B, d) -> probabilities (T, B)."""
    if not model.towers:
        raise ConfigError(f"the compiled {model.kind} model has no tower; it cannot be exported")
    for i, lin in enumerate(model.towers):
        h = _linear_grouped(b, f"tower{i}", lin, h, f"towers.{i}.weight", source)  # (T, B, out)
        if i < len(model.towers) - 1:
            h = b.op("Relu", [h], stem=f"tower{i}_relu")
    if model.towers[-1].weight.shape[1] != 1:
        raise ConfigError("the last tower layer must have one output (the task logit); recompile the model")
    probs = b.op("Sigmoid", [h], stem="probabilities")  # (T, B, 1)
    return b.op("Reshape", [probs, b.i64("shape", [len(model.tasks), -1])], stem="probabilities_tb")  # (T, B)


def _task_outputs(b: _Builder, model: CompiledModel, probs: str) -> None:
    for t, task in enumerate(model.tasks):
        b.op("Gather", [probs, b.i64(f"task{t}", t)], output=task, stem=f"task{t}", axis=0)  # (B,)


# memory mode runs a batch in blocks of this many rows (a Loop around the whole model): the
# activations a call holds, and so the session's arena high-water mark, stop growing with the
# batch, for the price of rebuilding the experts once per block (64 / 128 / 256 rows compared
# in docs/deployment.md)
MEMORY_ROW_BLOCK = 128
# ... and in blocks of this many rows when every masked layer rebuilds all its experts at once
# (onnx_bitset.memory_layer_all_experts): its (E, rows, width) activations are E times an
# expert's. Census (peak RSS of `python mome_edge/runtime/device_bench.py FILE --batch 1,32,512
# --threads 1 --runs 20`): 48 rows peak 0.2 MiB below 64 rows (32 rows: 0.5 MiB), which kept
# the peak under 0.7x the dense MMoE's in the deploy benchmark (0.69; last round's layout at 64
# rows: 0.69-0.705 across runs);
# each step down rebuilds the experts more often per call (batch 512: 1.35x the speed file at 48
# rows in benchmarks/results/deploy.md).
MEMORY_ROW_BLOCK_ALL_EXPERTS = 48


def _memory_row_blocks(b: _Builder, model: CompiledModel, source: WeightSource | None) -> None:
    """memory mode, mixture kinds: the whole model inside a Loop over blocks of MEMORY_ROW_BLOCK rows
    (MEMORY_ROW_BLOCK_ALL_EXPERTS when onnx_bitset.all_experts_at_once: every masked layer small
    and the largest one's rebuild below the speed file's experts, _memory_layerwise_trunk; the
    expert Loop of _memory_mixture_trunk otherwise).

    Iteration i reads rows [i*R, min((i+1)*R, B)) of both inputs, runs embedding, gates, the
    trunk and the towers on them, and appends the block's
    probabilities (T, r) to a carried (T, rows so far) tensor (T floats per row: copying it
    per block costs nothing next to a block's matmuls).
    """
    tasks = len(model.tasks)
    layerwise = onnx_bitset.all_experts_at_once(model.layers, b.opset)
    row_block = MEMORY_ROW_BLOCK_ALL_EXPERTS if layerwise else MEMORY_ROW_BLOCK
    block = b.i64("row_block", [row_block])
    rows = b.op("Slice", [b.op("Shape", [INPUT_CATEGORICAL], stem="input_shape"), b.i64("start", [0]), b.i64("end", [1])],
                stem="rows")  # (1,) B
    blocks = b.op("Div", [b.op("Add", [rows, b.i64("block_minus_1", [row_block - 1])], stem="rows_padded"), block],
                  stem="blocks")  # (1,) ceil(B / R)
    trips = b.op("Reshape", [blocks, b.i64("scalar", np.zeros(0, np.int64))], stem="block_count")  # ()
    start_probs = b.const("no_rows", np.zeros((tasks, 0), np.float32))  # (T, 0)

    outer_nodes, b.nodes = b.nodes, []
    b.decode_sink = outer_nodes
    i = b._fresh("block_index")
    cond_in, cond_out = b._fresh("block_cond_in"), b._fresh("block_cond_out")
    done = b._fresh("probs_in")
    b.op("Identity", [cond_in], output=cond_out)
    first = b.op("Mul", [b.op("Unsqueeze", [i, b.i64("axis0", [0])], stem="block_index_1d"), block], stem="block_start")  # (1,)
    last = b.op("Min", [b.op("Add", [first, block], stem="block_end_full"), rows], stem="block_end")  # (1,)
    axis0 = b.i64("axis0", [0])
    cat = b.op("Slice", [INPUT_CATEGORICAL, first, last, axis0], stem="block_categorical")  # (r, F)
    num = b.op("Slice", [INPUT_NUMERICAL, first, last, axis0], stem="block_numerical")  # (r, D)
    x0 = _embed(b, model, source, categorical=cat, numerical=num)
    if layerwise:
        live_zero = b.op("Cast", [b.op("Mul", [i, b.i64("zero", 0)], stem="block_index_times_0")], stem="live_zero_u8",
                         to=TensorProto.UINT8)  # 0, computed from the call: see onnx_bitset.memory_layer_all_experts
        h = _memory_layerwise_trunk(b, model, x0, source, live_zero)  # (T, r, d)
    else:
        h = _memory_mixture_trunk(b, model, x0, source)  # (T, r, d)
    probs = _tower_probabilities(b, model, h, source)  # (T, r)
    probs_out = b.op("Concat", [done, probs], stem="probs_out", axis=1)  # (T, rows so far)
    body_nodes, b.nodes = b.nodes, outer_nodes
    b.decode_sink = None
    body = helper.make_graph(
        body_nodes, "row_block_loop",
        [helper.make_tensor_value_info(i, TensorProto.INT64, []), helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(done, TensorProto.FLOAT, [tasks, "rows_done"])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(probs_out, TensorProto.FLOAT, [tasks, "rows_next"])],
    )
    probs_all = b.op("Loop", [trips, "", start_probs], stem="probabilities_tb", body=body)  # (T, B)
    _task_outputs(b, model, probs_all)


# --- model -----------------------------------------------------------------------------------------


def check_task_names(tasks: tuple[str, ...]) -> None:
    reserved = {INPUT_CATEGORICAL, INPUT_NUMERICAL}
    bad = [t for t in tasks if t in reserved or t.startswith("mome/") or not t]
    if bad or len(set(tasks)) != len(tasks):
        raise ConfigError(
            f"task names {list(tasks)} cannot name ONNX outputs (empty, repeated, 'categorical', 'numerical' "
            "or starting with 'mome/'); rename the tasks in the data spec"
        )


def build_model(model: CompiledModel, *, experts: str, opset: int, source: WeightSource | None = None,
                metadata: Mapping[str, str] | None = None, mode: str = "speed") -> tuple[onnx.ModelProto, GraphInfo]:
    """The ONNX model of `model` (not checked, not simplified) and what the builder recorded.

    mode: "speed" or "memory" (DEPLOY_MODES); it changes only masked layers stored as bitsets
    (see exporters.onnx_bitset); "memory" needs experts="bitset".
    """
    check_task_names(model.tasks)
    if mode not in DEPLOY_MODES:
        raise ConfigError(f"mode={mode!r} is not a deployment mode; use one of {', '.join(DEPLOY_MODES)}")
    if mode == "memory" and experts != "bitset":
        raise ConfigError("mode 'memory' rebuilds experts from bitsets; use experts='bitset' (or mode 'speed' for dense experts)")
    b = _Builder(opset, mode)
    if mode == "memory" and model.kind != "ple":
        _memory_row_blocks(b, model, source)
    else:
        x0 = _embed(b, model, source)
        if model.kind == "ple":
            h = _ple_trunk(b, model, x0, experts, source)
        else:
            h = _mixture_trunk(b, model, x0, experts, source)
        _towers(b, model, h, source)

    spec = model.spec
    inputs = [
        helper.make_tensor_value_info(INPUT_CATEGORICAL, TensorProto.INT64, [BATCH_DIM, len(spec.categorical)]),
        helper.make_tensor_value_info(INPUT_NUMERICAL, TensorProto.FLOAT, [BATCH_DIM, len(spec.numerical)]),
    ]
    outputs = [helper.make_tensor_value_info(t, TensorProto.FLOAT, [BATCH_DIM]) for t in model.tasks]
    graph = helper.make_graph(b.nodes, f"mome_edge_{model.kind}", inputs, outputs, initializer=list(b.inits.values()))
    opset_ids = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opset_ids, ir_version=helper.find_min_ir_version_for(opset_ids),
        producer_name="mome-edge", producer_version=_version(),
        doc_string=f"mome-edge {model.kind} model, experts stored as {experts}",
    )
    props = {
        META_FORMAT_VERSION: str(ONNX_FORMAT_VERSION),
        META_FEATURE_SPEC: json.dumps(spec.to_json(), sort_keys=True),
        META_TASKS: json.dumps(list(model.tasks)),
        META_KIND: model.kind,
        META_EXPERTS: experts,
        META_MODE: mode,
        META_RESIDENT_EXPERT_BYTES: str(b.info.resident_expert_bytes(mode)),
        META_STORAGE: json.dumps(sorted(set(b.info.storage.values()))),
        META_OOV_ID: "0",
        META_BIT_ORDER: BIT_ORDER,
        META_MODEL_METADATA: json.dumps(dict(model.metadata), sort_keys=True, default=str),
        META_SHA256: UNSIGNED.decode("ascii"),  # filled in over the serialised bytes by save_onnx / onnx_bytes
        **(metadata or {}),
    }
    helper.set_model_props(proto, props)
    return proto, b.info


def _version() -> str:
    from mome_edge import __version__

    return __version__
