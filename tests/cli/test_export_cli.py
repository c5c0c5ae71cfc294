"""`mome-edge export` and `mome-edge bench`, in process: JSON outputs, files written, and every
user error as one `error:` line with exit code 2 and no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest

from mome_edge.artifact.writer import write_artifact
from mome_edge.exporters.onnx_export import PARITY_ATOL_FP32
from cli_helpers import invoke as _invoke

sys.path.insert(0, str(Path(__file__).parents[1]))
from compiled_factory import make_compiled  # noqa: E402

USAGE_EXIT = 2
EXPORT_KEYS = {
    "model", "output", "artifact_bytes", "weights", "onnx_bytes", "ratio_to_artifact", "kind", "experts", "opset", "storage",
    "nodes_before", "nodes_after", "bytes_before", "bytes_after", "simplified", "simplify_note", "decode_nodes",
    "bitset_initializers", "bitset_bytes", "quantised_nodes", "validated", "parity_max_abs", "parity_tolerance", "ort",
    "mode", "resident_expert_bytes", "golden",
}
BENCH_ROW_KEYS = {"model", "batch", "threads", "p50_ms", "p90_ms", "p99_ms", "rows_per_s", "peak_rss_mb", "load_s", "file_bytes"}




@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-cli")
    out = {}
    for kind in ("mome", "mmoe"):
        out[kind] = root / f"{kind}.mome"
        write_artifact(out[kind], make_compiled(kind, seed=50))
    return out


@pytest.mark.parametrize("mode", ["speed", "memory"])
def test_export_json_and_files(tmp_path: Path, artifacts, mode: str) -> None:
    target = tmp_path / "model.onnx"
    code, out, err = _invoke(["export", str(artifacts["mome"]), "-o", str(target), "--mode", mode, "--ort", "--json"])
    assert code == 0, err
    report = json.loads(out)  # exactly one JSON object on stdout
    assert set(report) == EXPORT_KEYS
    assert report["onnx_bytes"] == target.stat().st_size and report["experts"] == "bitset" and report["mode"] == mode
    assert report["opset"] == (21 if mode == "memory" else 18)
    assert report["validated"] and report["parity_max_abs"] <= PARITY_ATOL_FP32
    assert report["simplified"] and report["bitset_initializers"] == 2  # one (E, ...) bitset per layer in both modes (census layers are small)
    assert Path(report["ort"]["path"]).is_file() and Path(report["ort"]["required_operators"]).is_file()
    assert report["ort"]["keeps_bitset"] == (mode == "memory")
    assert report["golden"]["path"] == str(tmp_path / "model.golden.json") and report["golden"]["rows"] > 0
    assert max(report["golden"]["max_abs"].values()) <= report["golden"]["tolerance"]
    onnx.checker.check_model(onnx.load(target), full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.golden.json", "model.onnx", "model.ort", "model.required_operators.config"]


def test_export_table_dense_without_simplify_or_validation(tmp_path: Path, artifacts) -> None:
    target = tmp_path / "dense.onnx"
    code, out, err = _invoke(["export", str(artifacts["mome"]), "-o", str(target), "--experts", "dense", "--no-simplify", "--no-validate"])
    assert code == 0, err
    assert "wrote" in out and "not validated" in out and "not simplified" in out and target.is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["export", "{missing}", "-o", "{out}"], "does not exist"),
    (["export", "{mome}", "-o", "{out}", "--experts", "sparse"], "--experts 'sparse' is unknown"),
    (["export", "{mome}", "-o", "{tmp}/model.txt"], "must be an .onnx file"),
    (["export", "{mome}", "-o", "{out}", "--opset", "12"], "opset=12 is not supported"),
    (["export", "{mome}", "-o", "{out}", "--mode", "fast"], "--mode 'fast' is unknown"),
    (["export", "{mome}", "-o", "{out}", "--mode", "memory", "--experts", "dense"], "drop --experts dense"),
    (["export", "{mmoe}", "-o", "{out}", "--mode", "memory"], "export it with --mode speed"),
    (["export", "{garbage}", "-o", "{out}"], "garbage.mome"),
    (["export", "{onnx}", "-o", "{out}"], "is not a .mome artifact"),
    (["export", "{mome}"], "Missing option"),
    (["bench", "{missing}", "--runs", "1"], "does not exist"),
    (["bench", "{mome}", "--batch", "0,1"], "--batch '0,1' has a size <= 0"),
    (["bench", "{mome}", "--experts", "lazy"], "experts=['lazy']"),
    (["bench", "{mome}", "--runs", "0"], "runs=0"),
    (["bench", "{garbage}", "--runs", "1", "--batch", "1", "--threads", "1"], "benching"),
])
def test_errors_are_one_line_exit_2(tmp_path: Path, artifacts, args: list[str], message: str) -> None:
    garbage = tmp_path / "garbage.mome"
    garbage.write_bytes(b"\x00" * 64)
    onnx_in = tmp_path / "in.onnx"
    onnx_in.write_bytes(b"x")
    values = {"missing": tmp_path / "missing.mome", "out": tmp_path / "out.onnx", "mome": artifacts["mome"],
              "tmp": tmp_path, "garbage": garbage, "onnx": onnx_in, "mmoe": artifacts["mmoe"]}
    argv = [a.format(**values) for a in args]
    code, out, err = _invoke(argv)
    assert code == USAGE_EXIT, (out, err)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("exporting", "benching "))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "out.golden.json").exists()


def test_bench_json_shape(tmp_path: Path, artifacts) -> None:
    onnx_path = tmp_path / "mome.onnx"
    assert _invoke(["export", str(artifacts["mome"]), "-o", str(onnx_path), "--no-simplify", "--no-validate", "--json"])[0] == 0
    models = [str(onnx_path), str(artifacts["mmoe"])]
    plot = tmp_path / "bench.png"
    code, out, err = _invoke(["bench", *models, "--batch", "1,4", "--threads", "1", "--runs", "2", "--warmup", "1",
                              "--experts", "materialize,on-demand", "--json", "--plot", str(plot)])
    assert code == 0, err
    report = json.loads(out)
    assert {"results", "environment", "baseline_model", "config"} <= set(report)
    rows = report["results"]
    assert len(rows) == (1 + 2) * 2  # (.onnx: its own mode; .mome: both expert modes) x batches
    for row in rows:
        assert BENCH_ROW_KEYS <= set(row)
        assert isinstance(row["batch"], int) and isinstance(row["threads"], int) and isinstance(row["file_bytes"], int)
    first = [r for r in rows if r["model"] == models[0]]
    assert all(r["ratios"]["p50_ms"] == 1.0 and r["ratios"]["file_bytes"] == 1.0 for r in first)
    assert {r["runtime"] for r in rows} == {"onnx", "numpy"}
    assert report["environment"]["onnxruntime"] and report["environment"]["threads"] == [1]
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_of_new_commands() -> None:
    for command in ("export", "bench"):
        code, out, _ = _invoke([command, "--help"])
        assert code == 0 and "Usage" in out


# --- predict through the runtime ----------------------------------------------------------------


def test_predict_accepts_onnx_and_runtime_onnx(tmp_path: Path, artifacts) -> None:
    import csv

    import numpy as np

    onnx_path = tmp_path / "mome.onnx"
    assert _invoke(["export", str(artifacts["mome"]), "-o", str(onnx_path), "--no-simplify", "--json"])[0] == 0
    rows = [
        {"cat0": "v1", "cat1": "v2", "cat2": "v0", "cat3": "v9", "num0": "1.5", "num1": "", "num2": "-2"},
        {"cat0": "unseen", "cat1": "", "cat2": "v1", "cat3": "v0", "num0": "?", "num1": "3", "num2": "0"},
    ]
    rows_csv = tmp_path / "rows.csv"
    with rows_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    outputs = {}
    for name, args in {"numpy": [str(artifacts["mome"])], "onnx-file": [str(onnx_path)],
                       "mome-on-onnx": [str(artifacts["mome"]), "--runtime", "onnx"]}.items():
        out_csv = tmp_path / f"{name}.csv"
        code, _, err = _invoke(["predict", *args, "--input", str(rows_csv), "-o", str(out_csv)])
        assert code == 0, err
        outputs[name] = np.loadtxt(out_csv, delimiter=",", skiprows=1)
    assert outputs["numpy"].shape == (2, 2)
    for name in ("onnx-file", "mome-on-onnx"):
        np.testing.assert_allclose(outputs[name], outputs["numpy"], rtol=0, atol=PARITY_ATOL_FP32)
    code, out, err = _invoke(["predict", str(onnx_path), "--input", str(rows_csv), "-o", str(tmp_path / "x.csv"), "--runtime", "tflite"])
    assert code == USAGE_EXIT and err.startswith("error: --runtime 'tflite' is unknown") and "Traceback" not in err
