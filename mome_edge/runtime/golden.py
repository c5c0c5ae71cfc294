"""Golden rows: sample inputs and the expected probabilities, written by `mome-edge export` beside
the model (OUT.golden.json), so that a port in any language (JavaScript, Kotlin, C++) or another
machine (ARM64) can check itself against the numpy reference. numpy only.

The JSON shape is a contract (docs/deployment.md, "Golden rows"); add keys, never rename:

    {
      "format": "mome-edge-golden", "version": 1,
      "model": "model.onnx",            # the file name the rows were checked against
      "mode": "speed" | "memory",        # the export's deployment mode
      "tasks": ["income", "marital"],    # output names, in order
      "tolerance": 1e-05,                # max |p_port - expected| a port must meet
      "rows": [{"age": 41.0, "education": "Bachelors", ...}, ...],   # raw rows (for ports that encode)
      "inputs": {"categorical": [[...], ...],   # int64 ids (B, F): the ONNX input "categorical"
                 "numerical": [[...], ...]},    # float32 (B, D): the ONNX input "numerical"
      "expected": {"income": [...], "marital": [...]},   # float32 probabilities per task (B,)
      "notes": [...]                     # what the rows exercise (OOV, missing values)
    }

Floats are written with Python's shortest repr of the float32 value, so parsing them as
float64 and rounding to float32 gives back the exact inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError
from mome_edge.onnx_contract import PARITY_ATOL_FP32

GOLDEN_FORMAT = "mome-edge-golden"
GOLDEN_VERSION = 1
GOLDEN_ROWS = 8
GOLDEN_TOLERANCE = PARITY_ATOL_FP32  # probabilities, fp32 on both sides
UNSEEN_CATEGORY = "__mome_unseen__"  # not in any vocabulary: reads the OOV row


def golden_path(model_path: str | Path) -> Path:
    """OUT.golden.json for OUT.onnx (or OUT.ort)."""
    return Path(model_path).with_suffix(".golden.json")


def golden_rows(spec: FeatureSpec, rows: int = GOLDEN_ROWS, *, seed: int = 0) -> list[dict[str, Any]]:
    """Raw rows that exercise the encoders: known categories, one unseen category (OOV) in row 0,
    a missing category and a missing number in row 1 (numbers only where the policy is "mean")."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rows):
        row: dict[str, Any] = {}
        for f, enc in enumerate(spec.categorical):
            if r == 0 or not enc.vocabulary:
                row[enc.name] = UNSEEN_CATEGORY
            elif r == 1:
                row[enc.name] = None
            else:
                row[enc.name] = enc.vocabulary[int(rng.integers(len(enc.vocabulary)))]
        for scaler in spec.numerical:
            if r == 1 and scaler.missing == "mean":
                row[scaler.name] = None
                continue
            t = scaler.mean + scaler.std * float(rng.standard_normal())  # a typical value of t(x)
            raw = math.copysign(math.expm1(abs(t)), t) if scaler.log1p else t  # inverse of the signed log1p
            row[scaler.name] = float(np.float32(raw))
        out.append(row)
    return out


def build_golden(spec: FeatureSpec, tasks: tuple[str, ...], reference, *, model_name: str, mode: str,
                 rows: int = GOLDEN_ROWS, seed: int = 0) -> dict[str, Any]:
    """The golden document; `reference(cat, num) -> (B, T)` is the numpy reference forward."""
    raw = golden_rows(spec, rows, seed=seed)
    cat, num = spec.encode_rows(raw)
    probs = np.asarray(reference(cat, num), dtype=np.float32)  # (B, T)
    return {
        "format": GOLDEN_FORMAT,
        "version": GOLDEN_VERSION,
        "model": model_name,
        "mode": mode,
        "tasks": list(tasks),
        "tolerance": GOLDEN_TOLERANCE,
        "rows": raw,
        "inputs": {"categorical": cat.astype(np.int64).tolist(), "numerical": [[float(v) for v in r] for r in num]},
        "expected": {task: [float(v) for v in probs[:, t]] for t, task in enumerate(tasks)},
        "notes": ["row 0: every category unseen (reads the OOV row)",
                  "row 1: every category and every 'mean'-policy number missing"],
    }


def golden_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8")


def read_golden(path: str | Path) -> dict[str, Any]:
    """Parse and check a golden file (format, version, shapes); ArtifactError when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable golden file ({exc}); export the model again") from None
    if not isinstance(doc, dict) or doc.get("format") != GOLDEN_FORMAT or doc.get("version") != GOLDEN_VERSION:
        raise ArtifactError(f"{path}: not a {GOLDEN_FORMAT} v{GOLDEN_VERSION} file; export the model again")
    try:
        rows = len(doc["inputs"]["categorical"])
        consistent = len(doc["inputs"]["numerical"]) == rows and all(len(doc["expected"][t]) == rows for t in doc["tasks"])
    except (KeyError, TypeError) as exc:  # a hand-edited or truncated file: one clear error, not a traceback
        raise ArtifactError(f"{path}: golden file lacks {exc} (inputs, expected or tasks); export the model again") from None
    if not consistent:
        raise ArtifactError(f"{path}: inputs and expected outputs differ in row count; export the model again")
    return doc


def golden_inputs(doc: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The encoded inputs as the ONNX inputs take them: int64 (B, F), float32 (B, D)."""
    cat = np.asarray(doc["inputs"]["categorical"], dtype=np.int64)
    num = np.asarray(doc["inputs"]["numerical"], dtype=np.float32)
    return cat.reshape(len(cat), -1), num.reshape(len(num), -1)


def golden_max_abs(doc: dict[str, Any], probs: np.ndarray) -> float:
    """max |probs - expected| over rows and tasks; probs (B, T) in doc["tasks"] order."""
    expected = np.stack([np.asarray(doc["expected"][t], dtype=np.float64) for t in doc["tasks"]], axis=1)
    return float(np.max(np.abs(np.asarray(probs, dtype=np.float64) - expected)))
