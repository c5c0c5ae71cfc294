"""Training: one loop for every model kind, MoME's phases as explicit transitions.

Model selection and early stopping use the validation split only; the test split is
evaluated for reporting after selection. Every epoch ends with an atomic, pickle-free
checkpoint holding the model, the optimizer, the best state so far and the RNG state, so
that `resume=True` continues exactly where an interrupted run stopped. `stop_after_epoch`
ends an invocation early on purpose (time-limited jobs): the run resumes from there.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.data.types import DataSplits, MultiTaskData
from mome_edge.errors import ArtifactError, ConfigError
from mome_edge.metrics import mean_auc, task_metrics
from mome_edge.runs import MODEL_FILE, DatasetRef, RunInfo, checkpoint_paths, read_run_info
from mome_edge.train.checkpoint import load_tensors, read_checkpoint, restore_optimizer
from mome_edge.train.budget_plan import BudgetPlan, artifact_metadata, placeholder_summary, plan_budget
from mome_edge.train.distributed import DistributedContext, ModelWrapper, context_from_env
from mome_edge.train.gate_schedule import GateSchedule, gate_step_rate
from mome_edge.train.model import MoME, MultiTaskModel, build_model, count_parameters
from mome_edge.train.phases import TRANSITIONS, TrainingPhase, phase_over, remove_closed_neurons, start_hardening
from mome_edge.train.reporting import auc_change, log_epoch, mask_stats, peak_rss_mb, progress_bar, pruning_json
from mome_edge.train.run_folder import prepare_run_folder, save_epoch, write_final, write_metrics
from mome_edge.train.training_data import InMemoryData, TrainingData

EVAL_BATCH = 8192


@dataclass
class TrainingState:
    """Everything besides tensors that a resumed run needs (stored as checkpoint JSON)."""

    epoch: int = 0
    phase: TrainingPhase = TrainingPhase.DENSE
    epochs_in_phase: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    done: bool = False
    reports: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.phase = TrainingPhase(self.phase)  # checkpoint JSON holds the value

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "phase": self.phase.value}


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


def make_optimizer(model: MultiTaskModel, config: TrainConfig, *, train_rows: int | None = None) -> torch.optim.Optimizer:
    """Adam over weights (lr) and gates (the gate schedule's per-step rate for `train_rows`
    rows per epoch; config.gate_lr when not given)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gates = [p for n, p in trainable if "gate_mu" in n]
    weights = [p for n, p in trainable if "gate_mu" not in n]
    groups = [{"params": weights, "lr": config.lr, "weight_decay": config.weight_decay}]
    if gates:
        rate = config.gate_lr if train_rows is None else gate_step_rate(config, train_rows)
        groups.append({"params": gates, "lr": rate, "weight_decay": 0.0})
    return torch.optim.Adam(groups)


class Trainer:
    """Runs (or resumes) one training job into a run folder: the epoch loop and the phase
    switches. Run-folder files, checkpoint keys, DDP wrapping and reporting live in
    run_folder, checkpoint, distributed and reporting."""

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
        self._forward = ModelWrapper(self.dist)
        self.schedule = GateSchedule(train_config, self.data.train_rows(), weights=train_config.budget_weights)
        self.budget: BudgetPlan | None = None
        if train_config.budget_bytes is not None:
            # before the run folder exists: an unreachable budget trains and writes nothing
            self.model_config, self.budget = plan_budget(model_config, train_config, self.data.spec, dataset, self.run_dir)
            for line in self.budget.changes:
                self.console.print(f"[dim]budget: {line}[/dim]")
        self._gate_costs: list[torch.Tensor] | None = None

    def _optimizer(self, model: MultiTaskModel) -> torch.optim.Optimizer:
        return make_optimizer(model, self.config, train_rows=self.data.train_rows())

    def _run_info(self) -> RunInfo:
        return RunInfo(model_config=self.model_config, train_config=self.config, dataset=self.dataset, feature_spec=self.data.spec)

    def _metadata(self, summary: dict[str, Any]) -> dict[str, Any]:
        return artifact_metadata(self.run_dir, self._run_info(), summary)

    # ----- set-up and resume -------------------------------------------------------------
    def _fresh(self) -> tuple[MultiTaskModel, TrainingState]:
        seed_everything(self.config.seed)
        model = build_model(self.model_config, self.data.spec)
        state = TrainingState(phase=TrainingPhase.first(self.model_config.kind))
        if isinstance(model, MoME) and self.config.neuron_epochs == 0:
            model, report = remove_closed_neurons(model, self.data.spec)
            state.phase = TrainingPhase.EXPERT_MASKING
            state.reports["neuron_pruning"] = pruning_json(report)
        return model, state

    def _resume(self) -> tuple[MultiTaskModel, TrainingState, dict[str, torch.Tensor], torch.optim.Optimizer] | None:
        for path in reversed(checkpoint_paths(self.run_dir)):
            try:
                checkpoint = read_checkpoint(path)
                model = build_model(self.model_config, self.data.spec, checkpoint.meta["structure"])
                model.load_state_dict(checkpoint.model_state)
                optimizer = self._optimizer(model)
                restore_optimizer(optimizer, checkpoint.optimizer_tensors, checkpoint.meta["optimizer"])
                torch.set_rng_state(checkpoint.rng_state)
                state = TrainingState(**checkpoint.meta["state"])
                self.history = list(checkpoint.meta["history"])
                self.console.print(f"[dim]resuming from {path.name} (epoch {state.epoch}, phase {state.phase.value})[/dim]")
                return model, state, checkpoint.best_state, optimizer
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
            optimizer = self._optimizer(model)
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
            if self.dist.is_main:
                log_epoch(self.console, record)
            if phase_over(state.phase, self.config, epochs_in_phase=state.epochs_in_phase, bad_epochs=state.bad_epochs):
                model, optimizer, best = self._next_phase(model, state, best)
            self._checkpoint(model, optimizer, state, best)
            if self.dist.is_main:
                write_metrics(self.run_dir, self.history)
        return self._finish(model, state, best)

    def _next_phase(self, model: MultiTaskModel, state: TrainingState, best: dict[str, torch.Tensor]):
        """Leave `state.phase` for the phase TRANSITIONS names (or end training)."""
        spec = self.data.spec
        following = TRANSITIONS[state.phase].next
        if following is None:
            model.load_state_dict(best)
            state.done = True
            return model, self._optimizer(model), best
        assert isinstance(model, MoME)  # only MoME has more than one phase
        if following is TrainingPhase.EXPERT_MASKING:
            keep = None
            if self.budget is not None:
                from mome_edge.compile.sizing import mome_neuron_keep

                metadata = self._metadata(placeholder_summary(spec.tasks, "mome"))
                keep, switch_bytes = mome_neuron_keep(model, spec, target_bytes=self.budget.ceiling_bytes,
                                                      weights=self.budget.weights, metadata=metadata)
                state.reports.setdefault("budget_steps", {})["neuron_switch_bytes"] = switch_bytes
            # with a budget the experts are carved as without one (the expert penalty, gates
            # starting where they always start); the masks are fitted to the budget at hardening
            model, report = remove_closed_neurons(model, spec, keep=keep)
            state.reports["neuron_pruning"] = pruning_json(report)
            if keep is not None:
                state.reports["budget_steps"]["neurons"] = {"kept": list(report.kept), "nominal": list(report.nominal)}
            self.console.print(f"[bold]phase switch[/bold]: neurons kept per layer {report.kept} of {report.nominal}")
        elif following is TrainingPhase.HARDENING:
            model.load_state_dict(best)
            stats = mask_stats(model)
            state.reports["before_hardening"] = {
                "epoch": state.best_epoch,
                "validation": self._evaluate(model, "validation"),
                "test": self._evaluate(model, "test"),
                "fractional_gates": stats["fractional"],
            }
            if self.budget is None:
                model = start_hardening(model, spec)
            else:
                from mome_edge.compile.sizing import METADATA_MARGIN_BYTES, trim_expert_masks

                metadata = self._metadata(placeholder_summary(spec.tasks, "mome"))
                model, trim = trim_expert_masks(
                    model, spec, low_bytes=self.budget.low_bytes + METADATA_MARGIN_BYTES, high_bytes=self.budget.ceiling_bytes,
                    weights=self.budget.weights, metadata=metadata,
                )
                state.reports.setdefault("budget_steps", {})["expert_masks"] = trim
                self.console.print(f"[bold]budget[/bold]: expert masks at density {trim['density']:.3f} -> {trim['bytes']:,} bytes")
            self.console.print(
                f"[bold]hardening[/bold]: {100 * stats['fractional']:.1f}% of expert gates were strictly between 0 and 1; "
                f"masks are binary from here on"
            )
        state.phase = following
        state.epochs_in_phase = state.bad_epochs = 0
        state.best_score, state.best_epoch = -math.inf, 0
        self._gate_costs = None
        return model, self._optimizer(model), {}

    def _train_epoch(self, model: MultiTaskModel, optimizer: torch.optim.Optimizer, state: TrainingState) -> dict[str, Any]:
        model.train()
        forward = self._forward(model)
        steering = self.budget is not None and state.phase is TrainingPhase.NEURON_MASKING and isinstance(model, MoME)
        costs = self._costs(model)
        if steering:  # lambda follows the expected bytes (a function of the gates: nothing to checkpoint)
            weight = self.schedule.steer(model, costs, self.budget.target_share)
        else:
            weight = TRANSITIONS[state.phase].penalty_weight(self.config)
        plan = dict(batch_size=self.config.batch_size, seed=self.config.seed, epoch=state.epoch, ctx=self.dist)
        n_batches = self.data.num_train_batches(**plan)
        loss_sum = penalty_sum = 0.0
        start = time.perf_counter()
        with progress_bar(self.progress, f"epoch {state.epoch} [{state.phase.value}]", n_batches) as advance:
            for cat, num, labels in self.data.train_batches(**plan):
                logits = forward(cat, num)
                task_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0).sum()
                penalty = self.schedule.loss_penalty(model, weight, costs if self.budget is not None else None)
                optimizer.zero_grad(set_to_none=True)
                (task_loss + penalty).backward()
                optimizer.step()
                if steering:
                    weight = self.schedule.steer(model, costs, self.budget.target_share)
                loss_sum += float(task_loss.detach())
                penalty_sum += float(penalty.detach())
                advance()
        seconds = time.perf_counter() - start
        validation = self._evaluate(model, "validation")
        return {
            "epoch": state.epoch,
            "phase": state.phase.value,
            "train_loss": loss_sum / max(n_batches, 1),
            "penalty": penalty_sum / max(n_batches, 1),
            "penalty_weight": weight,
            "seconds": seconds,
            "rows_per_s": self.data.train_rows() / seconds if seconds > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
            "validation": validation,
            "masks": mask_stats(model),
        }

    def _costs(self, model: MultiTaskModel) -> list[torch.Tensor] | None:
        """Relative bytes of each gate of the current phase (constant within a phase)."""
        if not isinstance(model, MoME):
            return None
        if self._gate_costs is None:
            self._gate_costs = self.schedule.relative_costs(model)
        return self._gate_costs

    def _evaluate(self, model: MultiTaskModel, split: str) -> dict[str, dict[str, float | None]]:
        return self.data.evaluate(lambda cat, num: predict_arrays(model, cat, num), split, self.dist)

    # ----- persistence (main process writes, every process waits) ------------------------
    def _prepare_run_dir(self, resume: bool) -> None:
        try:
            if self.dist.is_main:
                prepare_run_folder(self.run_dir, self._run_info(), resume=resume)
        finally:
            self.dist.barrier()

    def _checkpoint(self, model, optimizer, state: TrainingState, best) -> None:
        if self.dist.is_main:
            meta = {"structure": model.structure(), "state": state.to_json(), "history": self.history}
            save_epoch(self.run_dir, state.epoch, model=model, best=best, optimizer=optimizer, meta=meta)
        self.dist.barrier()

    def _finish(self, model: MultiTaskModel, state: TrainingState, best) -> TrainResult:
        model.eval()
        validation = self._evaluate(model, "validation")
        test = self._evaluate(model, "test")
        summary = {
            "model": self.model_config.kind,
            "dataset": self.dataset.describe(),
            "epochs_run": state.epoch,
            "selected_epoch": state.best_epoch,
            "phase": state.phase.value,
            "validation": validation,
            "test": test,
            "parameters": count_parameters(model, include_gates=False),
            "seconds_per_epoch": float(np.median([r["seconds"] for r in self.history])) if self.history else None,
            "structure": model.structure(),
            **state.reports,
        }
        if isinstance(model, MoME):
            summary["masks"] = mask_stats(model)
            summary["hardening_auc_change"] = auc_change(state.reports.get("before_hardening", {}).get("test"), test)
        if self.budget is not None:
            summary["budget"] = self._budget_report(model, summary)
        if self.dist.is_main:
            write_metrics(self.run_dir, self.history)  # also when resumed after the last checkpoint
            write_final(self.run_dir, model, model.structure(), summary)
        self.dist.barrier()
        return TrainResult(run_dir=self.run_dir, model=model, summary=summary)

    def _budget_report(self, model: MultiTaskModel, summary: dict[str, Any]) -> dict[str, Any]:
        """The budget, the bytes `mome-edge compile` will write, and where they go.

        The report is part of the manifest it measures: iterate to the fixed point (the byte
        count's own digits change the file's length by at most a few bytes)."""
        from mome_edge.compile.sizing import compiled_size

        plan = self.budget
        assert plan is not None
        report: dict[str, Any] = {
            "bytes": plan.budget_bytes, "weights": plan.weights, "range": [plan.low_bytes, plan.budget_bytes],
            "smallest_bytes": plan.smallest_bytes, "shrunk": "; ".join(plan.changes + _budget_steps_text(summary.get("budget_steps", {}))),
            **summary.pop("budget_steps", {}),
            "achieved_bytes": plan.budget_bytes, "within_range": True, "components": {},
        }
        for _ in range(6):
            size = compiled_size(model, self.data.spec, weights=plan.weights, metadata=self._metadata({**summary, "budget": report}))
            if size.bytes == report["achieved_bytes"] and size.components == report["components"]:
                break
            report.update(achieved_bytes=size.bytes, components=size.components,
                          within_range=plan.low_bytes <= size.bytes <= plan.budget_bytes)
        return report

    def _stopped(self, model: MultiTaskModel, state: TrainingState) -> TrainResult:
        """The result of an invocation stopped on request: no final model yet, only checkpoints."""
        summary = {
            "model": self.model_config.kind,
            "dataset": self.dataset.describe(),
            "stopped_after_epoch": state.epoch,
            "next_phase": state.phase.value,  # what the next epoch trains (a phase switch may just have happened)
            "history": self.history,
        }
        last = self.history[-1]["phase"] if self.history else state.phase.value
        self.console.print(
            f"[bold]stopped[/bold] after epoch {state.epoch} ({last}); continue with --resume and no (or a larger) --stop-after-epoch"
        )
        return TrainResult(run_dir=self.run_dir, model=model, summary=summary)


def _budget_steps_text(steps: dict[str, Any]) -> list[str]:
    """MoME's budget steps for people: the neuron switch and the expert-mask choice."""
    lines = []
    if "neurons" in steps:
        lines.append(f"neurons kept per layer {steps['neurons']['kept']} of {steps['neurons']['nominal']} "
                     f"(inputs of each layer, then outputs), fully open {steps['neuron_switch_bytes']:,} bytes")
    trim = steps.get("expert_masks")
    if trim:
        how = "kept as trained" if not trim["trimmed"] else f"trained at {trim['natural_density']:.3f}, the most open {trim['density']:.3f} kept to fit"
        lines.append(f"expert masks: density {trim['density']:.3f} ({how})")
    return lines


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
