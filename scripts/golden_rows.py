"""Golden rows: fixed encoded inputs and the probabilities Python predicts for them, as JSON.

A port of a model (another CPU, another language binding, another runtime) checks itself by
feeding `inputs` to the model and comparing its outputs with `outputs`, task by task, within
`tolerance`:

    {"format": "mome-edge golden rows", "version": 1, "model": "mome.onnx",
     "tasks": ["income", "marital"], "tolerance": 1e-05,
     "inputs": {"categorical": [[int, ...], ...],     # int64 (B, F): the ONNX input "categorical"
                "numerical": [[float, ...], ...]},    # float32 (B, D): the ONNX input "numerical"
     "outputs": {"income": [float, ...], ...},        # float32 (B,) per task: the ONNX outputs
     "rows": "where the inputs come from", "produced_by": "runtime and versions"}

Floats are float32 values written as the doubles they equal (Python's repr), so a reader that
parses them as doubles and casts to float32 gets the exact bits back.

`mome-edge export` is to write such a file beside the model (issue 12); until every export
does, this script writes one from the Python runtime (`mome_edge.runtime.Predictor`), and
`find_golden` reads the export's own file when one is present beside the model.

    python scripts/golden_rows.py MODEL.onnx -o MODEL.golden.json [--rows 200] [--source census|spec]

Rows, --source census (default): the first --rows rows of the census-income test split
(encoded with the model's own feature spec, split as recorded at training; needs the [train]
extra and the data). --source spec: rows drawn from the feature spec alone (ids uniform over
each vocabulary and OOV, numericals standard normal, seed 0), for a model of any data set.
Either way, then rows whose ids are out of every vocabulary (OUT_OF_RANGE_IDS): a port must
read them as the OOV row, as the exported graph does.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_FORMAT = "mome-edge golden rows"
GOLDEN_VERSION = 1
GOLDEN_TOLERANCE = 1e-5  # max |p_port - p_python| per probability: float32 ops in another order
DEFAULT_ROWS = 200
DEFAULT_DATASET = "census-income"
# ids outside every vocabulary, below and above: the graph clamps them to the OOV row (0)
OUT_OF_RANGE_IDS = (-7, 2**40)


@dataclass(frozen=True, kw_only=True)
class GoldenRows:
    """Encoded inputs and, when the file has them, the expected per-task probabilities."""

    categorical: np.ndarray  # int64 (B, F)
    numerical: np.ndarray  # float32 (B, D)
    outputs: dict[str, np.ndarray] | None  # task -> float32 (B,)
    tolerance: float
    source: str


def golden_candidates(model: Path) -> list[Path]:
    """Where a golden file of `model` may lie: beside it, named after it."""
    stem = model.with_suffix("")
    return [Path(f"{stem}.golden.json"), Path(f"{model}.golden.json"), Path(f"{stem}-golden.json")]


def find_golden(model: Path) -> Path | None:
    return next((p for p in golden_candidates(model) if p.is_file()), None)


def read_golden(path: Path) -> GoldenRows:
    """Read a golden JSON file (this module's layout; inputs may also sit at the top level and
    outputs under "expected", so an exporter's variant of the layout reads too).

    Raises:
        ValueError: the file is not golden rows (one line naming the problem).
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: golden rows must be a JSON object")
    inputs = doc.get("inputs", doc)
    if not isinstance(inputs, dict) or "categorical" not in inputs or "numerical" not in inputs:
        raise ValueError(f"{path}: no inputs.categorical / inputs.numerical arrays")
    cat = np.asarray(inputs["categorical"], dtype=np.int64)
    num = np.asarray(inputs["numerical"], dtype=np.float64).astype(np.float32)
    if cat.ndim != 2 or num.ndim != 2 or len(cat) != len(num):
        raise ValueError(f"{path}: inputs must be two 2-D arrays with the same number of rows, got {cat.shape} and {num.shape}")
    raw = doc.get("outputs", doc.get("expected"))
    outputs = None
    if isinstance(raw, dict):
        outputs = {str(task): np.asarray(values, dtype=np.float64).astype(np.float32) for task, values in raw.items()}
        bad = [task for task, values in outputs.items() if values.shape != (len(cat),)]
        if bad:
            raise ValueError(f"{path}: outputs {bad} do not have one value per input row ({len(cat)})")
    return GoldenRows(categorical=cat, numerical=num, outputs=outputs,
                      tolerance=float(doc.get("tolerance", GOLDEN_TOLERANCE)), source=str(path))


def census_rows(model: Path, *, rows: int, data_dir: str | None, dataset: str = DEFAULT_DATASET) -> tuple[np.ndarray, np.ndarray, str]:
    """The first `rows` test rows of `dataset` encoded for `model`, then the out-of-range-id rows.

    Needs the [train] extra (the data loaders use pandas); the model may be a .mome or an export.
    """
    from mome_edge.runtime import Predictor
    from mome_edge.runtime.predict import load_artifact_split

    predictor = Predictor(model)  # duck-types as the artifact: .spec and .metadata (the split record)
    part = load_artifact_split(predictor, dataset, split="test", data_dir=data_dir)
    cat = np.ascontiguousarray(part.categorical[:rows], dtype=np.int64)  # (B, F)
    num = np.ascontiguousarray(part.numerical[:rows], dtype=np.float32)  # (B, D)
    return _with_out_of_range(cat, num, f"{dataset} test split rows 0..{len(cat) - 1}")


def spec_rows(model: Path, *, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """`rows` encoded rows drawn from `model`'s feature spec, then the out-of-range-id rows."""
    from mome_edge.runtime import Predictor

    spec = Predictor(model).spec
    rng = np.random.default_rng(seed)
    sizes = np.asarray(spec.vocab_sizes, dtype=np.int64)  # (F,) vocabulary + the OOV row
    cat = (rng.random((rows, len(sizes))) * sizes).astype(np.int64)  # (B, F) in [0, size)
    num = rng.standard_normal((rows, len(spec.numerical))).astype(np.float32)  # (B, D) standardised
    return _with_out_of_range(cat, num, f"{rows} rows drawn from the feature spec (seed {seed})")


def _with_out_of_range(cat: np.ndarray, num: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, str]:
    oov_cat = np.stack([np.full(cat.shape[1], value, dtype=np.int64) for value in OUT_OF_RANGE_IDS])  # (2, F)
    cat = np.concatenate([cat, oov_cat])
    num = np.concatenate([num, np.zeros((len(OUT_OF_RANGE_IDS), num.shape[1]), dtype=np.float32)])  # the means
    return cat, num, (f"{source}, then {len(OUT_OF_RANGE_IDS)} rows whose ids are {list(OUT_OF_RANGE_IDS)} in every field "
                      "(out of range: read as OOV) and whose numericals are 0 (the training means)")


def golden_document(model: Path, cat: np.ndarray, num: np.ndarray, *, rows_source: str) -> dict[str, Any]:
    """The golden JSON of `model` for these inputs, predicted by the Python runtime."""
    import onnxruntime

    from mome_edge.runtime import Predictor

    predictor = Predictor(model)
    probs = predictor.predict(cat, num)
    return {
        "format": GOLDEN_FORMAT,
        "version": GOLDEN_VERSION,
        "model": model.name,
        "tasks": list(predictor.tasks),
        "tolerance": GOLDEN_TOLERANCE,
        "rows": rows_source,
        "produced_by": (f"mome_edge.runtime.Predictor ({predictor.runtime}; numpy {np.__version__}, onnxruntime "
                        f"{onnxruntime.__version__}, {platform.machine()}, Python {platform.python_version()})"),
        "inputs": {"categorical": cat.tolist(), "numerical": [[float(v) for v in row] for row in num]},
        "outputs": {task: [float(v) for v in values] for task, values in probs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the .onnx, .ort or .mome file")
    parser.add_argument("-o", "--output", type=Path, help="the JSON to write (default: MODEL.golden.json beside the model)")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"census test rows (default {DEFAULT_ROWS})")
    parser.add_argument("--source", choices=("census", "spec"), default="census", help="census test rows, or rows drawn from the feature spec")
    parser.add_argument("--data-dir", help="folder holding census-income/ (default: MOME_DATA_DIR)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows {args.rows}: give at least 1 row")
    from mome_edge.atomic import atomic_write_text
    from mome_edge.errors import MomeError

    output = args.output or Path(f"{args.model.with_suffix('')}.golden.json")
    try:
        if args.source == "census":
            cat, num, source = census_rows(args.model, rows=args.rows, data_dir=args.data_dir)
        else:
            cat, num, source = spec_rows(args.model, rows=args.rows)
        doc = golden_document(args.model, cat, num, rows_source=source)
    except MomeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(output, json.dumps(doc) + "\n")
    print(f"wrote {output}: {len(cat)} rows, tasks {doc['tasks']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
