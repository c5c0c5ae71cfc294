"""`mome-edge demo`: the README's main job, end to end on an embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import print_json
from mome_edge.cli.options import DataDir, Json, Quiet, data_dir_or_none


def demo(
    data_dir: Optional[Path] = DataDir,
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the demo's runs (default: a new temporary folder)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per model (default: the data set's default budget)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Use generated data even when census-income is available."),
    json_output: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Train MoME and MMoE on census-income (if found) or synthetic data and compare them."""
    from mome_edge.extras import require_training_side

    require_training_side("demo")
    from mome_edge.demo import render_demo, run_demo
    from mome_edge.errors import ConfigError

    if epochs is not None and epochs < 1:  # before the demo prints anything
        raise ConfigError(f"--epochs {epochs} is not allowed; use an integer >= 1 (or leave it out for the default budget)")
    if out is not None:
        from mome_edge.runs import check_out_folder

        check_out_folder(out)

    report = run_demo(data_dir=data_dir_or_none(data_dir), out=out, epochs=epochs, force_synthetic=synthetic, progress=not quiet)
    if json_output:
        print_json(report)
    else:
        render_demo(report)
