"""The command line, in process: help for every command, train -> evaluate on tiny synthetic
data, JSON and CSV outputs, and every user error as one `error:` line with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mome_edge.cli.main import app
from mome_edge.data import load_dataset
from mome_edge.runs import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, RUN_FILE, SUMMARY_FILE
from cli_helpers import invoke as _invoke

SYNTHETIC_ROWS = 2_000  # 1200 train / 400 validation / 400 test
TRAIN_ARGS = [
    "--model", "mome", "--dataset", "synthetic", "--synthetic-rows", str(SYNTHETIC_ROWS),
    "--hidden", "16,8", "--experts", "2", "--epochs", "4", "--neuron-epochs", "1", "--harden-epochs", "1",
    "--batch-size", "256", "--quiet", "--json",
]
CSV_AUC_TOL = 1e-4  # predictions are written with 7 significant digits
USAGE_EXIT = 2




def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> dict:
    """One `mome-edge train ... --json` run; its folder, exit code and outputs."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code, out, err = _invoke(["train", *TRAIN_ARGS, "--out", str(run_dir)])
    return {"run_dir": run_dir, "code": code, "stdout": out, "stderr": err}


# --- help ------------------------------------------------------------------------------------


COMMANDS = sorted(c.name for c in app.registered_commands)  # every command, whoever added it


def test_the_core_commands_are_registered() -> None:
    assert {"train", "evaluate", "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in COMMANDS)], ids=["root", *COMMANDS])
def test_every_command_has_help(argv: list[str]) -> None:
    code, out, err = _invoke(argv)
    assert code == 0, err
    assert "Usage" in out
    assert err == ""
    for name in COMMANDS if argv == ["--help"] else []:
        assert name in out  # the root help lists every command


def test_no_arguments_shows_help_and_exits_0() -> None:
    code, out, err = _invoke([])
    assert code == 0
    assert "Usage" in out + err


def test_version() -> None:
    from mome_edge import __version__

    code, out, err = _invoke(["--version"])
    assert (code, out.strip(), err) == (0, __version__, "")


# --- train -------------------------------------------------------------------------------------


def test_train_writes_the_run_folder_and_one_json_object(cli_run) -> None:
    assert cli_run["code"] == 0, cli_run["stderr"]
    run_dir: Path = cli_run["run_dir"]
    for name in (RUN_FILE, MODEL_FILE, METRICS_FILE, SUMMARY_FILE):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / CHECKPOINT_DIR).iterdir()) == ["epoch-0003.safetensors", "epoch-0004.safetensors"]
    summary = json.loads(cli_run["stdout"])  # exactly one JSON document, nothing else on stdout
    assert summary == json.loads((run_dir / SUMMARY_FILE).read_text())
    assert summary["model"] == "mome" and summary["epochs_run"] == 4 and summary["phase"] == "hardening"
    assert set(summary["test"]) == {"task1", "task2"}
    run = json.loads((run_dir / RUN_FILE).read_text())
    assert run["model_config"]["hidden"] == [16, 8] and run["model_config"]["experts"] == 2
    assert run["dataset"]["synthetic_rows"] == SYNTHETIC_ROWS


def test_train_quiet_prints_no_per_epoch_lines(cli_run) -> None:
    # `--quiet`: "No progress bars or per-epoch lines."
    epoch_lines = [line for line in cli_run["stderr"].splitlines() if line.lstrip().startswith("epoch")]
    assert epoch_lines == [], cli_run["stderr"]


def test_train_stop_after_epoch_then_resume_finishes_the_same_run(cli_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    table_args = [a for a in TRAIN_ARGS if a != "--json"]
    code, out, err = _invoke(["train", *table_args, "--out", str(run_dir), "--stop-after-epoch", "2"])
    assert code == 0, err
    assert "stopped after epoch 2" in out and "--resume" in out
    assert not (run_dir / MODEL_FILE).exists()
    assert [r["phase"] for r in json.loads((run_dir / METRICS_FILE).read_text())] == ["neuron-masking", "expert-masking"]

    code, out, err = _invoke(["train", *TRAIN_ARGS, "--out", str(run_dir), "--resume"])
    assert code == 0, err
    resumed, reference = json.loads(out), json.loads(cli_run["stdout"])
    for summary in (resumed, reference):
        summary.pop("seconds_per_epoch")
    assert resumed == reference


def test_train_synthetic_correlation_is_recorded_and_reproduced(tmp_path) -> None:
    """--synthetic-correlation reaches the generator, is recorded in run.json and the summary,
    and evaluate, compile and predict --dataset regenerate the same data from the record."""
    from mome_edge.artifact.reader import read_artifact

    run_dir, model = tmp_path / "run", tmp_path / "m.mome"
    args = [a if a != "mome" else "mmoe" for a in TRAIN_ARGS if a not in ("--epochs", "4")] + ["--epochs", "2"]
    code, out, err = _invoke(["train", *args, "--synthetic-correlation", "0.2", "--out", str(run_dir)])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dataset"] == "synthetic (task correlation 0.2)"
    run = json.loads((run_dir / RUN_FILE).read_text())
    assert run["dataset"]["synthetic_correlation"] == 0.2
    assert run["feature_spec"]["label_sources"]["task2"]["correlation"] == 0.2  # the generator got it

    code, out, err = _invoke(["evaluate", str(run_dir), "--json"])  # reloads the data from run.json
    assert code == 0, err
    for task, metrics in json.loads(out)["tasks"].items():
        assert metrics["auc"] == pytest.approx(summary["test"][task]["auc"], rel=1e-9)

    code, out, err = _invoke(["compile", str(run_dir), "-o", str(model), "--json"])
    assert code == 0, err
    assert read_artifact(model).model.metadata["dataset"]["synthetic_correlation"] == 0.2
    # a model file evaluated on `--dataset synthetic` uses the recorded correlation: at the
    # default p = 0.5 the feature spec (its label sources) would not match and this would fail
    code, out, err = _invoke(["evaluate", str(model), "--dataset", "synthetic", "--json"])
    assert code == 0, err
    for task, metrics in json.loads(out)["tasks"].items():
        assert metrics["auc"] == pytest.approx(summary["test"][task]["auc"], abs=1e-4)


def test_train_without_synthetic_correlation_records_nothing_new(cli_run, tmp_path) -> None:
    # named contract: a run that does not use the option compiles to the same manifest as before
    # it existed (no new key in the artifact's dataset record, so no byte counts change)
    from mome_edge.artifact.reader import read_artifact

    model = tmp_path / "m.mome"
    code, out, err = _invoke(["compile", str(cli_run["run_dir"]), "-o", str(model), "--json"])
    assert code == 0, err
    assert "synthetic_correlation" not in read_artifact(model).model.metadata["dataset"]
    assert json.loads(cli_run["stdout"])["dataset"] == "synthetic"


# --- evaluate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["test", "validation"])
def test_evaluate_json(split: str, cli_run) -> None:
    argv = ["evaluate", str(cli_run["run_dir"]), "--json"] + ([] if split == "test" else ["--split", split])
    code, out, err = _invoke(argv)
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {"split", "tasks"}
    assert report["split"] == split
    assert set(report["tasks"]) == {"task1", "task2"}
    summary = json.loads((cli_run["run_dir"] / SUMMARY_FILE).read_text())
    for task, metrics in report["tasks"].items():
        assert set(metrics) == {"auc", "logloss"}
        assert 0.0 <= metrics["auc"] <= 1.0 and metrics["logloss"] > 0
        # the same model on the same rows as the trainer's final report
        assert metrics["auc"] == pytest.approx(summary[split][task]["auc"], rel=1e-9)
        assert metrics["logloss"] == pytest.approx(summary[split][task]["logloss"], rel=1e-6)


def test_evaluate_table_output(cli_run) -> None:
    code, out, err = _invoke(["evaluate", str(cli_run["run_dir"])])
    assert code == 0, err
    assert "task1 AUC" in out and "400 rows" in out


def test_evaluate_writes_predictions_csv(cli_run, tmp_path) -> None:
    path = tmp_path / "predictions.csv"
    code, out, err = _invoke(["evaluate", str(cli_run["run_dir"]), "--json", "--predictions", str(path)])
    assert code == 0, err
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["task1", "task2"]
    test = load_dataset("synthetic", synthetic_rows=SYNTHETIC_ROWS).test
    assert len(frame) == len(test) == 400
    assert ((frame.to_numpy() >= 0) & (frame.to_numpy() <= 1)).all()
    report = json.loads(out)
    for i, task in enumerate(["task1", "task2"]):
        auc = roc_auc_score(test.labels[:, i], frame[task].to_numpy(np.float64))
        assert auc == pytest.approx(report["tasks"][task]["auc"], abs=CSV_AUC_TOL)


# --- user errors: one line on stderr, exit 2 ---------------------------------------------------


def _assert_one_error_line(code: int, out: str, err: str) -> None:
    assert code == USAGE_EXIT, (code, err)
    assert err.startswith("error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert out == ""


TRAIN_ERRORS = {
    "unknown-model": (["--model", "nope", "--dataset", "synthetic"], "model='nope'"),
    "unknown-dataset": (["--model", "mome", "--dataset", "nope"], "unknown data set 'nope'"),
    "dataset-and-spec": (["--model", "mome", "--dataset", "synthetic", "--spec", "{tmp}/spec.toml"], "exactly one of --dataset"),
    "neither-dataset-nor-spec": (["--model", "mome"], "exactly one of --dataset"),
    "missing-spec-file": (["--model", "mome", "--spec", "{tmp}/missing.toml"], "does not exist"),
    "bad-hidden": (["--model", "mome", "--dataset", "synthetic", "--hidden", "1,x"], "--hidden '1,x'"),
    "epochs-zero": (["--model", "mome", "--dataset", "synthetic", "--epochs", "0"], "epochs=0"),
    "epochs-not-a-number": (["--model", "mome", "--dataset", "synthetic", "--epochs", "abc"], "--epochs"),
    "stop-after-epoch-zero": (["--model", "mome", "--dataset", "synthetic", "--stop-after-epoch", "0"], "--stop-after-epoch 0 must be >= 1"),
    "synthetic-correlation-above-1": (["--model", "mome", "--dataset", "synthetic", "--synthetic-correlation", "1.5"],
                                      "--synthetic-correlation=1.5 is not a task correlation; pass a number in [-1, 1]"),
    "synthetic-correlation-nan": (["--model", "mome", "--dataset", "synthetic", "--synthetic-correlation", "nan"],
                                  "--synthetic-correlation=nan is not a task correlation"),
    "synthetic-correlation-not-a-number": (["--model", "mome", "--dataset", "synthetic", "--synthetic-correlation", "low"],
                                           "--synthetic-correlation"),
    "synthetic-correlation-other-dataset": (["--model", "mome", "--dataset", "census-income", "--synthetic-correlation", "0.2"],
                                            "applies only to the 'synthetic' data set"),
}


@pytest.mark.parametrize("case", list(TRAIN_ERRORS), ids=list(TRAIN_ERRORS))
def test_train_user_errors(case: str, tmp_path) -> None:
    args, message = TRAIN_ERRORS[case]
    (tmp_path / "spec.toml").write_text("[data]\npath = 'x.csv'\n")
    out_dir = tmp_path / "run"
    argv = ["train", *[a.replace("{tmp}", str(tmp_path)) for a in args], "--synthetic-rows", "500", "--out", str(out_dir)]
    code, out, err = _invoke(argv)
    _assert_one_error_line(code, out, err)
    assert message in err
    assert not out_dir.exists()  # a refused command leaves nothing behind


def test_evaluate_missing_folder(tmp_path) -> None:
    code, out, err = _invoke(["evaluate", str(tmp_path / "missing"), "--json"])
    _assert_one_error_line(code, out, err)
    assert "is not a run folder" in err


def test_evaluate_unknown_split(cli_run) -> None:
    code, out, err = _invoke(["evaluate", str(cli_run["run_dir"]), "--split", "nope", "--json"])
    _assert_one_error_line(code, out, err)
    assert "--split 'nope' is unknown" in err


def test_train_into_an_existing_run_is_refused_and_changes_nothing(cli_run, tmp_path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(cli_run["run_dir"], run_dir)
    before = _snapshot(run_dir)
    code, out, err = _invoke(["train", *TRAIN_ARGS, "--out", str(run_dir)])
    _assert_one_error_line(code, out, err)
    assert "already holds a run" in err and "--resume" in err
    assert _snapshot(run_dir) == before
