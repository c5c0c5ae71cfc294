"""What an exported ONNX file promises the runtime: metadata keys, input names, modes, suffixes.

The exporter (`mome_edge.exporters`) writes these and the runtime reads them, so both import
them from here (the runtime cannot import the exporter: it needs the onnx package). The one
exception is `device_bench.py`, a single file meant to be copied to a board without
mome-edge; it repeats the few names it reads, and its test checks they agree.
"""

from __future__ import annotations

# metadata_props keys: what a device app needs to encode raw rows and name the outputs
META_FORMAT_VERSION = "mome.format_version"
META_FEATURE_SPEC = "mome.feature_spec"
META_TASKS = "mome.tasks"
META_KIND = "mome.kind"
META_EXPERTS = "mome.experts"
META_STORAGE = "mome.storage"
META_OOV_ID = "mome.oov_id"
META_BIT_ORDER = "mome.bit_order"
META_MODEL_METADATA = "mome.model_metadata"
META_MODE = "mome.mode"  # speed | memory
# float32 bytes of masked experts a session of this file holds dense once it runs (all of them
# in speed mode; in memory mode the largest single rebuilt expert and its bit planes): what
# Predictor(memory_budget_mb=...) is checked against
META_RESIDENT_EXPERT_BYTES = "mome.resident_expert_bytes"
META_SHA256 = "mome.sha256"  # the file's own checksum (onnx_integrity)

INPUT_CATEGORICAL = "categorical"  # int64 (B, F)
INPUT_NUMERICAL = "numerical"  # float32 (B, D)

DEPLOY_MODES: tuple[str, ...] = ("speed", "memory")  # how an export rebuilds its experts (export --mode)
EXPERT_STORAGE: tuple[str, ...] = ("bitset", "dense")  # how masked experts are stored in the file (export --experts)
EXPERT_MODES: tuple[str, ...] = ("materialize", "on-demand")  # the same choice, as the runtime names it
MODE_EXPERTS = {"speed": "materialize", "memory": "on-demand"}
DEFAULT_MEMORY_BUDGET_MB = 16.0  # rebuilt experts kept resident by the numpy runtime's on-demand mode

# ONNX Runtime vs the numpy reference of the same weights, probabilities, fp32 on both sides:
# the export's parity check and the golden rows' tolerance
PARITY_ATOL_FP32 = 1e-5

ARTIFACT_SUFFIX = ".mome"
ONNX_SUFFIXES: tuple[str, ...] = (".onnx", ".ort")
MODEL_SUFFIXES: tuple[str, ...] = (ARTIFACT_SUFFIX, *ONNX_SUFFIXES)
