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
    from mome_edge.extras import require_training_side

    if plot is not None:
        require_training_side("--plot")
    from mome_edge.artifact.describe import describe_artifact, plot_artifact
    from mome_edge.runtime.predict import refuse_overwriting_inputs

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
    if report.budget is not None:
        b = report.budget
        line = f"budget: {b['bytes']:,} bytes ({b.get('weights', '?')}); this file is {b['file_bytes']:,} bytes = {100 * b['share']:.1f}% of it"
        if "range" in b:
            line += f" ({'within' if b['within_range'] else 'outside'} the accepted {b['range'][0]:,}-{b['range'][1]:,})"
        stdout.print(line)
        if b.get("shrunk"):
            stdout.print(f"what the trainer shrank: {b['shrunk']}")
    neurons = Table(title="neurons kept")
    neurons.add_column("layer")
    neurons.add_column("kept", justify="right")
    neurons.add_column("nominal", justify="right")
    for row in report.neurons:
        neurons.add_row(row.name, str(row.kept), str(row.nominal))
    stdout.print(neurons)
    if report.mask_density:
        stdout.print(_per_expert_table(
            "mask density per expert (open share of the compiled layer)", "layer",
            [f"layer {l + 1}" for l in range(len(report.mask_density))], report.mask_density, "{:.3f}", report.experts,
        ))
        stdout.print(_per_expert_table(
            "expert overlap (Jaccard over all layers)", "", [f"e{e}" for e in range(len(report.overlap))],
            report.overlap, "{:.2f}", report.experts,
        ))
        encodings = ", ".join(f"{k} x{v}" for k, v in sorted(report.mask_encodings.items()))
        stdout.print(f"expert masks: {report.bits_per_expert_weight:.3f} bits stored per expert weight ({report.expert_weights:,} expert weights; {encodings})")
    stdout.print(
        f"dense fp32 MMoE with the same nominal sizes and {report.dense_mmoe_experts} experts: "
        f"{report.dense_mmoe_bytes:,} bytes = {report.ratio:.1f}x this file ({report.ratio_tensors:.1f}x its tensor bytes)"
    )


def _per_expert_table(title: str, first: str, labels: list[str], rows, fmt: str, experts: int) -> Table:
    """A table with one column per expert (e0, e1, ...) and one labelled row per entry of `rows`."""
    table = Table(title=title)
    table.add_column(first)
    for e in range(experts):
        table.add_column(f"e{e}", justify="right")
    for label, row in zip(labels, rows):
        table.add_row(label, *(fmt.format(v) for v in row))
    return table
