"""`mome-edge export`: a compiled .mome artifact -> ONNX (and optionally the ORT format)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import print_json, stderr, stdout
from mome_edge.cli.options import Json
from mome_edge.errors import ConfigError
from mome_edge.onnx_contract import ARTIFACT_SUFFIX, DEPLOY_MODES, EXPERT_STORAGE

EXPERT_CHOICES = EXPERT_STORAGE
MODE_CHOICES = DEPLOY_MODES


def export(
    model: Path = typer.Argument(..., help="The .mome artifact written by `mome-edge compile`."),
    output: Path = typer.Option(..., "--output", "-o", help="The .onnx file to write (atomically)."),
    mode: str = typer.Option("speed", "--mode", help="speed: experts expanded once when the session starts (fastest); memory: rebuilt one at a time inside every call (least memory). Both store bitsets."),
    experts: str = typer.Option("bitset", "--experts", help="bitset: packed masks (small file); dense: materialised experts stored (the baseline a speed export is measured against)."),
    ort_format: bool = typer.Option(False, "--ort", help="Also write MODEL.ort and MODEL.required_operators.config for a reduced mobile build."),
    no_simplify: bool = typer.Option(False, "--no-simplify", help="Skip onnxsim."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the ONNX Runtime vs numpy reference check."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset 17..21 (default 18; --mode memory: 21, whose DequantizeLinear rebuilds an expert in one pass; memory needs >= 18)."),
    json_output: bool = Json,
) -> None:
    """Export a compiled artifact to ONNX, checked, simplified and validated."""
    from mome_edge.extras import require_training_side

    require_training_side("export")
    if mode not in MODE_CHOICES:
        raise ConfigError(f"--mode {mode!r} is unknown; use {' or '.join(MODE_CHOICES)}")
    if mode == "memory" and experts == "dense":
        raise ConfigError("--mode memory rebuilds experts from bitsets; drop --experts dense (or use --mode speed)")
    if experts not in EXPERT_CHOICES:
        raise ConfigError(f"--experts {experts!r} is unknown; use {' or '.join(EXPERT_CHOICES)}")
    if model.suffix.lower() != ARTIFACT_SUFFIX:
        raise ConfigError(f"{model} is not a .mome artifact; export reads the file written by `mome-edge compile`")
    from mome_edge.exporters.onnx_export import export_artifact

    _preflight(model, output, opset)  # every path and flag error before the progress line
    if not json_output:
        stderr.print(f"exporting {model} ({mode} mode, {experts} experts, opset {opset or 'default'})")
    report = export_artifact(model, output, experts=experts, opset=opset, simplify=not no_simplify,
                             validate=not no_validate, ort_format=ort_format, mode=mode)
    if json_output:
        print_json(report)
        return
    _render(report)


def _preflight(model: Path, output: Path, opset: int | None) -> None:
    """The user errors `export_artifact` would find, checked before anything is printed."""
    from mome_edge.errors import ArtifactError
    from mome_edge.exporters.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    if not model.is_file():
        what = "is a folder" if model.is_dir() else "does not exist"
        raise ArtifactError(f"{model} {what}; pass the .mome file written by `mome-edge compile`")
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {output}: the output must be an .onnx file (the ORT format goes next to it with --ort)")
    if output.resolve() == model.resolve():
        raise ConfigError(f"-o {output} would overwrite the artifact; choose another output path")
    if not output.parent.is_dir():
        problem = "is a file, not a folder" if output.parent.exists() else "does not exist; create it first"
        raise ConfigError(f"-o {output}: {output.parent} {problem}; choose a folder that exists")
    if opset is not None and not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset={opset!r} is not supported; use an integer in {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    from mome_edge.artifact.reader import read_artifact

    read_artifact(model)  # a corrupt or foreign file: its one-line error now (reading is cheap)


def _render(r: dict) -> None:
    stdout.print(f"wrote {r['output']}: {r['onnx_bytes']:,} bytes ({r['ratio_to_artifact']:.2f}x the artifact's {r['artifact_bytes']:,}; weights {r['weights']}, experts {r['experts']}, mode {r['mode']}, opset {r['opset']})")
    stdout.print(f"a running session holds {r['resident_expert_bytes'] / 2**20:.2f} MiB of dense expert weights"
                 + (" at most, rebuilt inside each call" if r['mode'] == 'memory' else ""))
    stdout.print(f"nodes {r['nodes_before']} -> {r['nodes_after']}, bytes {r['bytes_before']:,} -> {r['bytes_after']:,}: {r['simplify_note']}")
    if r["bitset_initializers"]:
        where = "inside every call (nothing of it folded at load)" if r["mode"] == "memory" else f"once at session start by {r['decode_nodes']} foldable nodes"
        stdout.print(f"expert masks: {r['bitset_initializers']} packed bitset initializers, {r['bitset_bytes']:,} bytes, unpacked {where}")
    if r["quantised_nodes"]:
        stdout.print(f"stored {'/'.join(s for s in r['storage'] if s != 'bitset')}: {len(r['quantised_nodes'])} Cast/scale nodes decode weights (folded at load); compute stays float32")
    if r["validated"]:
        stdout.print(f"validated: max |p_onnx - p_reference| = {r['parity_max_abs']:.2e} (tolerance {r['parity_tolerance']:g})")
    else:
        stdout.print("not validated (--no-validate)")
    g = r["golden"]
    stdout.print(f"wrote {g['path']}: {g['rows']} golden rows, max |p - expected| "
                 + ", ".join(f"{k} {v:.1e}" for k, v in g["max_abs"].items()) + f" (tolerance {g['tolerance']:g})")
    if r["ort"]:
        stored = "experts as bitsets" if r["ort"]["keeps_bitset"] else "experts expanded (an .ort cannot run a load-time decode)"
        stdout.print(f"wrote {r['ort']['path']} ({r['ort']['bytes']:,} bytes, {stored}) and {r['ort']['required_operators']}")
