"""How much of a memory-mode call is the rebuild itself: the floor any per-call decoder pays.

memory mode rebuilds every expert inside every call (exporters/onnx_bitset.py). Its last step,
DequantizeLinear with the base as its per-element scale, writes the experts' float32 weights
once: one pass over the masked weights, the least a per-call rebuild can do. This script times
that node alone, as the memory file runs it (small layers: all E experts of the layer in one
node; larger ones: one node per expert and group of bit planes), in a session of its own, and
adds it up over the layers (`decode floor`); then it times the speed and memory files at
batch 1 in the same process, in alternating blocks, so that the figures share the machine's
state. On census the floor alone is of the order of the speed file's whole call (a 0.06 ms model).

    .venv/bin/python benchmarks/decode_floor.py MODEL.mome SPEED.onnx MEMORY.onnx [--runs 2000] [--json]

numpy, onnx and onnxruntime (the onnx package builds the one-node models).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mome_edge.artifact.reader import read_artifact  # noqa: E402
from mome_edge.exporters.onnx_bitset import (  # noqa: E402
    FUSED_DEQUANTIZE_OPSET,
    all_experts_at_once,
    padded_rows,
    padded_width,
    planes_per_group,
)


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def dequantize_model(shape: tuple[int, ...], block: int, zero_point: bool, axis: int = 0) -> onnx.ModelProto:
    """One DequantizeLinear as memory mode runs it: uint8 bits (shape) x float32 base
    (shape with `axis` = 1 when `block` > 1: shared by `block` experts) -> float32 weights;
    with `zero_point`, the zero point 127 of the all-experts rebuild (its input is then
    127 | 128)."""
    scale_shape = tuple(1 if (k == axis and block > 1) else d for k, d in enumerate(shape))
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal(scale_shape).astype(np.float32), "base")]
    inputs = ["bits", "base"]
    if zero_point:
        inits.append(numpy_helper.from_array(np.full(scale_shape, 127, np.uint8), "zero_point"))
        inputs.append("zero_point")
    node = helper.make_node("DequantizeLinear", inputs, ["weight"], axis=axis, block_size=block)
    graph = helper.make_graph([node], "decode_floor", [helper.make_tensor_value_info("bits", TensorProto.UINT8, list(shape))],
                              [helper.make_tensor_value_info("weight", TensorProto.FLOAT, list(shape))], inits)
    opset = [helper.make_opsetid("", FUSED_DEQUANTIZE_OPSET)]
    return helper.make_model(graph, opset_imports=opset, ir_version=helper.find_min_ir_version_for(opset))


def _feed(session: ort.InferenceSession) -> dict[str, np.ndarray]:
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        dtype = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(uint8)": np.uint8}[i.type]
        # uint8: the bits a rebuild feeds its DequantizeLinear (0 | 1, or 127 | 128 with the zero point 127)
        feed[i.name] = np.zeros(shape, dtype=dtype) if dtype != np.uint8 else np.random.default_rng(1).integers(127, 129, shape).astype(np.uint8)
    return feed


BLOCK = 100


def _timed_calls(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> list[float]:
    out = []
    for _ in range(BLOCK):
        start = time.perf_counter()
        session.run(None, feed)
        out.append(time.perf_counter() - start)
    return out


def measure(mome: str, speed: str, memory: str, runs: int) -> dict:
    model = read_artifact(mome).model
    layers = [layer for layer in model.layers if layer.masks is not None]
    timed = {"speed": _session(speed), "memory": _session(memory)}
    groups = []  # (session, how many such nodes one memory-mode call runs at batch 1, shape)
    opset = next(o.version for o in onnx.load(memory, load_external_data=False).opset_import if o.domain in ("", "ai.onnx"))
    at_once = all_experts_at_once(model.layers, opset)  # decided per model and opset, as the export does
    for index, layer in enumerate(layers):
        cols = padded_width(layer.scale.shape[1]) // 8
        if at_once:  # all experts of the layer in one node (memory_layer_all_experts, row-plane layout)
            rows, out = padded_rows(layer.weight.shape[-1]) // 8, layer.scale.shape[1]
            first = index == 0 and model.layers[0].masks is not None
            shape, axis = ((8, rows, layer.experts, out), 2) if first else ((layer.experts, 8, rows, out), 0)
            groups.append((_session(dequantize_model(shape, layer.experts, zero_point=True, axis=axis)), 1, shape))
        else:  # one node per expert and group of p planes (memory_expert)
            p = planes_per_group(layer)
            shape = (p, layer.weight.shape[-1], cols)
            groups.append((_session(dequantize_model(shape, 1, zero_point=False)), layer.experts * (8 // p), shape))
    feeds = {name: _feed(s) for name, s in timed.items()}
    decode_feeds = [_feed(s) for s, _, _ in groups]
    for _ in range(50):  # warm-up: first calls allocate
        for name, s in timed.items():
            s.run(None, feeds[name])
        for (s, _, _), feed in zip(groups, decode_feeds):
            s.run(None, feed)
    times = {name: [] for name in timed}
    decode_times = [[] for _ in groups]
    # Interleaved in blocks of BLOCK calls: a burst of load on the machine hits every figure,
    # while each session runs warm, as in an app calling one model (call by call interleaving
    # evicts each session's weights from the cache and doubled every figure).
    for _ in range(max(1, runs // BLOCK)):
        for name, s in timed.items():
            times[name] += _timed_calls(s, feeds[name])
        for k, ((s, _, _), feed) in enumerate(zip(groups, decode_feeds)):
            decode_times[k] += _timed_calls(s, feed)
    p50 = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    per_node = [float(np.median(t)) * 1e3 for t in decode_times]  # includes one session.run's own overhead
    floor = sum(ms * count for ms, (_, count, _) in zip(per_node, groups))
    return {
        "model": mome, "runs": runs, "onnxruntime": ort.__version__,
        "layers": [{"plane_group_shape": list(shape), "nodes_per_call": count, "p50_ms_per_node": ms}
                   for ms, (_, count, shape) in zip(per_node, groups)],
        "decode_floor_ms": floor, "speed_p50_ms_b1": p50["speed"], "memory_p50_ms_b1": p50["memory"],
        "floor_over_speed": floor / p50["speed"], "memory_over_speed": p50["memory"] / p50["speed"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mome")
    parser.add_argument("speed")
    parser.add_argument("memory")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.mome, args.speed, args.memory, args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print("| masked layer: DequantizeLinear shape | nodes per call (batch 1) | p50 ms per node |")
    print("|---|---:|---:|")
    for layer in result["layers"]:
        print(f"| {tuple(layer['plane_group_shape'])} | {layer['nodes_per_call']} | {layer['p50_ms_per_node']:.4f} |")
    print()
    print(f"batch 1, median of {result['runs']} calls each, interleaved in blocks of {BLOCK}: decode floor {result['decode_floor_ms']:.3f} ms "
          f"({result['floor_over_speed']:.1f}x the speed file's {result['speed_p50_ms_b1']:.3f} ms); "
          f"memory file {result['memory_p50_ms_b1']:.3f} ms ({result['memory_over_speed']:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
