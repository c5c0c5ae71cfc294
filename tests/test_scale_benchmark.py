"""The measuring parts of benchmarks/scale.py: peak memory of a command and of its process
tree, and the scaling-efficiency arithmetic (the figures in the README come from them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("benchmarks/scale.py reads /proc (Linux only)", allow_module_level=True)

SCALE_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"
ALLOCATE_MIB = 300
SHIM_MIB = 64
# a process that touches ALLOCATE_MIB MiB (bytearray pages are written, so they are resident)
ALLOCATE = f"b = bytearray({ALLOCATE_MIB} << 20); import time; time.sleep(1.0)"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCALE_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_peak_memory_of_one_process(scale, tmp_path) -> None:
    # this test process is large (torch, fixtures): a directly spawned child would inherit its
    # high-water mark, so the upper bound below also checks the launching shim
    run = scale.run_measured([sys.executable, "-c", ALLOCATE], log=tmp_path / "log")
    assert run.code == 0
    assert ALLOCATE_MIB <= run.peak_rss_mib < ALLOCATE_MIB + 200  # the kernel's high-water mark
    # sampled while it slept; the tree also holds the small launching shim (a bare interpreter)
    assert ALLOCATE_MIB <= run.peak_tree_rss_mib <= run.peak_rss_mib + SHIM_MIB
    assert run.trace and all(t >= 0 for t, _ in run.trace)


def test_tree_memory_sums_the_children_while_the_largest_process_is_reported_alone(scale, tmp_path) -> None:
    # each child allocates, says so on stdout, and holds its memory until its stdin closes; the
    # parent waits until both are resident, then keeps them so for 10 sampling periods
    child = f"import sys; b = bytearray({ALLOCATE_MIB} << 20); print('ready', flush=True); sys.stdin.read()"
    two_children = (
        "import subprocess, sys, time; "
        f"ps = [subprocess.Popen([sys.executable, '-c', {child!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(2)]; "
        "[p.stdout.readline() for p in ps]; "
        f"time.sleep({10 * scale.SAMPLE_EVERY_S}); "
        "[p.stdin.close() for p in ps]; [p.wait() for p in ps]; print('done')"
    )
    run = scale.run_measured([sys.executable, "-c", two_children], log=tmp_path / "log")
    assert run.stdout.strip() == "done"
    assert ALLOCATE_MIB <= run.peak_rss_mib < ALLOCATE_MIB + 200  # one process, not the sum
    assert run.peak_tree_rss_mib >= 2 * ALLOCATE_MIB


def test_a_failing_command_stops_the_benchmark_with_its_output(scale, tmp_path) -> None:
    with pytest.raises(SystemExit, match="exit code 3.*boom"):
        scale.run_measured([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log=tmp_path / "log")


def test_efficiency_arithmetic(scale, monkeypatch) -> None:
    cpus = 2
    monkeypatch.setattr(scale, "CPUS", cpus)
    rows = [
        {"phase": "neuron-masking", "processes": 1, "threads_per_process": 1, "rows_per_s": 100.0},
        {"phase": "neuron-masking", "processes": 1, "threads_per_process": cpus, "rows_per_s": 150.0},
        {"phase": "neuron-masking", "processes": 2, "threads_per_process": 1, "rows_per_s": 180.0},
    ]
    e = scale.efficiency(rows)["neuron-masking"]
    assert e["processes"] == 2
    assert e["speedup_vs_1x1"] == pytest.approx(1.8)
    assert e["scaling_efficiency"] == pytest.approx(0.9)
    assert e["vs_1_process_all_threads"] == pytest.approx(180.0 / 150.0)
    assert "expert-masking" not in scale.efficiency(rows)  # no rows, no figure
