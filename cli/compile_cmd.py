"""`mome-edge compile`: a finished run -> one small, safe, self-describing artifact file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mome_edge.cli.common import components_table, fmt, print_json, stderr, stdout
from mome_edge.cli.options import DataDir, Json, data_dir_or_none


def compile_command(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="A finished run folder written by `mome-edge train`."),
    output: Path = typer.Option(..., "-o", "--output", help="Artifact file to write, e.g. model.mome (written atomically)."),
    weights: str = typer.Option("fp32", "--weights", help="Storage precision of weights, embeddings, gates and towers: fp32, fp16 or int8."),
    json_output: bool = Json,
    data_dir: Optional[Path] = DataDir,
) -> None:
    """Compile a trained run into one artifact file.

    Reads the run's test split (--data-dir for real data sets) to check the compiled model
    against the trained one and to report the test AUC change of fp16/int8 storage.
    """
    from mome_edge.extras import require_training_side

    require_training_side("compile")
    from mome_edge.artifact.quantise import check_weights
    from mome_edge.compile.compiler import compile_to_file
    from mome_edge.errors import ConfigError
    from mome_edge.runs import check_output_beside_run

    check_weights(weights)  # fail on a typo before loading data
    if not run_dir.exists():
        raise ConfigError(f"{run_dir} does not exist, so it is not a run folder; pass the --out folder of a `mome-edge train` run")
    check_output_beside_run(output, run_dir)
    report = compile_to_file(run_dir, output, weights=weights, data_dir=data_dir_or_none(data_dir))
    if json_output:
        print_json(report.to_json())
        return
    stderr.print(f"[dim]wrote {output} ({report.file_bytes:,} bytes, {weights}); parity vs trained model: max |dp| = {report.parity_max_abs_diff:.2g}[/dim]")
    sizes = components_table(f"{output}: bytes by component", report.components, report.file_bytes)
    stdout.print(sizes)
    auc = Table(title=f"test AUC ({report.rows:,} rows, numpy reference of the artifact)")
    auc.add_column("task")
    auc.add_column("fp32", justify="right")
    if weights != "fp32":
        auc.add_column(weights, justify="right")
        auc.add_column("change", justify="right")
    for task, base in report.test_auc_fp32.items():
        change = report.auc_change[task]
        cells = [fmt(base)] if weights == "fp32" else [fmt(base), fmt(report.test_auc[task]), "n/a" if change is None else f"{change:+.5f}"]
        auc.add_row(task, *cells)
    stdout.print(auc)
