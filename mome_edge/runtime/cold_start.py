"""Cold start: process start to the first prediction, measured as an app would pay it.

One cold start is a fresh interpreter that imports `mome_edge.runtime`, loads the model with a
plain `Predictor(path)` and predicts one raw row with `predict_rows`. Its floor is a fresh
interpreter that only imports what that path cannot avoid: numpy for a `.mome`, numpy and
onnxruntime for a `.onnx`/`.ort`. Cold start and floor processes alternate, so that a burst of
load on the machine hits both; medians are reported.

The children run isolated (`python -I`): `python -c` would otherwise put the current folder
first on sys.path, and run from a checkout it would time the source tree (recompiled on every
start when bytecode writing is off) instead of the installed package. Both are timed from just before the parent starts the process to the child's last step (the
first prediction done; the floor's imports done), on the monotonic clock that every process of
the machine shares (`time.perf_counter` is CLOCK_MONOTONIC on Linux). Process exit is not part
of a cold start: an app keeps running after its first prediction, and tearing down an ONNX
Runtime session at exit costs 10-15 ms that an app never waits for.

numpy + the standard library only (the child processes import the runtime, not this module's
caller), so the device install can run it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from mome_edge.errors import DataError
from mome_edge.onnx_contract import ONNX_SUFFIXES

DEFAULT_RUNS = 7

# The child: every phase timed inside the process; the whole process timed by the parent.
_CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import mome_edge.runtime as runtime
t1 = time.perf_counter()
predictor = runtime.Predictor(sys.argv[1])
t2 = time.perf_counter()
probs = predictor.predict_rows([json.loads(sys.argv[2])])
t3 = time.perf_counter()
assert all(0.0 <= float(p[0]) <= 1.0 for p in probs.values())
print(json.dumps({"import_ms": 1e3 * (t1 - t0), "load_ms": 1e3 * (t2 - t1), "first_prediction_ms": 1e3 * (t3 - t2), "done": t3,
                  "package": runtime.__file__}))
"""
_FLOORS = {"numpy": "import numpy", "numpy+onnxruntime": "import numpy, onnxruntime"}
_FLOOR_CHILD = "{imports}\nimport time\nprint(time.perf_counter())"  # time is built in: nothing to import


def floor_of(path: str | Path) -> str:
    """Which floor a model file is compared with: its runtime's unavoidable imports."""
    return "numpy+onnxruntime" if Path(path).suffix.lower() in ONNX_SUFFIXES else "numpy"


def _timed(argv: list[str]) -> tuple[float, float, str]:
    """(ms from just before the process starts to the moment it reports, ms to its exit, its stdout)."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    exited = time.perf_counter()
    if done.returncode != 0:
        raise DataError(f"a cold-start process failed ({done.stderr.strip().splitlines()[-1:]}); run it by hand: {' '.join(argv[:3])} ...")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    reported = last["done"] if isinstance(last, dict) else float(last)
    return 1e3 * (reported - start), 1e3 * (exited - start), done.stdout


def measure_cold_start(path: str | Path, *, row: Mapping[str, Any] | None = None, runs: int = DEFAULT_RUNS,
                       python: str = sys.executable) -> dict[str, Any]:
    """Median cold start of `path` over `runs` fresh processes, against its floor.

    Returns:
        {"model", "floor", "runs", "cold_start_ms", "floor_ms", "over_floor_ms", "import_ms",
         "load_ms", "first_prediction_ms", "process_ms", "process_over_floor_ms", "package"}: medians in
        milliseconds (the over-floor figures are medians of the paired differences);
        process_* time the whole processes, exit included, for comparison with measurements
        that time the process.
    """
    if runs < 1:
        raise DataError(f"runs={runs} must be >= 1")
    if row is None:
        from mome_edge.runtime import Predictor
        from mome_edge.runtime.golden import golden_rows

        row = golden_rows(Predictor(path).spec, rows=3)[-1]  # a typical row: known categories, finite numbers
    floor = floor_of(path)
    walls, floors, phases, whole, whole_floors, packages = [], [], [], [], [], set()
    for _ in range(runs):
        floor_ms, floor_exit_ms, _ = _timed([python, "-I", "-c", _FLOOR_CHILD.format(imports=_FLOORS[floor])])
        wall_ms, exit_ms, out = _timed([python, "-I", "-c", _CHILD, str(os.path.abspath(path)), json.dumps(row)])
        floors.append(floor_ms)
        walls.append(wall_ms)
        whole_floors.append(floor_exit_ms)
        whole.append(exit_ms)
        phases.append(json.loads(out.strip().splitlines()[-1]))
        packages.add(os.path.dirname(os.path.dirname(phases[-1]["package"])))
    return {
        "model": str(path),
        "floor": floor,
        "runs": runs,
        "cold_start_ms": statistics.median(walls),
        "floor_ms": statistics.median(floors),
        "over_floor_ms": statistics.median(w - f for w, f in zip(walls, floors)),
        **{key: statistics.median(p[key] for p in phases) for key in ("import_ms", "load_ms", "first_prediction_ms")},
        "process_ms": statistics.median(whole),
        "process_over_floor_ms": statistics.median(w - f for w, f in zip(whole, whole_floors)),
        "package": sorted(packages)[0],  # the mome_edge that was timed (an installed copy, or a source tree)
    }
