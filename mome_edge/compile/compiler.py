"""The compiler: a trained torch model -> CompiledModel (numpy). Torch stops here.

    compile_model(model, spec, metadata=...)   fold normalisation, biases and masks into numbers
    compile_run(run_dir, weights="int8")       the same for a finished run folder
    compile_to_file(run_dir, out, weights=...) + parity check, AUC report and the artifact file

What is folded (docs/artifact-format.md, METHOD.md section 5):
- Eval-mode per-expert batch normalisation and the layer bias become one (scale, shift) pair
  of small vectors per expert; the shared base weight W_l stays shared (scaling its rows per
  expert would make it per-expert and defeat the sharing).
- MoME masks are binary (phase HARDENING); neuron masks were folded at the phase switch.
- Dead neurons: output j of layer l whose mask row is zero in every expert computes the
  constant relu(shift[e, j]) in expert e; that constant is folded into layer l+1's shift and
  row j / column j disappear. Never for the last trunk layer: it feeds the gate mixture.
- Outputs no expert of the next layer reads are dropped; x0 columns the first layer does not
  read are skipped with `input_index` (x0 also feeds the task gates), and dropped from the
  embeddings only when no gate reads them either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from mome_edge.artifact.writer import artifact_bytes, quantize_model
from mome_edge.artifact.schema import check_compiled_model
from mome_edge.artifact.reader import parse_artifact
from mome_edge.atomic import atomic_write_bytes
from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, Linear, PleLevel
from mome_edge.config import config_to_json
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ConfigError, DataError, ParityError
from mome_edge.train.gates import binary_gate
from mome_edge.train.layers import DenseExpertLinear, ExpertBatchNorm
from mome_edge.train.model import MMoE, PLE, MoME, MultiTaskModel, Phase, SharedBottom, SingleTask, TaskGates, Towers
from mome_edge.runtime.predict import reference_predict

FP32_PARITY_TOLERANCE = 1e-5  # max |p_torch - p_compiled| of probabilities, fp32 weights


# ===== torch -> numpy ========================================================================
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)  # fold in float64, store float32


def _affine(norm: nn.Module, bias: np.ndarray, experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode norm after `+ bias` -> per-expert (scale, shift), float64 (E, out).

    y = gamma_e * (u + b - m_e) / sqrt(v_e + eps) + beta_e  with u = h W_e^T
      = u * s_e + t_e,   s_e = gamma_e / sqrt(v_e + eps),  t_e = (b - m_e) * s_e + beta_e
    """
    bias = np.broadcast_to(bias, (experts, bias.shape[-1]))
    if isinstance(norm, ExpertBatchNorm):
        scale = _np(norm.weight) / np.sqrt(_np(norm.running_var) + norm.eps)
        return scale, (bias - _np(norm.running_mean)) * scale + _np(norm.bias)
    if isinstance(norm, nn.Identity):
        return np.ones_like(bias), bias.copy()
    raise ConfigError(f"normalisation {type(norm).__name__} cannot be compiled; train with --norm batch or none")


def _dense_layer(linear: DenseExpertLinear, norm: nn.Module) -> ExpertLayer:
    weight = _np(linear.weight)  # (E, out, in)
    scale, shift = _affine(norm, _np(linear.bias), weight.shape[0])
    return ExpertLayer(weight=weight.astype(np.float32), masks=None, scale=scale.astype(np.float32), shift=shift.astype(np.float32))


def _stacked_linear(layer: DenseExpertLinear) -> Linear:
    return Linear(weight=_np(layer.weight).astype(np.float32), bias=_np(layer.bias).astype(np.float32))


def _task_gates(gates: TaskGates) -> Linear:
    # nn.Linear(d0, T*E) viewed as (B, T, E): output t*E + e is task t's logit for expert e.
    tasks, experts = gates.tasks, gates.experts
    weight = _np(gates.linear.weight).reshape(tasks, experts, -1)  # (T, E, d0)
    bias = _np(gates.linear.bias).reshape(tasks, experts)
    return Linear(weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def _towers(towers: Towers) -> tuple[Linear, ...]:
    return tuple(_stacked_linear(layer) for layer in towers.layers)


# ===== dead-neuron removal (MoME) ===========================================================
@dataclass
class _MaskedStack:
    """MoME trunk as plain arrays while pruning: W (out, in), M bool (E, out, in), S/T (E, out)."""

    weights: list[np.ndarray]
    masks: list[np.ndarray]
    scales: list[np.ndarray]
    shifts: list[np.ndarray]
    input_index: np.ndarray  # columns of x0 the first layer reads

    def drop_outputs(self, l: int, keep: np.ndarray) -> None:
        self.weights[l], self.masks[l] = self.weights[l][keep], self.masks[l][:, keep]
        self.scales[l], self.shifts[l] = self.scales[l][:, keep], self.shifts[l][:, keep]
        self.weights[l + 1], self.masks[l + 1] = self.weights[l + 1][:, keep], self.masks[l + 1][:, :, keep]


def _prune(stack: _MaskedStack) -> dict[str, Any]:
    """Remove dead and unread neurons until nothing changes; returns what was removed.

    Removing an unread output can leave inputs of the same layer unread (backwards), and
    removing inputs can leave a row without any open weight (forwards): iterate to a fixed point.
    """
    layers = len(stack.weights)
    dead_removed = [0] * layers
    unread_removed = [0] * layers
    changed = True
    while changed:
        changed = False
        for l in range(layers - 1):  # never the last layer's outputs: they feed the gate mixture
            dead = ~stack.masks[l].any(axis=(0, 2))  # (out,) closed in every expert
            unread = ~stack.masks[l + 1].any(axis=(0, 1))  # (out,) read by no expert of layer l+1
            drop = dead | unread
            if not drop.any():
                continue
            # Expert e's output j is relu(0 * s + t[e, j]): a constant entering layer l+1.
            const = np.maximum(stack.shifts[l][:, dead], 0.0)  # (E, n_dead)
            folded = np.einsum("ej,eoj,oj->eo", const, stack.masks[l + 1][:, :, dead], stack.weights[l + 1][:, dead])
            stack.shifts[l + 1] = stack.shifts[l + 1] + folded * stack.scales[l + 1]
            dead_removed[l] += int(dead.sum())
            unread_removed[l] += int((unread & ~dead).sum())
            stack.drop_outputs(l, ~drop)
            changed = True
        read = stack.masks[0].any(axis=(0, 1))  # x0 columns some expert reads
        if not read.all():
            stack.weights[0], stack.masks[0] = stack.weights[0][:, read], stack.masks[0][:, :, read]
            stack.input_index = stack.input_index[read]
            changed = True
    return {"dead_neurons_removed": dead_removed, "unread_neurons_removed": unread_removed}


def _mome_layers(model: MoME) -> tuple[list[ExpertLayer], dict[str, Any]]:
    experts = model.config.experts
    stack = _MaskedStack([], [], [], [], np.arange(model.embeddings.out_features, dtype=np.int64))
    for linear, norm in zip(model.base, model.norms):
        masks = binary_gate(linear.gate_mu.detach(), linear.threshold).cpu().numpy() > 0.5  # exact 0/1 -> bool
        scale, shift = _affine(norm, _np(linear.bias), experts)
        stack.weights.append(_np(linear.weight))
        stack.masks.append(masks)
        stack.scales.append(scale)
        stack.shifts.append(shift)
    report = _prune(stack)
    layers = []
    for l in range(len(stack.weights)):
        # A masked-out weight never contributes: store 0 there (compresses, and the dense
        # expert weights M * W are unchanged).
        weight = np.where(stack.masks[l].any(axis=0), stack.weights[l], 0.0)
        index = stack.input_index if l == 0 and not np.array_equal(stack.input_index, np.arange(model.embeddings.out_features)) else None
        layers.append(
            ExpertLayer(
                weight=weight.astype(np.float32),
                masks=stack.masks[l],
                scale=stack.scales[l].astype(np.float32),
                shift=stack.shifts[l].astype(np.float32),
                input_index=index,
            )
        )
    return layers, report


# ===== input columns ========================================================================
def _embeddings(model: MultiTaskModel) -> tuple[tuple[int, ...], list[np.ndarray], np.ndarray]:
    emb = model.embeddings
    tables = [_np(t.weight).astype(np.float32) for t in emb.tables]
    return tuple(emb.field_index), tables, emb.numerical_keep.cpu().numpy().astype(np.int64)


def _drop_x0_columns(
    field_index: tuple[int, ...], tables: list[np.ndarray], numerical_keep: np.ndarray, needed: np.ndarray
) -> tuple[tuple[int, ...], list[np.ndarray], np.ndarray]:
    """Keep the x0 columns in `needed` (bool (d0,)): embedding dims, whole tables, numericals."""
    kept_fields, kept_tables, offset = [], [], 0
    for field, table in zip(field_index, tables):
        cols = needed[offset : offset + table.shape[1]]
        offset += table.shape[1]
        if cols.any():
            kept_fields.append(field)
            kept_tables.append(np.ascontiguousarray(table[:, cols]))
    return tuple(kept_fields), kept_tables, numerical_keep[needed[offset:]]


# ===== the compiler =========================================================================
def compile_model(model: MultiTaskModel, spec: FeatureSpec, *, metadata: Mapping[str, Any]) -> CompiledModel:
    """Fold a trained model into a CompiledModel (numpy float32, eval-mode semantics).

    Args:
        model: a trained model of any kind; a MoME model must be in phase HARDENING.
        spec: the feature spec the model was trained with.
        metadata: JSON-able facts to carry along (run name, configs, metrics...). The
            compiler adds "nominal" (configured sizes) and "compile" (what it removed).
    Returns:
        CompiledModel whose `reference_forward` equals the model's eval probabilities within
        FP32_PARITY_TOLERANCE.
    Raises:
        ConfigError: a MoME model in another phase, tasks that differ from the spec, or a
            model kind / normalisation the compiler does not know.
    """
    if tuple(model.task_names) != tuple(spec.tasks):
        raise ConfigError(f"the model's tasks {list(model.task_names)} differ from the spec's {list(spec.tasks)}; pass the run's own feature spec")
    field_index, tables, numerical_keep = _embeddings(model)
    extra: dict[str, Any] = {"nominal": nominal_sizes(model, spec)}
    kwargs: dict[str, Any] = {}
    with torch.no_grad():
        if isinstance(model, MoME):
            if model.phase is not Phase.HARDENING:
                raise ConfigError(
                    f"this MoME model is in phase {model.phase.value}; only a model in phase {Phase.HARDENING.value} "
                    "(exact binary expert masks) compiles into bitsets: finish its training (`mome-edge train ... --resume`)"
                )
            layers, report = _mome_layers(model)
            gates = _task_gates(model.gates)
            # x0 columns that neither the first layer nor any task gate reads carry no information.
            needed = (gates.weight != 0).any(axis=(0, 1))
            if layers[0].input_index is not None:
                needed[layers[0].input_index] = True
            else:
                needed[:] = True
            if not needed.all():
                remap = (np.cumsum(needed) - 1)[layers[0].input_index]
                all_read = np.array_equal(remap, np.arange(int(needed.sum())))
                layers[0] = dataclasses.replace(layers[0], input_index=None if all_read else remap)
                gates = Linear(weight=np.ascontiguousarray(gates.weight[:, :, needed]), bias=gates.bias)
                field_index, tables, numerical_keep = _drop_x0_columns(field_index, tables, numerical_keep, needed)
            report["input_columns_removed"] = int((~needed).sum())
            extra["compile"] = report
            kwargs = {"layers": tuple(layers), "routing": "softmax", "gates": gates}
        elif isinstance(model, MMoE):
            layers = [_dense_layer(lin, norm) for lin, norm in zip(model.experts.linears, model.experts.norms)]
            kwargs = {"layers": tuple(layers), "routing": "softmax", "gates": _task_gates(model.gates)}
        elif isinstance(model, SharedBottom):
            layers = [_dense_layer(lin, norm) for lin, norm in zip(model.bottom.linears, model.bottom.norms)]
            kwargs = {"layers": tuple(layers), "routing": "fixed", "fixed_expert": (0,) * model.num_tasks}
        elif isinstance(model, SingleTask):
            layers = [_dense_layer(lin, norm) for lin, norm in zip(model.networks.linears, model.networks.norms)]
            kwargs = {"layers": tuple(layers), "routing": "fixed", "fixed_expert": tuple(range(model.num_tasks))}
        elif isinstance(model, PLE):
            kwargs = {"ple_levels": _ple_levels(model), "routing": "softmax"}
        else:
            raise ConfigError(f"model kind {getattr(model, 'kind', type(model).__name__)!r} has no compiler; use one of mome, mmoe, ple, shared-bottom, single-task")
        towers = _towers(model.towers)
    compiled = CompiledModel(
        kind=model.kind,
        spec=spec,
        field_index=tuple(field_index),
        embeddings=tuple(tables),
        numerical_keep=numerical_keep,
        towers=towers,
        metadata={**extra, **dict(metadata)},
        **kwargs,
    )
    check_compiled_model(compiled)
    return compiled


def _ple_levels(model: PLE) -> tuple[PleLevel, ...]:
    owner = model.expert_owner.cpu().numpy().astype(np.int64)
    selection = model.task_selection.cpu().numpy().astype(np.int64)
    levels = []
    for i in range(model.levels):
        shared = None
        if i < model.levels - 1:
            gate = model.shared_gates[i]  # nn.Linear(in, E) -> one group (1, E, in)
            shared = Linear(weight=_np(gate.weight)[None].astype(np.float32), bias=_np(gate.bias)[None].astype(np.float32))
        levels.append(
            PleLevel(
                experts=_dense_layer(model.linears[i], model.norms[i]),
                task_gates=_stacked_linear(model.task_gates[i]),
                shared_gate=shared,
                expert_owner=owner.copy(),
                task_selection=selection.copy(),
            )
        )
    return tuple(levels)


def nominal_sizes(model: MultiTaskModel, spec: FeatureSpec) -> dict[str, Any]:
    """The configured (pre-pruning) sizes: what a dense model of the same config would have."""
    config = model.config
    return {
        "embedding_dim": config.embedding_dim,
        "vocab_sizes": list(spec.vocab_sizes),
        "numerical": len(spec.numerical),
        "input_width": config.embedding_dim * len(spec.categorical) + len(spec.numerical),
        "hidden": list(config.hidden),
        "experts": config.experts,
        "tower_hidden": list(config.tower_hidden),
        "tasks": len(spec.tasks),
    }


# ===== run folders ==========================================================================
def run_metadata(run_dir: str | Path, info, summary: Mapping[str, Any]) -> dict[str, Any]:
    """What an artifact records about its source run: names and numbers, never file paths."""
    from mome_edge import __version__

    dataset = dataclasses.asdict(info.dataset)
    dataset.pop("data_dir", None)  # machine-specific path
    spec_path = dataset.pop("spec_path", None)
    dataset["spec_file"] = Path(spec_path).name if spec_path else None
    if dataset.get("synthetic_correlation") is None:
        # recorded only when set: the manifests (and so the byte counts) of every other run
        # stay exactly what they were before the option existed
        dataset.pop("synthetic_correlation", None)
    keys = ("validation", "test", "selected_epoch", "epochs_run", "phase", "parameters", "before_hardening",
            "hardening_auc_change", "neuron_pruning", "masks", "budget")
    return {
        "producer": f"mome-edge {__version__}",
        "source_run": Path(run_dir).resolve().name,
        "model_config": config_to_json(info.model_config),
        "train_config": config_to_json(info.train_config),
        "dataset": dataset,
        "training": {k: summary[k] for k in keys if k in summary},
    }


def compile_run(run_dir: str | Path, weights: str = "fp32") -> CompiledModel:
    """Compile the selected model of a finished run folder.

    Args:
        run_dir: a folder written by `mome-edge train`.
        weights: "fp32", "fp16" or "int8": the returned model's quantisable tensors went
            through that storage precision (exactly what the artifact file reads back).
    Returns:
        CompiledModel with run metadata (run folder name, configs, metrics).
    Raises:
        ArtifactError: not a finished run folder.
        ConfigError: a MoME run that did not reach phase hardening; unknown `weights`.
    """
    from mome_edge.train.loop import load_trained_model

    model, info, summary = load_trained_model(run_dir)
    compiled = compile_model(model, info.feature_spec, metadata=run_metadata(run_dir, info, summary))
    return quantize_model(compiled, weights)


@dataclass(frozen=True, kw_only=True)
class CompileReport:
    """What `compile_to_file` wrote and measured (test split of the run's data)."""

    path: Path
    weights: str
    file_bytes: int
    components: dict[str, int]
    rows: int
    parity_max_abs_diff: float  # torch eval vs compiled fp32 (<= FP32_PARITY_TOLERANCE)
    test_auc_fp32: dict[str, float | None]
    test_auc: dict[str, float | None]  # of the stored precision

    @property
    def auc_change(self) -> dict[str, float | None]:
        """Stored precision minus fp32, per task (0 for fp32)."""
        return {
            t: (self.test_auc[t] - a) if a is not None and self.test_auc[t] is not None else None
            for t, a in self.test_auc_fp32.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "weights": self.weights,
            "file_bytes": self.file_bytes,
            "components": self.components,
            "test_rows": self.rows,
            "parity_max_abs_diff": self.parity_max_abs_diff,
            "test_auc_fp32": self.test_auc_fp32,
            "test_auc": self.test_auc,
            "auc_change": self.auc_change,
        }


def compile_to_file(run_dir: str | Path, out: str | Path, *, weights: str = "fp32", data_dir: str | None = None) -> CompileReport:
    """Compile a run, check it against the torch model on the test split, write the artifact.

    Args:
        run_dir: a finished run folder.
        out: the artifact file to write (atomically; nothing is written when a check fails).
        weights: storage precision "fp32", "fp16" or "int8".
        data_dir: folder of the real data files (overrides the one recorded in the run).
    Returns:
        CompileReport: sizes, parity, and test AUC at fp32 and at the stored precision.
    Raises:
        ParityError: the compiled fp32 model disagrees with torch beyond FP32_PARITY_TOLERANCE.
        DataError: the run's data cannot be loaded or no longer encodes as at training.
        ArtifactError, ConfigError: see `compile_run` and `write_artifact`.
    """
    from mome_edge.metrics import task_metrics
    from mome_edge.train.loop import load_trained_model, predict_proba

    model, info, summary = load_trained_model(run_dir)
    compiled = compile_model(model, info.feature_spec, metadata=run_metadata(run_dir, info, summary))
    data = _run_test_split(info, data_dir, run_dir)
    reference = predict_proba(model, data)
    probs_fp32 = reference_predict(compiled, data.categorical, data.numerical)
    diff = float(np.max(np.abs(probs_fp32 - reference))) if len(data) else 0.0
    if not diff <= FP32_PARITY_TOLERANCE:
        raise ParityError(
            f"the compiled model differs from the trained model by {diff:.3g} (> {FP32_PARITY_TOLERANCE:g}) on the test split; "
            "this is a compiler bug, please report it with the run folder"
        )
    blob = artifact_bytes(compiled, weights=weights)
    loaded = parse_artifact(blob, source=str(out))  # what the device will read, exactly
    probs = probs_fp32 if weights == "fp32" else reference_predict(loaded.model, data.categorical, data.numerical)
    tasks = info.feature_spec.tasks
    auc = lambda p: {t: m["auc"] for t, m in task_metrics(data.labels, p, tasks).items()}  # noqa: E731
    atomic_write_bytes(out, blob)
    return CompileReport(
        path=Path(out), weights=weights, file_bytes=len(blob), components=loaded.components(), rows=len(data),
        parity_max_abs_diff=diff, test_auc_fp32=auc(probs_fp32), test_auc=auc(probs),
    )


def _run_test_split(info, data_dir: str | None, run_dir):
    ref = info.dataset if data_dir is None else dataclasses.replace(info.dataset, data_dir=data_dir)
    data = ref.load()
    if data.spec.to_json() != info.feature_spec.to_json():
        raise DataError(
            f"the data of {ref.describe()} no longer encodes as it did when {run_dir} was trained "
            "(file or split changed); compile with the original data files (--data-dir)"
        )
    return data.test
