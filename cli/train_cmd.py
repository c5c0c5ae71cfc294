"""`mome-edge train`: train MoME or a baseline into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mome_edge.cli.common import metrics_table, parse_sizes, print_json, stderr, stdout
from mome_edge.cli.options import DataDir, Json, Quiet, data_dir_or_none
from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.contract import MODEL_KINDS
from mome_edge.errors import ConfigError

_defaults_model, _defaults_train = ModelConfig(), TrainConfig()


def train(
    model: str = typer.Option(..., "--model", help=f"Model kind: {', '.join(MODEL_KINDS)}."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (checkpoints, configs, metrics)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="census-income, aliexpress, synthetic or synthetic-aliexpress."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="TOML spec of your own CSV/Parquet data (instead of --dataset)."),
    prepared: Optional[Path] = typer.Option(None, "--prepared", help="Folder written by `mome-edge prepare`: streamed, bounded memory."),
    data_dir: Optional[Path] = DataDir,
    task_group: str = typer.Option("income-marital", "--task-group", help="census-income tasks: income-marital or education-marital."),
    epochs: int = typer.Option(_defaults_train.epochs, "--epochs", help="Total epochs (MoME: neuron + expert + hardening phases)."),
    seed: int = typer.Option(_defaults_train.seed, "--seed", help="Seed of initialisation, gate noise and batch order."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the train/validation/test split (kept fixed across --seed)."),
    experts: int = typer.Option(_defaults_model.experts, "--experts", help="Number of experts E."),
    hidden: str = typer.Option(",".join(map(str, _defaults_model.hidden)), "--hidden", help="Base MLP / expert sizes, e.g. 256,128."),
    tower_hidden: str = typer.Option(",".join(map(str, _defaults_model.tower_hidden)), "--tower-hidden", help="Tower hidden sizes ('' for none)."),
    embedding_dim: int = typer.Option(_defaults_model.embedding_dim, "--embedding-dim", help="Embedding width per categorical field."),
    norm: str = typer.Option(_defaults_model.norm, "--norm", help="Per-expert normalisation: batch or none."),
    neuron_epochs: int = typer.Option(_defaults_train.neuron_epochs, "--neuron-epochs", help="MoME phase 1 epochs (M)."),
    harden_epochs: int = typer.Option(_defaults_train.harden_epochs, "--harden-epochs", help="MoME epochs with binary masks."),
    lambda_neuron: float = typer.Option(_defaults_train.lambda_neuron, "--lambda-neuron", help="Neuron-gate penalty lambda_1."),
    lambda_expert: float = typer.Option(_defaults_train.lambda_expert, "--lambda-expert", help="Expert-gate penalty lambda_2."),
    gate_sigma: float = typer.Option(_defaults_model.gate_sigma, "--gate-sigma", help="Gate noise sigma."),
    mask_threshold: float = typer.Option(_defaults_model.mask_threshold, "--mask-threshold", help="Binary mask = clamp(mu,0,1) > threshold."),
    ple_shared_experts: int = typer.Option(_defaults_model.ple_shared_experts, "--ple-shared-experts", help="PLE shared experts per level."),
    ple_task_experts: int = typer.Option(_defaults_model.ple_task_experts, "--ple-task-experts", help="PLE experts per task per level."),
    budget: Optional[str] = typer.Option(
        None, "--budget", help="Size of the compiled .mome file: 120000, 120KB, 1.5MB, 96KiB (KB = 1000 B, KiB = 1024 B). "
        "The run compiles (with --weights = --budget-weights) into 0.85-1.0 x this size.",
    ),
    budget_weights: str = typer.Option("fp32", "--budget-weights", help="Precision the budget is for: fp32, fp16 or int8 (pass the same --weights to compile)."),
    gate_schedule: str = typer.Option(_defaults_train.gate_schedule, "--gate-schedule", help="Gate updates: per-sample (step-count invariant) or per-step (old)."),
    batch_size: int = typer.Option(_defaults_train.batch_size, "--batch-size"),
    lr: float = typer.Option(_defaults_train.lr, "--lr", help="Adam learning rate of weights."),
    gate_lr: float = typer.Option(_defaults_train.gate_lr, "--gate-lr", help="Adam learning rate of gate parameters."),
    patience: int = typer.Option(_defaults_train.patience, "--patience", help="Early-stopping patience (validation mean AUC)."),
    max_rows: Optional[int] = typer.Option(None, "--max-rows", help="Read only the first N rows of the data (quick runs)."),
    synthetic_rows: Optional[int] = typer.Option(None, "--synthetic-rows", help="Rows to generate for synthetic data sets."),
    synthetic_correlation: Optional[float] = typer.Option(
        None, "--synthetic-correlation", help="Task correlation p in [-1, 1] of --dataset synthetic (default 0.5; low p: the tasks "
        "need different experts). Recorded in run.json, so evaluate and compile regenerate the same data.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out."),
    stop_after_epoch: Optional[int] = typer.Option(
        None, "--stop-after-epoch", help="Stop once epoch N is checkpointed (time-limited jobs); --resume continues the run."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads (default: all cores)."),
    nproc: int = typer.Option(1, "--nproc", help="Train with N processes on this machine (runs torchrun + DistributedDataParallel)."),
    json_output: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Train a multi-task model; the run folder feeds `evaluate` and `compile`."""
    from mome_edge.extras import require_training_side

    require_training_side("train")  # first: everything below imports the training side
    from mome_edge.budget import parse_size
    from mome_edge.runs import DatasetRef

    if sum(x is not None for x in (dataset, spec, prepared)) != 1:
        raise ConfigError("give exactly one of --dataset NAME, --spec FILE.toml or --prepared DIR")
    model_config = ModelConfig(
        kind=model, embedding_dim=embedding_dim, hidden=parse_sizes(hidden, "--hidden"),
        experts=experts, tower_hidden=parse_sizes(tower_hidden, "--tower-hidden", allow_empty=True), norm=norm,
        gate_sigma=gate_sigma, mask_threshold=mask_threshold,
        ple_shared_experts=ple_shared_experts, ple_task_experts=ple_task_experts,
    )
    train_config = TrainConfig(
        epochs=epochs, neuron_epochs=neuron_epochs, harden_epochs=harden_epochs, batch_size=batch_size, lr=lr,
        gate_lr=gate_lr, lambda_neuron=lambda_neuron, lambda_expert=lambda_expert, patience=patience, seed=seed,
        gate_schedule=gate_schedule, budget_bytes=None if budget is None else parse_size(budget), budget_weights=budget_weights,
    )
    from mome_edge.data.registry import check_synthetic_correlation

    # before anything is created or loaded: a bad value is one error line and no run folder
    check_synthetic_correlation(synthetic_correlation, dataset, flag="--synthetic-correlation")
    if prepared is not None:
        ref = DatasetRef.prepared(prepared, seed=split_seed)
    else:
        ref = DatasetRef(
            name=dataset, spec_path=str(spec.resolve()) if spec is not None else None, data_dir=data_dir_or_none(data_dir),
            seed=split_seed, task_group=task_group, max_rows=max_rows, synthetic_rows=synthetic_rows,
            synthetic_correlation=synthetic_correlation,
        )
    from mome_edge.cli.main import INVOCATION_ARGS
    from mome_edge.train.launch import TrainJob, run_training_job

    job = TrainJob(out=out, dataset=ref, model_config=model_config, train_config=train_config, resume=resume,
                   stop_after_epoch=stop_after_epoch, threads=threads, nproc=nproc, progress=not quiet)
    outcome = run_training_job(job, invocation_args=INVOCATION_ARGS, log=lambda line: None if quiet else stderr.print(f"[dim]{line}[/dim]"))
    if outcome.launched_exit_code is not None:
        raise typer.Exit(outcome.launched_exit_code)
    if not outcome.is_reporting_rank:
        return  # under torchrun only rank 0 reports
    render_summary(out, model, outcome.summary, outcome.tasks, json_output=json_output)


def render_summary(out: Path, model: str, summary: dict, tasks: tuple[str, ...], *, json_output: bool) -> None:
    """The run's result: one JSON object, or tables of metrics (or of epochs, for a stopped run)."""
    if json_output:
        print_json(summary)
        return
    if "stopped_after_epoch" in summary:
        stdout.print(epochs_table(f"run {out}: stopped after epoch {summary['stopped_after_epoch']}", summary["history"]))
        stdout.print("continue with the same command plus --resume, without --stop-after-epoch (or with a larger N)")
        return
    rows = [(f"{model} (validation)", summary["validation"]), (f"{model} (test)", summary["test"])]
    if "before_hardening" in summary:
        rows.insert(1, (f"{model} before hardening (test)", summary["before_hardening"]["test"]))
    stdout.print(metrics_table(f"run {out}", rows, tasks))
    stdout.print(f"parameters: {summary['parameters']:,}   median seconds/epoch: {summary['seconds_per_epoch']:.2f}")
    if "budget" in summary:
        b = summary["budget"]
        stdout.print(
            f"budget {b['bytes']:,} bytes ({b['weights']}): `mome-edge compile {out} -o MODEL.mome --weights {b['weights']}` writes "
            f"{b['achieved_bytes']:,} bytes ({100 * b['achieved_bytes'] / b['bytes']:.1f}% of the budget)"
        )


def epochs_table(title: str, history: list[dict]):
    """One row per trained epoch: phase, time, throughput, memory, validation AUCs."""
    from rich.table import Table

    tasks = list(history[0]["validation"]) if history else []
    table = Table(title=title)
    for name in ("epoch", "phase", "seconds", "rows/s", "peak RSS MiB", *(f"val {t} AUC" for t in tasks)):
        table.add_column(name, justify="left" if name == "phase" else "right", no_wrap=name == "phase")
    for r in history:
        aucs = [f"{r['validation'][t]['auc']:.4f}" if r["validation"][t]["auc"] is not None else "n/a" for t in tasks]
        rate = f"{r['rows_per_s']:,.0f}" if r.get("rows_per_s") else "-"
        rss = f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else "-"
        table.add_row(str(r["epoch"]), r["phase"], f"{r['seconds']:.1f}", rate, rss, *aucs)
    return table
