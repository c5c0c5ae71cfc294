"""Masked expert layers with bitset storage, in the two deployment modes (see docs/deployment.md).

Both modes store one bit per weight and expert and the shared base weight once. out8 is the
output width rounded up to a multiple of 8 (pad bits and pad weights are zero; pad outputs
are sliced off after the matmul); memory mode's all-experts rebuild packs along the input axis
instead and rounds the input width up (in8: pad rows zero, the input padded with zero columns).

speed:  chains whose inputs are all initializers, so ONNX Runtime folds them once at
        session start (any default session does). Every output of a folded node stays
        allocated until folding ends, so the chains are kept short:
        - models whose masked layers are all small (E dense experts <= FOLD_AFFINE_MAX_BYTES,
          e.g. census):
            the first layer's bytes in row planes when its input width is a multiple of 8
            -> Cast int32 -> Gather(8 x 256 float table, axis 1) -> float 0/1 planes; the
            other layers' bytes (and such a first layer's otherwise), 8 output columns per
            byte -> Cast int32 -> Gather(256 x 8 bool table) -> Reshape bool -> Cast float;
            then bits * base * scale -> the dense export's scaled weights (the base stored
            whole); a call runs the dense export's layer (speed_layer);
        - a model with a larger layer: every masked layer, one chain and one MatMul per
          expert from a base stored whole,
            bytes_e (in, out8/8) -> Cast int32 -> Gather(bit table) -> Reshape bool (in, out8)
            -> Where(bits, base, 0) -> expert e (in, out8), a constant ONNX Runtime pre-packs
            for its MatMul; a mixture's trunk then runs each expert through all its layers
            before the next (onnx_graph._speed_pipeline_experts).
memory: small layers (E dense experts <= MEMORY_LAYER_AT_ONCE_BYTES, and the largest layer's
        rebuild holding less than the speed file's experts: all_experts_at_once; e.g. census):
        every expert of a layer rebuilt at once inside the call (memory_layer_all_experts, through
        onnx_graph._memory_layerwise_trunk), from masks packed in bit planes along the input
        axis (row_plane_bitsets: the rebuilt planes are the matmul's (in8, ..) operand as they
        are, the first layer's E experts one (in8, E*out) GEMM); larger layers:
        a Loop over the E experts (onnx_graph._memory_mixture_trunk: one Loop for the whole
        trunk, routed outputs summed in a carried tensor; the model itself runs in blocks of
        onnx_graph.MEMORY_ROW_BLOCK rows); per expert and layer, memory_expert rebuilds the
        weights in groups of bit planes and multiplies with them:
            bytes_e (1, in, C) -> Mul 2^k (uint8, mod 256) -> Clip [127, 128] -> Sub 127
            -> uint8 0/1 (p, in, C) -> DequantizeLinear(scale = base planes, axis 0,
            block_size 1) -> W (p, in, C);  MatMul(x (B, in), W) -> (p, B, C)
            planes concatenated -> (8, B, C) -> (B, out8), normalisation, ReLU
        with C = out8/8: bit k of byte (i, c) is column k*C + c ("bit planes"), so the ops
        that isolate a bit run over long contiguous spans with one scalar per plane, and
        DequantizeLinear turns the 0/1 into the weight in one fused pass. Below opset 21 (no
        per-element DequantizeLinear) Cast + Mul do the same in two passes. Every body node
        depends on the iteration number, so no optimiser can fold an expert back into a
        constant (ONNX Runtime's default ConstantFolding included), and one group of planes
        of one expert exists at a time. The base is stored whole in plane layout: decoding a
        union layout at load holds several base-sized int32 tensors until constant folding
        ends, which raised the session's peak far more than the bytes it saved.

The alternatives measured for the expert Loop (BitwiseAnd with the plane values, a bit
lookup-table Gather + Where, gather/ScatterElements over sparse index lists, row blocks of all
experts per Loop iteration, a union-layout base) and for the all-experts rebuild are in
docs/deployment.md. The normalisation scale is applied after the matmul
((x @ (M_e * W)) * s_e): it is per output column, so it commutes with the matmul.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

from mome_edge.artifact.compiled import ExpertLayer
from mome_edge.onnx_contract import DEPLOY_MODES

# byte value -> its 8 bits, most significant first (the big-endian bit order of the file)
BIT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="big").astype(bool)  # (256, 8)
PLANE_SHIFT = (1 << np.arange(8)).astype(np.uint8)  # x 2^k (mod 256) moves bit k (MSB first) to the top bit
MODES = DEPLOY_MODES
BATCH = "batch"  # the batch dimension's name (onnx_graph.BATCH_DIM)
FUSED_DEQUANTIZE_OPSET = 21  # DequantizeLinear with block_size (one scale per element)


def padded_width(out_dim: int) -> int:
    return -(-out_dim // 8) * 8


def expert_bytes(layer: ExpertLayer) -> tuple[int, int]:
    """(bytes of all E dense experts as float32, bytes memory mode holds at once for this layer:
    one expert's packed bytes (in, C), and one group of p planes as uint8 0/1 and as float32)."""
    e_count, out_dim = layer.scale.shape
    one = layer.weight.shape[-1] * padded_width(out_dim)
    plane = one // 8
    return e_count * one * 4, plane + planes_per_group(layer) * plane * 5


def _masks_in_out8(layer: ExpertLayer) -> np.ndarray:
    """bool (E, out, in) -> bool (E, in, out8), zero pad columns."""
    e_count, out_dim, in_dim = layer.masks.shape
    bits = np.zeros((e_count, in_dim, padded_width(out_dim)), dtype=bool)
    bits[:, :, :out_dim] = layer.masks.transpose(0, 2, 1)
    return bits


def speed_bitsets(layer: ExpertLayer) -> np.ndarray:
    """uint8 (E, in, out8/8): expert e, input row i, 8 consecutive output columns per byte."""
    return np.packbits(_masks_in_out8(layer), axis=2, bitorder="big")


def plane_bitsets(layer: ExpertLayer) -> np.ndarray:
    """uint8 (E, 1, in, C), C = out8/8: bit k (MSB first) of byte (e, i, c) is expert e's mask at (i, k*C + c)."""
    bits = _masks_in_out8(layer)  # (E, in, out8)
    e_count, in_dim, out8 = bits.shape
    planes = bits.reshape(e_count, in_dim, 8, out8 // 8).transpose(0, 1, 3, 2)  # (E, in, C, 8): the 8 planes last
    return np.packbits(planes, axis=3, bitorder="big").reshape(e_count, 1, in_dim, out8 // 8)


def _base_columns(layer: ExpertLayer, stored, width: int):
    """(W^T in the stored dtype, (in, width), zero beyond the output columns; the stored tensor,
    int8 with scales along the input axis dequantised: not a layout the exporter writes)."""
    from mome_edge.exporters.onnx_graph import StoredTensor

    out_dim, in_dim = layer.weight.shape[-2:]
    if stored.storage == "int8" and not (stored.axis is None or stored.axis == stored.data.ndim - 1):
        stored = StoredTensor(data=stored.dequantised())
    data = np.zeros((in_dim, width), dtype=stored.data.dtype)
    data[:, :out_dim] = stored.data.T
    return data, stored


def _read_entries_only(layer: ExpertLayer, data: np.ndarray) -> np.ndarray:
    """`data` (in, >= out) with the entries no expert reads set to zero (a speed base stored whole)."""
    out_dim = layer.weight.shape[-2]
    union = np.zeros(data.shape, dtype=bool)
    union[:, :out_dim] = layer.masks.any(axis=0).T
    return np.where(union, data, np.zeros((), dtype=data.dtype))


def _unpacked_masks(b, stem: str, packed: np.ndarray, out8: int) -> str:
    """Load-time chain for speed mode: uint8 bitset bytes (.., rows, C) -> bool (.., rows, out8),
    by Cast int32 (Gather reads int32/int64 indices), Gather of the 256 x 8 bit table, Reshape."""
    name = b.const(f"{stem}_bitsets", packed, storage="bitset")
    b.info.bitset_initializers.append(name)
    index = b.op("Cast", [name], stem=f"{stem}_bytes", to=TensorProto.INT32, decode=True)
    bits = b.op("Gather", [b.const("bit_table", BIT_TABLE), index], stem=f"{stem}_bits", decode=True)  # (.., C, 8)
    return b.op("Reshape", [bits, b.i64("shape", [*packed.shape[:-1], out8])], stem=f"{stem}_mask", decode=True)


def _base_initializer(b, stem: str, data: np.ndarray, stored, *, scale_shape: tuple[int, ...], out_dim: int) -> str:
    """`data` stored in the artifact's precision, as float32 at load: fp32 as is, fp16 by a Cast,
    int8 by a Cast and a Mul by its scales (one per output column, laid out as `scale_shape`
    with zeros beyond `out_dim`, or one for all)."""
    from mome_edge.exporters.onnx_graph import _to_float

    if stored.storage == "fp32":
        return b.const(f"{stem}_base", np.ascontiguousarray(data, dtype=np.float32), storage="fp32")
    raw = b.const(f"{stem}_base_{stored.storage}", np.ascontiguousarray(data), storage=stored.storage)
    scale = None
    if stored.storage == "int8":
        per_column = np.zeros(int(np.prod(scale_shape)), dtype=np.float32)
        per_column[:out_dim] = np.asarray(stored.scale, dtype=np.float32)  # one per output column, or one for all (broadcast)
        scale = per_column.reshape(scale_shape)
    out = _to_float(b, f"{stem}_base", raw, stored, scale=scale)
    b.info.decode_shapes[out] = data.shape
    return out


def whole_base_weight(b, stem: str, layer: ExpertLayer, stored) -> str:
    """The shared base weight as float32 (in, out8): W^T with zero pad columns, stored whole
    (entries no expert uses are zero), for the speed mode's large layers.

    Not in union layout: every output of a folded node stays allocated until ONNX Runtime's
    constant folding ends, and decoding a union layout needs at least three base-sized tensors
    (a rank per entry, the index, the gathered values) on top of the experts, which costs a
    large layer more at the session's peak than the file bytes it saves (docs/deployment.md).
    fp16/int8 are stored as in the artifact and converted at load.
    """
    e_count, out_dim = layer.scale.shape
    out8 = padded_width(out_dim)
    data, stored = _base_columns(layer, stored, out8)
    return _base_initializer(b, stem, _read_entries_only(layer, data), stored, scale_shape=(out8,), out_dim=out_dim)


def plane_base_weight(b, stem: str, layer: ExpertLayer, stored) -> str:
    """The shared base weight in plane layout, float32 (8, in, C): entry (k, i, c) = W^T[i, k*C + c].

    Stored whole (not in union layout): the union decode's int32 intermediates (several
    base-sized tensors while ONNX Runtime folds them) would outweigh the bytes it saves in
    a mode whose point is a low peak. fp16/int8 are stored as in the artifact and converted at load.
    """
    e_count, out_dim = layer.scale.shape
    in_dim = layer.weight.shape[-1]
    out8 = padded_width(out_dim)
    cols = out8 // 8
    data, stored = _base_columns(layer, stored, out8)
    data = data.reshape(in_dim, 8, cols).transpose(1, 0, 2)  # (8, in, C)
    return _base_initializer(b, f"{stem}_planes", data, stored, scale_shape=(8, 1, cols), out_dim=out_dim)


def _affine(b, stem: str, y: str, layer: ExpertLayer, *, expert: str | None = None, padded: bool = True) -> str:
    """y (E, B, out8) -> relu(y[..., :out] * scale + shift): the folded normalisation, per expert.
    expert: a Loop's iteration number; y is then one expert's (B, out8). padded=False: y is
    (.., out) already."""
    e_count, out_dim = layer.scale.shape
    if padded and padded_width(out_dim) != out_dim:
        y = b.op("Slice", [y, b.i64("start", [0]), b.i64("end", [out_dim]), b.i64("axes", [-1])], stem=f"{stem}_unpadded")
    if expert is None:
        scale = b.const(f"{stem}_scale", layer.scale[:, None, :])  # (E, 1, out)
        shift = b.const(f"{stem}_shift", layer.shift[:, None, :])
    else:
        scale = b.op("Gather", [b.const(f"{stem}_scale", layer.scale), expert], stem=f"{stem}_scale_e", axis=0)  # (out,)
        shift = b.op("Gather", [b.const(f"{stem}_shift", layer.shift), expert], stem=f"{stem}_shift_e", axis=0)
    y = b.op("Mul", [y, scale], stem=f"{stem}_scaled")
    y = b.op("Add", [y, shift], stem=f"{stem}_affine")
    return b.op("Relu", [y], stem=f"{stem}_out")


def speed_expert_weights(b, stem: str, layer: ExpertLayer, stored) -> list[str]:
    """The E experts of a large speed-mode layer, each folded at session start from its bits:

        bits_e = Reshape(Gather(bit table, Cast int32 (bytes_e)))   (in, out8) bool
        w_e    = Where(bits_e, base, 0)                              base (in, out8) stored whole

    Every folded output stays allocated until constant folding ends, so the chain adds 2.5
    bytes per expert weight (int32 index per 8, bool bits, bool reshape) to the experts
    themselves. One chain per expert, not one for all: ONNX Runtime's Where allocates two
    temporaries the size of its output while it runs, which for all E experts at once (or
    a Where broadcasting the base over E) put the paper-size session's peak far above the
    dense export's. Each w_e is a constant that ONNX Runtime pre-packs for its MatMul (a
    weight reshaped at call time is not, and ran slower at batch 1). The bit-plane layout
    (Gather along the table's byte axis: no bool Reshape, 1 byte per weight less while
    folding) was measured too: its (8, B, C) matmul outputs and their transposes raised the
    peak at batch 512 by more than it saved at load (docs/deployment.md).
    """
    in_dim = layer.weight.shape[-1]
    out8 = padded_width(layer.scale.shape[1])
    base = whole_base_weight(b, stem, layer, stored)  # (in, out8)
    zero = b.const("zero_f32", np.zeros((), np.float32))
    weights = []
    for e, bytes_e in enumerate(speed_bitsets(layer)):  # (in, C) each
        bits = _unpacked_masks(b, f"{stem}_expert{e}", bytes_e, out8)  # (in, out8) bool
        weight = b.op("Where", [bits, base, zero], stem=f"{stem}_expert{e}_weight", decode=True)  # (in, out8) float32
        b.info.decode_shapes[weight] = (in_dim, out8)
        weights.append(weight)
    return weights


def speed_expert_call(b, stem: str, layer: ExpertLayer, x: str, weight: str, e: int) -> str:
    """x (B, in) -> expert e's output (B, out): MatMul with its folded weight (in, out8), pad
    columns dropped, normalisation (scale, shift of expert e), ReLU."""
    out_dim = layer.scale.shape[1]
    y = b.op("MatMul", [x, weight], stem=f"{stem}_expert{e}_matmul")  # (B, out8)
    if padded_width(out_dim) != out_dim:
        y = b.op("Slice", [y, b.i64("start", [0]), b.i64("end", [out_dim]), b.i64("axes", [-1])], stem=f"{stem}_expert{e}_unpadded")
    y = b.op("Mul", [y, b.const(f"{stem}_expert{e}_scale", layer.scale[e])], stem=f"{stem}_expert{e}_scaled")
    y = b.op("Add", [y, b.const(f"{stem}_expert{e}_shift", layer.shift[e])], stem=f"{stem}_expert{e}_affine")
    return b.op("Relu", [y], stem=f"{stem}_expert{e}_out")


def is_large(layer: ExpertLayer) -> bool:
    """Whether this masked layer makes a speed-mode mixture trunk run expert by expert (above
    FOLD_AFFINE_MAX_BYTES; onnx_graph._speed_pipeline_experts)."""
    return expert_bytes(layer)[0] > FOLD_AFFINE_MAX_BYTES


# Up to this many bytes of E dense experts, a speed-mode layer is small: one load-time chain
# expands all E experts with the normalisation scale multiplied in and without pad columns, so
# a call runs MatMul + Add + Relu as a dense export does (one Gemm), which matters where
# per-node work dominates a call (census). Its chain holds three float copies of the experts
# while folding runs (four for the first layer, whose Reshape to (in, E*out) is a fourth),
# affordable for a small layer. Larger layers: one chain and one MatMul per expert
# (speed_expert_weights).
FOLD_AFFINE_MAX_BYTES = 2 * 2**20


def speed_layer(b, stem: str, layer: ExpertLayer, h: str, *, first: bool, stored) -> str:
    """h (B, in) shared or (E, B, in) per expert -> (E, B, out), a small layer in speed mode (a
    mixture trunk with a large layer does not come here: it runs expert by expert,
    onnx_graph._speed_pipeline_experts). One chain expands all E experts at session start,
    scaled and without pad columns, and a call runs MatMul + shift + ReLU as a dense export does:

        first layer, input width a multiple of 8 (census): row planes (row_plane_bitsets),
            bits = Gather(8 x 256 float table, Cast int32 (bytes (J, E, out)), axis 1)  (8, J, E, out) 0/1
            w    = Reshape(bits * base * scale)  (in, E*out)   base (8, J, 1, out), scale (1, 1, E, out)
            y    = Relu(MatMul(h (B, in), w) + shift): one MatMul for the shared input (a
                   broadcast (E, in, out) MatMul ran slower on census)
        other layers (and a first layer of another width):
                      bits = Cast float32 (Reshape(Gather(256 x 8 bool table, Cast int32 (bytes))))
                             (E, in, out8) | first (in, E, out8) [bool Slice -> out before the Cast]
                      w    = bits * base * scale   base (in, out), scale (E, 1, out) | first: Reshape to (in, E*out)
                      y    = Relu(MatMul(h (E, B, in), w) + shift)

    ONNX Runtime folds the chain once per session start, and in a fresh process that cost is
    mostly first touches of fresh memory: every folded output is new memory, and all of them
    stay allocated until folding ends. So the chain makes as few float-sized outputs as it can:
    the row planes unpack to float and reshape to (in, E*out) without a bool Reshape or pad
    Slice; the later layers' bool masks reshape to (E, in, out) before the one Cast. Two Muls
    apply the mask, where Where(bits, base * scale, 0) made the scaled base plus Where's output
    and its two output-sized temporaries. On census (`python benchmarks/session_start.py`,
    benchmarks/results/session_start.md) a plain session's start went from 4,136 to 3,429 page
    faults and from 23.9 to 22.2 ms, its added peak from 20.4 to 19.7 MiB (a first touch of fresh
    memory costs ~4 us on this VM: the same benchmark times it).
    """
    from mome_edge.exporters.onnx_graph import dense_layer_call

    e_count, out_dim = layer.scale.shape
    in_dim = layer.weight.shape[-1]
    columns, stored = _base_columns(layer, stored, out_dim)
    columns = _read_entries_only(layer, columns)  # (in, out)
    if first and in_dim % 8 == 0:
        bits = _row_plane_masks_f32(b, stem, layer)  # (8, J, E, out)
        base_shape, scale = (8, in_dim // 8, 1, out_dim), layer.scale[None, None, :, :]  # (8, J, 1, out), (1, 1, E, out)
    else:
        bits = _bool_masks_f32(b, stem, layer, first=first)  # (in, E, out) | (E, in, out)
        base_shape = (in_dim, 1, out_dim) if first else (in_dim, out_dim)
        scale = layer.scale[None, :, :] if first else layer.scale[:, None, :]  # (1, E, out) | (E, 1, out)
    base = _base_initializer(b, stem, columns.reshape(base_shape), stored, scale_shape=(out_dim,), out_dim=out_dim)
    masked = b.op("Mul", [bits, base], stem=f"{stem}_experts_masked", decode=True)
    weights = b.op("Mul", [masked, b.const(f"{stem}_scale", np.ascontiguousarray(scale, dtype=np.float32))],
                   stem=f"{stem}_experts_3d", decode=True)
    if first:
        weights = b.op("Reshape", [weights, b.i64("shape", [in_dim, e_count * out_dim])], stem=f"{stem}_experts", decode=True)
    b.info.decode_shapes[weights] = (in_dim, e_count * out_dim) if first else (e_count, in_dim, out_dim)
    return dense_layer_call(b, stem, layer, h, weights, first=first)


def _row_plane_masks_f32(b, stem: str, layer: ExpertLayer) -> str:
    """The first layer's masks as float 0/1 planes (8, J, E, out), J = in/8 (in a multiple of
    8): bytes (J, E, out) in row planes (row_plane_bitsets) -> Cast int32 -> Gather along the
    byte axis of an (8, 256) float table of bit k of byte value v. The table is made at load from
    the file's bool bit table (2 KiB stored, not 8)."""
    packed = b.const(f"{stem}_speed_row_bitsets", row_plane_bitsets(layer, first=True)[0], storage="bitset")  # (J, E, out)
    b.info.bitset_initializers.append(packed)
    index = b.op("Cast", [packed], stem=f"{stem}_row_bytes", to=TensorProto.INT32, decode=True)
    planes = b.op("Transpose", [b.const("bit_table", BIT_TABLE)], stem="bit_table_planes", perm=[1, 0], decode=True)
    table = b.op("Cast", [planes], stem="bit_table_planes_f32", to=TensorProto.FLOAT, decode=True)
    return b.op("Gather", [table, index], stem=f"{stem}_row_bits", axis=1, decode=True)


def _bool_masks_f32(b, stem: str, layer: ExpertLayer, *, first: bool) -> str:
    """A layer's masks as float 0/1, (in, E, out) for a first layer, (E, in, out) otherwise:
    bytes of 8 output columns (speed_bitsets) -> bool (.., out8) -> pad columns sliced off while
    still bool -> one Cast to float."""
    out_dim = layer.scale.shape[1]
    out8 = padded_width(out_dim)
    bytes_all = speed_bitsets(layer)  # (E, in, C)
    if first:
        bytes_all = np.ascontiguousarray(bytes_all.transpose(1, 0, 2))  # (in, E, C)
    bits = _unpacked_masks(b, f"{stem}_expert", bytes_all, out8)  # (in, E, out8) | (E, in, out8) bool
    if out8 != out_dim:
        bits = b.op("Slice", [bits, b.i64("start", [0]), b.i64("end", [out_dim]), b.i64("axes", [-1])],
                    stem=f"{stem}_expert_mask_unpadded", decode=True)
    return b.op("Cast", [bits], stem=f"{stem}_expert_mask_f32", to=TensorProto.FLOAT, decode=True)


def memory_layer(b, stem: str, layer: ExpertLayer, h: str, *, first: bool, stored) -> str:
    """h (B, in) shared or (E, B, in) per expert -> (E, B, out); one expert rebuilt at a time
    (a Loop of its own; onnx_graph fuses a mixture's whole trunk into one Loop instead)."""
    e_count, out_dim = layer.scale.shape
    parts = memory_parts(b, stem, layer, stored)
    outer_nodes, b.nodes = b.nodes, []
    e = b._fresh(f"{stem}_expert_index")
    cond_in, cond_out = b._fresh(f"{stem}_cond_in"), b._fresh(f"{stem}_cond_out")
    b.op("Identity", [cond_in], output=cond_out)
    x = h if first else b.op("Gather", [h, e], stem=f"{stem}_input_e", axis=0)  # (B, in)
    # the normalisation inside the body: per-iteration buffers are (B, out) and reused, and
    # the Loop's stacked output is the layer's output (no (E, B, out) temporaries after it)
    y = memory_expert(b, stem, layer, x, e, parts)  # (B, out)
    body_nodes, b.nodes = b.nodes, outer_nodes
    body = helper.make_graph(
        body_nodes, f"{stem}_expert_loop",
        [helper.make_tensor_value_info(e, TensorProto.INT64, []), helper.make_tensor_value_info(cond_in, TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(y, TensorProto.FLOAT, [BATCH, out_dim])],
    )
    trips = b.const(f"{stem}_expert_count", np.array(e_count, dtype=np.int64))
    return b.op("Loop", [trips, ""], stem=f"{stem}_out", body=body)  # (E, B, out): the stacked scan output


# memory mode rebuilds a layer's expert in groups of bit planes whose float32 weights take at
# most this many bytes (one plane is (in, out8/8) weights): the rebuilt weights of one group are
# read by its MatMul while they are still in cache, and the session's per-call buffers stay at
# one group (the arena keeps its high-water mark for the life of the session)
PLANE_GROUP_BYTES = 640 * 1024


def planes_per_group(layer: ExpertLayer) -> int:
    slab = layer.weight.shape[-1] * padded_width(layer.scale.shape[1]) // 8 * 4  # float32 bytes of one plane
    return max([p for p in (1, 2, 4, 8) if p * slab <= PLANE_GROUP_BYTES] or [1])


def memory_parts(b, stem: str, layer: ExpertLayer, stored) -> tuple[list[str], str, list[str]]:
    """The outer-graph tensors a memory-mode expert reads: (base planes per group (p, in, C),
    packed bit planes (E, 1, in, C), plane values per group (p, 1, 1)). Built before a Loop
    body (their load-time decode nodes, if any, belong to the outer graph)."""
    base = plane_base_weight(b, stem, layer, stored)  # (8, in, C), C = out8/8
    packed = b.const(f"{stem}_expert_bitsets", plane_bitsets(layer), storage="bitset")  # (E, 1, in, C)
    b.info.bitset_initializers.append(packed)
    p = planes_per_group(layer)
    if p == 8:
        return [base], packed, [b.const("plane_shift", PLANE_SHIFT.reshape(8, 1, 1))]
    bases, values = [], []
    whole = onnx.numpy_helper.to_array(b.inits.pop(base)) if base in b.inits else None  # fp32: stored per group
    if whole is not None:
        b.info.storage.pop(base)
    for g in range(0, 8, p):
        if whole is not None:
            bases.append(b.const(f"{stem}_base_planes{g}", whole[g:g + p], storage="fp32"))
        else:  # decoded at load (fp16/int8): a folded Slice per group
            bases.append(b.op("Slice", [base, b.i64("start", [g]), b.i64("end", [g + p]), b.i64("axes", [0])],
                              stem=f"{stem}_base_planes{g}", decode=True))
            b.info.decode_shapes[bases[-1]] = (p, layer.weight.shape[-1], padded_width(layer.scale.shape[1]) // 8)
        values.append(b.const("plane_shift", PLANE_SHIFT[g:g + p].reshape(p, 1, 1)))
    return bases, packed, values


def memory_expert(b, stem: str, layer: ExpertLayer, x: str, e: str, parts) -> str:
    """Inside a Loop body: x (B, in) -> expert e's output (B, out), normalised, ReLU applied.

        bytes_e (1, in, C) -> per group of p planes k:
            Mul by 2^k (uint8, wraps mod 256: bit k moves to the top, higher bits drop out)
            -> Clip to [127, 128] -> Sub 127 -> uint8 bit 0/1 (p, in, C)
            -> DequantizeLinear(scale = base) -> W (p, in, C) -> x @ W (p, B, C)
    ONNX Runtime runs the uint8 Mul, Clip and Sub vectorised, and BitwiseAnd and BitShift
    element by element: with BitwiseAnd the bit isolation was most of a call
    (docs/deployment.md has the figures).
    """
    e_count, out_dim = layer.scale.shape
    out8 = padded_width(out_dim)
    bases, packed, shifts = parts
    own = b.op("Gather", [packed, e], stem=f"{stem}_bytes_e", axis=0)  # (1, in, C) uint8
    low, high = b.const("u8_127", np.array(127, np.uint8)), b.const("u8_128", np.array(128, np.uint8))
    ys = []
    for g, (base, shift) in enumerate(zip(bases, shifts)):
        top = b.op("Mul", [own, shift], stem=f"{stem}_planes{g}_top_e")  # (p, in, C): bit k of the byte is now bit 7
        bit = b.op("Sub", [b.op("Clip", [top, low, high], stem=f"{stem}_planes{g}_clip_e"), low], stem=f"{stem}_planes{g}_e")  # 0/1
        if b.opset >= FUSED_DEQUANTIZE_OPSET:
            w = b.op("DequantizeLinear", [bit, base], stem=f"{stem}_weight{g}_e", axis=0, block_size=1)  # (p, in, C) float32
        else:
            w = b.op("Mul", [b.op("Cast", [bit], stem=f"{stem}_planes{g}_f32_e", to=TensorProto.FLOAT), base], stem=f"{stem}_weight{g}_e")
        ys.append(b.op("MatMul", [x, w], stem=f"{stem}_matmul{g}_e"))  # (p, B, C)
    y = ys[0] if len(ys) == 1 else b.op("Concat", ys, stem=f"{stem}_matmul_e", axis=0)  # (8, B, C)
    y = b.op("Transpose", [y], stem=f"{stem}_columns_e", perm=[1, 0, 2])  # (B, 8, C)
    y = b.op("Reshape", [y, b.i64("shape", [0, out8])], stem=f"{stem}_matmul_e_2d")  # (B, out8): column k*C + c
    return _affine(b, stem, y, layer, expert=e)  # (B, out)


# Up to this many bytes of E dense experts, a memory-mode layer rebuilds all its experts at
# once inside a call (one pass: memory_layer_all_experts) instead of one expert per Loop
# iteration: a small model's call is then a few dozen nodes, where the Loop ran ~300 (census:
# ONNX Runtime's per-node cost, not the rebuild, was most of a batch-1 call). What it holds
# while a call runs is one layer's experts (1 MiB each for census), not the model's.
MEMORY_LAYER_AT_ONCE_BYTES = 2 * 2**20


def all_experts_at_once(layers, opset: int = FUSED_DEQUANTIZE_OPSET) -> bool:
    """Whether memory mode rebuilds every expert of each layer at once (every masked layer
    small) rather than one expert per Loop iteration: decided per model, as the trunk is one.
    Not when one layer's rebuild would hold as much as the speed file's experts (a model whose
    first layer is nearly all of it): memory mode must hold less than speed mode."""
    masked = [layer for layer in layers if layer.masks is not None]
    if not all(expert_bytes(layer)[0] <= MEMORY_LAYER_AT_ONCE_BYTES for layer in masked):
        return False
    return max((all_experts_bytes(layer, opset) for layer in masked), default=0) < sum(expert_bytes(layer)[0] for layer in masked)


padded_rows = padded_width  # the same rounding (up to a multiple of 8) for the input axis: the row-plane packing


def row_plane_bitsets(layer: ExpertLayer, *, first: bool) -> np.ndarray:
    """The masks packed along the input axis in bit planes: with J = in8/8 (in8 the input width
    rounded up to a multiple of 8, pad rows zero), bit k (MSB first) of byte (j, o) is the mask
    at input row k*J + j, output o. Unpacked plane by plane, (8, J, ..) reshapes to (in8, ..)
    without moving a byte.

    first: uint8 (1, J, E, out) -- the shared-input layer, whose E experts become one
    (in8, E*out) weight; later layers: uint8 (E, 1, J, out)."""
    e_count, out_dim, in_dim = layer.masks.shape
    in8 = padded_rows(in_dim)
    bits = np.zeros((e_count, in8, out_dim), dtype=bool)
    bits[:, :in_dim, :] = layer.masks.transpose(0, 2, 1)
    packed = np.packbits(bits.reshape(e_count, 8, in8 // 8, out_dim), axis=1, bitorder="big")  # (E, 1, J, out)
    return np.ascontiguousarray(packed.transpose(1, 2, 0, 3)) if first else packed


def row_plane_base(b, stem: str, layer: ExpertLayer, stored, *, first: bool) -> str:
    """The shared base weight W^T (in8, out), pad rows zero, as float32 in row-plane layout: the
    one scale a DequantizeLinear of all E experts shares (block_size E along the expert axis):
    first (8, J, 1, out), later (1, 8, J, out). fp16/int8 are stored as in the artifact and
    converted at load."""
    out_dim, in_dim = layer.weight.shape[-2:]
    in8 = padded_rows(in_dim)
    columns, stored = _base_columns(layer, stored, out_dim)  # (in, out)
    data = np.zeros((in8, out_dim), dtype=columns.dtype)
    data[:in_dim] = columns
    shape = (8, in8 // 8, 1, out_dim) if first else (1, 8, in8 // 8, out_dim)
    return _base_initializer(b, f"{stem}_row_planes", data.reshape(shape), stored, scale_shape=(out_dim,), out_dim=out_dim)


def all_experts_bytes(layer: ExpertLayer, opset: int) -> int:
    """The most memory_layer_all_experts holds at once while it rebuilds a layer (ONNX Runtime
    frees a call's tensor after its last reader): the E experts as float32 (in8 x out each)
    plus the uint8 planes the DequantizeLinear reads (a quarter of that); below opset 21, the
    Cast's float32 planes and the Mul's float32 experts."""
    e_count, out_dim, in_dim = layer.masks.shape
    dense = 4 * e_count * padded_rows(in_dim) * out_dim
    return dense + dense // 4 if opset >= FUSED_DEQUANTIZE_OPSET else 2 * dense


def memory_layer_all_experts(b, stem: str, layer: ExpertLayer, h: str, *, first: bool, stored, live_zero: str) -> str:
    """h (B, in) shared or (E, B, in) per expert -> (E, B, out): every expert of the layer
    rebuilt inside the call, in one pass over its bit planes, then one matmul.

        bytes (row_plane_bitsets) -> Mul by 2^k per plane (uint8, mod 256: bit k of each byte
        becomes its top bit; + live_zero, a uint8 0 computed from the call, so that no
        optimiser can fold the experts into constants) -> Clip [127, 128]
        -> DequantizeLinear(scale = base (row_plane_base), shared by the E experts: block_size
        E along the expert axis; zero point 127) -> W
        first:  W (8, J, E, out) = (in8, E*out): h (B, in8) @ W -> (B, E*out), one GEMM for the
                E experts -> (E, B, out)
        later:  W (E, 8, J, out) = (E, in8, out): h (E, B, in8) @ W -> (E, B, out)
        -> normalisation, ReLU.
    The planes run along the input axis, so every op that isolates a bit runs over spans of
    J*E*out (first) or J*out bytes with one scalar per plane (ONNX Runtime's broadcasting is
    slow over short spans), the rebuilt weight is already the matmul's (in8, ..) operand, and
    the output columns need no reordering. An input width that is not a multiple of 8 is
    padded with zero columns (the pad rows' weights are zero). Below opset 21 (no blocked
    DequantizeLinear): Sub 127 -> Cast -> Mul base. (Measured before: planes along the output
    axis, one (8, in, C) matmul per expert: slower at batch 1; weights rebuilt transposed:
    slower at batch 1 on census and a higher peak; BitwiseAnd for the bit isolation: several
    times slower than the Mul in ONNX Runtime, which runs it element by element.)
    """
    e_count, out_dim, in_dim = layer.masks.shape
    in8 = padded_rows(in_dim)
    base = row_plane_base(b, stem, layer, stored, first=first)
    packed = b.const(f"{stem}_expert_row_bitsets", row_plane_bitsets(layer, first=first), storage="bitset")
    b.info.bitset_initializers.append(packed)
    shift_shape = (8, 1, 1, 1) if first else (1, 8, 1, 1)
    shift = b.op("Add", [b.const(f"plane_shift_{'rows' if first else 'experts'}", PLANE_SHIFT.reshape(shift_shape)), live_zero],
                 stem=f"{stem}_plane_shift")
    low, high = b.const("u8_127", np.array(127, np.uint8)), b.const("u8_128", np.array(128, np.uint8))
    top = b.op("Mul", [packed, shift], stem=f"{stem}_planes_top")  # bit k of each byte now bit 7
    clipped = b.op("Clip", [top, low, high], stem=f"{stem}_planes_clip")  # 127 | 128
    scale_shape = (8, in8 // 8, 1, out_dim) if first else (1, 8, in8 // 8, out_dim)  # the base's
    if b.opset >= FUSED_DEQUANTIZE_OPSET:
        zero_point = b.op("Expand", [low, b.i64("plane_shape", list(scale_shape))], stem=f"{stem}_zero_point", decode=True)
        b.info.decode_shapes[zero_point] = scale_shape
        w = b.op("DequantizeLinear", [clipped, base, zero_point], stem=f"{stem}_experts", axis=2 if first else 0,
                 block_size=e_count)
    else:
        bit = b.op("Sub", [clipped, low], stem=f"{stem}_planes")
        w = b.op("Mul", [b.op("Cast", [bit], stem=f"{stem}_planes_f32", to=TensorProto.FLOAT), base], stem=f"{stem}_experts")
    w = b.op("Reshape", [w, b.i64("shape", [in8, e_count * out_dim] if first else [e_count, in8, out_dim])],
             stem=f"{stem}_experts_matrix")
    if in8 != in_dim:
        pads = [0, 0, 0, in8 - in_dim] if first else [0, 0, 0, 0, 0, in8 - in_dim]
        h = b.op("Pad", [h, b.i64(f"pad_columns_{len(pads)}_{in8 - in_dim}", pads)], stem=f"{stem}_input_padded")
    y = b.op("MatMul", [h, w], stem=f"{stem}_matmul")  # (B, E*out) | (E, B, out)
    if first:
        y = b.op("Reshape", [y, b.i64("shape", [-1, e_count, out_dim])], stem=f"{stem}_by_expert")  # (B, E, out)
        y = b.op("Transpose", [y], stem=f"{stem}_experts_first", perm=[1, 0, 2])  # (E, B, out)
    return _affine(b, stem, y, layer, padded=False)  # (E, B, out)
