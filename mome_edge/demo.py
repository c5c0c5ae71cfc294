"""The end-to-end demo: data -> MoME and MMoE training -> comparison table."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.runs import DatasetRef

DEMO_MODELS = ("mome", "mmoe")
SYNTHETIC_ROWS = 30_000


def pick_dataset(data_dir: str | None, force_synthetic: bool) -> DatasetRef:
    """census-income when its file is reachable, else the MMoE paper's synthetic generator."""
    from mome_edge.data import default_data_dir, find_census_file
    from mome_edge.errors import DataError

    if not force_synthetic:
        folder = data_dir or default_data_dir()
        if folder is not None:
            try:
                find_census_file(folder)
                return DatasetRef(name="census-income", data_dir=str(folder))
            except DataError:
                pass
    return DatasetRef(name="synthetic", synthetic_rows=SYNTHETIC_ROWS)


def run_demo(*, data_dir: str | None, out: Path | None, epochs: int | None, force_synthetic: bool, progress: bool,
             bench_runs: int = 50) -> dict[str, Any]:
    """Train MoME and MMoE, compile both, export both to ONNX, bench both; return the report."""
    from mome_edge.runtime.bench import BenchConfig, bench
    from mome_edge.compile.compiler import compile_to_file
    from mome_edge.exporters.onnx_export import export_artifact
    from mome_edge.train.loop import train

    console = Console(stderr=True, quiet=not progress)
    ref = pick_dataset(data_dir, force_synthetic)
    data = ref.load()
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mome-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]demo[/bold] on {ref.describe()} ({len(data.train)} training rows); files in {out}")
    models: dict[str, dict[str, Any]] = {}
    for kind in DEMO_MODELS:
        train_config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
        console.print(f"[bold]training {kind}[/bold]")
        summary = train(
            run_dir=out / kind, data=data, model_config=ModelConfig(kind=kind), train_config=train_config,
            dataset=ref, progress=progress,
        ).summary
        console.print(f"[bold]compiling and exporting {kind}[/bold]")
        compiled = compile_to_file(out / kind, out / f"{kind}.mome", data_dir=ref.data_dir)
        experts = "bitset" if kind == "mome" else "dense"
        exported = export_artifact(out / f"{kind}.mome", out / f"{kind}.onnx", experts=experts)
        models[kind] = {
            "summary": summary,
            "artifact_bytes": compiled.file_bytes,
            "compiled_test_auc": compiled.test_auc,
            "onnx_bytes": (out / f"{kind}.onnx").stat().st_size,
            "onnx_parity_max_abs": exported.get("parity_max_abs"),
        }
    console.print("[bold]benchmarking the ONNX files[/bold] (each in a fresh process)")
    report = bench([str(out / f"{kind}.onnx") for kind in DEMO_MODELS],
                   BenchConfig(batches=(1, 512), threads=(1,), runs=bench_runs, warmup=5))
    for row in report.to_json()["results"]:
        kind = Path(row["model"]).stem
        models[kind].setdefault("bench", {})[str(row["batch"])] = {
            k: row[k] for k in ("p50_ms", "p90_ms", "rows_per_s", "peak_rss_mb", "added_rss_mb", "load_s") if k in row
        }
    return {"dataset": ref.describe(), "out": str(out), "tasks": list(data.spec.tasks), "models": models}


def render_demo(report: dict[str, Any]) -> None:
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(width=150)  # logs and CI: keep the table on one line per model
    tasks, models = report["tasks"], report["models"]
    base = models.get("mmoe")
    table = Table(title=f"MoME vs MMoE on {report['dataset']}: test AUC of the shipped model, size, latency, memory")
    table.add_column("model")
    for task in tasks:
        table.add_column(f"{task} AUC", justify="right")
    for column in ("parameters", ".mome bytes", ".onnx bytes", "p50 ms b=1", "p50 ms b=512", "added MiB"):
        table.add_column(column, justify="right")

    def cells(kind: str) -> list[str]:
        m = models[kind]
        bench = m.get("bench", {})
        aucs = ["n/a" if m["compiled_test_auc"][t] is None else f"{m['compiled_test_auc'][t]:.4f}" for t in tasks]
        return [*aucs, f"{m['summary']['parameters']:,}", f"{m['artifact_bytes']:,}", f"{m['onnx_bytes']:,}",
                f"{bench.get('1', {}).get('p50_ms', float('nan')):.3f}", f"{bench.get('512', {}).get('p50_ms', float('nan')):.2f}",
                f"{bench.get('1', {}).get('added_rss_mb', float('nan')):.1f}"]

    for kind in models:
        table.add_row(kind, *cells(kind))
    if base is not None and "mome" in models:
        m = models["mome"]

        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.2f}x" if a and b else "n/a"

        mb, bb = m.get("bench", {}), base.get("bench", {})
        table.add_row(
            "mome / mmoe", *([""] * len(tasks)),
            ratio(m["summary"]["parameters"], base["summary"]["parameters"]), ratio(m["artifact_bytes"], base["artifact_bytes"]),
            ratio(m["onnx_bytes"], base["onnx_bytes"]),
            ratio(mb.get("1", {}).get("p50_ms"), bb.get("1", {}).get("p50_ms")),
            ratio(mb.get("512", {}).get("p50_ms"), bb.get("512", {}).get("p50_ms")),
            ratio(mb.get("1", {}).get("added_rss_mb"), bb.get("1", {}).get("added_rss_mb")),
        )
    console.print(table)
    mome = models.get("mome", {}).get("summary", {})
    if mome.get("hardening_auc_change"):
        change = ", ".join(f"{t} {v:+.4f}" for t, v in mome["hardening_auc_change"].items() if v is not None)
        console.print(f"MoME test AUC change from binarising the expert masks: {change}")
    if mome.get("neuron_pruning"):
        pruning = mome["neuron_pruning"]
        console.print(f"MoME input neurons kept per base layer: {pruning['kept']} of {pruning['nominal']}")
    console.print(f"runs, artifacts and ONNX files in {report['out']}")
