"""Paths: an artifact's manifest and an exported ONNX file hold no file paths and no
external-data references; an output path equal to an input path is refused (exit 2) by every
command that writes (compile, predict, export, inspect --plot, evaluate --predictions, bench --plot)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cli_helpers import invoke, snapshot
from mome_edge.artifact.reader import read_artifact

USAGE_EXIT = 2


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def _assert_no_paths(strings, machine_paths: list[str], where: str) -> None:
    for text in strings:
        assert not os.path.isabs(text) and not text.startswith("~"), f"{where} holds the path {text!r}"
        for path in machine_paths:
            assert path not in text, f"{where} holds {path!r} in {text!r}"


@pytest.fixture(scope="module")
def spec_run(tmp_path_factory) -> Path:
    """A tiny run trained from a user TOML spec with --data-dir style absolute paths recorded."""
    from mome_edge.cli.main import main

    folder = tmp_path_factory.mktemp("spec-run")
    (folder / "data").mkdir()
    (folder / "data" / "rows.csv").write_text(
        "color,size,liked\n" + "".join(f"{['red', 'blue', 'green'][i % 3]},{i % 17},{'yes' if i % 4 == 0 else 'no'}\n" for i in range(600)),
        encoding="utf-8",
    )
    (folder / "data" / "spec.toml").write_text(
        '[data]\npath = "rows.csv"\n[features]\ncategorical = ["color"]\nnumerical = ["size"]\n[tasks.liked]\ncolumn = "liked"\npositive = ["yes"]\n',
        encoding="utf-8",
    )
    code, _, err = invoke(["train", "--model", "mmoe", "--spec", str(folder / "data" / "spec.toml"), "--out", str(folder / "run"),
                           "--epochs", "1", "--hidden", "8", "--experts", "2", "--tower-hidden", "", "--batch-size", "64", "--quiet"])
    assert code == 0, err
    return folder / "run"


@pytest.mark.parametrize("source", ["synthetic-run", "spec-run"])
def test_the_manifest_holds_no_file_paths(source: str, tiny_run, spec_run, tmp_path: Path) -> None:
    from mome_edge.compile.compiler import compile_to_file

    run = tiny_run("mome") if source == "synthetic-run" else spec_run
    out = tmp_path / "model.mome"
    compile_to_file(run, out, weights="int8")
    manifest = read_artifact(out).manifest
    machine = [str(run), str(run.parent), str(run.resolve()), str(tmp_path), str(Path.home()), os.getcwd()]
    _assert_no_paths(_strings(manifest), [p for p in machine if len(p) > 1], "the manifest")
    assert manifest["metadata"]["source_run"] == run.name  # the folder's name only, as documented
    # also the raw header bytes: no path in any escaping
    raw = out.read_bytes()
    for path in machine:
        if len(path) > 1:
            assert path.encode() not in raw and json.dumps(path)[1:-1].encode() not in raw


@pytest.mark.parametrize("experts", ["bitset", "dense"])
def test_exported_onnx_files_carry_no_external_data_and_no_paths(experts: str, tiny_artifact, tmp_path: Path) -> None:
    import onnx
    from onnx.external_data_helper import uses_external_data

    from mome_edge.exporters.onnx_export import export_artifact

    source = tmp_path / "in" / "model.mome"
    source.parent.mkdir()
    shutil.copy(tiny_artifact("mome", "int8"), source)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    export_artifact(source, out, experts=experts, ort_format=True)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "model.golden.json", "model.onnx", "model.ort", "model.required_operators.config"]
    for path in machine_paths(tmp_path, source, out):  # the golden rows name the model by file name only
        assert path not in (out.parent / "model.golden.json").read_text()
    model = onnx.load(str(out), load_external_data=False)
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    assert tensors and not any(uses_external_data(t) or t.external_data for t in tensors)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in tensors)
    machine = machine_paths(tmp_path, source, out)
    _assert_no_paths([p.value for p in model.metadata_props] + [p.key for p in model.metadata_props], machine, "the ONNX metadata")
    for prop in model.metadata_props:  # JSON values: look inside them too
        try:
            _assert_no_paths(_strings(json.loads(prop.value)), machine, f"ONNX metadata {prop.key}")
        except ValueError:
            pass
    for path in machine:
        assert path.encode() not in out.read_bytes()
    onnx.checker.check_model(model)


def machine_paths(tmp_path: Path, source: Path, out: Path) -> list[str]:
    return [str(tmp_path), str(source), str(out), str(Path.home()), os.getcwd()]


# --- an output path equal to an input path ---------------------------------------------------------
SAME_PATH_CASES = {
    "compile-over-run-dir": (["compile", "{run}", "-o", "{run}"], "is RUN_DIR"),
    "compile-over-run-file": (["compile", "{run}", "-o", "{run}/run.json"], "run.json"),
    "compile-via-dot-dot": (["compile", "{run}", "-o", "{run}/checkpoints/../model.safetensors"], "model.safetensors"),
    "predict-over-model": (["predict", "{mome}", "--dataset", "synthetic", "-o", "{mome}"], "is MODEL"),
    "predict-over-input": (["predict", "{mome}", "--input", "{csv}", "-o", "{csv}"], "is --input"),
    "predict-over-input-symlink": (["predict", "{mome}", "--input", "{csv}", "-o", "{csv_link}"], "is --input"),
    "predict-over-onnx": (["predict", "{onnx}", "--input", "{csv}", "-o", "{onnx}"], "is MODEL"),
    "export-over-model": (["export", "{mome}", "-o", "{mome}"], ".onnx"),
    "export-over-model-named-onnx": (["export", "{mome_as_onnx}", "-o", "{mome_as_onnx}"], "not a .mome artifact"),
    "inspect-plot-over-model": (["inspect", "{mome}", "--plot", "{mome}"], "is MODEL.mome"),
    "evaluate-predictions-over-model": (["evaluate", "{mome}", "--dataset", "synthetic", "--predictions", "{mome}"], "is TARGET"),
    "evaluate-predictions-over-run-file": (["evaluate", "{run}", "--predictions", "{run}/metrics.json"], "metrics.json"),
    "bench-plot-over-model": (["bench", "{mome}", "--plot", "{mome}", "--runs", "1", "--warmup", "0", "--batch", "1", "--threads", "1"], "the model"),
}


@pytest.fixture(scope="module")
def same_path_ws(tmp_path_factory, tiny_run, tiny_artifact) -> Path:
    from mome_edge.exporters.onnx_export import export_artifact

    root = tmp_path_factory.mktemp("same-path")
    shutil.copytree(tiny_run("mome"), root / "run")
    shutil.copy(tiny_artifact("mome", "fp32"), root / "model.mome")
    shutil.copy(tiny_artifact("mome", "fp32"), root / "model-as.onnx")
    export_artifact(root / "model.mome", root / "model.onnx", simplify=False, validate=False)
    model = read_artifact(root / "model.mome").model
    names = [*model.spec.field_names, *model.spec.numerical_names]
    (root / "rows.csv").write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n", encoding="utf-8")
    (root / "link.csv").symlink_to(root / "rows.csv")
    return root


@pytest.mark.parametrize("case", list(SAME_PATH_CASES))
def test_an_output_equal_to_an_input_is_refused(case: str, same_path_ws: Path) -> None:
    argv, message = SAME_PATH_CASES[case]
    values = {"run": "run", "mome": "model.mome", "onnx": "model.onnx", "csv": "rows.csv", "csv_link": "link.csv", "mome_as_onnx": "model-as.onnx"}

    def fill(arg: str) -> str:
        for key, name in values.items():
            arg = arg.replace("{" + key + "}", str(same_path_ws / name))
        return arg

    before = snapshot(same_path_ws)
    code, out, err = invoke([fill(a) for a in argv])
    assert code == USAGE_EXIT and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    assert snapshot(same_path_ws) == before
