"""benchmarks/frontier.py: the synthetic points and the reference MMoE they are budgeted
against use the same data (the low task correlation), and the reading's MoME shape."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from mome_edge.runs import DatasetRef

FRONTIER_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "frontier.py"


@pytest.fixture(scope="module")
def frontier():
    spec = importlib.util.spec_from_file_location("frontier_benchmark", FRONTIER_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_synthetic_points_train_at_the_low_correlation(frontier) -> None:
    args = frontier.DATASET_ARGS["synthetic"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags == {"--dataset": "synthetic", "--synthetic-rows": str(frontier.SYNTHETIC_ROWS),
                     "--synthetic-correlation": str(frontier.SYNTHETIC_CORRELATION)}
    assert frontier.SYNTHETIC_CORRELATION < 0.5  # below the generator's default: the point of the data set


class _Loaded(Exception):
    pass


def test_reference_bytes_loads_the_data_the_points_train_on(frontier, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[DatasetRef] = []

    def record(self: DatasetRef):
        seen.append(self)
        raise _Loaded  # the reference model itself is not needed here

    monkeypatch.setattr(DatasetRef, "load", record)
    with pytest.raises(_Loaded):
        frontier.reference_bytes("synthetic")
    (ref,) = seen
    assert (ref.name, ref.synthetic_rows, ref.synthetic_correlation) == (
        "synthetic", frontier.SYNTHETIC_ROWS, frontier.SYNTHETIC_CORRELATION)


def test_mome_shape_from_new_and_old_points(frontier) -> None:
    new = {"neurons_kept": [25, 101, 50], "neurons_nominal": [64, 256, 128], "mask_density": 1.0}
    old = {"budget": "neurons kept per layer [27, 99, 50] of [64, 256, 128] (inputs of each layer, then outputs)"}
    assert frontier._neurons_kept(old) == ([27, 99, 50], [64, 256, 128])
    assert frontier._mome_shape([new, old]) == " (MoME: neurons kept 26, 100, 50 of 64, 256, 128; mask density 1.00)"
    assert frontier._mome_shape([{"budget": "mmoe widths fitted"}]) == ""


def test_points_from_two_runs_merge_in_one_file(tmp_path) -> None:
    """Two runs of the script (e.g. one per core) each add their points; neither overwrites the other's."""
    import importlib.util
    import json
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("frontier_script", Path(__file__).parents[1] / "benchmarks" / "frontier.py")
    frontier = importlib.util.module_from_spec(spec)
    sys.modules["frontier_script"] = frontier
    spec.loader.exec_module(frontier)
    path = tmp_path / "frontier.json"
    first = {"reference_bytes": {"a": 1}, "points": {}}
    second = {"reference_bytes": {"b": 2}, "points": {}}  # started before the first wrote anything
    first = frontier._add_point(path, first, "a/mome/1-20/fp32/seed0", {"kind": "mome"})
    second = frontier._add_point(path, second, "b/mmoe/1-20/fp32/seed0", {"kind": "mmoe"})
    first = frontier._add_point(path, first, "a/mome/1-20/fp32/seed1", {"kind": "mome"})
    on_disk = json.loads(path.read_text())
    assert set(on_disk["points"]) == {"a/mome/1-20/fp32/seed0", "b/mmoe/1-20/fp32/seed0", "a/mome/1-20/fp32/seed1"}
    assert on_disk["reference_bytes"] == {"a": 1, "b": 2}
