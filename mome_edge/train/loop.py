"""Training: one loop for every model kind, MoME's phases as explicit transitions.

Model selection and early stopping use the validation split only; the test split is
evaluated for reporting after selection. Every epoch ends with an atomic, pickle-free
checkpoint holding the model, the optimizer, the best state so far and the RNG state, so
that `resume=True` continues exactly where an interrupted run stopped. `stop_after_epoch`
ends an invocation early on purpose (time-limited jobs): the run resumes from there.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mome_edge.atomic import atomic_write_json
from mome_edge.train.checkpoint import load_tensors, optimizer_tensors, restore_optimizer, save_tensors
from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.data.types import DataSplits, MultiTaskData
from mome_edge.train.distributed import DistributedContext, context_from_env
from mome_edge.train.training_data import InMemoryData, TrainingData
from mome_edge.errors import ArtifactError, ConfigError
from mome_edge.train.gates import fraction_fractional
from mome_edge.metrics import mean_auc, task_metrics
from mome_edge.train.model import MoME, MultiTaskModel, Phase, build_model, count_parameters
from mome_edge.train.phases import remove_closed_neurons, start_hardening
from mome_edge.runs import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    MODEL_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    DatasetRef,
    RunInfo,
    checkpoint_paths,
    read_run_info,
)

KEEP_CHECKPOINTS = 2
EVAL_BATCH = 8192
BASELINE_PHASE = "dense"


@dataclass
class TrainingState:
    """Everything besides tensors that a resumed run needs (stored as checkpoint JSON)."""

    epoch: int = 0
    phase: str = BASELINE_PHASE
    epochs_in_phase: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False
    reports: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model: MultiTaskModel
    summary: dict[str, Any]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def as_tensors(data: MultiTaskData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.from_numpy(data.categorical), torch.from_numpy(data.numerical), torch.from_numpy(data.labels)


@torch.no_grad()
def predict_proba(model: MultiTaskModel, data: MultiTaskData, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Eval-mode probabilities, float32 [N, T]."""
    was_training = model.training
    model.eval()
    cat, num, _ = as_tensors(data)
    out = [torch.sigmoid(model(cat[i : i + batch_size], num[i : i + batch_size])) for i in range(0, len(data), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(data.spec.tasks)), dtype=np.float32)


@torch.no_grad()
def predict_arrays(model: MultiTaskModel, categorical: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """Eval-mode probabilities of one batch of encoded rows, float32 [B, T]."""
    was_training = model.training
    model.eval()
    probs = torch.sigmoid(model(torch.from_numpy(categorical), torch.from_numpy(numerical))).numpy()
    model.train(was_training)
    return probs


def evaluate_model(model: MultiTaskModel, data: MultiTaskData) -> dict[str, dict[str, float | None]]:
    return task_metrics(data.labels, predict_proba(model, data), data.spec.tasks)


def make_optimizer(model: MultiTaskModel, config: TrainConfig) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gates = [p for n, p in trainable if "gate_mu" in n]
    weights = [p for n, p in trainable if "gate_mu" not in n]
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay}]
    if gates:
        groups.append({"params": gates, "lr": config.gate_lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups)


def _set_phase_lambda(model: MultiTaskModel, config: TrainConfig) -> None:
    if isinstance(model, MoME):
        lambdas = {Phase.NEURON_MASKING: config.lambda_neuron, Phase.EXPERT_MASKING: config.lambda_expert, Phase.HARDENING: 0.0}
        model.lambda_ = lambdas[model.phase]


def _phase_of(model: MultiTaskModel) -> str:
    return model.phase.value if isinstance(model, MoME) else BASELINE_PHASE


def _mask_stats(model: MultiTaskModel) -> dict[str, float]:
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


class Trainer:
    """Runs (or resumes) one training job into a run folder."""

    def __init__(
        self,
        *,
        run_dir: str | Path,
        data: DataSplits | TrainingData,
        model_config: ModelConfig,
        train_config: TrainConfig,
        dataset: DatasetRef,
        progress: bool = True,
        console: Console | None = None,
        distributed: DistributedContext | None = None,
    ) -> None:
        self.dist = distributed or DistributedContext()
        progress = progress and self.dist.is_main
        self.run_dir = Path(run_dir)
        if isinstance(data, DataSplits):
            data = InMemoryData(data, max_train_rows=train_config.max_train_rows)
        self.data: TrainingData = data
        self.model_config = model_config
        self.config = train_config
        self.dataset = dataset
        self.progress = progress
        self.console = console or Console(stderr=True, quiet=not progress, soft_wrap=True)
        train_config.expert_epochs(model_config.kind)  # validates the MoME budget early
        self.history: list[dict[str, Any]] = []

    # ----- set-up and resume -------------------------------------------------------------
    def _fresh(self) -> tuple[MultiTaskModel, TrainingState]:
        seed_everything(self.config.seed)
        model = build_model(self.model_config, self.data.spec)
        state = TrainingState(phase=_phase_of(model))
        if isinstance(model, MoME) and self.config.neuron_epochs == 0:
            model, report = remove_closed_neurons(model, self.data.spec)
            state.phase = model.phase.value
            state.reports["neuron_pruning"] = _pruning_json(report)
        return model, state

    def _resume(self) -> tuple[MultiTaskModel, TrainingState, dict[str, torch.Tensor], torch.optim.Optimizer] | None:
        for path in reversed(checkpoint_paths(self.run_dir)):
            try:
                tensors, meta = load_tensors(path)
                model = build_model(self.model_config, self.data.spec, meta["structure"])
                model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
                best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")}
                optimizer = make_optimizer(model, self.config)
                restore_optimizer(optimizer, tensors, meta["optimizer"])
                torch.set_rng_state(tensors["rng.torch"])
                state = TrainingState(**meta["state"])
                self.history = list(meta["history"])
                self.console.print(f"[dim]resuming from {path.name} (epoch {state.epoch}, phase {state.phase})[/dim]")
                return model, state, best, optimizer
            except (ArtifactError, KeyError, RuntimeError, ValueError, TypeError) as exc:
                warnings.warn(f"checkpoint {path} is unusable ({exc}); falling back to the previous one", stacklevel=2)
        return None

    # ----- the loop ----------------------------------------------------------------------
    def run(self, *, resume: bool = False, stop_after_epoch: int | None = None) -> TrainResult:
        """Train to the end, or until epoch `stop_after_epoch` is checkpointed (then `resume=True` continues)."""
        if stop_after_epoch is not None and stop_after_epoch < 1:
            raise ConfigError(f"stop_after_epoch={stop_after_epoch} must be >= 1 (or None to train to the end)")
        self._prepare_run_dir(resume)
        restored = self._resume() if resume else None
        if restored is None:
            model, state = self._fresh()
            best: dict[str, torch.Tensor] = {}
            optimizer = make_optimizer(model, self.config)
        else:
            model, state, best, optimizer = restored
        if state.done:
            return self._finish(model, state, best)
        if stop_after_epoch is not None and state.epoch >= stop_after_epoch:
            # a job resubmitted with the same flags would otherwise "succeed" forever without training
            raise ConfigError(
                f"this run already stopped after epoch {state.epoch}, so stop_after_epoch={stop_after_epoch} would train "
                "nothing; resume without --stop-after-epoch, or with a larger epoch number"
            )

        while not state.done:
            if stop_after_epoch is not None and state.epoch >= stop_after_epoch:
                return self._stopped(model, state)
            _set_phase_lambda(model, self.config)
            state.epoch += 1
            state.epochs_in_phase += 1
            record = self._train_epoch(model, optimizer, state)
            score = mean_auc(record["validation"])
            if score > state.best_score or not best:  # a split without both classes still selects
                state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.bad_epochs += 1
            self.history.append(record)
            self._log_epoch(record)
            if self._phase_over(model, state):
                model, optimizer, best = self._next_phase(model, state, best)
            self._checkpoint(model, optimizer, state, best)
            if self.dist.is_main:
                atomic_write_json(self.run_dir / METRICS_FILE, self.history)
        return self._finish(model, state, best)

    def _phase_over(self, model: MultiTaskModel, state: TrainingState) -> bool:
        cfg, phase = self.config, state.phase
        if phase == Phase.NEURON_MASKING.value:
            return state.epochs_in_phase >= cfg.neuron_epochs
        if phase == Phase.HARDENING.value:
            return state.epochs_in_phase >= cfg.harden_epochs
        budget = cfg.expert_epochs("mome") if phase == Phase.EXPERT_MASKING.value else cfg.epochs
        return state.epochs_in_phase >= budget or state.bad_epochs >= cfg.patience

    def _next_phase(self, model: MultiTaskModel, state: TrainingState, best: dict[str, torch.Tensor]):
        spec = self.data.spec
        if state.phase == Phase.NEURON_MASKING.value:
            assert isinstance(model, MoME)
            model, report = remove_closed_neurons(model, spec)
            state.reports["neuron_pruning"] = _pruning_json(report)
            self.console.print(f"[bold]phase switch[/bold]: neurons kept per layer {report.kept} of {report.nominal}")
        elif state.phase == Phase.EXPERT_MASKING.value:
            assert isinstance(model, MoME)
            model.load_state_dict(best)
            stats = _mask_stats(model)
            before = {
                "epoch": state.best_epoch,
                "validation": self._evaluate(model, "validation"),
                "test": self._evaluate(model, "test"),
                "fractional_gates": stats["fractional"],
            }
            state.reports["before_hardening"] = before
            model = start_hardening(model, spec)
            self.console.print(
                f"[bold]hardening[/bold]: {100 * stats['fractional']:.1f}% of expert gates were strictly between 0 and 1; "
                f"masks are binary from here on"
            )
        else:
            model.load_state_dict(best)
            state.done = True
            return model, make_optimizer(model, self.config), best
        state.phase = _phase_of(model)
        state.epochs_in_phase = state.bad_epochs = 0
        state.best_score, state.best_epoch = -math.inf, 0
        return model, make_optimizer(model, self.config), {}

    def _train_epoch(self, model: MultiTaskModel, optimizer: torch.optim.Optimizer, state: TrainingState) -> dict[str, Any]:
        model.train()
        forward = self._wrap(model)
        plan = dict(batch_size=self.config.batch_size, seed=self.config.seed, epoch=state.epoch, ctx=self.dist)
        n_batches = self.data.num_train_batches(**plan)
        loss_sum = penalty_sum = 0.0
        start = time.perf_counter()
        with _progress_bar(self.progress, f"epoch {state.epoch} [{state.phase}]", n_batches) as advance:
            for cat, num, labels in self.data.train_batches(**plan):
                logits = forward(cat, num)
                task_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0).sum()
                penalty = model.penalty()
                optimizer.zero_grad(set_to_none=True)
                (task_loss + penalty).backward()
                optimizer.step()
                loss_sum += float(task_loss.detach())
                penalty_sum += float(penalty.detach())
                advance()
        seconds = time.perf_counter() - start
        validation = self._evaluate(model, "validation")
        return {
            "epoch": state.epoch,
            "phase": state.phase,
            "train_loss": loss_sum / max(n_batches, 1),
            "penalty": penalty_sum / max(n_batches, 1),
            "seconds": seconds,
            "rows_per_s": self.data.train_rows() / seconds if seconds > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "validation": validation,
            "masks": _mask_stats(model),
        }

    # ----- distribution ------------------------------------------------------------------
    def _wrap(self, model: MultiTaskModel):
        """DDP around the current model (re-wrapped after each phase switch: shapes change)."""
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if getattr(self, "_wrapped_for", None) is not model:
            # gradients as views of DDP's buckets: no second copy of every gradient, and no
            # stride mismatch between autograd's layout and the bucket's
            self._wrapped, self._wrapped_for = DistributedDataParallel(model, gradient_as_bucket_view=True), model
        return self._wrapped

    def _evaluate(self, model: MultiTaskModel, split: str) -> dict[str, dict[str, float | None]]:
        return self.data.evaluate(lambda cat, num: predict_arrays(model, cat, num), split, self.dist)

    # ----- persistence -------------------------------------------------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        try:
            if self.dist.is_main:
                self._prepare_run_dir_main(resume)
        finally:
            self.dist.barrier()

    def _prepare_run_dir_main(self, resume: bool) -> None:
        info = RunInfo(model_config=self.model_config, train_config=self.config, dataset=self.dataset, feature_spec=self.data.spec)
        run_file = self.run_dir / RUN_FILE
        if run_file.exists():
            if not resume:
                raise ConfigError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it, or choose another --out folder"
                )
            existing = read_run_info(self.run_dir)
            if existing.to_json() != info.to_json():
                raise ConfigError(
                    f"{self.run_dir} holds a run with other settings; resume with the same flags, or choose another --out folder"
                )
            for stale in [*self.run_dir.glob(".*.tmp"), *(self.run_dir / CHECKPOINT_DIR).glob(".*.tmp")]:
                stale.unlink(missing_ok=True)  # a write that a kill interrupted before its rename
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
        atomic_write_json(run_file, info.to_json())

    def _checkpoint(self, model, optimizer, state: TrainingState, best) -> None:
        if self.dist.is_main:
            self._write_checkpoint(model, optimizer, state, best)
        self.dist.barrier()

    def _write_checkpoint(self, model, optimizer, state: TrainingState, best) -> None:
        optim_tensors, optim_meta = optimizer_tensors(optimizer)
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in best.items()})
        tensors.update(optim_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "structure": model.structure(),
            "optimizer": optim_meta,
            "state": state.__dict__,
            "history": self.history,
        }
        save_tensors(self.run_dir / CHECKPOINT_DIR / f"epoch-{state.epoch:04d}.safetensors", tensors, meta)
        for old in checkpoint_paths(self.run_dir)[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)

    def _finish(self, model: MultiTaskModel, state: TrainingState, best) -> TrainResult:
        model.eval()
        validation = self._evaluate(model, "validation")
        test = self._evaluate(model, "test")
        summary = {
            "model": self.model_config.kind,
            "dataset": self.dataset.describe(),
            "epochs_run": state.epoch,
            "selected_epoch": state.best_epoch,
            "phase": state.phase,
            "validation": validation,
            "test": test,
            "parameters": count_parameters(model, include_gates=False),
            "seconds_per_epoch": float(np.median([r["seconds"] for r in self.history])) if self.history else None,
            "structure": model.structure(),
            **state.reports,
        }
        if isinstance(model, MoME):
            summary["masks"] = _mask_stats(model)
            summary["hardening_auc_change"] = _auc_change(state.reports.get("before_hardening", {}).get("test"), test)
        if self.dist.is_main:
            atomic_write_json(self.run_dir / METRICS_FILE, self.history)  # also when resumed after the last checkpoint
            save_tensors(self.run_dir / MODEL_FILE, model.state_dict(), {"structure": model.structure(), "summary": summary})
            atomic_write_json(self.run_dir / SUMMARY_FILE, summary)
        self.dist.barrier()
        return TrainResult(run_dir=self.run_dir, model=model, summary=summary)

    def _stopped(self, model: MultiTaskModel, state: TrainingState) -> TrainResult:
        """The result of an invocation stopped on request: no final model yet, only checkpoints."""
        summary = {
            "model": self.model_config.kind,
            "dataset": self.dataset.describe(),
            "stopped_after_epoch": state.epoch,
            "next_phase": state.phase,  # what the next epoch trains (a phase switch may just have happened)
            "history": self.history,
        }
        last = self.history[-1]["phase"] if self.history else state.phase
        self.console.print(
            f"[bold]stopped[/bold] after epoch {state.epoch} ({last}); continue with --resume and no (or a larger) --stop-after-epoch"
        )
        return TrainResult(run_dir=self.run_dir, model=model, summary=summary)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        aucs = "  ".join(f"{t} auc {m['auc']:.4f}" if m["auc"] is not None else f"{t} auc n/a" for t, m in record["validation"].items())
        masks = record["masks"]
        extra = f"  open {masks['expected_open']:.2f}" if masks else ""
        self.console.print(
            f"epoch {record['epoch']:>3} [{record['phase']}] loss {record['train_loss']:.4f}  val {aucs}{extra}  ({record['seconds']:.1f}s)"
        )


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    import resource  # POSIX only: imported here so that the module still imports elsewhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _auc_change(before: dict | None, after: dict) -> dict[str, float | None] | None:
    if not before:
        return None
    return {
        t: (after[t]["auc"] - before[t]["auc"]) if after[t]["auc"] is not None and before[t]["auc"] is not None else None
        for t in after
    }


def _pruning_json(report) -> dict[str, Any]:
    return {"kept": list(report.kept), "nominal": list(report.nominal), "fractional_gates": report.fractional_gates}


class _progress_bar:
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


def train(
    *,
    run_dir: str | Path,
    data: DataSplits | TrainingData,
    model_config: ModelConfig,
    train_config: TrainConfig,
    dataset: DatasetRef,
    resume: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train (or resume) `model_config.kind` on `data` into `run_dir` (see `Trainer.run` for `stop_after_epoch`)."""
    trainer = Trainer(
        run_dir=run_dir, data=data, model_config=model_config, train_config=train_config, dataset=dataset,
        progress=progress, distributed=context_from_env(),
    )
    return trainer.run(resume=resume, stop_after_epoch=stop_after_epoch)


def load_trained_model(run_dir: str | Path) -> tuple[MultiTaskModel, RunInfo, dict[str, Any]]:
    """The selected final model of a finished run, in eval mode, with its run info and summary."""
    info = read_run_info(run_dir)
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{run_dir} has no {MODEL_FILE}: training did not finish; continue it with `mome-edge train ... --resume`")
    tensors, meta = load_tensors(path)
    model = build_model(info.model_config, info.feature_spec, meta["structure"])
    model.load_state_dict(tensors)
    model.eval()
    return model, info, meta.get("summary", {})
