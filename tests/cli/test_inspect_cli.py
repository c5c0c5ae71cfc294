"""`mome-edge inspect`: one JSON object, tables, a plot, and corrupt files as one error line."""

from __future__ import annotations

import json
from pathlib import Path

from test_compile_cli import assert_one_error_line, invoke


def test_inspect_json_is_one_object_with_the_promised_keys(tiny_artifact) -> None:
    path = tiny_artifact("mome", "int8")
    code, out, err = invoke(["inspect", str(path), "--json"])
    assert code == 0, err
    report = json.loads(out)  # exactly one JSON document on stdout
    assert report["file_bytes"] == path.stat().st_size == sum(report["components"].values())
    assert 0 < report["bits_per_expert_weight"] <= 1.5
    assert report["dense_mmoe_bytes"] > report["file_bytes"]


def test_inspect_tables_and_plot(tiny_artifact, tmp_path: Path) -> None:
    plot = tmp_path / "masks.png"
    code, out, err = invoke(["inspect", str(tiny_artifact("mome", "fp32")), "--plot", str(plot)])
    assert code == 0, err
    for title in ("bytes by component", "neurons kept", "mask density", "expert overlap", "bits stored per expert weight", "dense fp32 MMoE"):
        assert title in out
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_inspect_a_corrupt_file(tiny_artifact, tmp_path: Path) -> None:
    data = bytearray(tiny_artifact("mome", "fp32").read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.mome"
    bad.write_bytes(bytes(data))
    assert_one_error_line(*invoke(["inspect", str(bad)]), "payload checksum mismatch")


def test_inspect_errors(tiny_artifact, tmp_path: Path) -> None:
    assert_one_error_line(*invoke(["inspect", str(tmp_path / "none.mome")]), "does not exist")
    assert_one_error_line(*invoke(["inspect", str(tiny_artifact("mmoe", "fp32")), "--plot", str(tmp_path / "p.png")]),
                          "--plot needs a MoME artifact")


def test_inspect_on_an_onnx_file_says_it_reads_mome_files(tmp_path) -> None:
    from cli_helpers import invoke as run

    for name in ("model.onnx", "model.ort"):
        (tmp_path / name).write_bytes(b"\x08\x08\x12\x04ORTMgarbage")
        code, stdout, stderr = run(["inspect", str(tmp_path / name)])
        assert code == 2 and stdout == ""
        assert "is an ONNX model" in stderr and "this reads .mome files" in stderr and stderr.count("\n") == 1
