"""The trainer's side of the run folder: create or reopen it, keep the last checkpoints,
write the final model and summary. Only the main process writes (callers check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from mome_edge.atomic import atomic_write_json
from mome_edge.errors import ConfigError
from mome_edge.runs import CHECKPOINT_DIR, METRICS_FILE, MODEL_FILE, RUN_FILE, SUMMARY_FILE, RunInfo, checkpoint_paths, read_run_info
from mome_edge.train.checkpoint import checkpoint_path, save_tensors, write_checkpoint

KEEP_CHECKPOINTS = 2


def prepare_run_folder(run_dir: Path, info: RunInfo, *, resume: bool) -> None:
    """A new run folder with run.json, or (resume) the existing one checked against `info`."""
    run_file = run_dir / RUN_FILE
    if run_file.exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out folder")
        existing = read_run_info(run_dir)
        if existing.to_json() != info.to_json():
            raise ConfigError(f"{run_dir} holds a run with other settings; resume with the same flags, or choose another --out folder")
        for stale in [*run_dir.glob(".*.tmp"), *(run_dir / CHECKPOINT_DIR).glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # a write that a kill interrupted before its rename
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    atomic_write_json(run_file, info.to_json())


def save_epoch(run_dir: Path, epoch: int, *, model, best, optimizer, meta: Mapping[str, Any]) -> None:
    """This epoch's checkpoint; older ones beyond the last KEEP_CHECKPOINTS are removed."""
    write_checkpoint(checkpoint_path(run_dir / CHECKPOINT_DIR, epoch), model=model, best=best, optimizer=optimizer, meta=meta)
    for old in checkpoint_paths(run_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_json(run_dir / METRICS_FILE, history)


def write_final(run_dir: Path, model: torch.nn.Module, structure: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    save_tensors(run_dir / MODEL_FILE, model.state_dict(), {"structure": structure, "summary": summary})
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
