"""Device-side runtime: numpy + onnxruntime + bitarray only (safetensors to read .mome files).

`Predictor` loads a `.mome` artifact (numpy engine, experts materialised or rebuilt on demand
within a memory budget) or an `.onnx`/`.ort` export (ONNX Runtime) and predicts per-task
probabilities from encoded arrays or raw rows. Nothing here imports torch, onnx or pandas.
"""

from mome_edge.runtime.predictor import DEFAULT_MEMORY_BUDGET_MB, Predictor, encode_rows

__all__ = ["DEFAULT_MEMORY_BUDGET_MB", "Predictor", "encode_rows"]
