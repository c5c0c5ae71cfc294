"""`mome-edge prepare`: convert a large CSV/Parquet data set into encoded Parquet shards once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import print_json, stdout
from mome_edge.cli.options import DataDir, Json, Quiet, data_dir_or_none
from mome_edge.errors import ConfigError


def prepare(
    out: Path = typer.Option(..., "--out", help="Folder to write the prepared data set into (shards + prepared.json)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="aliexpress: the processed *train*/*test* files in --data-dir."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="TOML spec of your own CSV/CSV.gz/Parquet data (instead of --dataset)."),
    data_dir: Optional[Path] = DataDir,
    shard_rows: Optional[int] = typer.Option(None, "--shard-rows", help="Rows per Parquet shard (default 262144).", show_default=False),
    max_vocab: Optional[int] = typer.Option(None, "--max-vocab", help="Keep the N most frequent values per categorical field; rarer ones map to OOV (default: keep all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-row split (a seed set in the spec's split table wins)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a prepared data set already in --out."),
    json_output: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Read a data set in chunks, fit vocabularies and statistics on its training rows, write encoded shards."""
    from mome_edge.extras import require_training_side

    require_training_side("prepare")
    if (dataset is None) == (spec is None):
        raise ConfigError("give exactly one of --dataset aliexpress or --spec FILE.toml")
    from mome_edge.runs import check_out_folder
    from mome_edge.data.streaming import prepare_dataset, stream_source

    check_out_folder(out)  # --out under a file fails before any data is read

    source = stream_source(dataset, spec_path=spec, data_dir=data_dir_or_none(data_dir))
    options = {} if shard_rows is None else {"shard_rows": shard_rows}
    info = prepare_dataset(source, out, max_vocab=max_vocab, seed=seed, overwrite=overwrite, progress=not quiet, **options)
    summary = info.summary()
    if json_output:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"prepared {summary['dataset']} -> {out}")
    table.add_column("split")
    table.add_column("rows", justify="right")
    table.add_column("shards", justify="right")
    for split, rows in summary["rows"].items():
        table.add_row(split, f"{rows:,}", str(summary["shards"][split]))
    stdout.print(table)
    sizes = summary["vocab_sizes"]
    oov = sum(v["oov_rows"] for v in summary["vocabulary"].values())
    if sizes:
        stdout.print(
            f"vocabularies: {len(sizes)} fields, sizes {min(sizes.values())}-{max(sizes.values())} "
            f"(total {sum(sizes.values()):,} embedding rows incl. OOV); training cells sent to OOV: {oov:,}"
        )
    stdout.print(f"numerical: {summary['numerical']} columns; tasks: {', '.join(summary['tasks'])}")
    stdout.print(f"{summary['seconds']:.1f} s, {summary['rows_per_second']:,.0f} rows/s")
