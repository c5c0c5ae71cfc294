"""Training killed with SIGKILL at random points and resumed ends exactly like an
uninterrupted run (same seed, CPU): checkpoints hold the model, the optimizer, the phase, the
best state so far and the RNG state, and the batch order depends only on (seed, epoch)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KILLS = 10
ARGS = ["train", "--model", "mome", "--dataset", "synthetic", "--synthetic-rows", "3000", "--hidden", "32,16",
        "--experts", "3", "--epochs", "14", "--neuron-epochs", "3", "--harden-epochs", "3", "--batch-size", "128",
        "--patience", "20", "--threads", "1", "--quiet", "--json"]
# Dies between the write of a checkpoint's temp file and its rename (the worst moment).
DIE_BEFORE_RENAME = """
import os, sys
import mome_edge.atomic as atomic
real_replace, calls = os.replace, [0]
def dying_replace(src, dst):
    if str(dst).endswith('.safetensors') and 'checkpoints' in str(dst):
        calls[0] += 1
        if calls[0] == int(os.environ['DIE_AT']):
            os.kill(os.getpid(), 9)
    return real_replace(src, dst)
atomic.os.replace = dying_replace
from mome_edge.cli.main import main
main(sys.argv[1:])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _finished(out: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "mome_edge.cli", *ARGS, "--out", str(out), "--resume"],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())


def _validation_history(out: Path) -> list:
    return [record["validation"] for record in json.loads((out / "metrics.json").read_text())]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "reference"
    _finished(out)
    return out


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills = 0
    while kills < KILLS:
        proc = subprocess.Popen([sys.executable, "-m", "mome_edge.cli", *ARGS, "--out", str(out), "--resume"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        time.sleep(rng.uniform(1.5, 5.0))
        if proc.poll() is not None:  # finished before the kill: start over to keep killing
            assert proc.returncode == 0
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        checkpoints = sorted((out / "checkpoints").glob("epoch-*.safetensors")) if (out / "checkpoints").exists() else []
        assert len(checkpoints) <= 2  # at most the last two are kept
    assert kills >= KILLS or (out / "summary.json").exists()
    resumed = _finished(out)
    reference = json.loads((uninterrupted / "summary.json").read_text())
    assert resumed["validation"] == reference["validation"]
    assert resumed["test"] == reference["test"]
    assert _validation_history(out) == _validation_history(uninterrupted)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("die_at", [2, 5])
def test_kill_between_write_and_rename(tmp_path, uninterrupted, die_at):
    out = tmp_path / "dying"
    proc = subprocess.run([sys.executable, "-c", DIE_BEFORE_RENAME, *ARGS, "--out", str(out)],
                          capture_output=True, text=True, env={**_env(), "DIE_AT": str(die_at)}, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert f"epoch-{die_at - 1:04d}.safetensors" in names  # the previous epoch survived whole
    assert f"epoch-{die_at:04d}.safetensors" not in names  # the interrupted one never appeared
    resumed = _finished(out)
    assert resumed["validation"] == json.loads((uninterrupted / "summary.json").read_text())["validation"]


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back(tmp_path, uninterrupted):
    out = tmp_path / "corrupt"
    proc = subprocess.run([sys.executable, "-c", DIE_BEFORE_RENAME, *ARGS, "--out", str(out)],
                          capture_output=True, text=True, env={**_env(), "DIE_AT": "6"}, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    latest = sorted((out / "checkpoints").glob("epoch-*.safetensors"))[-1]
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # e.g. a disk that lied
    done = subprocess.run([sys.executable, "-m", "mome_edge.cli", *ARGS, "--out", str(out), "--resume"],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "falling back to the previous one" in done.stderr
    assert json.loads((out / "summary.json").read_text())["validation"] == json.loads((uninterrupted / "summary.json").read_text())["validation"]
