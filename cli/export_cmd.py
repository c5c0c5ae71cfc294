"""`mome-edge export`: a compiled .mome artifact -> ONNX (and optionally the ORT format)."""

from __future__ import annotations

from pathlib import Path

import typer

from mome_edge.cli.common import print_json, stderr, stdout
from mome_edge.cli.options import Json
from mome_edge.errors import ConfigError

EXPERT_CHOICES = ("bitset", "dense")


def export(
    model: Path = typer.Argument(..., help="The .mome artifact written by `mome-edge compile`."),
    output: Path = typer.Option(..., "--output", "-o", help="The .onnx file to write (atomically)."),
    experts: str = typer.Option("bitset", "--experts", help="bitset: packed masks rebuilt in the graph (small file); dense: materialised experts."),
    ort_format: bool = typer.Option(False, "--ort", help="Also write MODEL.ort and MODEL.required_operators.config for a reduced mobile build."),
    no_simplify: bool = typer.Option(False, "--no-simplify", help="Skip onnxsim."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Skip the ONNX Runtime vs numpy reference check."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17..21; bitset uses BitwiseAnd from 18, Mod 2 at 17)."),
    json_output: bool = Json,
) -> None:
    """Export a compiled artifact to ONNX, checked, simplified and validated."""
    from mome_edge.extras import require_training_side

    require_training_side("export")
    if experts not in EXPERT_CHOICES:
        raise ConfigError(f"--experts {experts!r} is unknown; use {' or '.join(EXPERT_CHOICES)}")
    if model.suffix.lower() != ".mome":
        raise ConfigError(f"{model} is not a .mome artifact; export reads the file written by `mome-edge compile`")
    from mome_edge.exporters.onnx_export import export_artifact

    _preflight(model, output, opset)  # every path and flag error before the progress line
    if not json_output:
        stderr.print(f"exporting {model} ({experts} experts, opset {opset})")
    report = export_artifact(model, output, experts=experts, opset=opset, simplify=not no_simplify,
                             validate=not no_validate, ort_format=ort_format)
    if json_output:
        print_json(report)
        return
    _render(report)


def _preflight(model: Path, output: Path, opset: int) -> None:
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
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(f"opset={opset!r} is not supported; use an integer in {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    from mome_edge.artifact.reader import read_artifact

    read_artifact(model)  # a corrupt or foreign file: its one-line error now (reading is cheap)


def _render(r: dict) -> None:
    stdout.print(f"wrote {r['output']}: {r['onnx_bytes']:,} bytes ({r['ratio_to_artifact']:.2f}x the artifact's {r['artifact_bytes']:,}; weights {r['weights']}, experts {r['experts']})")
    stdout.print(f"nodes {r['nodes_before']} -> {r['nodes_after']}, bytes {r['bytes_before']:,} -> {r['bytes_after']:,}: {r['simplify_note']}")
    if r["bitset_initializers"]:
        stdout.print(f"expert masks: {r['bitset_initializers']} packed bitset initializers, {r['bitset_bytes']:,} bytes, unpacked in the graph by {r['decode_nodes']} nodes")
    if r["quantised_nodes"]:
        stdout.print(f"stored {'/'.join(s for s in r['storage'] if s != 'bitset')}: {len(r['quantised_nodes'])} Cast/scale nodes decode weights (folded at load); compute stays float32")
    if r["validated"]:
        stdout.print(f"validated: max |p_onnx - p_reference| = {r['parity_max_abs']:.2e} (tolerance {r['parity_tolerance']:g})")
    else:
        stdout.print("not validated (--no-validate)")
    if r["ort"]:
        stdout.print(f"wrote {r['ort']['path']} ({r['ort']['bytes']:,} bytes) and {r['ort']['required_operators']}")
