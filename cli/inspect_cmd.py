"""`mome-edge inspect`: where every byte of an artifact goes, against a dense MMoE."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mome_edge.cli.common import components_table, print_json, stderr, stdout
from mome_edge.cli.options import Json


def inspect_command(
    model: Path = typer.Argument(..., metavar="MODEL.mome", help="An artifact file written by `mome-edge compile`."),
    json_output: bool = Json,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of per-layer mask density and expert overlap."),
) -> None:
    """Bytes by component, neurons kept, mask densities and overlap, bits per expert weight."""
    from mome_edge.describe import describe_artifact, plot_artifact
    from mome_edge.predict import refuse_overwriting_inputs

    if plot is not None:
        refuse_overwriting_inputs(plot, {"MODEL.mome": model})
    report = describe_artifact(model)
    if plot is not None:
        plot_artifact(report, plot)
        stderr.print(f"[dim]wrote {plot}[/dim]")
    if json_output:
        print_json(report.to_json())
        return
    _render(report)


def _render(report) -> None:
    header = f"{report.path}: {report.kind}, {report.experts} experts, weights {report.weights}, tasks {', '.join(report.tasks)}"
    if report.source_run:
        header += f", from run {report.source_run}"
    stdout.print(header)
    sizes = components_table("bytes by component", report.components, report.file_bytes)
    stdout.print(sizes)
    neurons = Table(title="neurons kept")
    neurons.add_column("layer")
    neurons.add_column("kept", justify="right")
    neurons.add_column("nominal", justify="right")
    for row in report.neurons:
        neurons.add_row(row.name, str(row.kept), str(row.nominal))
    stdout.print(neurons)
    if report.mask_density:
        density = Table(title="mask density per expert (open share of the compiled layer)")
        density.add_column("layer")
        for e in range(report.experts):
            density.add_column(f"e{e}", justify="right")
        for l, row in enumerate(report.mask_density):
            density.add_row(f"layer {l + 1}", *(f"{d:.3f}" for d in row))
        stdout.print(density)
        overlap = Table(title="expert overlap (Jaccard over all layers)")
        overlap.add_column("")
        for e in range(report.experts):
            overlap.add_column(f"e{e}", justify="right")
        for e, row in enumerate(report.overlap):
            overlap.add_row(f"e{e}", *(f"{v:.2f}" for v in row))
        stdout.print(overlap)
        encodings = ", ".join(f"{k} x{v}" for k, v in sorted(report.mask_encodings.items()))
        stdout.print(f"expert masks: {report.bits_per_expert_weight:.3f} bits stored per expert weight ({report.expert_weights:,} expert weights; {encodings})")
    stdout.print(
        f"dense fp32 MMoE with the same nominal sizes and {report.dense_mmoe_experts} experts: "
        f"{report.dense_mmoe_bytes:,} bytes = {report.ratio:.1f}x this file ({report.ratio_tensors:.1f}x its tensor bytes)"
    )
