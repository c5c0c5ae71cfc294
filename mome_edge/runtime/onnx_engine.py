"""ONNX Runtime execution of an exported model (.onnx or .ort), with its feature spec read
from the model's metadata_props (written by mome_edge.exporters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError, ConfigError

# metadata_props keys (mome_edge.exporters.onnx_graph writes them; repeated here so that the
# runtime never imports onnx)
META_FORMAT_VERSION = "mome.format_version"
META_FEATURE_SPEC = "mome.feature_spec"
META_TASKS = "mome.tasks"
META_KIND = "mome.kind"
META_EXPERTS = "mome.experts"
META_MODEL_METADATA = "mome.model_metadata"
SUPPORTED_FORMAT_VERSION = 1
INPUT_CATEGORICAL = "categorical"
INPUT_NUMERICAL = "numerical"


def session_options(threads: int | None, experts: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if experts == "on-demand":
        # no arena and no pre-planned memory pattern: the unpacking's intermediates are freed
        # after each run instead of being held (measured: +16.6 MiB vs +34.1 MiB with the pattern)
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
    return options


class OnnxEngine:
    """An InferenceSession plus the model's feature spec; `run` is thread-safe (ORT's run is)."""

    def __init__(self, source: str | Path | bytes, *, threads: int | None, experts: str) -> None:
        import onnxruntime as ort

        name = "the in-memory model" if isinstance(source, (bytes, bytearray)) else str(source)
        # "on-demand": no constant folding, so the packed masks and the shared base weights stay
        # in memory as stored and the experts are rebuilt inside every run. "materialize": ORT
        # folds the weight decoder once at session start (dense experts in memory, fastest).
        disabled = ["ConstantFolding"] if experts == "on-demand" else None
        payload = bytes(source) if isinstance(source, (bytes, bytearray)) else str(source)
        try:
            self.session = ort.InferenceSession(
                payload, sess_options=session_options(threads, experts), providers=["CPUExecutionProvider"],
                disabled_optimizers=disabled,
            )
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"ONNX Runtime cannot load {name} ({first}); export it again with `mome-edge export`") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_FEATURE_SPEC not in meta or META_TASKS not in meta:
            raise ArtifactError(f"{name} has no mome-edge metadata (feature spec, tasks); export it with `mome-edge export`")
        version = meta.get(META_FORMAT_VERSION)
        if version != str(SUPPORTED_FORMAT_VERSION):
            raise ArtifactError(f"{name} has mome-edge ONNX format version {version!r}; this runtime reads {SUPPORTED_FORMAT_VERSION}: re-export it")
        try:
            self.spec = FeatureSpec.from_json(json.loads(meta[META_FEATURE_SPEC]))
            self.tasks = tuple(json.loads(meta[META_TASKS]))
        except (ValueError, TypeError) as exc:
            raise ArtifactError(f"{name}: metadata is malformed ({exc}); export it again") from None
        self.kind = meta.get(META_KIND, "unknown")
        try:
            self.metadata = json.loads(meta.get(META_MODEL_METADATA, "{}"))
        except ValueError:
            self.metadata = {}
        self.stored_experts = meta.get(META_EXPERTS, "unknown")
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != {INPUT_CATEGORICAL, INPUT_NUMERICAL} or sorted(outputs) != sorted(self.tasks):
            raise ArtifactError(f"{name}: inputs {sorted(inputs)} / outputs {outputs} do not match its metadata; export it again")
        if experts not in ("materialize", "on-demand"):
            raise ConfigError(f"experts={experts!r} is not a runtime expert mode; use materialize or on-demand")

    def forward(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        outputs = self.session.run(list(self.tasks), {INPUT_CATEGORICAL: cat, INPUT_NUMERICAL: num})
        return np.stack(outputs, axis=1)  # (B, T)
