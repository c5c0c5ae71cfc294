"""Two CPU processes under torchrun (gloo) train the same model as one process.

Both runs see the same global batch sequence: same seed and batch order, each rank takes its
half of every global batch (4480 rows -> 2688 training rows: every global batch splits
evenly), batch statistics are all-reduced and gradients averaged by DDP. They differ by
floating-point summation order only. Exact arithmetic gives a zero gradient to the bias of a
linear layer followed by batch norm; in floats that gradient is rounding noise, which Adam
normalises into steps of ~lr, so those biases (and the running means tracking them) are
compared through the model's outputs, not element by element.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

PARAM_ATOL = 1e-5  # after one epoch (11 Adam steps), every parameter with a real gradient
AUC_ATOL = 2e-3  # after three epochs through all MoME phases
PRE_NORM = re.compile(r"(linears\.\d+\.bias|base\.\d+\.bias|running_mean)$")

COMMON = ["--dataset", "synthetic", "--synthetic-rows", "4480", "--hidden", "32,16", "--experts", "3",
          "--batch-size", "256", "--quiet", "--json", "--threads", "1"]


def _train(out, args: list[str], nproc: int, port: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(port)]
    done = subprocess.run([*launcher, "-m", "mome_edge.cli", "train", *args, *COMMON, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # under torchrun rank 0 alone prints


@pytest.mark.slow
def test_one_epoch_parameters_match(tmp_path):
    args = ["--model", "mmoe", "--epochs", "1"]
    _train(tmp_path / "one", args, 1, 0)
    _train(tmp_path / "two", args, 2, 29531)
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys()
    compared = [name for name in a if not PRE_NORM.search(name)]
    assert len(compared) > len(a) // 2
    for name in compared:
        np.testing.assert_allclose(a[name], b[name], atol=PARAM_ATOL, rtol=0, err_msg=name)


@pytest.mark.slow
def test_mome_phases_match(tmp_path):
    args = ["--model", "mome", "--epochs", "3", "--neuron-epochs", "1", "--harden-epochs", "1"]
    one = _train(tmp_path / "one", args, 1, 0)
    two = _train(tmp_path / "two", args, 2, 29532)
    assert one["phase"] == two["phase"] == "hardening"
    assert one["structure"] == two["structure"]  # the phase switch removed the same neurons on every rank
    for task in one["validation"]:
        assert one["validation"][task]["auc"] > 0.65
        assert abs(one["validation"][task]["auc"] - two["validation"][task]["auc"]) < AUC_ATOL
    # only rank 0 wrote: the same files, no leftovers from the other rank
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
