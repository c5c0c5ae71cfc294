"""Every user-error path of every command: exit code 2, one `error:` line naming the problem
and the fix, no traceback, and nothing already on disk overwritten or left half-written.

Each case runs `mome-edge ...` in process inside one workspace folder holding a finished
run, artifacts, an ONNX export and CSV rows; the workspace's bytes are compared before and
after every case. Tests run as root in CI, where chmod 000 does not stop reads: that case
detects it and skips with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cli_helpers import invoke, snapshot
from mome_edge.cli.main import app

USAGE_EXIT = 2
COMMANDS = sorted(c.name for c in app.registered_commands)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_run, tiny_artifact) -> dict[str, Path]:
    """The workspace: every file a case may name, in one folder."""
    from mome_edge.exporters.onnx_export import export_artifact

    root = tmp_path_factory.mktemp("cli-errors") / "ws"
    root.mkdir()
    shutil.copytree(tiny_run("mome"), root / "run")
    shutil.copy(tiny_artifact("mome", "fp32"), root / "model.mome")
    shutil.copy(tiny_artifact("mmoe", "fp32"), root / "dense.mome")
    export_artifact(root / "model.mome", root / "model.onnx", simplify=False, validate=False)
    (root / "rows.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (root / "long-row.csv").write_text("a,b\n1,2,3\n", encoding="utf-8")
    (root / "model.csv").write_bytes((root / "rows.csv").read_bytes())  # a CSV where a model is expected
    (root / "fake.mome").write_bytes((root / "rows.csv").read_bytes())  # a CSV named like an artifact
    (root / "fake.onnx").write_bytes(b"\x08\x07garbage that is not a protobuf model")
    (root / "blocker").write_text("a regular file: nothing can be created under it\n", encoding="utf-8")
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "notes.txt").write_text("hello\n", encoding="utf-8")
    (root / "bad.toml").write_text("this is = = not toml\n", encoding="utf-8")
    (root / "wrong.toml").write_text('[data]\npath = "rows.csv"\n[features]\ncategorical = ["a"]\n', encoding="utf-8")
    (root / "spec").mkdir()
    (root / "spec" / "rows.csv").write_text("color,size,liked\n" + "".join(f"red,{i},yes\nblue,{i},no\n" for i in range(50)), encoding="utf-8")
    (root / "spec" / "spec.toml").write_text(
        '[data]\npath = "rows.csv"\n[features]\ncategorical = ["color"]\nnumerical = ["size"]\n[tasks.liked]\ncolumn = "liked"\npositive = ["yes"]\n',
        encoding="utf-8",
    )
    (root / "prepared").mkdir()
    (root / "prepared" / "prepared.json").write_text('{"not": "a prepared data set"}\n', encoding="utf-8")
    pristine = root.parent / "pristine"
    shutil.copytree(root, pristine)
    return {"root": root, "pristine": pristine}


@pytest.fixture
def workspace(ws) -> Path:
    """The workspace, restored from its pristine copy after a case that changed it (so that one
    failure does not cascade into the next cases)."""
    yield ws["root"]
    if snapshot(ws["root"]) != snapshot(ws["pristine"]):
        shutil.rmtree(ws["root"])
        shutil.copytree(ws["pristine"], ws["root"])


def _argv(template: list[str], root: Path) -> list[str]:
    names = {
        "run": "run", "mome": "model.mome", "dense": "dense.mome", "onnx": "model.onnx", "csv": "rows.csv",
        "long_csv": "long-row.csv", "model_csv": "model.csv", "fake_mome": "fake.mome", "fake_onnx": "fake.onnx",
        "blocked": "blocker/out", "blocked_mome": "blocker/out.mome", "blocked_csv": "blocker/out.csv",
        "blocked_png": "blocker/out.png", "blocked_onnx": "blocker/out.onnx", "missing": "missing/nothing.mome",
        "missing_csv": "missing.csv", "missing_toml": "missing.toml", "folder": "not-a-run", "bad_toml": "bad.toml",
        "wrong_toml": "wrong.toml", "prepared": "prepared", "out_csv": "out.csv", "out_mome": "fresh.mome",
        "out_onnx": "out.onnx", "new_run": "new-run", "spec": "spec/spec.toml",
    }

    def path(arg: str) -> str:
        if not arg.startswith("{"):
            return arg
        key, _, rest = arg[1:].partition("}")
        return str(root / names[key] / rest.lstrip("/")) if rest else str(root / names[key])

    return [path(a) for a in template]


SYN = ["--dataset", "synthetic", "--synthetic-rows", "600"]
TRAIN = ["train", "--model", "mome", "--out", "{new_run}"]

# (id, argv template, fragments the one error line must contain: the problem, then the fix)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    # --- train -------------------------------------------------------------------------------------------
    ("train-no-source", TRAIN, ("exactly one of --dataset",)),
    ("train-two-sources", [*TRAIN, *SYN, "--spec", "{bad_toml}"], ("exactly one of",)),
    ("train-missing-spec", [*TRAIN, "--spec", "{missing_toml}"], ("does not exist",)),
    ("train-spec-not-toml", [*TRAIN, "--spec", "{bad_toml}"], ("not valid TOML",)),
    ("train-spec-is-a-csv", [*TRAIN, "--spec", "{csv}"], ("TOML",)),
    ("train-spec-incomplete", [*TRAIN, "--spec", "{wrong_toml}"], ("tasks",)),
    ("train-prepared-not-prepared", [*TRAIN, "--prepared", "{folder}"], ("prepared.json",)),
    ("train-prepared-bad-json", [*TRAIN, "--prepared", "{prepared}"], ("prepared",)),
    ("train-prepared-is-a-file", [*TRAIN, "--prepared", "{csv}"], ("prepared",)),
    ("train-unknown-model", ["train", "--model", "transformer", "--out", "{new_run}", *SYN], ("transformer",)),
    ("train-unknown-dataset", [*TRAIN, "--dataset", "imagenet"], ("imagenet",)),
    ("train-zero-experts", [*TRAIN, *SYN, "--experts", "0"], ("experts",)),
    ("train-bad-hidden", [*TRAIN, *SYN, "--hidden", "16,abc"], ("--hidden",)),
    ("train-zero-hidden", [*TRAIN, *SYN, "--hidden", "0"], ("--hidden",)),
    ("train-negative-epochs", [*TRAIN, *SYN, "--epochs", "-1"], ("epochs",)),
    ("train-epochs-not-int", [*TRAIN, *SYN, "--epochs", "many"], ("--epochs",)),
    ("train-negative-lr", [*TRAIN, *SYN, "--lr", "-0.1"], ("lr",)),
    ("train-nan-lr", [*TRAIN, *SYN, "--lr", "nan"], ("lr",)),
    ("train-zero-batch", [*TRAIN, *SYN, "--batch-size", "0"], ("batch",)),
    ("train-bad-norm", [*TRAIN, *SYN, "--norm", "layer"], ("norm",)),
    ("train-bad-threshold", [*TRAIN, *SYN, "--mask-threshold", "2"], ("threshold",)),
    ("train-phases-exceed-epochs", [*TRAIN, *SYN, "--epochs", "2", "--neuron-epochs", "3"], ("epochs",)),
    ("train-zero-threads", [*TRAIN, *SYN, "--threads", "0"], ("--threads",)),
    ("train-zero-nproc", [*TRAIN, *SYN, "--nproc", "0"], ("--nproc",)),
    ("train-negative-synthetic-rows", [*TRAIN, "--dataset", "synthetic", "--synthetic-rows", "-5"], ("rows",)),
    ("train-synthetic-correlation-out-of-range", [*TRAIN, *SYN, "--synthetic-correlation", "-2"], ("--synthetic-correlation", "[-1, 1]")),
    ("train-synthetic-correlation-not-synthetic", [*TRAIN, "--spec", "{spec}", "--synthetic-correlation", "0.2"], ("only to the 'synthetic'",)),
    ("train-out-under-a-file", ["train", "--model", "mmoe", "--out", "{blocked}", *SYN, "--epochs", "1"], ("blocker",)),
    ("train-out-is-a-file", ["train", "--model", "mmoe", "--out", "{csv}", *SYN, "--epochs", "1"], ("rows.csv",)),
    ("train-into-a-finished-run", ["train", "--model", "mmoe", "--out", "{run}", *SYN, "--epochs", "1"], ("--resume",)),
    ("train-unknown-flag", [*TRAIN, *SYN, "--learning-rate", "1"], ("--learning-rate",)),
    # --- evaluate ----------------------------------------------------------------------------------------
    ("evaluate-missing", ["evaluate", "{missing}"], ("does not exist",)),
    ("evaluate-not-a-run", ["evaluate", "{folder}"], ("not a run folder",)),
    ("evaluate-csv-as-target", ["evaluate", "{csv}"], ("neither a run folder nor a model file",)),
    ("evaluate-model-without-dataset", ["evaluate", "{mome}"], ("--dataset",)),
    ("evaluate-run-with-dataset", ["evaluate", "{run}", "--dataset", "synthetic"], ("--dataset applies to model files only",)),
    ("evaluate-bad-split", ["evaluate", "{run}", "--split", "dev"], ("--split 'dev'",)),
    ("evaluate-bad-runtime", ["evaluate", "{mome}", "--dataset", "synthetic", "--runtime", "tpu"], ("tpu",)),
    ("evaluate-corrupt-model", ["evaluate", "{fake_mome}", "--dataset", "synthetic"], ("not a mome-edge artifact",)),
    ("evaluate-corrupt-onnx", ["evaluate", "{fake_onnx}", "--dataset", "synthetic"], ("fake.onnx",)),
    ("evaluate-other-dataset", ["evaluate", "{mome}", "--dataset", "census-income", "--data-dir", "{folder}"], ("census",)),
    ("evaluate-predictions-under-a-file", ["evaluate", "{run}", "--predictions", "{blocked_csv}"], ("blocker",)),
    ("evaluate-predictions-over-the-model", ["evaluate", "{mome}", "--dataset", "synthetic", "--predictions", "{mome}"], ("model.mome",)),
    # --- demo --------------------------------------------------------------------------------------------
    ("demo-out-under-a-file", ["demo", "--synthetic", "--epochs", "1", "--out", "{blocked}"], ("blocker",)),
    ("demo-zero-epochs", ["demo", "--synthetic", "--epochs", "0"], ("epochs",)),
    ("demo-out-is-a-file", ["demo", "--synthetic", "--epochs", "1", "--out", "{csv}"], ("rows.csv",)),
    # --- compile -----------------------------------------------------------------------------------------
    ("compile-missing-run", ["compile", "{missing}", "-o", "{out_mome}"], ("does not exist",)),
    ("compile-not-a-run", ["compile", "{folder}", "-o", "{out_mome}"], ("not a run folder",)),
    ("compile-artifact-as-run", ["compile", "{mome}", "-o", "{out_mome}"], ("model.mome",)),
    ("compile-bad-weights", ["compile", "{run}", "-o", "{out_mome}", "--weights", "fp8"], ("--weights 'fp8' is unknown",)),
    ("compile-output-is-the-run", ["compile", "{run}", "-o", "{run}"], ("RUN_DIR",)),
    ("compile-output-is-the-run-model", ["compile", "{run}", "-o", "{run}/model.safetensors"], ("model.safetensors",)),
    ("compile-output-in-checkpoints", ["compile", "{run}", "-o", "{run}/checkpoints/x.mome"], ("checkpoints",)),
    ("compile-output-under-a-file", ["compile", "{run}", "-o", "{blocked_mome}"], ("blocker",)),
    ("compile-output-is-a-folder", ["compile", "{run}", "-o", "{folder}"], ("is a folder",)),
    # --- inspect -----------------------------------------------------------------------------------------
    ("inspect-missing", ["inspect", "{missing}"], ("does not exist",)),
    ("inspect-csv-as-model", ["inspect", "{model_csv}"], ("not a mome-edge artifact",)),
    ("inspect-folder", ["inspect", "{folder}"], ("is a folder",)),
    ("inspect-onnx", ["inspect", "{onnx}"], ("model.onnx",)),
    ("inspect-plot-dense", ["inspect", "{dense}", "--plot", "{out_csv}"], ("without expert masks",)),
    ("inspect-plot-under-a-file", ["inspect", "{mome}", "--plot", "{blocked_png}"], ("blocker",)),
    ("inspect-plot-over-the-model", ["inspect", "{mome}", "--plot", "{mome}"], ("model.mome",)),
    # --- predict -----------------------------------------------------------------------------------------
    ("predict-missing-model", ["predict", "{missing}", "--input", "{csv}", "-o", "{out_csv}"], ("does not exist",)),
    ("predict-csv-as-model", ["predict", "{fake_mome}", "--input", "{csv}", "-o", "{out_csv}"], ("not a mome-edge artifact",)),
    ("predict-run-as-model", ["predict", "{run}", "--input", "{csv}", "-o", "{out_csv}"], ("run",)),
    ("predict-corrupt-onnx", ["predict", "{fake_onnx}", "--input", "{csv}", "-o", "{out_csv}"], ("fake.onnx",)),
    ("predict-no-rows", ["predict", "{mome}", "-o", "{out_csv}"], ("exactly one of --dataset NAME or --input ROWS.csv",)),
    ("predict-two-sources", ["predict", "{mome}", "--input", "{csv}", "--dataset", "synthetic", "-o", "{out_csv}"], ("exactly one of",)),
    ("predict-missing-input", ["predict", "{mome}", "--input", "{missing_csv}", "-o", "{out_csv}"], ("does not exist",)),
    ("predict-model-as-input", ["predict", "{mome}", "--input", "{dense}", "-o", "{out_csv}"], ("not UTF-8",)),
    ("predict-input-folder", ["predict", "{mome}", "--input", "{folder}", "-o", "{out_csv}"], ("is a folder",)),
    ("predict-wrong-columns", ["predict", "{mome}", "--input", "{csv}", "-o", "{out_csv}"], ("lack the feature columns",)),
    ("predict-long-row", ["predict", "{mome}", "--input", "{long_csv}", "-o", "{out_csv}"], ("line 2 has 3 fields",)),
    ("predict-bad-split", ["predict", "{mome}", "--dataset", "synthetic", "--split", "dev", "-o", "{out_csv}"], ("--split 'dev'",)),
    ("predict-bad-runtime", ["predict", "{mome}", "--input", "{csv}", "--runtime", "tpu", "-o", "{out_csv}"], ("tpu",)),
    ("predict-output-is-the-model", ["predict", "{mome}", "--input", "{csv}", "-o", "{mome}"], ("MODEL",)),
    ("predict-output-is-the-input", ["predict", "{mome}", "--input", "{csv}", "-o", "{csv}"], ("--input",)),
    ("predict-output-is-the-onnx", ["predict", "{onnx}", "--input", "{csv}", "-o", "{onnx}"], ("MODEL",)),
    ("predict-output-under-a-file", ["predict", "{mome}", "--dataset", "synthetic", "-o", "{blocked_csv}"], ("blocker",)),
    ("predict-output-is-a-folder", ["predict", "{mome}", "--dataset", "synthetic", "-o", "{folder}"], ("is a folder",)),
    # --- prepare -----------------------------------------------------------------------------------------
    ("prepare-no-source", ["prepare", "--out", "{new_run}"], ("exactly one of",)),
    ("prepare-two-sources", ["prepare", "--out", "{new_run}", "--dataset", "aliexpress", "--spec", "{bad_toml}"], ("exactly one of",)),
    ("prepare-missing-spec", ["prepare", "--out", "{new_run}", "--spec", "{missing_toml}"], ("does not exist",)),
    ("prepare-spec-not-toml", ["prepare", "--out", "{new_run}", "--spec", "{bad_toml}"], ("not valid TOML",)),
    ("prepare-unknown-dataset", ["prepare", "--out", "{new_run}", "--dataset", "census-income"], ("census-income",)),
    ("prepare-aliexpress-no-data", ["prepare", "--out", "{new_run}", "--dataset", "aliexpress", "--data-dir", "{folder}"], ("aliexpress",)),
    ("prepare-zero-shard-rows", ["prepare", "--out", "{new_run}", "--spec", "{spec}", "--shard-rows", "0"], ("shard",)),
    ("prepare-negative-max-vocab", ["prepare", "--out", "{new_run}", "--spec", "{spec}", "--max-vocab", "-1"], ("vocab",)),
    ("prepare-out-under-a-file", ["prepare", "--out", "{blocked}", "--spec", "{spec}"], ("blocker",)),
    ("prepare-spec-incomplete", ["prepare", "--out", "{new_run}", "--spec", "{wrong_toml}"], ("tasks",)),
    ("prepare-out-is-a-file", ["prepare", "--out", "{csv}", "--spec", "{spec}"], ("rows.csv",)),
    ("prepare-out-existing", ["prepare", "--out", "{prepared}", "--spec", "{spec}"], ("prepared",)),
    # --- export ------------------------------------------------------------------------------------------
    ("export-missing", ["export", "{missing}", "-o", "{out_onnx}"], ("does not exist",)),
    ("export-csv-as-model", ["export", "{model_csv}", "-o", "{out_csv}"], ("not a .mome artifact",)),
    ("export-fake-mome", ["export", "{fake_mome}", "-o", "{out_onnx}"], ("not a mome-edge artifact",)),
    ("export-bad-experts", ["export", "{mome}", "-o", "{out_onnx}", "--experts", "sparse"], ("--experts 'sparse'",)),
    ("export-bad-opset", ["export", "{mome}", "-o", "{out_onnx}", "--opset", "5"], ("opset",)),
    ("export-output-is-the-model", ["export", "{mome}", "-o", "{mome}", "--no-validate", "--no-simplify"], ("model.mome",)),
    ("export-output-is-the-onnx-input", ["export", "{onnx}", "-o", "{onnx}"], ("not a .mome artifact",)),
    ("export-output-under-a-file", ["export", "{mome}", "-o", "{blocked_onnx}", "--no-validate", "--no-simplify"], ("blocker",)),
    ("export-output-is-a-folder", ["export", "{mome}", "-o", "{folder}", "--no-validate", "--no-simplify"], ("not-a-run",)),
    ("export-output-onnx-folder", ["export", "{mome}", "-o", "{onnx}/x.onnx", "--no-validate", "--no-simplify"], ("model.onnx",)),
    ("export-output-is-the-existing-onnx-of-another-model", ["export", "{fake_mome}", "-o", "{onnx}"], ("not a mome-edge artifact",)),
    # --- bench -------------------------------------------------------------------------------------------
    ("bench-missing", ["bench", "{missing}", "--runs", "1", "--warmup", "0"], ("does not exist",)),
    ("bench-csv-as-model", ["bench", "{model_csv}", "--runs", "1", "--warmup", "0"], ("model.csv",)),
    ("bench-corrupt-onnx", ["bench", "{fake_onnx}", "--runs", "1", "--warmup", "0", "--batch", "1", "--threads", "1"], ("fake.onnx",)),
    ("bench-corrupt-mome", ["bench", "{fake_mome}", "--runs", "1", "--warmup", "0", "--batch", "1", "--threads", "1"], ("fake.mome",)),
    ("bench-bad-batch", ["bench", "{mome}", "--batch", "0"], ("--batch",)),
    ("bench-batch-not-int", ["bench", "{mome}", "--batch", "one"], ("--batch",)),
    ("bench-zero-threads", ["bench", "{mome}", "--threads", "0"], ("--threads",)),
    ("bench-zero-runs", ["bench", "{mome}", "--runs", "0"], ("runs",)),
    ("bench-negative-warmup", ["bench", "{mome}", "--warmup", "-1"], ("warmup",)),
    ("bench-bad-experts", ["bench", "{mome}", "--experts", "lazy"], ("lazy",)),
    ("bench-negative-budget", ["bench", "{mome}", "--memory-budget-mb", "-1"], ("budget",)),
    ("bench-plot-under-a-file", ["bench", "{mome}", "--runs", "1", "--warmup", "0", "--batch", "1", "--threads", "1", "--plot", "{blocked_png}"], ("blocker",)),
]


def test_every_command_has_error_cases() -> None:
    assert {argv[0] for _, argv, _ in CASES} == set(COMMANDS)


@pytest.mark.parametrize(("argv", "fragments"), [pytest.param(a, f, id=i) for i, a, f in CASES])
def test_user_error_is_one_line_exit_2_and_touches_nothing(argv: list[str], fragments: tuple[str, ...], workspace: Path) -> None:
    root = workspace
    before = snapshot(root)
    code, out, err = invoke(_argv(argv, root))
    assert "Traceback" not in err, err
    assert code == USAGE_EXIT, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert snapshot(root) == before, "the command changed files on disk"


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_is_one_line_exit_2(command: str) -> None:
    code, out, err = invoke([command, "--no-such-flag"])
    assert (code, out) == (USAGE_EXIT, "")
    assert err.startswith("error: ") and err.count("\n") == 1 and "--no-such-flag" in err, err


@pytest.mark.parametrize("command", ["inspect", "predict", "export", "bench", "evaluate"])
def test_an_unreadable_model_is_one_line_exit_2(command: str, ws, tmp_path: Path) -> None:
    locked = tmp_path / "locked.mome"
    shutil.copy(ws["root"] / "model.mome", locked)
    locked.chmod(0)
    try:
        with locked.open("rb"):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): chmod 000 does not stop reads, so no unreadable file can be made")
    except PermissionError:
        pass
    argv = {
        "inspect": ["inspect", str(locked)],
        "predict": ["predict", str(locked), "--dataset", "synthetic", "-o", str(tmp_path / "p.csv")],
        "export": ["export", str(locked), "-o", str(tmp_path / "m.onnx")],
        "bench": ["bench", str(locked), "--runs", "1", "--warmup", "0", "--batch", "1", "--threads", "1"],
        "evaluate": ["evaluate", str(locked), "--dataset", "synthetic"],
    }[command]
    code, out, err = invoke(argv)
    assert code == USAGE_EXIT and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "permission" in err.lower() or "cannot read" in err, err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "m.onnx").exists()


def test_a_failed_overwrite_keeps_the_old_output(ws, tmp_path: Path) -> None:
    # A run that fails half-way (a bad row late in the file) must leave the previous output
    # exactly as it was, and no temp file behind.
    out = tmp_path / "preds.csv"
    out.write_text("old predictions\n", encoding="utf-8")
    from mome_edge.artifact.reader import read_artifact

    spec = read_artifact(ws["root"] / "model.mome").model.spec
    names = [*spec.field_names, *spec.numerical_names]
    good = ",".join("1" for _ in names)
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names) + "\n" + (good + "\n") * 70_000 + good + ",extra\n", encoding="utf-8")
    code, _, err = invoke(["predict", str(ws["root"] / "model.mome"), "--input", str(rows), "-o", str(out)])
    assert code == USAGE_EXIT and "line 70002 has" in err, err
    assert out.read_text(encoding="utf-8") == "old predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv", "rows.csv"]


def test_unwritable_folder_when_not_root(tmp_path: Path, ws) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        probe = folder / "probe"
        probe.write_text("x")
        probe.unlink()
        pytest.skip("running as root: a read-only folder is still writable (the cases under a regular file cover this)")
    except PermissionError:
        pass
    finally:
        os.chmod(folder, 0o700)
    folder.chmod(0o500)
    try:
        code, _, err = invoke(["predict", str(ws["root"] / "model.mome"), "--dataset", "synthetic", "-o", str(folder / "p.csv")])
    finally:
        folder.chmod(0o700)
    assert code == USAGE_EXIT and "cannot write to folder" in err, err
