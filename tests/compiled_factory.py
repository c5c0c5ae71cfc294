"""Random CompiledModels of every kind, for exporter and runtime tests (numpy only).

`make_compiled(kind, ...)` builds a model that satisfies the contract in mome_edge.artifact.compiled
(shapes, routing, PLE level structure) with random numbers, so every downstream stage can be
checked against `reference_forward` without training anything. Sizes are tiny by default;
`census_like=True` gives census-income-like nominal sizes for size/latency measurements.
"""

from __future__ import annotations

import numpy as np

from mome_edge.artifact.compiled import CompiledModel, ExpertLayer, Linear, PleLevel
from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler

KINDS = ("mome", "mmoe", "shared-bottom", "single-task", "ple")


def make_spec(
    *, vocab_sizes: tuple[int, ...] = (5, 9, 3, 12), numerical: int = 3, tasks: tuple[str, ...] = ("income", "marital"),
    missing: str = "mean",
) -> FeatureSpec:
    """A feature spec with len(vocab_sizes) categorical fields (sizes include the OOV row)."""
    categorical = tuple(
        CategoricalEncoder(name=f"cat{i}", vocabulary=tuple(f"v{j}" for j in range(size - 1)))
        for i, size in enumerate(vocab_sizes)
    )
    scalers = tuple(
        NumericalScaler(name=f"num{i}", mean=float(i), std=1.0 + i, missing=missing) for i in range(numerical)
    )
    return FeatureSpec(dataset="factory", categorical=categorical, numerical=scalers, tasks=tasks)


def _f32(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _expert_layer(
    rng: np.random.Generator, experts: int, out: int, inp: int, *, masked: bool, density: float,
    input_index: np.ndarray | None = None,
) -> ExpertLayer:
    width = inp if input_index is None else len(input_index)
    std = 1.5 / np.sqrt(width * (density if masked else 1.0))  # keeps activations O(1) at any size
    if masked:
        weight = _f32(rng, out, width, scale=std)  # (out, in) shared
        masks = rng.random((experts, out, width)) < density  # (E, out, in)
    else:
        weight = _f32(rng, experts, out, width, scale=std)  # (E, out, in)
        masks = None
    return ExpertLayer(
        weight=weight, masks=masks,
        scale=(1.0 + 0.2 * rng.standard_normal((experts, out))).astype(np.float32),
        shift=_f32(rng, experts, out, scale=0.1),
        input_index=input_index,
    )


def _linear(rng: np.random.Generator, groups: int, out: int, inp: int) -> Linear:
    return Linear(weight=_f32(rng, groups, out, inp, scale=1.0 / np.sqrt(inp)), bias=_f32(rng, groups, out, scale=0.1))


def make_compiled(
    kind: str = "mome", *, seed: int = 0, experts: int = 3, hidden: tuple[int, ...] = (8, 6),
    tower_hidden: tuple[int, ...] = (4,), spec: FeatureSpec | None = None, embedding_dim: int = 4,
    density: float = 0.35, prune: bool = True, census_like: bool = False, later_index: bool = False,
) -> CompiledModel:
    """A random CompiledModel of `kind` (one of KINDS).

    prune=True mimics the compiler's neuron pruning: one categorical field loses its table,
    embedding widths differ, a numerical feature is dropped and the first trunk layer reads a
    subset of x0's columns (input_index; x0 still feeds the gates whole). later_index=True
    also gives later layers an input_index: the CompiledModel contract allows it, the
    artifact format does not (its compiler drops those neurons physically).
    """
    rng = np.random.default_rng(seed)
    if census_like:
        spec = spec or make_spec(
            vocab_sizes=tuple(int(v) for v in rng.integers(3, 60, size=28)), numerical=12, tasks=("income", "marital"),
        )
        embedding_dim, hidden, experts, tower_hidden = 8, (256, 128), 8, (64,)
    spec = spec or make_spec()
    tasks = len(spec.tasks)
    fields = len(spec.categorical)
    field_index = tuple(i for i in range(fields) if not (prune and i == 1 and fields > 1))
    widths = [max(1, embedding_dim - (i % 2 if prune else 0)) for i in range(len(field_index))]
    embeddings = tuple(_f32(rng, spec.vocab_sizes[f], k) for f, k in zip(field_index, widths))
    numerical_keep = np.array(
        [j for j in range(len(spec.numerical)) if not (prune and j == 0 and len(spec.numerical) > 1)], dtype=np.int64
    )
    d0 = sum(widths) + len(numerical_keep)

    if kind == "ple":
        return _make_ple(rng, spec, field_index, embeddings, numerical_keep, d0, hidden, tower_hidden)

    if kind == "shared-bottom":
        experts = 1
    elif kind == "single-task":
        experts = tasks
    masked = kind == "mome"
    layers = []
    width = d0
    for i, out in enumerate(hidden):
        index = None
        if prune and width > 2 and (i == 0 or later_index):
            index = np.sort(rng.choice(width, size=width - 2, replace=False)).astype(np.int64)
        layers.append(_expert_layer(rng, experts, out, width, masked=masked, density=density, input_index=index))
        width = out
    towers = _towers(rng, tasks, width, tower_hidden)
    common = dict(
        kind=kind, spec=spec, field_index=field_index, embeddings=embeddings, numerical_keep=numerical_keep,
        towers=towers, layers=tuple(layers), metadata={"factory_seed": seed},
    )
    if kind in ("mome", "mmoe"):
        return CompiledModel(**common, routing="softmax", gates=_linear(rng, tasks, experts, d0))
    fixed = tuple(0 for _ in range(tasks)) if kind == "shared-bottom" else tuple(range(tasks))
    return CompiledModel(**common, routing="fixed", fixed_expert=fixed)


def _towers(rng: np.random.Generator, tasks: int, width: int, tower_hidden: tuple[int, ...]) -> tuple[Linear, ...]:
    towers = []
    for out in (*tower_hidden, 1):
        towers.append(_linear(rng, tasks, out, width))
        width = out
    return tuple(towers)


def _make_ple(rng, spec, field_index, embeddings, numerical_keep, d0, hidden, tower_hidden, k: int = 2, s: int = 2) -> CompiledModel:
    tasks = len(spec.tasks)
    experts = tasks * k + s
    owner = np.array([e // k if e < tasks * k else tasks for e in range(experts)], dtype=np.int64)
    selection = np.array(
        [[t * k + j for j in range(k)] + [tasks * k + j for j in range(s)] for t in range(tasks)], dtype=np.int64
    )
    levels = []
    width = d0
    for i, out in enumerate(hidden):
        last = i == len(hidden) - 1
        levels.append(PleLevel(
            experts=_expert_layer(rng, experts, out, width, masked=False, density=1.0),
            task_gates=_linear(rng, tasks, k + s, width),
            shared_gate=None if last else _linear(rng, 1, experts, width),
            expert_owner=owner, task_selection=selection,
        ))
        width = out
    return CompiledModel(
        kind="ple", spec=spec, field_index=field_index, embeddings=embeddings, numerical_keep=numerical_keep,
        towers=_towers(rng, tasks, width, tower_hidden), routing="softmax", ple_levels=tuple(levels),
        metadata={"factory_seed": 0},
    )


def sample_inputs(spec: FeatureSpec, rows: int, *, seed: int = 0, invalid: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [rows, F] ids in range, float32 [rows, D]); invalid=True also plants OOV/negative/extreme ids."""
    rng = np.random.default_rng(seed)
    sizes = np.array(spec.vocab_sizes, dtype=np.int64)
    cat = (rng.random((rows, len(sizes))) * sizes).astype(np.int64) if len(sizes) else np.zeros((rows, 0), np.int64)
    num = rng.standard_normal((rows, len(spec.numerical))).astype(np.float32)
    if invalid and len(sizes):
        bad = np.array([-1, -7, np.iinfo(np.int64).min, np.iinfo(np.int64).max, 10**9], dtype=np.int64)
        for i in range(min(rows, 2 * len(bad))):
            cat[i, i % len(sizes)] = bad[i % len(bad)]
        cat[0, :] = sizes  # exactly one past the last row of every table
    return cat, num

