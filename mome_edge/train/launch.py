"""Starting a training job: the output guard, the torchrun relaunch, threads, then the loop.

    job = TrainJob(out=..., dataset=DatasetRef(...), model_config=..., train_config=..., nproc=2)
    outcome = run_training_job(job, invocation_args=sys.argv[1:])

The CLI only parses flags into a TrainJob and renders the outcome. This module imports no
torch at module level: with --nproc N the launching process only re-runs the same command
under torchrun and waits, so it must stay light.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.errors import ConfigError
from mome_edge.runs import DatasetRef, check_out_folder


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """Everything one `mome-edge train` invocation asks for."""

    out: Path
    dataset: DatasetRef
    model_config: ModelConfig
    train_config: TrainConfig
    resume: bool = False
    stop_after_epoch: int | None = None
    threads: int | None = None
    nproc: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise ConfigError(f"--nproc {self.nproc} must be >= 1")
        if self.stop_after_epoch is not None and self.stop_after_epoch < 1:
            raise ConfigError(f"--stop-after-epoch {self.stop_after_epoch} must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads} must be >= 1")


@dataclass(frozen=True, kw_only=True)
class TrainOutcome:
    """What a job ended with: the run's summary (rank 0), or the exit code of a torchrun launch."""

    summary: dict[str, Any] | None = None
    tasks: tuple[str, ...] = ()
    launched_exit_code: int | None = None
    is_reporting_rank: bool = True


def run_training_job(job: TrainJob, *, invocation_args: Sequence[str], log: Callable[[str], None] = lambda _: None) -> TrainOutcome:
    """Check the job, relaunch under torchrun when asked for N > 1 processes, or train here.

    Args:
        job: the configs and options of the run.
        invocation_args: this process's CLI arguments (re-used verbatim for the torchrun ranks).
        log: receives one-line progress messages (data description, launch command).
    Raises:
        ConfigError / DataError: a bad --out, data that cannot be read, too few row groups.
    """
    job.train_config.expert_epochs(job.model_config.kind)
    check_out_folder(job.out, resume=job.resume)  # before loading any data: a bad --out fails at once
    if job.nproc > 1 and "WORLD_SIZE" not in os.environ:
        # the checks that need no data loading have run: their errors are one line here, not N tracebacks
        if job.dataset.is_prepared:
            from mome_edge.data.prepared import PreparedDataset

            # raises DataError when some rank would get no training row group (reads prepared.json only)
            PreparedDataset(Path(str(job.dataset.data_dir))).rows_per_rank("train", world_size=job.nproc)
        return TrainOutcome(launched_exit_code=relaunch_with_torchrun(job.nproc, invocation_args, log=log))
    if job.threads is not None:  # in the ranks, not in the launcher (which imports no torch)
        import torch

        torch.set_num_threads(job.threads)
    from mome_edge.train.loop import train

    data = job.dataset.open()
    log(f"{job.dataset.describe()}: {data.train_rows()} training rows, tasks {', '.join(data.spec.tasks)}")
    result = train(
        run_dir=job.out, data=data, model_config=job.model_config, train_config=job.train_config, dataset=job.dataset,
        resume=job.resume, progress=job.progress, stop_after_epoch=job.stop_after_epoch,
    )
    return TrainOutcome(summary=result.summary, tasks=tuple(data.spec.tasks), is_reporting_rank=os.environ.get("RANK", "0") == "0")


def relaunch_with_torchrun(nproc: int, invocation_args: Sequence[str], *, log: Callable[[str], None] = lambda _: None) -> int:
    """Run the same `train` command under torchrun with N local processes; its exit code."""
    args, skip = [], False
    for arg in invocation_args:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "-m", "mome_edge.cli", *args]
    log(f"launching: {' '.join(command[1:])}")
    return subprocess.call(command)
