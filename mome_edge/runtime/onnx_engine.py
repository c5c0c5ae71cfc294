"""ONNX Runtime execution of an exported model (.onnx or .ort), with its feature spec read
from the model's metadata_props (written by mome_edge.exporters)."""

from __future__ import annotations

import contextlib
import io
import json
from typing import TYPE_CHECKING

import numpy as np

from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from pathlib import Path  # not at run time: pathlib costs ~5 ms of a cold start
from mome_edge.runtime.onnx_integrity import checksum_problem, is_ort_format
from mome_edge.onnx_contract import (
    INPUT_CATEGORICAL,
    INPUT_NUMERICAL,
    META_EXPERTS,
    META_FEATURE_SPEC,
    META_FORMAT_VERSION,
    META_KIND,
    META_MODE,
    META_MODEL_METADATA,
    META_RESIDENT_EXPERT_BYTES,
    META_TASKS,
    MODE_EXPERTS,
)

# metadata_props keys (mome_edge.exporters.onnx_graph writes them; repeated here so that the
# runtime never imports onnx)
SUPPORTED_FORMAT_VERSION = 2  # 2: the file carries its own SHA-256 (onnx_integrity)


def session_options(threads: int | None):
    """ONNX Runtime's defaults (as an app opens the file), plus the thread count and quiet logs.

    The expert mode is a property of the file (`mome-edge export --mode`), not of the session:
    a speed file folds its experts at load under the default optimisations, a memory file
    rebuilds them per call whatever the optimisations (nothing in its Loop can be folded).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # fatal only: failures reach the caller as one exception, not as log lines on stderr
    return options


class OnnxEngine:
    """An InferenceSession plus the model's feature spec; `run` is thread-safe (ORT's run is)."""

    def __init__(self, source: str | Path | bytes, *, threads: int | None, experts: str | None = None,
                 memory_budget_mb: float | None = None) -> None:
        import onnxruntime as ort

        name = "the in-memory model" if isinstance(source, (bytes, bytearray)) else str(source)
        self.name = name
        if experts not in (None, *MODE_EXPERTS.values()):
            raise ConfigError(f"experts={experts!r} is not a runtime expert mode; use materialize or on-demand")
        payload = bytes(source) if isinstance(source, (bytes, bytearray)) else str(source)
        self._verify(payload)  # before ONNX Runtime parses a damaged file
        try:
            # onnxruntime prints "EP Error ... retrying" on stdout when a corrupt model fails to
            # load; stdout belongs to the caller's results (CLI --json), so that text is dropped.
            with contextlib.redirect_stdout(io.StringIO()):
                self.session = ort.InferenceSession(
                    payload, sess_options=session_options(threads), providers=["CPUExecutionProvider"],
                )
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"ONNX Runtime cannot load {name} ({first}); export it again with `mome-edge export`") from None
        try:
            meta = dict(self.session.get_modelmeta().custom_metadata_map)
        except (UnicodeDecodeError, ValueError, RuntimeError) as exc:  # metadata_props that are not UTF-8
            raise ArtifactError(f"{name}: its metadata is unreadable ({type(exc).__name__}); export it again with `mome-edge export`") from None
        if META_FEATURE_SPEC not in meta or META_TASKS not in meta:
            raise ArtifactError(f"{name} has no mome-edge metadata (feature spec, tasks); export it with `mome-edge export`")
        version = meta.get(META_FORMAT_VERSION)
        if version != str(SUPPORTED_FORMAT_VERSION):
            raise ArtifactError(f"{name} has mome-edge ONNX format version {version!r}; this runtime reads {SUPPORTED_FORMAT_VERSION}: re-export it")
        try:
            self.spec = FeatureSpec.from_json(json.loads(meta[META_FEATURE_SPEC]))
            self.tasks = tuple(json.loads(meta[META_TASKS]))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ArtifactError(f"{name}: metadata is malformed ({str(exc)[:200]}); export it again") from None
        self.kind = meta.get(META_KIND, "unknown")
        try:
            self.metadata = json.loads(meta.get(META_MODEL_METADATA, "{}"))
        except (ValueError, RecursionError):
            self.metadata = {}
        self.stored_experts = meta.get(META_EXPERTS, "unknown")
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != {INPUT_CATEGORICAL, INPUT_NUMERICAL} or sorted(outputs) != sorted(self.tasks):
            raise ArtifactError(f"{name}: inputs {sorted(inputs)} / outputs {outputs} do not match its metadata; export it again")
        self.mode = meta.get(META_MODE, "speed")  # exports before --mode existed fold their decoder at load: speed
        if self.mode not in MODE_EXPERTS:
            raise ArtifactError(f"{name}: metadata {META_MODE}={self.mode[:40]!r} is not speed or memory; export it again")
        try:
            self.resident_expert_bytes = int(meta.get(META_RESIDENT_EXPERT_BYTES, "0"))
            if self.resident_expert_bytes < 0:
                raise ValueError("negative")
        except ValueError:
            raise ArtifactError(f"{name}: metadata {META_RESIDENT_EXPERT_BYTES} is not a byte count; export it again") from None
        self.experts = MODE_EXPERTS.get(self.mode, "materialize")
        if experts is not None and experts != self.experts:
            other = "memory" if experts == "on-demand" else "speed"
            raise ConfigError(
                f"{name} was exported with --mode {self.mode} (experts {self.experts}); experts={experts!r} needs a file "
                f"exported with `mome-edge export --mode {other}` (or leave experts unset to use the file's mode)"
            )
        if memory_budget_mb is not None and self.resident_expert_bytes > memory_budget_mb * 2**20:
            need = self.resident_expert_bytes / 2**20
            fix = ("export it with `mome-edge export --mode memory` (experts rebuilt inside each call) or raise the budget"
                   if self.mode != "memory" else
                   "raise the budget, or run the .mome artifact with Predictor(..., experts='on-demand'), whose numpy "
                   "runtime keeps a fixed subset of experts within any budget")
            raise ConfigError(
                f"memory_budget_mb={memory_budget_mb:g}: {name} ({self.mode} mode) holds {need:.2f} MiB of dense expert "
                f"weights while it runs; {fix}"
            )

    def _verify(self, payload: bytes | str) -> None:
        """Check the export's SHA-256 (see onnx_integrity); ORT-format files have none of their own."""
        if isinstance(payload, str):
            try:
                with open(payload, "rb") as handle:
                    if is_ort_format(handle.read(8)):
                        return
                    handle.seek(0)
                    data = handle.read()  # hashed, then freed: ONNX Runtime reads the file itself
            except OSError as exc:
                raise ArtifactError(f"cannot read {payload} ({exc.strerror or exc}); check the path and permissions") from None
        elif is_ort_format(payload[:8]):
            return
        else:
            data = payload
        problem = checksum_problem(data)
        if problem is not None:
            raise ArtifactError(f"{self.name}: {problem}; export it again with `mome-edge export`")

    def forward(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        # Inputs are checked before this call, so a failure here is the graph's: a corrupt or
        # hand-edited file (an index out of bounds, a bad attribute) -> one ArtifactError.
        try:
            outputs = self.session.run(list(self.tasks), {INPUT_CATEGORICAL: cat, INPUT_NUMERICAL: num})
        except Exception as exc:  # onnxruntime's own types (InvalidArgument, Fail, RuntimeException, ...)
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"ONNX Runtime failed to run {self.name} ({first}); the model file is corrupt, export it again with `mome-edge export`") from None
        probs = np.stack(outputs, axis=1)  # (B, T)
        if probs.shape != (cat.shape[0], len(self.tasks)) or probs.dtype != np.float32:
            raise ArtifactError(f"{self.name} returns outputs of shape {probs.shape} {probs.dtype}, expected ({cat.shape[0]}, {len(self.tasks)}) float32; export it again")
        return probs
