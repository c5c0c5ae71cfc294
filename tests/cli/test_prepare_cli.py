"""`mome-edge prepare`: summary on stdout, progress and errors on stderr, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mome_edge.cli.main import main
from mome_edge.data import write_aliexpress_csv
from mome_edge.data.prepared import PreparedDataset

SPEC = """
[data]
path = "rows.csv"
[features]
categorical = ["color"]
numerical = ["size"]
[tasks.liked]
column = "liked"
positive = ["yes"]
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("aliexpress")
    write_aliexpress_csv(folder / "train.csv.gz", 3_000, seed=1)
    write_aliexpress_csv(folder / "test.csv", 500, seed=2)
    return folder


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spec")
    rows = ["color,size,liked"] + [f"{['red', 'blue', 'green'][i % 3]},{i % 17},{'yes' if i % 4 == 0 else 'no'}" for i in range(400)]
    (folder / "rows.csv").write_text("\n".join(rows) + "\n")
    (folder / "spec.toml").write_text(SPEC)
    return folder / "spec.toml"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_prepare_aliexpress_json(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    code, stdout, _ = run(
        ["prepare", "--dataset", "aliexpress", "--data-dir", str(data_dir), "--out", str(out), "--shard-rows", "1000", "--json", "-q"],
        capsys,
    )
    assert code == 0
    summary = json.loads(stdout)
    assert summary["rows"]["test"] == 500 and summary["rows"]["train"] + summary["rows"]["validation"] == 3_000
    assert summary["shards"]["train"] == -(-summary["rows"]["train"] // 1000)
    assert summary["vocab_sizes"]["categorical_10"] == 3 and summary["rows_per_second"] > 0
    assert PreparedDataset(out).rows("test") == 500


def test_prepare_spec_prints_a_summary_and_progress(spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = run(["prepare", "--spec", str(spec_path), "--out", str(tmp_path / "p"), "--max-vocab", "2"], capsys)
    assert code == 0
    assert "train" in stdout and "validation" in stdout and "rows/s" in stdout
    assert "encoding rows.csv" in stderr  # progress goes to stderr
    assert PreparedDataset(tmp_path / "p").spec.vocab_sizes == (3,)  # 2 kept + OOV


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "aliexpress", "--spec", "x.toml"], "give exactly one of --dataset aliexpress or --spec"),
        ([], "give exactly one of --dataset aliexpress or --spec"),
        (["--dataset", "census-income"], "cannot be prepared for streaming"),
        (["--dataset", "aliexpress", "--data-dir", "/nonexistent/folder"], "does not exist"),
        (["--spec", "/nonexistent/spec.toml"], "does not exist; check the --spec path"),
        (["--dataset", "aliexpress", "--shard-rows", "0"], "shard_rows=0 must be a positive integer"),
        (["--dataset", "aliexpress", "--max-vocab", "0"], "max_vocab=0 must be a positive integer"),
    ],
    ids=["both", "neither", "unsupported", "no-data-dir", "no-spec", "shard-rows", "max-vocab"],
)
def test_errors_exit_2_with_one_line(
    args: list[str], message: str, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--data-dir" not in args and "aliexpress" in args:
        args = [*args, "--data-dir", str(data_dir)]
    code, stdout, stderr = run(["prepare", *args, "--out", str(tmp_path / "p"), "-q"], capsys)
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_existing_output_needs_overwrite(spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["prepare", "--spec", str(spec_path), "--out", str(tmp_path / "p"), "-q", "--json"]
    assert run(argv, capsys)[0] == 0
    code, _, stderr = run(argv, capsys)
    assert code == 2 and stderr.startswith("error: ") and "--overwrite" in stderr and len(stderr.strip().splitlines()) == 1
    assert run([*argv, "--overwrite"], capsys)[0] == 0


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run(["prepare", "--help"], capsys)
    assert code == 0
    for flag in ("--dataset", "--spec", "--out", "--shard-rows", "--max-vocab", "--seed", "--overwrite", "--json"):
        assert flag in stdout


def test_train_nproc_on_too_few_row_groups_fails_before_launching(spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 400 rows in one shard = one train row group: a second rank would get no rows. The check
    # runs in the launching process, so the user sees one line instead of torchrun's report.
    prepared = tmp_path / "p"
    assert run(["prepare", "--spec", str(spec_path), "--out", str(prepared), "-q", "--json"], capsys)[0] == 0
    run_dir = tmp_path / "run"
    code, stdout, stderr = run(
        ["train", "--prepared", str(prepared), "--model", "mome", "--out", str(run_dir), "--nproc", "2", "-q"], capsys
    )
    assert code == 2 and stdout == "" and not run_dir.exists()
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "fewer than world_size 2" in lines[0] and "--shard-rows" in lines[0]
