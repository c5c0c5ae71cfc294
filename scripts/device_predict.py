"""Predict fixed encoded rows with every device path of each model file; write them as JSON.

    python scripts/device_predict.py --inputs INPUTS.json --output OUT.json MODEL [MODEL ...]

Runs on the device install alone (numpy, onnxruntime, bitarray, safetensors, mome_edge; no
torch, no pandas): scripts/check_arm64.py runs it once with the workstation's Python (x86_64)
and once with an arm64 Python under qemu-user, then compares the two outputs.

Paths per file (each a fresh load):
  .mome         predictor-materialize, predictor-on-demand (numpy engine)
  .onnx, .ort   predictor (mome_edge.runtime.Predictor), plain-session
                (onnxruntime.InferenceSession(path) with default options, as an app opens it)

INPUTS.json holds {"categorical": [[int]], "numerical": [[float]]} (or golden rows, whose
"inputs" hold them). OUT.json: {"environment": {...}, "results": [{"model", "path", "tasks",
"probs" (B, T), "load_s", "predict_s"} or {"model", "path", "error"} when this runtime cannot
load or run the file]}; float32 values written as the doubles they equal.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def onnx_plain_session(model: Path, cat: np.ndarray, num: np.ndarray) -> tuple[list[str], np.ndarray, float, float]:
    """What an app does: InferenceSession(path) with default options, one run over all rows."""
    import onnxruntime as ort

    start = time.perf_counter()
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    loaded = time.perf_counter()
    tasks = [o.name for o in session.get_outputs()]
    outputs = session.run(tasks, {"categorical": cat, "numerical": num})
    done = time.perf_counter()
    return tasks, np.stack(outputs, axis=1), loaded - start, done - loaded  # probs (B, T)


def predictor(model: Path, cat: np.ndarray, num: np.ndarray, **options) -> tuple[list[str], np.ndarray, float, float]:
    from mome_edge.runtime import Predictor

    start = time.perf_counter()
    loaded_predictor = Predictor(model, **options)
    loaded = time.perf_counter()
    probs = loaded_predictor.predict_array(cat, num)  # (B, T)
    done = time.perf_counter()
    return list(loaded_predictor.tasks), probs, loaded - start, done - loaded


def paths_for(model: Path) -> list[tuple[str, dict]]:
    if model.suffix.lower() == ".mome":
        return [("predictor-materialize", {"experts": "materialize"}), ("predictor-on-demand", {"experts": "on-demand"})]
    return [("predictor", {}), ("plain-session", {})]


# what the device install must neither need nor import (the [train] extra's packages)
WORKSTATION_ONLY = ("torch", "pandas", "onnx", "onnxsim", "sklearn", "matplotlib", "pyarrow")


def environment() -> dict:
    """Versions, and which workstation-only packages are installed or were imported here."""
    import importlib.util

    import onnxruntime

    return {"machine": platform.machine(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform(),
            "workstation_packages_installed": [m for m in WORKSTATION_ONLY if importlib.util.find_spec(m) is not None],
            "workstation_packages_imported": [m for m in WORKSTATION_ONLY if m in sys.modules]}


def read_inputs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    inputs = doc.get("inputs", doc)
    cat = np.ascontiguousarray(np.asarray(inputs["categorical"], dtype=np.int64))  # (B, F)
    num = np.ascontiguousarray(np.asarray(inputs["numerical"], dtype=np.float64).astype(np.float32))  # (B, D)
    return cat, num


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    cat, num = read_inputs(args.inputs)
    results = []
    for model in args.models:
        for name, options in paths_for(model):
            try:
                if name == "plain-session":
                    tasks, probs, load_s, predict_s = onnx_plain_session(model, cat, num)
                else:
                    tasks, probs, load_s, predict_s = predictor(model, cat, num, **options)
            except Exception as exc:  # this runtime cannot run this file: a result to report, not a crash
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                results.append({"model": str(model), "path": name, "error": f"{type(exc).__name__}: {message[:400]}"})
                continue
            results.append({"model": str(model), "path": name, "tasks": tasks, "load_s": load_s, "predict_s": predict_s,
                            "probs": [[float(v) for v in row] for row in probs]})
    args.output.write_text(json.dumps({"environment": environment(), "results": results}) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
