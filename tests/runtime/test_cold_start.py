"""Cold-start measurement: fresh processes, phases reported, paired with the right floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from mome_edge.runtime.cold_start import floor_of, measure_cold_start

KEYS = {"model", "floor", "runs", "cold_start_ms", "floor_ms", "over_floor_ms", "import_ms", "load_ms", "first_prediction_ms"}


def test_floor_follows_the_file_type() -> None:
    assert floor_of("m.mome") == "numpy"
    assert floor_of("m.onnx") == floor_of("m.ORT") == "numpy+onnxruntime"


def test_a_measurement_runs_fresh_processes_and_reports_every_phase(tiny_artifact) -> None:
    result = measure_cold_start(Path(tiny_artifact("mome", "fp32")), runs=1)
    assert set(result) == KEYS and result["runs"] == 1 and result["floor"] == "numpy"
    assert result["cold_start_ms"] > result["import_ms"] > 0
    assert result["load_ms"] > 0 and result["first_prediction_ms"] > 0


def test_zero_runs_is_refused(tiny_artifact) -> None:
    from mome_edge.errors import DataError

    with pytest.raises(DataError, match="runs=0 must be >= 1"):
        measure_cold_start(Path(tiny_artifact("mome", "fp32")), runs=0)
