"""`mome-edge compile`: JSON report, table output, and user errors as one `error:` line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mome_edge.artifact.reader import read_artifact
from mome_edge.compile.compiler import FP32_PARITY_TOLERANCE
from cli_helpers import invoke

INT8_AUC_TOLERANCE = 5e-3  # |test AUC change| of the tiny run at int8 (600 test rows)




def assert_one_error_line(code: int, out: str, err: str, message: str) -> None:
    assert code == 2, err
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_compile_json_reports_sizes_and_auc_change(weights: str, tiny_run, tmp_path: Path) -> None:
    out = tmp_path / "model.mome"
    code, stdout, stderr = invoke(["compile", str(tiny_run("mome")), "-o", str(out), "--weights", weights, "--json"])
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["file_bytes"] == out.stat().st_size == sum(report["components"].values())
    assert report["weights"] == weights and report["parity_max_abs_diff"] <= FP32_PARITY_TOLERANCE
    assert all(abs(v) <= INT8_AUC_TOLERANCE for v in report["auc_change"].values())
    assert read_artifact(out).weights == weights


def test_compile_prints_tables(tiny_run, tmp_path: Path) -> None:
    code, stdout, stderr = invoke(["compile", str(tiny_run("mmoe")), "-o", str(tmp_path / "m.mome"), "--weights", "fp16"])
    assert code == 0, stderr
    assert "bytes by component" in stdout and "test AUC" in stdout and "fp16" in stdout
    assert "wrote" in stderr


@pytest.mark.parametrize("command", ["compile", "inspect", "predict"])
def test_every_new_command_has_help(command: str) -> None:
    code, stdout, err = invoke([command, "--help"])
    assert code == 0 and err == ""
    assert "Usage: " in stdout and ("RUN_DIR" in stdout or "MODEL.mome" in stdout)


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda run, tmp: ["compile", str(tmp), "-o", str(tmp / "m.mome")], "is not a run folder (no run.json)"),
        (lambda run, tmp: ["compile", str(run), "-o", str(tmp / "m.mome"), "--weights", "fp8"], "--weights 'fp8' is unknown"),
        (lambda run, tmp: ["compile", str(run), "-o", str(tmp / "missing" / "m.mome")], "cannot write to folder"),
        (lambda run, tmp: ["compile", str(run)], "Missing option '-o' / '--output'"),
    ],
    ids=["not-a-run", "bad-weights", "unwritable", "no-output"],
)
def test_compile_errors_are_one_line(make_argv, message: str, tiny_run, tmp_path: Path) -> None:
    code, out, err = invoke(make_argv(tiny_run("mome"), tmp_path))
    assert_one_error_line(code, out, err, message)
    assert not (tmp_path / "m.mome").exists()
