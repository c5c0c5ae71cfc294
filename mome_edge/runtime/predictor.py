"""Predictor: the one entry point of the device runtime.

    predictor = Predictor("model.onnx", threads=2)                 # ONNX Runtime; the file's mode
    predictor = Predictor("model.mome", experts="on-demand", memory_budget_mb=8)  # numpy, fixed resident subset
    probs = predictor.predict(categorical, numerical)   # {task: float32 (B,)}
    probs = predictor.predict_rows([{"age": 41, "education": "Bachelors", ...}])

Imports numpy, onnxruntime and bitarray only (plus safetensors to read a .mome file), never
torch. `predict` may be called from several threads at once: ONNX Runtime's `run` is
thread-safe, the numpy engine shares only read-only weights and a locked LRU cache.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from mome_edge.errors import ArtifactError, ConfigError, DataError
from mome_edge.onnx_contract import ARTIFACT_SUFFIX, DEFAULT_MEMORY_BUDGET_MB, EXPERT_MODES, ONNX_SUFFIXES
from mome_edge.runtime.inputs import check_inputs, check_outputs

if TYPE_CHECKING:  # the engines are imported by the path that needs them: a cold start pays for one
    from pathlib import Path  # ~5 ms of a cold start (it imports urllib.parse): only `.path` builds one

    from mome_edge.artifact.compiled import CompiledModel
    from mome_edge.encoding import FeatureSpec


class Predictor:
    """Loads a `.mome` artifact (numpy engine) or an `.onnx`/`.ort` export (ONNX Runtime).

    Args:
        path: the model file, or the bytes of a serialised ONNX model.
        threads: intra-op threads of the ONNX Runtime session (None: ORT's default). The numpy
            engine uses numpy's BLAS threads, set by the environment (OMP_NUM_THREADS).
        experts: "materialize" rebuilds every expert once at load (fastest, E dense copies of
            each masked layer in memory); "on-demand" keeps the shared weights and packed
            masks and rebuilds experts when needed. None: "materialize" for a .mome file,
            and for .onnx/.ort the mode the file was exported with (`export --mode speed` =
            materialize, `--mode memory` = on-demand): the mode is in the file, and asking
            an ONNX file for the other one is a ConfigError.
        memory_budget_mb: MiB of dense expert weights rebuilt from bitsets that may be held
            at once. None: no limit (numpy on-demand then keeps DEFAULT_MEMORY_BUDGET_MB).
            Honoured on every path or refused: numpy on-demand keeps a fixed subset of
            experts within it and rebuilds the others on every call; numpy materialize and
            ONNX files hold a known amount (all experts; a memory-mode file what it rebuilds
            at once: one expert's plane group, or one small layer's experts) and refuse a
            smaller budget with a ConfigError naming the fix. Layers
            without masks (MMoE, PLE, ...) are the model's own weights and do not count.

    Raises:
        ConfigError: bad threads, experts or memory budget, a budget the path cannot honour,
            or an unknown file type.
        ArtifactError: the file is missing, unreadable or not a mome-edge model.
    """

    def __init__(self, path: str | Path | bytes, *, threads: int | None = None, experts: str | None = None,
                 memory_budget_mb: float | None = None) -> None:
        _check_options(threads, experts, memory_budget_mb)
        self.experts = experts
        self.threads = threads
        self.memory_budget_mb = None if memory_budget_mb is None else float(memory_budget_mb)
        if isinstance(path, (bytes, bytearray)):
            self._source = None
            self._onnx(bytes(path))
            return
        self._source = source = os.fspath(path)
        suffix = os.path.splitext(source)[1].lower()
        if not os.path.isfile(source):
            raise ArtifactError(f"{source} does not exist or is not a file; pass a .mome artifact or an .onnx/.ort export")
        if suffix in ONNX_SUFFIXES:
            self._onnx(source)
        elif suffix == ARTIFACT_SUFFIX:
            from mome_edge.artifact.reader import read_artifact  # numpy + safetensors + bitarray

            loaded = read_artifact(source)
            self._numpy(loaded.model)
        else:
            raise ConfigError(f"{source}: unknown model file type {suffix!r}; pass a .mome, .onnx or .ort file")

    @classmethod
    def from_compiled(cls, model: CompiledModel, *, experts: str | None = None,
                      memory_budget_mb: float | None = None) -> "Predictor":
        """A numpy Predictor for an in-memory CompiledModel (no file)."""
        _check_options(None, experts, memory_budget_mb)
        self = cls.__new__(cls)
        self._source, self.threads, self.experts = None, None, experts
        self.memory_budget_mb = None if memory_budget_mb is None else float(memory_budget_mb)
        self._numpy(model)
        return self

    @property
    def path(self) -> Path | None:
        """The model file (None for in-memory models)."""
        if self._source is None:
            return None
        from pathlib import Path

        return Path(self._source)

    def _onnx(self, source: str | bytes) -> None:
        from mome_edge.runtime.onnx_engine import OnnxEngine

        engine = OnnxEngine(source, threads=self.threads, experts=self.experts, memory_budget_mb=self.memory_budget_mb)
        self._engine, self.runtime, self.experts, self.mode = engine, "onnx", engine.experts, engine.mode
        self.spec, self.tasks, self.kind, self.metadata = engine.spec, engine.tasks, engine.kind, engine.metadata

    def _numpy(self, model: CompiledModel) -> None:
        from mome_edge.runtime.numpy_engine import NumpyEngine, masked_expert_bytes

        self.experts = self.experts or "materialize"
        budget = DEFAULT_MEMORY_BUDGET_MB if self.memory_budget_mb is None else self.memory_budget_mb
        if self.experts == "materialize" and self.memory_budget_mb is not None:
            need = masked_expert_bytes(model)
            if need > self.memory_budget_mb * 2**20:
                raise ConfigError(
                    f"memory_budget_mb={self.memory_budget_mb:g}: materialize holds all {need / 2**20:.2f} MiB of rebuilt "
                    "experts; use experts='on-demand' (a fixed subset within the budget, the rest rebuilt per call) "
                    "or raise the budget"
                )
        engine = NumpyEngine(model, experts=self.experts, memory_budget_bytes=int(budget * 2**20))
        self._engine, self.runtime, self.mode = engine, "numpy", None
        self.spec, self.tasks, self.kind, self.metadata = model.spec, model.tasks, model.kind, dict(model.metadata)

    # --- prediction ------------------------------------------------------------------------------
    def predict_array(self, categorical: Any, numerical: Any) -> np.ndarray:
        """Probabilities float32 (B, T), columns in `self.tasks` order."""
        cat, num = check_inputs(self.spec, categorical, numerical)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by check_outputs, as an error
            probs = self._engine.forward(cat, num)
        return check_outputs(probs)

    def predict(self, categorical: Any, numerical: Any) -> dict[str, np.ndarray]:
        """Encoded inputs -> {task: float32 (B,) probabilities}.

        Args:
            categorical: int64 (B, F) ids in the feature spec's field order; out-of-range or
                negative ids read the OOV row.
            numerical: float32 (B, D) standardised values; NaN/inf follow each field's
                missing-value policy ("mean" -> 0, "error" -> DataError).
        Raises:
            DataError: wrong dtype, rank, column count, row count mismatch, empty batch, a
                non-finite value in a field with the "error" policy, or outputs that overflow
                float32 (extreme values): never NaN probabilities.
        """
        probs = self.predict_array(categorical, numerical)
        return {task: np.ascontiguousarray(probs[:, t]) for t, task in enumerate(self.tasks)}

    def predict_rows(self, rows: Sequence[Mapping[str, Any]] | Any) -> dict[str, np.ndarray]:
        """Raw rows (a list of dicts, or a DataFrame) -> {task: float32 (B,)}, encoded with the
        model's feature spec (unknown categories -> OOV; missing numbers -> recorded policy)."""
        cat, num = encode_rows(self.spec, rows)
        return self.predict(cat, num)

    # --- introspection ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Engine facts: runtime, expert mode; numpy: resident bytes, the resident subset, rebuild
        counters; ONNX: the file's mode and the dense expert bytes its session holds."""
        out: dict[str, Any] = {"runtime": self.runtime, "experts": self.experts, "kind": self.kind}
        if self.runtime == "numpy":
            out["resident_bytes"] = self._engine.resident_bytes()
            out["rebuilds"] = self._engine.rebuilds()
            out["resident_experts"] = self._engine.resident_experts()
            out["rebuilds_per_call"] = self._engine.rebuilt_experts()
            out["cache"] = self._engine.cache_stats().to_json()
        else:
            out["mode"] = self.mode
            out["resident_expert_bytes"] = self._engine.resident_expert_bytes
        return out


def encode_rows(spec: FeatureSpec, rows: Sequence[Mapping[str, Any]] | Any) -> tuple[np.ndarray, np.ndarray]:
    """Raw rows -> (int64 (B, F), float32 (B, D)) with the feature spec's encoders."""
    if hasattr(rows, "columns") and hasattr(rows, "__getitem__"):  # a DataFrame, without importing pandas
        names = (*spec.field_names, *spec.numerical_names)
        missing = [n for n in names if n not in rows.columns]
        if missing:
            raise DataError(f"the rows lack the columns {missing}; the model reads {list(names)}")
        columns = {n: rows[n].tolist() for n in names}
        if not len(rows):
            raise DataError("empty batch (0 rows); pass at least one row")
        return spec.encode_columns(columns)
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
        raise DataError(f"rows must be a list of dicts or a DataFrame, got {type(rows).__name__}")
    if not rows:
        raise DataError("empty batch (0 rows); pass at least one row")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, Mapping)), None)
    if bad is not None:
        raise DataError(f"row {bad} is a {type(rows[bad]).__name__}, not a dict of feature name -> raw value")
    spec.check_row_keys(rows)  # hand-written rows: a misspelled key is an error, not a missing value
    return spec.encode_rows(rows)


def _check_options(threads: int | None, experts: str | None, memory_budget_mb: float | None) -> None:
    if experts is not None and experts not in EXPERT_MODES:
        raise ConfigError(f"experts={experts!r} is not a runtime expert mode; use one of {', '.join(EXPERT_MODES)}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ConfigError(f"threads={threads!r} must be an integer >= 1 (or None for ONNX Runtime's default)")
    if memory_budget_mb is not None and not (
            isinstance(memory_budget_mb, (int, float)) and not isinstance(memory_budget_mb, bool)
            and memory_budget_mb >= 0 and np.isfinite(memory_budget_mb)):
        raise ConfigError(f"memory_budget_mb={memory_budget_mb!r} must be a number >= 0 (or None: no limit)")
