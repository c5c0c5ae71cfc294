"""What the trainer tells people: epoch lines, progress bars, mask statistics, peak memory."""

from __future__ import annotations

import sys
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mome_edge.train.gates import fraction_fractional
from mome_edge.train.model import MoME, MultiTaskModel, Phase


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource  # POSIX only: imported here so that the module still imports elsewhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def mask_stats(model: MultiTaskModel) -> dict[str, float]:
    """Open shares of MoME's gates (expected, eval-time non-zero, fractional, binary); {} for baselines."""
    if not isinstance(model, MoME):
        return {}
    with torch.no_grad():
        mus = [mu.detach() for mu in model.gate_mus()]
        flat = torch.cat([m.flatten() for m in mus])
        threshold = model.config.mask_threshold
        stats = {
            "expected_open": float(model.expected_open_fraction()),
            "eval_nonzero": float((flat > 0).float().mean()),
            "fractional": fraction_fractional(flat),
        }
        if model.phase is not Phase.NEURON_MASKING:
            stats["binary_density"] = float((torch.clamp(flat, 0, 1) > threshold).float().mean())
    return stats


def auc_change(before: dict | None, after: dict) -> dict[str, float | None] | None:
    if not before:
        return None
    return {
        t: (after[t]["auc"] - before[t]["auc"]) if after[t]["auc"] is not None and before[t]["auc"] is not None else None
        for t in after
    }


def pruning_json(report) -> dict[str, Any]:
    return {"kept": list(report.kept), "nominal": list(report.nominal), "fractional_gates": report.fractional_gates}


def log_epoch(console: Console, record: dict[str, Any]) -> None:
    aucs = "  ".join(f"{t} auc {m['auc']:.4f}" if m["auc"] is not None else f"{t} auc n/a" for t, m in record["validation"].items())
    masks = record["masks"]
    extra = f"  open {masks['expected_open']:.2f}" if masks else ""
    console.print(
        f"epoch {record['epoch']:>3} [{record['phase']}] loss {record['train_loss']:.4f}  val {aucs}{extra}  ({record['seconds']:.1f}s)"
    )


class progress_bar:
    """A rich progress bar on stderr (or nothing), yielding an `advance()` callable."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self.enabled, self.description, self.total = enabled, description, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._progress.__enter__()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.__exit__(*exc)
