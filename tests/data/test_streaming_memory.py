"""`mome-edge prepare` streams: its peak memory does not grow with the number of rows.

Measured by the kernel (ru_maxrss), so pyarrow's and numpy's native allocations count too,
through a small shim: a child spawned straight from this (large) test process would inherit
its RSS high-water mark at exec, and both sizes would measure the same. A reader that keeps
what it has read (pyarrow's pre-buffered Parquet reader did: ~470 bytes per AliExpress row)
adds ~170 MiB between the two sizes here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mome_edge.data.synthetic_aliexpress import write_aliexpress_parquet

if not sys.platform.startswith("linux"):
    pytest.skip("ru_maxrss units and exec semantics differ off Linux", allow_module_level=True)

SMALL_ROWS, LARGE_ROWS = 100_000, 500_000
GROWTH_LIMIT_MIB = 80  # allocator noise between runs is a few tens of MiB
_SHIM = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def _prepare_peak_mib(folder: Path, rows: int) -> float:
    raw = folder / "raw"
    raw.mkdir(parents=True)
    write_aliexpress_parquet(raw / "train.parquet", rows, seed=0)
    write_aliexpress_parquet(raw / "test.parquet", 2_000, seed=1)
    argv = [sys.executable, "-m", "mome_edge.cli", "prepare", "--dataset", "aliexpress", "--data-dir", str(raw),
            "--out", str(folder / "prepared"), "--quiet", "--json"]
    done = subprocess.run([sys.executable, "-c", _SHIM, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip().splitlines()[-1]) / 1024  # KiB; prepare's own stdout is its --json summary


@pytest.mark.slow
def test_prepare_peak_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small = _prepare_peak_mib(tmp_path / "small", SMALL_ROWS)
    large = _prepare_peak_mib(tmp_path / "large", LARGE_ROWS)
    assert large - small < GROWTH_LIMIT_MIB, f"prepare peak {small:.0f} MiB at {SMALL_ROWS:,} rows, {large:.0f} MiB at {LARGE_ROWS:,}"
