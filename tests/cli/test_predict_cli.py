"""`mome-edge predict`: CSV out, one column per task, rows in input order; errors as one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mome_edge.artifact.reader import read_artifact
from mome_edge.runtime.predict import reference_predict
from test_compile_cli import assert_one_error_line, invoke

CSV_PROB_TOLERANCE = 1e-6  # probabilities are written with 7 significant digits


def test_predict_a_dataset_split(tiny_artifact, tiny_splits, tmp_path: Path) -> None:
    path, out = tiny_artifact("mome", "fp32"), tmp_path / "preds.csv"
    code, stdout, err = invoke(["predict", str(path), "--dataset", "synthetic", "--split", "test", "--output", str(out)])
    assert code == 0, err
    assert stdout == ""
    lines = out.read_text(encoding="utf-8").splitlines()
    model = read_artifact(path).model
    assert lines[0] == ",".join(model.tasks)
    probs = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    expected = reference_predict(model, tiny_splits.test.categorical, tiny_splits.test.numerical)
    np.testing.assert_allclose(probs, expected, atol=CSV_PROB_TOLERANCE)


def test_predict_raw_rows(tiny_artifact, tmp_path: Path) -> None:
    model = read_artifact(tiny_artifact("mome", "int8")).model
    names = [*model.spec.field_names, *model.spec.numerical_names]
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n" + ",".join("" for _ in names) + "\n", encoding="utf-8")
    out = tmp_path / "preds.csv"
    code, _, err = invoke(["predict", str(tiny_artifact("mome", "int8")), "--input", str(rows), "-o", str(out)])
    assert code == 0, err
    assert np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2).shape == (2, len(model.tasks))


def test_predict_errors(tiny_artifact, tmp_path: Path) -> None:
    path, out = str(tiny_artifact("mome", "fp32")), str(tmp_path / "p.csv")
    rows = tmp_path / "rows.csv"
    rows.write_text("bucket1\n3\n", encoding="utf-8")
    assert_one_error_line(*invoke(["predict", path, "--output", out]), "exactly one of --dataset NAME or --input ROWS.csv")
    assert_one_error_line(*invoke(["predict", path, "--input", str(rows), "--dataset", "synthetic", "--output", out]), "exactly one of")
    assert_one_error_line(*invoke(["predict", path, "--input", str(rows), "--output", out]), "lack the feature columns")
    assert_one_error_line(*invoke(["predict", path, "--dataset", "synthetic", "--split", "dev", "--output", out]), "--split 'dev' is unknown")
    assert_one_error_line(*invoke(["predict", path, "--input", str(tmp_path / "none.csv"), "--output", out]), "does not exist")
    assert not Path(out).exists()


def _rows_csv(model, tmp_path: Path) -> Path:
    names = [*model.spec.field_names, *model.spec.numerical_names]
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n" + ",".join("" for _ in names) + "\n", encoding="utf-8")
    return rows


def test_predict_to_stdout_with_dash_and_as_json(tiny_artifact, tmp_path: Path) -> None:
    """`-o -` prints exactly the CSV a file would hold; `--json` prints one object with the probabilities."""
    import json

    path = tiny_artifact("mome", "fp32")
    model = read_artifact(path).model
    rows = _rows_csv(model, tmp_path)
    out = tmp_path / "preds.csv"
    assert invoke(["predict", str(path), "--input", str(rows), "-o", str(out)])[0] == 0
    code, stdout, err = invoke(["predict", str(path), "--input", str(rows), "-o", "-"])
    assert code == 0, err
    assert stdout == out.read_text(encoding="utf-8")
    code, stdout, err = invoke(["predict", str(path), "--input", str(rows), "--json"])
    assert code == 0, err
    result = json.loads(stdout)
    assert result["rows"] == 2 and result["tasks"] == list(model.tasks)
    written = np.loadtxt(out, delimiter=",", skiprows=1, ndmin=2)
    for t, task in enumerate(model.tasks):
        np.testing.assert_allclose(result["probabilities"][task], written[:, t], atol=CSV_PROB_TOLERANCE)
    code, stdout, err = invoke(["predict", str(path), "--input", str(rows), "-o", str(tmp_path / "b.csv"), "--json"])
    assert code == 0 and json.loads(stdout)["output"] == str(tmp_path / "b.csv")


def test_predict_output_errors(tiny_artifact, tmp_path: Path) -> None:
    path = tiny_artifact("mome", "fp32")
    rows = _rows_csv(read_artifact(path).model, tmp_path)
    assert_one_error_line(*invoke(["predict", str(path), "--input", str(rows)]), "give --output FILE.csv (or -o - for standard output, or --json)")
    assert_one_error_line(*invoke(["predict", str(path), "--input", str(rows), "-o", "-", "--json"]), "both write to standard output")
