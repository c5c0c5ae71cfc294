"""What tensors a model has: CompiledModel <-> named tensors and the manifest's structure.

    flatten_model(model)                          CompiledModel -> {name: LogicalTensor}
    model_structure(model)                        the manifest's description of the shapes
    expected_tensors(structure, weights, table)   every tensor the structure implies (checks chaining)
    build_model(structure, arrays, masks, ...)    named float32 arrays -> CompiledModel
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np

from mome_edge.artifact.compiled import ROUTINGS, CompiledModel, ExpertLayer, Linear, PleLevel
from mome_edge.artifact.format import KINDS, table_entry
from mome_edge.artifact.quantise import STORED_FLOAT, quantise
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError

class _Tensor(NamedTuple):  # the writer's flat view; a NamedTuple is built ~7x faster than a dataclass at import
    array: np.ndarray
    component: str
    quant_axis: int | None  # axis sharing one int8 scale; None = never quantised
    union: np.ndarray | None = None  # bool (out, in): store only these entries (layout "union")


def store_tensor(name: str, tensor: _Tensor, weights: str) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """One logical tensor -> the stored tensor(s): itself, or int8 values plus scales.

    A tensor with a union mask (MoME base weights) is quantised as the dense (out, in) array,
    then only the entries some expert uses are kept, row-major: the rest are zero by
    construction and the reader knows where they are from the masks.
    """
    stored, scale, axis = quantise(name, tensor.array, weights if tensor.quant_axis is not None else "fp32", tensor.quant_axis)
    layout = "dense"
    if tensor.union is not None:
        stored, layout = np.ascontiguousarray(stored[tensor.union]), "union"
    entry = table_entry(stored.dtype.name, stored.shape, tensor.component, layout=layout)
    if scale is None:
        return [(name, stored, entry)]
    entry.update(scale=f"{name}.scale", axis=axis)
    return [(name, stored, entry), (f"{name}.scale", scale, table_entry("float32", scale.shape, tensor.component))]


def flatten_model(model: CompiledModel) -> dict[str, _Tensor]:
    """Every tensor of the model but the masks, by artifact name (docs section 4)."""
    out: dict[str, _Tensor] = {}
    for j, table in enumerate(model.embeddings):
        out[f"embeddings.{j}"] = _Tensor(_f32(table), "embeddings", 0)
    out["numerical_keep"] = _Tensor(_i64(model.numerical_keep), "indices", None)
    for l, layer in enumerate(model.layers):
        _expert_layer(out, f"layers.{l}", layer)
    if model.gates is not None:
        _linear(out, "gates", model.gates, "task_gates")
    for i, level in enumerate(model.ple_levels):
        _expert_layer(out, f"ple.{i}", level.experts)
        _linear(out, f"ple.{i}.task_gates", level.task_gates, "task_gates")
        if level.shared_gate is not None:
            _linear(out, f"ple.{i}.shared_gate", level.shared_gate, "task_gates")
        out[f"ple.{i}.expert_owner"] = _Tensor(_i64(level.expert_owner), "indices", None)
        out[f"ple.{i}.task_selection"] = _Tensor(_i64(level.task_selection), "indices", None)
    for i, tower in enumerate(model.towers):
        _linear(out, f"towers.{i}", tower, "towers")
    return out


def _expert_layer(out: dict[str, _Tensor], prefix: str, layer: ExpertLayer) -> None:
    weight = _f32(layer.weight)
    union = None if layer.masks is None else np.asarray(layer.masks, dtype=bool).any(axis=0)  # (out, in)
    if union is not None and np.any(weight[~union] != 0):
        # A weight no expert uses never reaches an output; the union layout drops it.
        weight = np.where(union, weight, np.float32(0))
    out[f"{prefix}.weight"] = _Tensor(weight, "base_weights", weight.ndim - 1, union)
    out[f"{prefix}.scale"] = _Tensor(_f32(layer.scale), "expert_affine", None)
    out[f"{prefix}.shift"] = _Tensor(_f32(layer.shift), "expert_affine", None)
    if layer.input_index is not None:
        out[f"{prefix}.input_index"] = _Tensor(_i64(layer.input_index), "indices", None)


def _linear(out: dict[str, _Tensor], prefix: str, linear: Linear, component: str) -> None:
    weight = _f32(linear.weight)
    out[f"{prefix}.weight"] = _Tensor(weight, component, weight.ndim - 1)
    out[f"{prefix}.bias"] = _Tensor(_f32(linear.bias), component, None)


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _i64(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int64)


def model_structure(model: CompiledModel) -> dict[str, Any]:
    """The manifest's description of the model's shapes (everything but tensors and checksums)."""
    if model.kind not in KINDS:
        raise ArtifactError(f"model kind {model.kind!r} is not one of {', '.join(KINDS)}; cannot write it")
    tasks = list(model.spec.tasks)
    width = sum(int(t.shape[1]) for t in model.embeddings) + int(len(model.numerical_keep))
    layers = [
        {
            "experts": layer.experts,
            "out": int(layer.scale.shape[1]),
            "in": int(layer.weight.shape[-1]),
            "shared_weight": layer.shared_weight,
            "input_index": layer.input_index is not None,
            "masks": None,
        }
        for layer in model.layers
    ]
    levels = [
        {
            "experts": level.experts.experts,
            "out": int(level.experts.scale.shape[1]),
            "in": int(level.experts.weight.shape[-1]),
            "input_index": level.experts.input_index is not None,
            "task_gate_width": int(level.task_gates.weight.shape[1]),
            "shared_gate": level.shared_gate is not None,
        }
        for level in model.ple_levels
    ]
    return {
        "kind": model.kind,
        "routing": model.routing,
        "fixed_expert": None if model.fixed_expert is None else [int(e) for e in model.fixed_expert],
        "tasks": tasks,
        "feature_spec": model.spec.to_json(),
        "input": {
            "field_index": [int(f) for f in model.field_index],
            "embedding_dims": [int(t.shape[1]) for t in model.embeddings],
            "numerical_keep": int(len(model.numerical_keep)),
            "width": width,
        },
        "layers": layers,
        "gates": None if model.gates is None else {"experts": int(model.gates.weight.shape[1]), "in": int(model.gates.weight.shape[2])},
        "ple_levels": levels,
        "towers": [{"out": int(t.weight.shape[1]), "in": int(t.weight.shape[2])} for t in model.towers],
    }


def unpack_union(values: np.ndarray, masks: np.ndarray, where: str) -> np.ndarray:
    """Stored entries at the union of the expert masks -> the dense (out, in) tensor (zeros elsewhere)."""
    union = masks.any(axis=0)  # (out, in)
    if values.shape != (int(union.sum()),):
        raise ArtifactError(
            f"{where} holds {values.size} values but its expert masks use {int(union.sum())} weights; "
            "shapes inconsistent, re-create the artifact"
        )
    dense = np.zeros(union.shape, dtype=values.dtype)
    dense[union] = values
    return dense


def is_quant_scale(name: str, table: Mapping[str, Any]) -> bool:
    parent = name[: -len(".scale")]
    return parent in table and table[parent].get("scale") == name


def compare_tables(expected: Mapping[str, Mapping[str, Any]], actual: Mapping[str, Mapping[str, Any]], context: str) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        raise ArtifactError(
            f"{context}: tensors missing {_short(missing[:5])}, unexpected {_short(extra[:5])}; re-create the artifact with `mome-edge compile`"
        )
    for name, want in expected.items():
        have = actual[name]
        for key in want:
            # Every key must be there: readers (components(), stored_dense) index the entries.
            # dict, not typing.Mapping: the tables are dicts (parsed JSON, or built by the writer), and isinstance against the typing
            # alias costs a __subclasscheck__ per key (~0.5 ms of a census load)
            if not isinstance(have, dict) or key not in have or _listify(have[key]) != _listify(want[key]):
                found = have.get(key, "nothing") if isinstance(have, dict) else have
                raise ArtifactError(
                    f"{context}: tensor {_short(name)} has {key} {_short(found)}, expected {_short(want[key])}; "
                    "re-create the artifact with `mome-edge compile`"
                )


def _short(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: hostile files hold megabyte names and shapes."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _pos(value: Any, what: str, *, zero: bool = True) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero else 1):
        raise ArtifactError(f"shapes inconsistent: {what} is {_short(value)}, expected a {'non-negative' if zero else 'positive'} integer")
    return value


def expected_tensors(structure: Mapping[str, Any], weights: str, table: Mapping[str, Any], *, spec: FeatureSpec | None = None) -> dict[str, dict[str, Any]]:
    """Every tensor (name -> dtype, shape, component, scale, axis) that `structure` implies.

    Also checks that the structure's shapes chain (layer l's input is layer l-1's output,
    experts and tasks agree, the towers end in one logit): the "consistent with each other"
    half of the read checks. Mask byte lengths come from `table` (they depend on encoding).
    """
    spec = spec or FeatureSpec.from_json(structure["feature_spec"])
    kind, routing = structure["kind"], structure["routing"]
    if kind not in KINDS or routing not in ROUTINGS:
        raise ArtifactError(f"shapes inconsistent: unknown model kind {_short(kind)} or routing {_short(routing)}")
    tasks = len(spec.tasks)
    if list(structure["tasks"]) != list(spec.tasks):
        raise ArtifactError(f"shapes inconsistent: tasks {_short(structure['tasks'])} differ from the feature spec's {_short(list(spec.tasks))}")
    quant = STORED_FLOAT[weights]
    out: dict[str, dict[str, Any]] = {}

    def add(
        name: str, shape: tuple[int, ...], component: str, *, quantised: bool = False, axis: int = -1, dtype: str = "float32",
        packed: int | None = None,
    ) -> None:
        # `shape` is the logical (dense) shape; a union-layout tensor stores `packed` entries.
        stored_shape, layout = (shape, "dense") if packed is None else ((packed,), "union")
        if quantised and weights != "fp32":
            axis = axis % len(shape)
            if weights == "int8":
                out[name] = table_entry("int8", stored_shape, component, scale=f"{name}.scale", axis=axis, layout=layout)
                out[f"{name}.scale"] = table_entry("float32", shape[:axis] + shape[axis + 1 :], component)
                return
            dtype = quant
        out[name] = table_entry(dtype, stored_shape, component, layout=layout)

    inp = structure["input"]
    field_index = [_pos(f, "field index") for f in inp["field_index"]]
    dims = [_pos(d, "embedding width") for d in inp["embedding_dims"]]
    n_num = _pos(inp["numerical_keep"], "numerical features")
    if len(field_index) != len(dims) or sorted(set(field_index)) != field_index or any(f >= len(spec.categorical) for f in field_index):
        raise ArtifactError(f"shapes inconsistent: field index {_short(field_index)} does not fit {len(spec.categorical)} categorical fields")
    width = _pos(inp["width"], "input width")
    if width != sum(dims) + n_num:
        raise ArtifactError(f"shapes inconsistent: input width {width} != embedding widths {sum(dims)} + numerical {n_num}")
    vocab = spec.vocab_sizes  # a property that builds its tuple on every read
    for j, (f, d) in enumerate(zip(field_index, dims)):
        add(f"embeddings.{j}", (vocab[f], d), "embeddings", quantised=True, axis=0)
    add("numerical_keep", (n_num,), "indices", dtype="int64")

    def expert_layer(prefix: str, info: Mapping[str, Any], in_width: int, *, dense_only: bool) -> tuple[int, int]:
        experts, n_out, n_in = _pos(info["experts"], "experts", zero=False), _pos(info["out"], "layer width"), _pos(info["in"], "layer input")
        has_index = info["input_index"]
        if not isinstance(has_index, bool) or (not has_index and n_in != in_width):
            raise ArtifactError(f"shapes inconsistent: {prefix} reads {n_in} inputs, the previous stage gives {in_width}")
        shared = info.get("shared_weight", False)
        if shared is not False and (dense_only or shared is not True):
            raise ArtifactError(f"shapes inconsistent: {prefix} shared_weight={_short(shared)}")
        # Shared (MoME) base weights store only the entries some expert uses ("union" layout);
        # their count is checked against the decoded masks once those are read.
        packed = _pos(_table_length(table, f"{prefix}.weight"), f"{prefix}.weight length") if shared else None
        add(f"{prefix}.weight", (n_out, n_in) if shared else (experts, n_out, n_in), "base_weights", quantised=True, packed=packed)
        add(f"{prefix}.scale", (experts, n_out), "expert_affine")
        add(f"{prefix}.shift", (experts, n_out), "expert_affine")
        if has_index:
            add(f"{prefix}.input_index", (n_in,), "indices", dtype="int64")
        masks = info.get("masks")
        if shared:
            if not isinstance(masks, list) or len(masks) != experts:
                raise ArtifactError(f"shapes inconsistent: {prefix} needs {experts} expert masks, the manifest lists {masks!r:.40}")
            total = 0
            for e, entry in enumerate(masks):
                if not isinstance(entry, dict) or set(entry) != {"encoding", "xor_previous", "bytes"} or not isinstance(entry["xor_previous"], bool):
                    raise ArtifactError(f"shapes inconsistent: {prefix} expert {e} mask entry {entry!r:.60} is malformed")
                total += _pos(entry["bytes"], f"{prefix} expert {e} mask length")
            add(f"{prefix}.masks", (total,), "expert_masks", dtype="uint8")
        elif masks is not None:
            raise ArtifactError(f"shapes inconsistent: {prefix} has dense weights but lists masks")
        return experts, n_out

    trunk_width = None
    if kind == "ple":
        levels = structure["ple_levels"]
        if not levels or structure["layers"] or structure["gates"] is not None or routing != "softmax":
            raise ArtifactError("shapes inconsistent: a ple model has PLE levels only (no trunk layers, no top-level gates)")
        branch_width = width
        for i, level in enumerate(levels):
            experts, n_out = expert_layer(f"ple.{i}", level, branch_width, dense_only=True)
            k = _pos(level["task_gate_width"], "task gate width", zero=False)
            add(f"ple.{i}.task_gates.weight", (tasks, k, branch_width), "task_gates", quantised=True)
            add(f"ple.{i}.task_gates.bias", (tasks, k), "task_gates")
            last = i == len(levels) - 1
            if level["shared_gate"] is not (not last):
                raise ArtifactError(f"shapes inconsistent: PLE level {i} {'must not' if last else 'must'} have a shared gate")
            if not last:
                add(f"ple.{i}.shared_gate.weight", (1, experts, branch_width), "task_gates", quantised=True)
                add(f"ple.{i}.shared_gate.bias", (1, experts), "task_gates")
            add(f"ple.{i}.expert_owner", (experts,), "indices", dtype="int64")
            add(f"ple.{i}.task_selection", (tasks, k), "indices", dtype="int64")
            branch_width = n_out
        trunk_width = branch_width
    else:
        layers = structure["layers"]
        if not layers or structure["ple_levels"]:
            raise ArtifactError(f"shapes inconsistent: a {kind} model needs trunk layers and no PLE levels")
        in_width, experts_seen = width, None
        for l, info in enumerate(layers):
            if l > 0 and info["input_index"]:
                raise ArtifactError("shapes inconsistent: only the first layer may select its inputs")
            experts, in_width = expert_layer(f"layers.{l}", info, in_width, dense_only=kind != "mome")
            if kind == "mome" and not info["shared_weight"]:
                raise ArtifactError(f"shapes inconsistent: mome layer {l} must have a shared base weight and masks")
            if experts_seen is not None and experts != experts_seen:
                raise ArtifactError(f"shapes inconsistent: layer {l} has {experts} experts, layer 0 has {experts_seen}")
            experts_seen = experts
        trunk_width = in_width
        gates, fixed = structure["gates"], structure["fixed_expert"]
        if routing == "softmax":
            if gates is None or fixed is not None or gates["experts"] != experts_seen or gates["in"] != width:
                raise ArtifactError(f"shapes inconsistent: softmax routing needs gates over {experts_seen} experts from {width} inputs")
            add("gates.weight", (tasks, experts_seen, width), "task_gates", quantised=True)
            add("gates.bias", (tasks, experts_seen), "task_gates")
        elif gates is not None or not isinstance(fixed, list) or len(fixed) != tasks or not all(
            isinstance(e, int) and not isinstance(e, bool) and 0 <= e < experts_seen for e in fixed
        ):
            raise ArtifactError(f"shapes inconsistent: fixed routing needs one expert index in [0, {experts_seen}) per task")
    towers = structure["towers"]
    in_width = trunk_width
    for i, info in enumerate(towers):
        n_out, n_in = _pos(info["out"], "tower width", zero=False), _pos(info["in"], "tower input")
        if n_in != in_width:
            raise ArtifactError(f"shapes inconsistent: tower layer {i} reads {n_in} inputs, the previous stage gives {in_width}")
        add(f"towers.{i}.weight", (tasks, n_out, n_in), "towers", quantised=True)
        add(f"towers.{i}.bias", (tasks, n_out), "towers")
        in_width = n_out
    if not towers or in_width != 1:
        raise ArtifactError("shapes inconsistent: the towers must end in one logit per task")
    return out


def _table_length(table: Mapping[str, Any], name: str) -> Any:
    """The length a 1-D tensor claims in the manifest (validated by the caller)."""
    entry = table.get(name)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return shape[0] if isinstance(shape, list) and len(shape) == 1 else None


def build_model(structure: Mapping[str, Any], arrays: Mapping[str, np.ndarray], masks: Mapping[int, np.ndarray | None], spec: FeatureSpec, metadata: Mapping[str, Any]) -> CompiledModel:
    def expert_layer(prefix: str, mask: np.ndarray | None) -> ExpertLayer:
        return ExpertLayer(
            weight=arrays[f"{prefix}.weight"], masks=mask, scale=arrays[f"{prefix}.scale"], shift=arrays[f"{prefix}.shift"],
            input_index=arrays.get(f"{prefix}.input_index"),
        )

    def linear(prefix: str) -> Linear:
        return Linear(weight=arrays[f"{prefix}.weight"], bias=arrays[f"{prefix}.bias"])

    inp = structure["input"]
    levels = []
    for i, level in enumerate(structure["ple_levels"]):
        levels.append(
            PleLevel(
                experts=expert_layer(f"ple.{i}", None),
                task_gates=linear(f"ple.{i}.task_gates"),
                shared_gate=linear(f"ple.{i}.shared_gate") if level["shared_gate"] else None,
                expert_owner=arrays[f"ple.{i}.expert_owner"],
                task_selection=arrays[f"ple.{i}.task_selection"],
            )
        )
    fixed = structure["fixed_expert"]
    return CompiledModel(
        kind=structure["kind"],
        spec=spec,
        field_index=tuple(int(f) for f in inp["field_index"]),
        embeddings=tuple(arrays[f"embeddings.{j}"] for j in range(len(inp["field_index"]))),
        numerical_keep=arrays["numerical_keep"],
        towers=tuple(linear(f"towers.{i}") for i in range(len(structure["towers"]))),
        layers=tuple(expert_layer(f"layers.{l}", masks.get(l)) for l in range(len(structure["layers"]))),
        routing=structure["routing"],
        gates=linear("gates") if structure["gates"] is not None else None,
        fixed_expert=None if fixed is None else tuple(int(e) for e in fixed),
        ple_levels=tuple(levels),
        metadata=metadata,
    )


def check_index_values(model: CompiledModel, source: str) -> None:
    """Index tensors must stay in range: the forward pass gathers with them."""
    def check(values: np.ndarray, upper: int, what: str) -> None:
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise ArtifactError(f"{source}: {what} holds values outside [0, {upper}); the artifact is corrupt, re-create it")

    check(model.numerical_keep, len(model.spec.numerical), "numerical_keep")
    width = sum(t.shape[1] for t in model.embeddings) + len(model.numerical_keep)
    for l, layer in enumerate(model.layers):
        if layer.input_index is not None:
            check(layer.input_index, width, f"layers.{l}.input_index")
    tasks = len(model.tasks)
    for i, level in enumerate(model.ple_levels):
        if level.experts.input_index is not None:
            check(level.experts.input_index, width if i == 0 else model.ple_levels[i - 1].experts.scale.shape[1], f"ple.{i}.input_index")
        check(level.expert_owner, tasks + 1, f"ple.{i}.expert_owner")
        check(level.task_selection, level.experts.experts, f"ple.{i}.task_selection")


def check_finite(arrays: Mapping[str, np.ndarray], spec: FeatureSpec, source: str) -> None:
    """Every float tensor and every numerical statistic must be finite: NaN or inf is corruption."""
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ArtifactError(f"{source}: {name} holds NaN or infinite values; the artifact is corrupt (or its model diverged), re-create it")
    for scaler in spec.numerical:
        if not (math.isfinite(scaler.mean) and math.isfinite(scaler.std)):
            raise ArtifactError(f"{source}: numerical feature {scaler.name!r} has a non-finite mean or std; re-create the artifact")


def check_compiled_model(model: CompiledModel) -> None:
    """Raise ArtifactError unless `model`'s shapes chain and its indices are in range.

    The same checks a reader applies, for models built in memory (compilers, tests), so that
    a model that would not read back is never written.
    """
    for l, layer in enumerate(model.layers):
        masks = layer.masks
        if masks is not None and (masks.dtype != bool or masks.shape != (layer.experts, *layer.weight.shape)):
            raise ArtifactError(f"inconsistent compiled model: layers.{l}.masks must be bool (E, out, in) matching its weight")
    table = {n: entry for name, t in flatten_model(model).items() for n, _, entry in store_tensor(name, t, "fp32")}
    table.update(_mask_table(model))
    try:
        expected = expected_tensors(_structure_with_masks(model), "fp32", table)
    except ArtifactError as exc:
        raise ArtifactError(f"inconsistent compiled model, not written: {exc}") from None
    compare_tables(expected, table, "inconsistent compiled model")
    check_index_values(model, "compiled model")
    check_finite({name: t.array for name, t in flatten_model(model).items()}, model.spec, "compiled model")


def _structure_with_masks(model: CompiledModel) -> dict[str, Any]:
    structure = model_structure(model)
    for l, layer in enumerate(model.layers):
        if layer.masks is not None:
            n_bytes = (int(layer.weight.size) + 7) // 8
            structure["layers"][l]["masks"] = [{"encoding": "raw", "xor_previous": False, "bytes": n_bytes}] * layer.experts
    return structure


def _mask_table(model: CompiledModel) -> dict[str, dict[str, Any]]:
    table = {}
    for l, layer in enumerate(model.layers):
        if layer.masks is not None:
            n_bytes = (int(layer.weight.size) + 7) // 8
            table[f"layers.{l}.masks"] = table_entry("uint8", (layer.experts * n_bytes,), "expert_masks")
    return table
