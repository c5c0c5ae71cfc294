"""`describe_artifact`: where every byte of an artifact goes, and what a dense MMoE would cost.

numpy + bitarray only (matplotlib only inside `plot_artifact`): this is the `inspect` command's
library half, and it works on any machine that can read the artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mome_edge.artifact.reader import LoadedArtifact, read_artifact
from mome_edge.errors import ConfigError
from mome_edge.artifact.masks import densities, jaccard_matrix, to_bitarray

FP32_BYTES = 4
NOMINAL_SIZE_MAX = 2**40  # nominal sizes come from free-form metadata: larger ones are ignored
_NOMINAL_SIZES = ("experts", "embedding_dim", "numerical", "input_width")
_NOMINAL_LISTS = ("vocab_sizes", "hidden", "tower_hidden")


@dataclass(frozen=True, kw_only=True)
class LayerNeurons:
    """Neurons (or input columns) a layer keeps after compiling, against the configured size."""

    name: str
    kept: int
    nominal: int


@dataclass(frozen=True, kw_only=True)
class ArtifactReport:
    """The size and mask anatomy of one artifact (see `describe_artifact`)."""

    path: str
    kind: str
    weights: str
    tasks: tuple[str, ...]
    experts: int
    file_bytes: int
    components: dict[str, int]  # adds up to file_bytes exactly
    neurons: tuple[LayerNeurons, ...]
    mask_density: tuple[tuple[float, ...], ...]  # per masked layer, per expert: open share of (out x in)
    overlap: tuple[tuple[float, ...], ...]  # E x E Jaccard of the experts' masks over all layers
    mask_encodings: dict[str, int]  # encoding -> number of masks stored that way
    expert_weights: int  # E * sum(out * in) over masked layers (compiled shapes)
    bits_per_expert_weight: float | None  # stored mask bits per expert weight; None without masks
    dense_mmoe_bytes: int  # tensor bytes of a dense fp32 MMoE with the nominal sizes and experts
    dense_mmoe_experts: int  # the configured number of experts that MMoE has
    test_auc: dict[str, float | None] = field(default_factory=dict)
    source_run: str | None = None
    budget: dict[str, Any] | None = None  # the run's --budget report (training metadata), with this file's bytes

    @property
    def ratio(self) -> float:
        """dense_mmoe_bytes / file_bytes: how many of these files fit in the dense MMoE."""
        return self.dense_mmoe_bytes / self.file_bytes

    @property
    def ratio_tensors(self) -> float:
        """dense_mmoe_bytes / this file's tensor bytes (the manifest left out on both sides)."""
        return self.dense_mmoe_bytes / max(self.file_bytes - self.components["manifest"], 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "weights": self.weights,
            "tasks": list(self.tasks),
            "experts": self.experts,
            "source_run": self.source_run,
            "file_bytes": self.file_bytes,
            "components": dict(self.components),
            "neurons": [{"layer": n.name, "kept": n.kept, "nominal": n.nominal} for n in self.neurons],
            "mask_density": [list(d) for d in self.mask_density],
            "overlap": [list(r) for r in self.overlap],
            "mask_encodings": dict(self.mask_encodings),
            "expert_weights": self.expert_weights,
            "bits_per_expert_weight": self.bits_per_expert_weight,
            "dense_mmoe_bytes": self.dense_mmoe_bytes,
            "dense_mmoe_experts": self.dense_mmoe_experts,
            "ratio": self.ratio,
            "ratio_tensors": self.ratio_tensors,
            "test_auc": dict(self.test_auc),
            "budget": None if self.budget is None else dict(self.budget),
        }


def describe_artifact(source: str | Path | LoadedArtifact) -> ArtifactReport:
    """Bytes by component, neurons kept, mask densities and overlaps, and the dense baseline.

    Args:
        source: an artifact path, or an already loaded artifact.
    Returns:
        ArtifactReport.
    Raises:
        ArtifactError: the file is unreadable (see `read_artifact`).
    """
    loaded = source if isinstance(source, LoadedArtifact) else read_artifact(source)
    path = "" if isinstance(source, LoadedArtifact) else str(source)
    model, manifest = loaded.model, loaded.manifest
    meta = model.metadata if isinstance(model.metadata, Mapping) else {}
    nominal = _nominal(meta.get("nominal"))
    trunk = list(model.layers) or [level.experts for level in model.ple_levels]
    experts = trunk[0].experts

    masked = [layer for layer in model.layers if layer.masks is not None]
    density = tuple(tuple(densities(layer.masks)) for layer in masked)
    overlap: tuple[tuple[float, ...], ...] = ()
    if masked:
        # One bitset per expert over all layers: the share of the base network two experts share.
        bitsets = []
        for e in range(experts):
            bits = to_bitarray(masked[0].masks[e])
            for layer in masked[1:]:
                bits += to_bitarray(layer.masks[e])
            bitsets.append(bits)
        overlap = tuple(tuple(row) for row in jaccard_matrix(bitsets))
    expert_weights = sum(layer.masks.size for layer in masked)
    components = loaded.components()
    bits = 8 * components["expert_masks"] / expert_weights if expert_weights else None
    encodings: dict[str, int] = {}
    for layer in manifest["layers"]:
        for entry in layer["masks"] or []:
            key = entry["encoding"] + ("+xor" if entry["xor_previous"] else "")
            encodings[key] = encodings.get(key, 0) + 1
    training = meta.get("training")
    test = training.get("test") if isinstance(training, Mapping) else None
    return ArtifactReport(
        path=path,
        kind=model.kind,
        weights=loaded.weights,
        tasks=tuple(model.tasks),
        experts=experts,
        file_bytes=loaded.file_bytes,
        components=components,
        neurons=_neurons(model, trunk, nominal),
        mask_density=density,
        overlap=overlap,
        mask_encodings=encodings,
        expert_weights=int(expert_weights),
        bits_per_expert_weight=bits,
        dense_mmoe_experts=int(nominal.get("experts", experts)),
        dense_mmoe_bytes=dense_mmoe_bytes(
            vocab_sizes=nominal.get("vocab_sizes", model.spec.vocab_sizes),
            embedding_dim=nominal.get("embedding_dim", max((t.shape[1] for t in model.embeddings), default=0)),
            numerical=nominal.get("numerical", len(model.spec.numerical)),
            hidden=nominal.get("hidden", [int(layer.scale.shape[1]) for layer in trunk]),
            experts=nominal.get("experts", experts),
            tower_hidden=nominal.get("tower_hidden", [int(t.weight.shape[1]) for t in model.towers[:-1]]),
            tasks=len(model.tasks),
        ),
        test_auc={str(t): _number(m.get("auc")) for t, m in test.items() if isinstance(m, Mapping)} if isinstance(test, Mapping) else {},
        source_run=meta.get("source_run") if isinstance(meta.get("source_run"), str) else None,
        budget=_budget(meta, loaded.file_bytes),
    )


def _nominal(value: Any) -> dict[str, Any]:
    """The well-formed entries of the metadata's `nominal` sizes (free-form JSON: anything
    else, e.g. from a hand-edited or hostile file, is ignored and the compiled sizes are used)."""
    if not isinstance(value, Mapping):
        return {}

    def size(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= NOMINAL_SIZE_MAX

    out: dict[str, Any] = {k: value[k] for k in _NOMINAL_SIZES if size(value.get(k))}
    out.update({k: list(value[k]) for k in _NOMINAL_LISTS if isinstance(value.get(k), list) and all(size(v) for v in value[k])})
    if not out.get("hidden"):
        out.pop("hidden", None)  # a trunk has at least one layer
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        return None
    return number if math.isfinite(number) else None


def _neurons(model, trunk, nominal: Mapping[str, Any]) -> tuple[LayerNeurons, ...]:
    width = sum(t.shape[1] for t in model.embeddings) + len(model.numerical_keep)
    hidden = list(nominal.get("hidden", [int(layer.scale.shape[1]) for layer in trunk]))
    first = trunk[0]
    rows = [
        LayerNeurons(name="input (x0)", kept=int(width), nominal=int(nominal.get("input_width", width))),
        LayerNeurons(name="layer 1 inputs", kept=int(first.weight.shape[-1]), nominal=int(nominal.get("input_width", width))),
    ]
    for l, layer in enumerate(trunk):
        nominal_out = hidden[l] if l < len(hidden) else int(layer.scale.shape[1])
        rows.append(LayerNeurons(name=f"layer {l + 1}", kept=int(layer.scale.shape[1]), nominal=int(nominal_out)))
    return tuple(rows)


def dense_mmoe_bytes(
    *,
    vocab_sizes: Sequence[int],
    embedding_dim: int,
    numerical: int,
    hidden: Sequence[int],
    experts: int,
    tower_hidden: Sequence[int],
    tasks: int,
) -> int:
    """Tensor bytes of a dense fp32 MMoE compiled into this format, from its configured sizes.

    Counts what `compile_model` stores for an MMoE: embeddings (V x k per field), per expert
    and layer a weight (out x in) plus folded scale and shift (2 x out), task gates
    (T x E x d0 + T x E) and towers (T x (out x in + out) per layer). The manifest and the
    int64 index vectors are left out.
    """
    d0 = embedding_dim * len(vocab_sizes) + numerical
    params = sum(int(v) * embedding_dim for v in vocab_sizes)
    sizes = [d0, *hidden]
    params += sum(experts * (a * b + 2 * b) for a, b in zip(sizes[:-1], sizes[1:]))
    params += tasks * experts * d0 + tasks * experts
    towers = [hidden[-1], *tower_hidden, 1]
    params += sum(tasks * (a * b + b) for a, b in zip(towers[:-1], towers[1:]))
    return int(params) * FP32_BYTES


def plot_artifact(report: ArtifactReport, path: str | Path) -> None:
    """Per-layer mask density per expert and the expert overlap matrix, as one PNG.

    Raises:
        ConfigError: the artifact has no expert masks (a dense kind).
    """
    if not report.mask_density:
        raise ConfigError(f"{report.path or 'the artifact'} is a {report.kind} artifact without expert masks; --plot needs a MoME artifact")
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    from mome_edge.atomic import atomic_write_bytes

    density = np.asarray(report.mask_density)  # (L, E)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    layers, experts = density.shape
    width = 0.8 / experts
    for e in range(experts):
        left.bar(np.arange(layers) + e * width - 0.4 + width / 2, density[:, e], width, label=f"expert {e}")
    left.set_xticks(np.arange(layers), [f"layer {l + 1}" for l in range(layers)])
    left.set_ylim(0, min(1.0, 1.25 * float(density.max())) or 1.0)  # sparse masks stay readable
    left.set_ylabel("mask density (open share of compiled weights)")
    left.set_title("per-expert mask density")
    left.legend(fontsize="small", ncol=2)
    image = right.imshow(np.asarray(report.overlap), vmin=0, vmax=1, cmap="viridis")
    right.set_title("expert overlap (Jaccard, all layers)")
    right.set_xlabel("expert")
    right.set_ylabel("expert")
    fig.colorbar(image, ax=right)
    fig.suptitle(f"{report.kind} artifact, {report.file_bytes:,} bytes ({report.weights})")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _budget(meta: Mapping[str, Any], file_bytes: int) -> dict[str, Any] | None:
    """The --budget the run was trained for (free-form metadata: only well-formed fields),
    against this file's size; None for a run without a budget."""
    training = meta.get("training")
    budget = training.get("budget") if isinstance(training, Mapping) else None
    if not isinstance(budget, Mapping) or not isinstance(budget.get("bytes"), int) or budget["bytes"] <= 0:
        return None
    out: dict[str, Any] = {"bytes": budget["bytes"], "file_bytes": file_bytes, "share": file_bytes / budget["bytes"]}
    for key in ("weights", "achieved_bytes", "smallest_bytes", "shrunk"):
        if isinstance(budget.get(key), (int, str)) and not isinstance(budget.get(key), bool):
            out[key] = budget[key]
    if isinstance(budget.get("range"), list) and len(budget["range"]) == 2 and all(isinstance(v, int) for v in budget["range"]):
        out["range"] = list(budget["range"])
        out["within_range"] = budget["range"][0] <= file_bytes <= budget["range"][1]
    return out
