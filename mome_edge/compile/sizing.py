"""The compiler's own bytes model, for size budgets: how many bytes a model of given shapes
(or a given MoME with given masks) takes as a `.mome` file, measured by compiling it and
serialising it with `artifact_bytes` -- never by a separate formula that could drift.

    compiled_size(model, spec, weights, metadata)      bytes and bytes by component
    fit_dense_config(config, spec, ...)                widths (then experts, embedding width) of a baseline
    smallest_config(config)                            the smallest model the trainer builds for a kind
    mome_neuron_keep(model, spec, ...)                 MoME's neuron budget at the phase switch (open inputs, hidden widths cut)
    trim_expert_masks(model, spec, ...)                MoME's binary masks opened or closed to land in the range

Every search here evaluates sizes by compiling; parameters are initialised, not trained (sizes
depend on shapes, and for MoME on the masks, not on weight values -- int8 scales and float
widths are per tensor shape).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from mome_edge.artifact.reader import parse_artifact
from mome_edge.artifact.writer import artifact_bytes
from mome_edge.compile.compiler import compile_model
from mome_edge.config import ModelConfig
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ConfigError
from mome_edge.train.gates import binary_gate
from mome_edge.train.model import MoME, MultiTaskModel, Phase, build_model

# Room left for the run's metadata (metrics, the budget report) that the final file's
# manifest carries but a size estimate before or during training can only approximate.
METADATA_MARGIN_BYTES = 1024
METADATA_MARGIN_FRACTION = 0.005
NEURON_FLOOR = 2  # neurons every MoME layer keeps at the phase switch (inputs, and outputs when gated)


@dataclass(frozen=True)
class Size:
    bytes: int
    components: dict[str, int]


def compiled_size(model: MultiTaskModel, spec: FeatureSpec, *, weights: str, metadata: Mapping[str, Any]) -> Size:
    """Bytes of the artifact `model` compiles into with `weights`, and bytes by component."""
    was_training = model.training
    model.eval()
    try:
        blob = artifact_bytes(compile_model(model, spec, metadata=metadata), weights=weights)
    finally:
        model.train(was_training)
    return Size(bytes=len(blob), components=parse_artifact(blob).components())


def target_ceiling(budget_bytes: int) -> int:
    """What an estimate made before the final metadata is known may reach."""
    return budget_bytes - METADATA_MARGIN_BYTES - int(METADATA_MARGIN_FRACTION * budget_bytes)


# ===== dense baselines: widths, then expert count, then embedding width ======================
def scaled_hidden(config: ModelConfig, multiplier: float) -> ModelConfig:
    """Hidden widths x multiplier (towers keep their width: their size follows the trunk's output)."""
    return dataclasses.replace(config, hidden=tuple(max(1, int(round(s * multiplier))) for s in config.hidden))


def dense_size(config: ModelConfig, spec: FeatureSpec, weights: str, metadata: Mapping[str, Any]) -> int:
    torch.manual_seed(0)  # sizes do not depend on values; a fixed init keeps the search deterministic
    return compiled_size(build_model(config, spec), spec, weights=weights, metadata=metadata).bytes


def smallest_config(config: ModelConfig) -> ModelConfig:
    """The smallest model of this kind the trainer builds: hidden widths 1, one expert per
    group (PLE: one task expert and one shared expert), embeddings of width 1."""
    return dataclasses.replace(
        config, hidden=(1,) * len(config.hidden), experts=1,
        embedding_dim=1, ple_shared_experts=1, ple_task_experts=1,
    )


def largest_multiplier(size: Callable[[float], int], ceiling: int, low: float, high: float) -> float | None:
    """Largest multiplier in [low, high] whose size <= ceiling (size grows with it), or None."""
    if size(low) > ceiling:
        return None
    while size(high) <= ceiling and high < 1e4:
        low, high = high, high * 2
    for _ in range(30):
        mid = math.sqrt(low * high)
        if size(mid) <= ceiling:
            low = mid
        else:
            high = mid
        if high / low < 1.0005:
            break
    return low


MIN_EXPERT_WIDTH = 16  # a baseline trades experts for width below this last-layer width


def _fewer_experts(config: ModelConfig) -> ModelConfig | None:
    """The same kind with about half the experts, or None at the minimum."""
    if config.kind == "mmoe" and config.experts > 1:
        return dataclasses.replace(config, experts=max(1, config.experts // 2))
    if config.kind == "ple" and (config.ple_shared_experts > 1 or config.ple_task_experts > 1):
        return dataclasses.replace(config, ple_shared_experts=max(1, config.ple_shared_experts // 2),
                                   ple_task_experts=max(1, config.ple_task_experts // 2))
    return None


def _describe(config: ModelConfig) -> str:
    experts = {"mmoe": f", {config.experts} experts", "ple": f", {config.ple_task_experts} task + {config.ple_shared_experts} shared experts per level"}
    return f"hidden {','.join(map(str, config.hidden))}{experts.get(config.kind, '')}, embedding width {config.embedding_dim}"


def fit_dense_config(
    config: ModelConfig, spec: FeatureSpec, *, budget_bytes: int, weights: str, metadata: Mapping[str, Any],
) -> tuple[ModelConfig, int, list[str]]:
    """A baseline config whose compiled file fits the budget; (config, estimated bytes, what changed).

    Hidden widths scale by one multiplier (up or down; towers keep theirs). With the
    configured experts, a last layer narrower than MIN_EXPERT_WIDTH means the budget is
    better spent on fewer, wider experts: MMoE halves its experts (PLE its experts per
    group) until the width reaches it or one expert is left. When widths of 1 do not fit at
    all, the embedding width halves. The caller checks that the smallest config fits.
    """
    ceiling = target_ceiling(budget_bytes)
    size = lambda c: dense_size(c, spec, weights, metadata)  # noqa: E731
    candidate, fallback = config, None
    while True:
        multiplier = largest_multiplier(lambda m: size(scaled_hidden(candidate, m)), ceiling, 1e-4, 1.0)
        if multiplier is None:  # not even widths of 1: narrower embeddings
            if candidate.embedding_dim == 1:
                break
            candidate = dataclasses.replace(candidate, embedding_dim=max(1, candidate.embedding_dim // 2))
            continue
        fallback = scaled_hidden(candidate, multiplier)
        fewer = _fewer_experts(candidate)
        if fallback.hidden[-1] >= MIN_EXPERT_WIDTH or fewer is None:
            break
        candidate = fewer
    if fallback is None:
        raise unreachable_budget(budget_bytes, size(smallest_config(config)), config.kind, weights)
    return fallback, size(fallback), [f"{config.kind} widths fitted: {_describe(fallback)}"]


def unreachable_budget(budget_bytes: int, smallest_bytes: int, kind: str, weights: str) -> ConfigError:
    from mome_edge.budget import format_size

    other = "" if weights == "int8" else ", or --budget-weights int8"
    return ConfigError(
        f"--budget {format_size(budget_bytes)} is below the smallest {kind} model the trainer can build for this data with "
        f"{weights} weights ({format_size(smallest_bytes)}, the feature spec in the manifest included); give --budget "
        f"{smallest_bytes} or more{other}"
    )


# ===== MoME ==================================================================================
@torch.no_grad()
def dense_equivalent(model: MoME, spec: FeatureSpec, keep: list[torch.Tensor]) -> MoME:
    """The hardened MoME that keeping `keep` (one bool per gate tensor) at the phase switch
    gives when every expert mask stays fully open: the size before expert masking."""
    from mome_edge.train.phases import remove_closed_neurons, start_hardening

    pruned, _ = remove_closed_neurons(model, spec, keep=keep, expert_mu_init=1.0)
    return start_hardening(pruned, spec)


def neuron_floor_keep(model: MoME) -> list[torch.Tensor]:
    """The top NEURON_FLOOR gates of every gate tensor (the smallest neuron set)."""
    return [_top(mu, min(NEURON_FLOOR, mu.numel())) for mu in model.gate_mus()]


def _top(mu: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros_like(mu, dtype=torch.bool)
    keep[torch.topk(mu.detach(), k).indices] = True
    return keep


def mome_smallest_bytes(model: MoME, spec: FeatureSpec, *, weights: str, metadata: Mapping[str, Any]) -> int:
    return compiled_size(dense_equivalent(model, spec, neuron_floor_keep(model)), spec, weights=weights, metadata=metadata).bytes


def mome_neuron_keep(
    model: MoME, spec: FeatureSpec, *, target_bytes: int, weights: str, metadata: Mapping[str, Any], floor: int = NEURON_FLOOR,
) -> tuple[list[torch.Tensor], int]:
    """Which neurons to keep at the phase switch, as many as keep the fully open model within
    `target_bytes`. Returns (keep masks, bytes of that dense equivalent).

    Hidden (and output) neurons: the most open share s of each layer (ranked by mu within the
    layer, so layers of different widths compete fairly), s found by bisection. The first
    layer's inputs are ranked apart: every input the neuron phase left open stays (the
    byte-weighted penalty already closed the inputs whose bytes the tasks did not repay), and
    the hidden widths shrink around them; only when hidden widths at the floor do not fit
    either are the open inputs ranked with the same share. A dropped input loses information
    no later layer can recover, a narrower hidden layer only capacity: on the MMoE generator,
    where every input carries signal, cutting inputs at the hidden layers' share lost
    0.01-0.23 AUC to size-matched baselines that keep every input (docs/budgets.md).
    At least `floor` neurons per tensor (the most open; closed inputs only when fewer than
    `floor` are open)."""
    mus = [mu.detach() for mu in model.gate_mus()]
    open_inputs = mus[0] > 0
    quantile = []
    for i, mu in enumerate(mus):
        allowed = open_inputs if i == 0 else torch.ones_like(mu, dtype=torch.bool)
        # rank r of an allowed gate among the allowed ones -> (r + 1) / n; the others never stay
        q = torch.full_like(mu, math.inf)
        idx = torch.nonzero(allowed).flatten()
        ranked = idx[torch.argsort(mu[idx], descending=True)]
        q[ranked] = (torch.arange(ranked.numel(), dtype=mu.dtype) + 1) / max(ranked.numel(), 1)
        quantile.append(q)
    floors = [_top(mu, min(floor, mu.numel())) for mu in mus]

    def keep_at(hidden_share: float, input_share: float) -> list[torch.Tensor]:
        shares = [input_share] + [hidden_share] * (len(mus) - 1)
        return [(q <= share) | low for q, share, low in zip(quantile, shares, floors)]

    def size(keep: list[torch.Tensor]) -> int:
        return compiled_size(dense_equivalent(model, spec, keep), spec, weights=weights, metadata=metadata).bytes

    def largest(keep_of: Callable[[float], list[torch.Tensor]]) -> tuple[list[torch.Tensor], int]:
        """keep_of(s) for the largest s in [0, 1] whose size fits (sizes grow with s)."""
        top = keep_of(1.0)
        if (top_bytes := size(top)) <= target_bytes:
            return top, top_bytes
        low, high, fitting = 0.0, 1.0, None
        for _ in range(14):
            mid = (low + high) / 2
            keep = keep_of(mid)
            if (mid_bytes := size(keep)) <= target_bytes:
                low, fitting = mid, (keep, mid_bytes)
            else:
                high = mid
        if fitting is None:  # nothing above 0 fits: the floor (plan_budget checked that it does)
            keep = keep_of(0.0)
            fitting = (keep, size(keep))
        return fitting

    if size(keep_at(0.0, 1.0)) <= target_bytes:  # every open input fits with some hidden width
        return largest(lambda s: keep_at(s, 1.0))
    return largest(lambda s: keep_at(s, s))


@torch.no_grad()
def trim_expert_masks(
    model: MoME, spec: FeatureSpec, *, low_bytes: int, high_bytes: int, weights: str, metadata: Mapping[str, Any],
) -> tuple[MoME, dict[str, Any]]:
    """Binary expert masks chosen so that the compiled file lands in [low_bytes, high_bytes].

    The masks the gates give (clamp(mu) > threshold) are kept when they land there. Otherwise
    the expert gates are ranked by mu over all layers and the open share is searched by
    bisection: above the range, the most open share that fits; below it (carved masks drop
    base weights no expert uses), the natural masks plus the most open closed gates, up to
    the range, and all open only when nothing in between lands there. The file's bytes are
    not monotone in the share -- all-open masks compress to almost nothing -- so each search
    keeps a bracket on one side of the natural density.
    Returns a HARDENING model whose gate values are exactly 0 or 1, and a report.
    """
    from mome_edge.train.phases import start_hardening

    if model.phase is not Phase.EXPERT_MASKING:
        raise ValueError("expert masks are trimmed at the switch to hardening")
    mus = [layer.gate_mu.detach().clone() for layer in model.base]
    flat = torch.cat([m.flatten() for m in mus])
    order = torch.argsort(flat, descending=True)
    natural = torch.cat([binary_gate(m, model.config.mask_threshold).flatten() for m in mus]) > 0

    def with_open(open_flat: torch.Tensor) -> MoME:
        hardened = start_hardening(model, spec)
        offset = 0
        for layer in hardened.base:
            n = layer.gate_mu.numel()
            layer.gate_mu.copy_(open_flat[offset : offset + n].view_as(layer.gate_mu).to(layer.gate_mu.dtype))
            offset += n
        return hardened

    def open_share(share: float) -> torch.Tensor:
        k = int(round(share * flat.numel()))
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[order[:k]] = True
        return keep

    def size(open_flat: torch.Tensor) -> int:
        return compiled_size(with_open(open_flat), spec, weights=weights, metadata=metadata).bytes

    natural_share = float(natural.float().mean())
    natural_bytes = size(natural)
    report: dict[str, Any] = {"natural_density": natural_share, "natural_bytes": natural_bytes}
    if low_bytes <= natural_bytes <= high_bytes:
        report.update(density=natural_share, bytes=natural_bytes, trimmed=False)
        return with_open(natural), report
    if natural_bytes < low_bytes:
        # too small (carved masks drop base weights no expert uses): open the most open closed
        # gates (by mu) until the file lands in the range -- the experts stay carved, only
        # less sparse. The bytes grow with the share from the natural density up to where the
        # masks become so dense that they compress again: a share whose file is smaller than
        # the natural one is past that peak, and the search moves back below it.
        small, large, best = natural_share, 1.0, None
        for _ in range(16 if natural_share < 1.0 else 0):
            mid = (small + large) / 2
            b = size(open_share(mid))
            if low_bytes <= b <= high_bytes:
                best = (mid, b)
                break
            if natural_bytes <= b < low_bytes:
                small = mid
            else:  # above the range, or past the peak
                large = mid
            if (large - small) * flat.numel() < 1:
                break
        if best is None:  # every expert weight open: the dense equivalent the neuron budget sized
            everything = torch.ones_like(flat, dtype=torch.bool)
            full = size(everything)
            if low_bytes <= full <= high_bytes:
                best = (1.0, full)
        if best is None:
            report.update(density=natural_share, bytes=natural_bytes, trimmed=False, below_range=True)
            return with_open(natural), report
        chosen = open_share(best[0])
        report.update(density=float(chosen.float().mean()), bytes=best[1], trimmed=True)
        return with_open(chosen), report
    # too large: the largest open share (by mu) whose file fits; the bytes grow with the share
    # below the natural density (a denser mask costs more bits and keeps more base weights)
    good, bad, good_bytes = 0.0, natural_share, size(open_share(0.0))
    for _ in range(16):
        mid = (good + bad) / 2
        b = size(open_share(mid))
        if b <= high_bytes:
            good, good_bytes = mid, b
        else:
            bad = mid
        if good_bytes >= low_bytes and (bad - good) * flat.numel() < 1:
            break
    chosen = open_share(good)
    report.update(density=float(chosen.float().mean()), bytes=good_bytes, trimmed=True)
    return with_open(chosen), report
