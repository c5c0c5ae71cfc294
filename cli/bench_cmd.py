"""`mome-edge bench`: latency, throughput, memory and size of models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from mome_edge.cli.common import parse_int_list, print_json, stderr, stdout
from mome_edge.cli.options import Json
from mome_edge.onnx_contract import DEFAULT_MEMORY_BUDGET_MB


def bench(
    models: List[Path] = typer.Argument(..., help="Models to compare (.mome, .onnx or .ort); ratios are to the first."),
    batch: str = typer.Option("1,32,512", "--batch", help="Batch sizes, comma-separated."),
    threads: str = typer.Option("1,2", "--threads", help="Thread counts, comma-separated (ORT intra-op; BLAS for .mome)."),
    runs: int = typer.Option(100, "--runs", help="Timed calls per batch size."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed calls before timing."),
    experts: str = typer.Option("materialize", "--experts", help="materialize, on-demand, or both comma-separated."),
    memory_budget_mb: float = typer.Option(DEFAULT_MEMORY_BUDGET_MB, "--memory-budget-mb", help="MiB of rebuilt experts the .mome on-demand runtime keeps resident (a fixed subset; the rest rebuilt per call)."),
    json_output: bool = Json,
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write p50 latency vs batch as a PNG."),
) -> None:
    """Measure each model in a fresh subprocess (peak memory per model) and compare them."""
    from mome_edge.extras import require_training_side

    if plot is not None:
        require_training_side("--plot")
    from mome_edge.runtime.bench import BenchConfig, bench as run_bench, plot_bench

    config = BenchConfig(
        batches=parse_int_list(batch, "--batch"), threads=parse_int_list(threads, "--threads"), runs=runs, warmup=warmup,
        experts=tuple(e.strip() for e in experts.split(",") if e.strip()), memory_budget_mb=memory_budget_mb,
    )
    _preflight(models, plot)  # unreadable models and an unwritable plot fail before anything is printed
    if not json_output:
        stderr.print(f"benching {len(models)} model(s), each in a fresh process")
    report = run_bench([str(m) for m in models], config)
    if plot is not None:
        plot_bench(report, plot)
    if json_output:
        print_json(report.to_json())
        return
    _render(report)
    if plot is not None:
        stderr.print(f"wrote {plot}")


def _preflight(models: List[Path], plot: Optional[Path]) -> None:
    """Load every model once in this process (a corrupt file gives its one-line error here, not
    from a worker after the progress line) and check that the plot can be written."""
    from mome_edge.runtime.bench import MODEL_SUFFIXES
    from mome_edge.errors import ConfigError, DataError, MomeError
    from mome_edge.runtime.predict import refuse_overwriting_inputs

    for path in models:
        if not path.is_file():
            raise DataError(f"{path} does not exist or is not a file; pass .mome, .onnx or .ort files")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise DataError(f"{path}: unknown model type {path.suffix!r}; bench reads {', '.join(MODEL_SUFFIXES)} files")
        try:
            if path.suffix.lower() == ".mome":
                from mome_edge.artifact.reader import read_artifact

                read_artifact(path)
            else:
                from mome_edge.runtime import Predictor

                Predictor(path)
        except MomeError as exc:  # the same words as a failed worker (mome_edge.runtime.bench)
            raise MomeError(f"benching {path} failed: {exc}") from None
    if plot is not None:
        refuse_overwriting_inputs(plot, {f"the model {p.name}": p for p in models})
        if not plot.parent.is_dir():
            raise ConfigError(f"--plot {plot}: folder {plot.parent} does not exist or is not a folder; choose a writable location")


def _ratio(row: dict, key: str) -> str:
    ratios = row.get("ratios") or {}
    value = ratios.get(key)
    return "" if value is None or row["model"] == row.get("_baseline") else f" ({value:.2f}x)"


def _render(report) -> None:
    env = report.environment
    table = Table(title=f"bench: onnxruntime {env.get('onnxruntime')}, {env.get('cpu')} ({env.get('cpu_count')} CPUs); ratios to {Path(report.models[0]).name}")
    for column in ("model", "experts", "threads", "batch", "p50 ms", "p99 ms", "rows/s", "peak RSS MiB", "added MiB", "load s", "file bytes"):
        table.add_column(column, justify="left" if column in ("model", "experts") else "right")
    for r in report.results:
        r = {**r, "_baseline": report.models[0]}
        table.add_row(
            Path(r["model"]).name, r["experts"], str(r["threads"]), str(r["batch"]),
            f"{r['p50_ms']:.3f}{_ratio(r, 'p50_ms')}", f"{r['p99_ms']:.3f}", f"{r['rows_per_s']:,.0f}",
            f"{r['peak_rss_mb']:.1f}", f"{r['added_rss_mb']:.1f}{_ratio(r, 'added_rss_mb')}", f"{r['load_s']:.3f}",
            f"{r['file_bytes']:,}{_ratio(r, 'file_bytes')}",
        )
    stdout.print(table)
