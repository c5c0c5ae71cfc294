"""`mome-edge prepare` streams: its peak memory does not grow with the number of rows.

Measured in a child process by the kernel (wait4's ru_maxrss), so pyarrow's and numpy's
native allocations count too. A reader that keeps what it has read (pyarrow's pre-buffered
Parquet reader did: ~470 bytes per AliExpress row) adds ~170 MiB between the two sizes here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mome_edge.data.synthetic_aliexpress import write_aliexpress_parquet

if not hasattr(os, "wait4"):
    pytest.skip("needs os.wait4 (POSIX) to read a child's peak memory", allow_module_level=True)

SMALL_ROWS, LARGE_ROWS = 100_000, 500_000
GROWTH_LIMIT_MIB = 80  # allocator noise between runs is a few tens of MiB


def _prepare_peak_mib(folder: Path, rows: int) -> float:
    raw = folder / "raw"
    raw.mkdir(parents=True)
    write_aliexpress_parquet(raw / "train.parquet", rows, seed=0)
    write_aliexpress_parquet(raw / "test.parquet", 2_000, seed=1)
    argv = [sys.executable, "-m", "mome_edge.cli", "prepare", "--dataset", "aliexpress", "--data-dir", str(raw),
            "--out", str(folder / "prepared"), "--quiet", "--json"]
    log = folder / "stderr.txt"
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak, not this test process's
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, log.read_text()[-2000:]
    return usage.ru_maxrss / 1024


@pytest.mark.slow
def test_prepare_peak_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small = _prepare_peak_mib(tmp_path / "small", SMALL_ROWS)
    large = _prepare_peak_mib(tmp_path / "large", LARGE_ROWS)
    assert large - small < GROWTH_LIMIT_MIB, f"prepare peak {small:.0f} MiB at {SMALL_ROWS:,} rows, {large:.0f} MiB at {LARGE_ROWS:,}"
