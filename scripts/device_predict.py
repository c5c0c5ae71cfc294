"""Predict fixed encoded rows with every device path of each model file; write them as JSON.

    python scripts/device_predict.py --inputs INPUTS.json --output OUT.json MODEL [MODEL ...]
    python scripts/device_predict.py --inputs MODEL.golden.json --output OUT.json MODEL.onnx   # on a device

Runs on the device install alone (numpy, onnxruntime, bitarray, safetensors, mome_edge; no
torch, no pandas): scripts/check_arm64.py runs it once with the workstation's Python (x86_64)
and once with an arm64 Python under qemu-user, then compares the two outputs.

Paths per file (each a fresh load):
  .mome         predictor-materialize, predictor-on-demand (numpy engine)
  .onnx, .ort   predictor (mome_edge.runtime.Predictor), plain-session
                (onnxruntime.InferenceSession(path) with default options, as an app opens it)

INPUTS.json holds {"categorical": [[int]], "numerical": [[float]]}, or is the golden rows file
that `mome-edge export` writes beside the model (mome_edge.runtime.golden): then every result
also gets "max_abs_diff_vs_golden" (against the file's `expected`), and the exit status is 1
when one is above the file's tolerance, so this script alone checks a real arm64 board.
OUT.json: {"environment": {...}, "results": [{"model", "path", "tasks", "probs" (B, T),
"load_s", "predict_s"} or {"model", "path", "error"} when this runtime cannot load or run the
file]}; float32 values written as the doubles they equal. With plain inputs, exit 0 even when
a path failed (the report says so; scripts/check_arm64.py decides); with golden rows, a path
that failed also exits 1.
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


def read_inputs(path: Path) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """(categorical (B, F), numerical (B, D), the golden document when the file is golden rows)."""
    from mome_edge.runtime import golden

    doc = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(doc, dict) and "format" in doc:  # golden rows: the library reads and checks them
        doc = golden.read_golden(path)
        cat, num = golden.golden_inputs(doc)
        return np.ascontiguousarray(cat), np.ascontiguousarray(num), doc
    cat = np.ascontiguousarray(np.asarray(doc["categorical"], dtype=np.int64))  # (B, F)
    num = np.ascontiguousarray(np.asarray(doc["numerical"], dtype=np.float64).astype(np.float32))  # (B, D)
    return cat, num, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    from mome_edge.errors import MomeError

    try:
        cat, num, golden_doc = read_inputs(args.inputs)
    except MomeError as exc:  # golden rows that do not read: the library's message names the fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: --inputs {args.inputs}: {exc}; pass golden rows or {{\"categorical\": ..., \"numerical\": ...}}", file=sys.stderr)
        return 2
    results = []
    for model in args.models:
        for name, options in paths_for(model):
            try:
                if name == "plain-session":
                    tasks, probs, load_s, predict_s = onnx_plain_session(model, cat, num)
                else:
                    tasks, probs, load_s, predict_s = predictor(model, cat, num, **options)
                vs_golden = None if golden_doc is None else golden_max_abs_by_name(golden_doc, tasks, probs)
            except Exception as exc:  # this runtime cannot run this file: a result to report, not a crash
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                results.append({"model": str(model), "path": name, "error": f"{type(exc).__name__}: {message[:400]}"})
                continue
            result = {"model": str(model), "path": name, "tasks": tasks, "load_s": load_s, "predict_s": predict_s,
                      "probs": [[float(v) for v in row] for row in probs]}
            if vs_golden is not None:
                result["max_abs_diff_vs_golden"] = vs_golden
            results.append(result)
    args.output.write_text(json.dumps({"environment": environment(), "results": results}) + "\n", encoding="utf-8")
    if golden_doc is None:
        return 0
    failed = [f"{Path(r['model']).name} {r['path']}: {r['error']}" for r in results if "error" in r]
    worst = max((r["max_abs_diff_vs_golden"] for r in results if "error" not in r), default=0.0)
    print(f"max |p - expected| over {len(results) - len(failed)} paths: {worst:.2e} (tolerance {golden_doc['tolerance']:g})"
          + "".join(f"\nFAILED {line}" for line in failed), file=sys.stderr)
    return 0 if worst <= golden_doc["tolerance"] and not failed else 1


def golden_max_abs_by_name(doc: dict, tasks: list[str], probs: np.ndarray) -> float:
    """max |probs - expected|, the model's outputs matched to the golden tasks by name."""
    from mome_edge.runtime.golden import golden_max_abs

    columns = [tasks.index(task) for task in doc["tasks"]]  # ValueError: a model without a golden task
    return golden_max_abs(doc, probs[:, columns])  # (B, T) in the golden file's task order


if __name__ == "__main__":
    sys.exit(main())
