"""Cold-start measurement: fresh processes, phases reported, paired with the right floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from mome_edge.runtime.cold_start import floor_of, measure_cold_start

KEYS = {"model", "floor", "runs", "cold_start_ms", "floor_ms", "over_floor_ms", "import_ms", "load_ms", "first_prediction_ms",
        "process_ms", "process_over_floor_ms", "package"}


def test_floor_follows_the_file_type() -> None:
    assert floor_of("m.mome") == "numpy"
    assert floor_of("m.onnx") == floor_of("m.ORT") == "numpy+onnxruntime"


def test_a_measurement_runs_fresh_processes_and_reports_every_phase(tiny_artifact) -> None:
    result = measure_cold_start(Path(tiny_artifact("mome", "fp32")), runs=1)
    assert set(result) == KEYS and result["runs"] == 1 and result["floor"] == "numpy"
    assert result["cold_start_ms"] > result["import_ms"] > 0
    assert result["load_ms"] > 0 and result["first_prediction_ms"] > 0
    assert result["process_ms"] >= result["cold_start_ms"]  # the process exits after its first prediction


def test_zero_runs_is_refused(tiny_artifact) -> None:
    from mome_edge.errors import DataError

    with pytest.raises(DataError, match="runs=0 must be >= 1"):
        measure_cold_start(Path(tiny_artifact("mome", "fp32")), runs=0)


# --- what the load path imports ----------------------------------------------------------------------

# stdlib modules that cost milliseconds to import and that the load path does without
SLOW_IMPORTS = {"pathlib": "~5 ms: it imports urllib.parse", "hashlib": "~2.5 ms: it loads OpenSSL (mome_edge.sha256)"}


def _module_level_imports(path: Path) -> set[str]:
    """Top-level packages imported when the module runs (`if TYPE_CHECKING:` blocks excluded)."""
    import ast

    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(inner, ast.Import):
                found |= {alias.name.split(".")[0] for alias in inner.names}
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                found.add(inner.module.split(".")[0])
    return found


@pytest.mark.parametrize("suffix", [".mome", ".onnx"])
def test_the_load_path_imports_nothing_slow(tiny_artifact, tmp_path: Path, suffix: str) -> None:
    """Every mome_edge module that loading a model and predicting one row runs imports none of
    SLOW_IMPORTS at module level (the cold-start budget is 30 ms over numpy/onnxruntime)."""
    import json
    import subprocess
    import sys

    from mome_edge.runtime import Predictor
    from mome_edge.runtime.golden import golden_rows

    model = Path(tiny_artifact("mome", "fp32"))
    if suffix == ".onnx":
        from mome_edge.exporters.onnx_export import export_artifact

        export_artifact(model, tmp_path / "model.onnx", simplify=False)
        model = tmp_path / "model.onnx"
    row = golden_rows(Predictor(model).spec, rows=1)[0]
    code = (
        "import json, sys\nimport mome_edge.runtime as runtime\n"
        "runtime.Predictor(sys.argv[1]).predict_rows([json.loads(sys.argv[2])])\n"
        "print(json.dumps({m: getattr(sys.modules[m], '__file__', None) for m in sys.modules if m.startswith('mome_edge')}))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(model), json.dumps(row)], capture_output=True, text=True, check=True)
    files = {name: Path(file) for name, file in json.loads(done.stdout).items() if file}
    assert "mome_edge.runtime.predictor" in files
    offenders = {name: sorted(_module_level_imports(file) & set(SLOW_IMPORTS)) for name, file in files.items()}
    assert {name: found for name, found in offenders.items() if found} == {}, SLOW_IMPORTS
