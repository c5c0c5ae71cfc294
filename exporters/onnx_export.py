"""Export a CompiledModel to ONNX: build, check, simplify (bitsets protected), validate, write.

    model = export_onnx(compiled, experts="bitset")           # onnx.ModelProto
    result = export_onnx_with_report(compiled, experts="dense")  # .model, .report
    save_onnx(result.model, "model.onnx")                      # signed (mome.sha256), atomic
    data = onnx_bytes(result.model)                            # the same bytes, in memory
    write_ort_format("model.onnx")                             # model.ort + required-operators config

The graph itself is built in exporters.onnx_graph. Validation compares ONNX Runtime's outputs
on a sample batch (valid ids plus negative, out-of-vocabulary and int64-extreme ids) with
`mome_edge.artifact.compiled.reference_forward`; the tolerance is PARITY_ATOL_FP32.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from mome_edge.atomic import atomic_write_bytes
from mome_edge.artifact.compiled import CompiledModel, reference_forward
from mome_edge.encoding import FeatureSpec
from mome_edge.errors import ArtifactError, ConfigError, ParityError
from mome_edge.runtime.onnx_integrity import sign_onnx_bytes
from mome_edge.exporters.onnx_graph import (
    EXPERT_STORAGE,
    INPUT_CATEGORICAL,
    INPUT_NUMERICAL,
    MIN_OPSET,
    GraphInfo,
    StoredTensor,
    WeightSource,
    build_model,
)
from mome_edge.onnx_contract import DEPLOY_MODES
from mome_edge.onnx_contract import EXPERT_MODES, PARITY_ATOL_FP32

DEFAULT_OPSET = 18
MAX_OPSET = 21  # the newest opset every onnxruntime >= 1.17 (our floor) executes
# memory mode's default: opset 21's DequantizeLinear takes one scale per element (block_size),
# which rebuilds an expert in one fused pass (onnxruntime >= 1.20 runs it; see onnx_bitset)
DEFAULT_MEMORY_OPSET = 21
# ONNX Runtime vs the numpy reference of the same (dequantised) weights, probabilities, fp32
# arithmetic on both sides: differences come from summation order only.
VALIDATION_ROWS = 64
# After simplification the file may grow by this much (onnxsim may add value_info) before we
# conclude that it undid the bitset storage.
SIMPLIFY_GROWTH_BYTES = 16_384
ORT_SESSION_MODES = EXPERT_MODES


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """What one export did, in numbers (the CLI prints it; `to_json` is its --json form)."""

    kind: str
    experts: str
    mode: str
    opset: int
    storage: tuple[str, ...]
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    simplified: bool
    simplify_note: str
    decode_nodes: int
    bitset_initializers: int
    bitset_bytes: int
    quantised_nodes: tuple[str, ...]
    validated: bool
    parity_max_abs: float | None
    parity_tolerance: float
    resident_expert_bytes: int  # dense expert weights a running session holds (mome.resident_expert_bytes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["storage"] = list(self.storage)
        data["quantised_nodes"] = list(self.quantised_nodes)
        return data


@dataclass(frozen=True)
class OnnxExport:
    model: onnx.ModelProto
    report: ExportReport


def export_onnx(
    compiled: CompiledModel, *, experts: str = "bitset", opset: int | None = None, simplify: bool = True,
    validate: bool = True, source: WeightSource | None = None, sample_rows: int = VALIDATION_ROWS, seed: int = 0,
    mode: str = "speed",
) -> onnx.ModelProto:
    """The checked (and by default simplified and validated) ONNX model of `compiled`.

    Args:
        compiled: the compiled model (see mome_edge.artifact.compiled).
        experts: "bitset" stores the shared base weights and packed expert masks and rebuilds
            the experts inside the graph; "dense" stores materialised expert weights.
        mode: "speed" (bitset experts expanded once at session start) or "memory" (rebuilt
            one at a time inside every run); see exporters.onnx_bitset.
        opset: ONNX opset, MIN_OPSET..MAX_OPSET; None: DEFAULT_OPSET (speed) or
            DEFAULT_MEMORY_OPSET (memory, which needs at least 18).
        simplify: run onnxsim on the compute graph (the weight decoder is kept out of it).
        validate: compare ONNX Runtime with reference_forward on a sample batch.
        source: how weights are stored (fp16/int8 from an artifact); None = fp32 as in `compiled`.
        sample_rows, seed: the validation batch.

    Raises:
        ConfigError: bad experts/opset, or a model the exporter cannot express.
        ParityError: ONNX Runtime's probabilities differ from the reference by > PARITY_ATOL_FP32.
        ArtifactError: the built graph fails onnx.checker (an exporter bug).
    """
    return export_onnx_with_report(
        compiled, experts=experts, opset=opset, simplify=simplify, validate=validate, source=source,
        sample_rows=sample_rows, seed=seed, mode=mode,
    ).model


def export_onnx_with_report(
    compiled: CompiledModel, *, experts: str = "bitset", opset: int | None = None, simplify: bool = True,
    validate: bool = True, source: WeightSource | None = None, sample_rows: int = VALIDATION_ROWS, seed: int = 0,
    mode: str = "speed",
) -> OnnxExport:
    """export_onnx, plus an ExportReport (node counts and bytes before/after onnxsim, parity)."""
    if experts not in EXPERT_STORAGE:
        raise ConfigError(f"experts={experts!r} is not an expert storage mode; use one of {', '.join(EXPERT_STORAGE)}")
    if mode not in DEPLOY_MODES:
        raise ConfigError(f"mode={mode!r} is not a deployment mode; use speed or memory")
    if opset is None:
        opset = DEFAULT_MEMORY_OPSET if mode == "memory" else DEFAULT_OPSET
    if mode == "memory" and not has_masked_layers(compiled):
        raise ConfigError(
            f"mode 'memory' rebuilds masked experts per call, and this {compiled.kind} model has none (its experts are "
            "dense weights); export it with --mode speed"
        )
    if not (isinstance(opset, int) and MIN_OPSET <= opset <= MAX_OPSET):
        raise ConfigError(f"opset={opset!r} is not supported; use an integer in {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if sample_rows < 1:
        raise ConfigError(f"sample_rows={sample_rows} must be >= 1")
    model, info = build_model(compiled, experts=experts, opset=opset, source=source, mode=mode)
    check_onnx(model)
    nodes_before, bytes_before = len(model.graph.node), model.ByteSize()
    note = "not simplified (simplify=False)"
    simplified = False
    if simplify:
        model, simplified, note = _simplify(model, info)
        check_onnx(model)
    parity = None
    if validate:
        parity = validate_onnx(model, compiled, rows=sample_rows, seed=seed)
    bitsets = {t.name: t for t in model.graph.initializer if t.name in set(info.bitset_initializers)}
    report = ExportReport(
        kind=compiled.kind, experts=experts, mode=mode, opset=opset, storage=tuple(sorted(set(info.storage.values()))),
        nodes_before=nodes_before, nodes_after=len(model.graph.node), bytes_before=bytes_before,
        bytes_after=model.ByteSize(), simplified=simplified, simplify_note=note,
        decode_nodes=sum(1 for n in model.graph.node if n.name in info.decode_nodes),
        bitset_initializers=len(bitsets), bitset_bytes=sum(len(t.raw_data) for t in bitsets.values()),
        quantised_nodes=tuple(info.quantised_nodes), validated=validate, parity_max_abs=parity,
        parity_tolerance=PARITY_ATOL_FP32, resident_expert_bytes=info.resident_expert_bytes(mode),
    )
    return OnnxExport(model=model, report=report)


def has_masked_layers(compiled: CompiledModel) -> bool:
    return any(layer.masks is not None for layer in compiled.layers)


# --- checks --------------------------------------------------------------------------------------


def check_onnx(model: onnx.ModelProto) -> None:
    """onnx.checker (full check) and strict shape inference; every task output must be float32 [batch]."""
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ArtifactError(f"the exported ONNX graph fails onnx.checker: {exc}; this is an exporter bug, please report it") from exc
    for out in inferred.graph.output:
        ttype = out.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in ttype.shape.dim]
        if ttype.elem_type != TensorProto.FLOAT or len(dims) != 1:
            raise ArtifactError(f"output {out.name!r} is not float32 [batch] (dims {dims}); this is an exporter bug, please report it")


def validation_batch(spec: FeatureSpec, rows: int = VALIDATION_ROWS, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random in-vocabulary ids and N(0, 1) numericals; the first rows also hold invalid ids
    (-1, one past the vocabulary, int64 min/max) that must read the OOV row."""
    rng = np.random.default_rng(seed)
    sizes = np.asarray(spec.vocab_sizes, dtype=np.int64)
    cat = np.floor(rng.random((rows, len(sizes))) * sizes).astype(np.int64)  # (B, F)
    num = rng.standard_normal((rows, len(spec.numerical))).astype(np.float32)  # (B, D)
    if len(sizes):
        bad = [-1, np.iinfo(np.int64).min, np.iinfo(np.int64).max]
        cat[0] = sizes  # one past the last row of every table
        for i in range(1, min(rows, 1 + len(bad))):
            cat[i] = bad[i - 1]
    return cat, num


def ort_session(model: onnx.ModelProto | bytes | str | Path, *, mode: str = "materialize", threads: int = 1):
    """An onnxruntime CPU session; mode "on-demand" disables ConstantFolding so bitsets stay packed."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    payload = str(payload) if isinstance(payload, Path) else payload
    disabled = ["ConstantFolding"] if mode == "on-demand" else None
    return ort.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def validate_onnx(model: onnx.ModelProto | bytes | str | Path, compiled: CompiledModel, *, rows: int = VALIDATION_ROWS,
                  seed: int = 0, tolerance: float = PARITY_ATOL_FP32) -> float:
    """Max |p_onnx - p_reference| over tasks, rows and both session modes; ParityError above tolerance."""
    cat, num = validation_batch(compiled.spec, rows, seed=seed)
    reference = reference_forward(compiled, cat, num)  # (B, T)
    worst = 0.0
    for mode in ORT_SESSION_MODES:
        session = ort_session(model, mode=mode)
        outputs = session.run(list(compiled.tasks), {INPUT_CATEGORICAL: cat, INPUT_NUMERICAL: num})
        for t, (task, probs) in enumerate(zip(compiled.tasks, outputs)):
            diff = np.abs(probs.astype(np.float64) - reference[:, t])
            if not np.all(np.isfinite(probs)):
                raise ParityError(f"ONNX Runtime ({mode}) returns non-finite probabilities for task {task!r}; this is an exporter bug, please report it")
            err = float(diff.max())
            if err > tolerance:
                row = int(diff.argmax())
                raise ParityError(
                    f"the exported ONNX graph disagrees with the numpy reference: max |p_onnx - p_ref| = {err:.3g} "
                    f"on task {task!r} (row {row}, session {mode}), above the tolerance {tolerance:g}; this is an exporter "
                    "bug: please report it with the artifact (export with --no-validate to inspect the file)"
                )
            worst = max(worst, err)
    return worst


# --- simplification ------------------------------------------------------------------------------


def _reads(nodes) -> set[str]:
    """Every name the nodes read, including outer-scope names read inside their subgraphs."""
    names: set[str] = set()
    for n in nodes:
        names.update(n.input)
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names.update(_reads(attr.g.node))
    return names


def _simplify(model: onnx.ModelProto, info: GraphInfo) -> tuple[onnx.ModelProto, bool, str]:
    """onnxsim on the compute graph only; the weight decoder and Loops are spliced back unchanged.

    Constant folding of the decoder (bitset unpacking, dequantisation) would store the
    experts as dense floats again. Instead of trusting an optimiser flag, the decoder's
    outputs become inputs of the graph that onnxsim sees, so they are not constants to it.
    A Loop (memory mode's per-expert rebuild) is cut out the same way: its inputs become
    outputs of the graph onnxsim sees and its outputs inputs, because onnxsim unrolls a
    Loop whose trip count is a constant (E copies of the body, every expert's bit planes
    folded into a constant: the dense experts memory mode exists to avoid).
    """
    import onnxsim

    graph = model.graph
    decode = [n for n in graph.node if n.name in info.decode_nodes]
    loops = [n for n in graph.node if n.op_type == "Loop"]
    opaque = {id(n) for n in decode + loops}
    core = [n for n in graph.node if id(n) not in opaque]
    core_reads = _reads(core)  # including what Loop bodies read from the outer scope
    kept_reads = _reads(decode + loops)
    init_names = {t.name for t in graph.initializer}
    decode_inits = [t for t in graph.initializer if t.name in kept_reads and t.name not in core_reads]
    decode_init_names = {t.name for t in decode_inits}
    boundary = [o for n in decode for o in n.output if o in core_reads]
    loop_outputs = [o for n in loops for o in n.output]
    # what the Loops read from the graph around them: their inputs and the names their bodies read from the outer scope
    # (decoder outputs are not: the decoder is spliced back next to the Loops, outside what onnxsim sees)
    decoded = {o for n in decode for o in n.output}
    loop_inputs = sorted({i for n in loops for i in _outer_reads(n) if i not in init_names and i not in loop_outputs
                          and i not in {v.name for v in graph.input}} - set(boundary) - decoded)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)
             if v.type.tensor_type.HasField("shape")}
    for n in loops:  # a Loop's outputs: its carried values, typed as the body declares them
        body = next(a.g for a in n.attribute if a.name == "body")
        for name, declared in zip(n.output, body.output[1:]):
            types[name] = helper.make_value_info(name, declared.type)
    missing = [name for name in loop_outputs + loop_inputs if name not in types]
    if missing:
        return model, False, f"shape inference gave no type for {missing[:3]}; kept the unsimplified graph"
    core_inputs = list(graph.input) + [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, list(info.decode_shapes[name])) for name in boundary
    ] + [types[name] for name in loop_outputs]
    core_outputs = list(graph.output) + [types[name] for name in loop_inputs]
    core_graph = helper.make_graph(
        core, graph.name, core_inputs, core_outputs,
        initializer=[t for t in graph.initializer if t.name not in decode_init_names],
    )
    core_model = helper.make_model(core_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        simplified, ok = onnxsim.simplify(core_model, check_n=0)
    except Exception as exc:  # onnxsim raises bare RuntimeErrors from its C++ core
        return model, False, f"onnxsim failed ({type(exc).__name__}: {exc}); kept the unsimplified graph"
    if not ok:
        return model, False, "onnxsim's self-check failed; kept the unsimplified graph"
    sgraph = simplified.graph
    if [i.name for i in sgraph.input] != [i.name for i in core_inputs]:
        return model, False, "onnxsim changed the graph inputs; kept the unsimplified graph"
    if [o.name for o in sgraph.output] != [o.name for o in core_outputs]:
        return model, False, "onnxsim changed the graph outputs; kept the unsimplified graph"
    nodes = _topological(decode + list(sgraph.node) + loops, produced={i.name for i in graph.input} | {
        t.name for t in list(decode_inits) + list(sgraph.initializer)})
    if nodes is None:
        return model, False, "the simplified graph could not be ordered; kept the unsimplified graph"
    merged_graph = helper.make_graph(
        nodes, graph.name, list(graph.input), list(graph.output),
        initializer=decode_inits + list(sgraph.initializer),
        value_info=[v for v in sgraph.value_info if v.name not in {o.name for o in graph.output}],
    )
    merged = helper.make_model(
        merged_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
        producer_name=model.producer_name, producer_version=model.producer_version, doc_string=model.doc_string,
    )
    helper.set_model_props(merged, {p.key: p.value for p in model.metadata_props})  # ours, not onnxsim's
    # the check the issue asks for: the packed masks are still there, byte for byte, and the
    # file did not grow (a folded decoder multiplies the expert bytes by 8 * 4)
    before = {t.name: t.raw_data for t in graph.initializer if t.name in set(info.bitset_initializers)}
    after = {t.name: t.raw_data for t in merged.graph.initializer if t.name in before}
    if after != before or merged.ByteSize() > model.ByteSize() + SIMPLIFY_GROWTH_BYTES:
        return model, False, (
            f"simplification would have undone the bitset storage ({model.ByteSize()} -> {merged.ByteSize()} bytes); "
            "kept the unsimplified graph"
        )
    protected = f"; the weight decoder ({len(decode)} nodes) was kept out of constant folding" if decode else ""
    looped = f"; {len(loops)} Loop(s) kept as they are" if loops else ""
    return merged, True, f"onnxsim simplified the compute graph ({len(core)} -> {len(sgraph.node)} nodes){protected}{looped}"


def _outer_reads(node) -> set[str]:
    """The names a node reads from the graph it sits in: its inputs and, for a Loop, what its body reads
    that the body does not define itself (iteration number, carried values, its own nodes' outputs)."""
    reads = {i for i in node.input if i}
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            g = attr.g
            local = {i.name for i in g.input} | {o for bn in g.node for o in bn.output} | {t.name for t in g.initializer}
            reads |= set().union(*(_outer_reads(bn) for bn in g.node)) - local  # nested Loops: their own outer reads
    return reads


def _topological(nodes: list, *, produced: set[str]) -> list | None:
    """`nodes` ordered so that every node comes after the producers of what it reads (None on a cycle)."""
    ready = set(produced)
    pending = list(nodes)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if _outer_reads(n) - ready:
                rest.append(n)
            else:
                ordered.append(n)
                ready.update(n.output)
        if len(rest) == len(pending):
            return None
        pending = rest
    return ordered


# --- files -----------------------------------------------------------------------------------------


def onnx_bytes(model: onnx.ModelProto) -> bytes:
    """The file bytes of an exported model: serialised, with its SHA-256 filled in (see onnx_integrity)."""
    return sign_onnx_bytes(model.SerializeToString())


def save_onnx(model: onnx.ModelProto, path: str | Path) -> int:
    """Write `model` (signed) atomically (temp file + rename); returns the bytes written."""
    data = onnx_bytes(model)
    atomic_write_bytes(path, data)
    return len(data)


@dataclass(frozen=True)
class OrtFiles:
    model: Path
    config: Path
    model_bytes: int
    keeps_bitset: bool


def write_ort_format(onnx_path: str | Path, *, mode: str = "speed") -> OrtFiles:
    """Write MODEL.ort and MODEL.required_operators.config next to MODEL.onnx.

    The .ort is the graph a default ONNX Runtime session of MODEL.onnx runs after its
    load-time optimisations (constant folding included), saved the way
    onnxruntime.tools.convert_onnx_models_to_ort saves it (NchwcTransformer excluded: x86
    layouts). ONNX Runtime does not re-run graph optimisations on an .ort file (a minimal
    build cannot), so whatever the .onnx computes once at load must already be computed in
    the .ort:
      speed:  the folded experts are stored dense (the file is as large as a dense
              export; memory and latency equal the speed .onnx's). A small .ort that rebuilt
              the experts at load is not possible: nothing in an .ort runs once at load.
      memory: the per-expert Loop cannot be folded, so the bitsets stay packed (the file
              stays small) and the .ort runs exactly the .onnx's per-call rebuild.
    The operator config (with type reduction) comes from the tool's create_config_from_models.
    """
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    onnx_path = Path(onnx_path)
    folder = onnx_path.parent
    ort_path = onnx_path.with_suffix(".ort")
    config_path = onnx_path.with_suffix(".required_operators.config")
    with tempfile.TemporaryDirectory(prefix=".ort-", dir=folder) as tmp:
        tmp_ort = Path(tmp) / ort_path.name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(tmp_ort)
        options.add_session_config_entry("session.save_model_format", "ORT")
        options.add_session_config_entry("session.qdqisint8allowed", "0")
        ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["NchwcTransformer"])
        tmp_config = Path(tmp) / config_path.name
        logger = logging.getLogger("ort_format_model.utils")
        level = logger.level
        logger.setLevel(logging.WARNING)  # the tool logs an INFO line per file to stderr
        try:
            create_config_from_models([tmp_ort], tmp_config, True)  # type reduction: only the types the model uses
        finally:
            logger.setLevel(level)
        # the tool names the temporary file it read; name the shipped one instead
        text = tmp_config.read_text().replace(str(tmp_ort), ort_path.name)
        tmp_config.write_text(text)
        os.replace(tmp_ort, ort_path)
        os.replace(tmp_config, config_path)
    return OrtFiles(model=ort_path, config=config_path, model_bytes=ort_path.stat().st_size, keeps_bitset=mode == "memory")


# --- from an artifact file ---------------------------------------------------------------------


def weight_source(loaded: Any) -> dict[str, StoredTensor]:
    """The fp16/int8 tensors of a LoadedArtifact (mome_edge.artifact.reader) as StoredTensors, so the
    ONNX file keeps the artifact's storage precision (fp32 tensors come from the model).
    Union-layout base weights come back dense (`stored_dense`): the ONNX file stores the base
    whole (exporters.onnx_bitset)."""
    table = loaded.manifest["tensors"]
    out: dict[str, StoredTensor] = {}
    for name, entry in table.items():
        if entry["dtype"] == "float16":
            out[name] = StoredTensor(data=np.asarray(loaded.stored_dense(name)))
        elif entry["dtype"] == "int8":
            out[name] = StoredTensor(
                data=np.asarray(loaded.stored_dense(name)), scale=np.asarray(loaded.stored[entry["scale"]]), axis=entry["axis"],
            )
    return out


def export_artifact(
    artifact: str | Path, output: str | Path, *, experts: str = "bitset", opset: int | None = None,
    simplify: bool = True, validate: bool = True, ort_format: bool = False, mode: str = "speed",
) -> dict[str, Any]:
    """Read a `.mome` file, export it, write OUTPUT (atomically), its golden rows
    (OUT.golden.json, see mome_edge.runtime.golden) and optionally the ORT format.

    The golden rows' expected probabilities come from the numpy reference of the artifact;
    the written .onnx (and .ort), opened as an app opens it (default session options), must
    reproduce them within the golden tolerance, or nothing is left behind and ParityError
    is raised.

    Returns the report as a JSON-ready dict (ExportReport.to_json plus paths and file sizes).
    Raises ArtifactError / ConfigError / ParityError (see export_onnx).
    """
    from mome_edge.artifact.reader import read_artifact
    from mome_edge.runtime import golden

    artifact, output = Path(artifact), Path(output)
    if output.suffix.lower() != ".onnx":
        raise ConfigError(f"-o {output}: the output must be an .onnx file (the ORT format goes next to it with --ort)")
    if output.resolve() == artifact.resolve():
        raise ConfigError(f"-o {output} would overwrite the artifact; choose another output path")
    if not output.parent.is_dir():
        raise ConfigError(f"-o {output}: folder {output.parent} does not exist; create it first")
    loaded = read_artifact(artifact)
    result = export_onnx_with_report(
        loaded.model, experts=experts, opset=opset, simplify=simplify, validate=validate, source=weight_source(loaded),
        mode=mode,
    )
    doc = golden.build_golden(loaded.model.spec, loaded.model.tasks, lambda c, n: reference_forward(loaded.model, c, n),
                              model_name=output.name, mode=mode)
    data = onnx_bytes(result.model)
    golden_error = {"onnx": _golden_error(data, doc)}
    written = len(data)
    atomic_write_bytes(output, data)
    golden_file = golden.golden_path(output)
    atomic_write_bytes(golden_file, golden.golden_bytes(doc))
    report = {
        "model": str(artifact),
        "output": str(output),
        "artifact_bytes": loaded.file_bytes,
        "weights": loaded.weights,
        "onnx_bytes": written,
        "ratio_to_artifact": written / loaded.file_bytes,
        **result.report.to_json(),
        "ort": None,
        "golden": {"path": str(golden_file), "rows": len(doc["rows"]), "tolerance": doc["tolerance"]},
    }
    if ort_format:
        files = write_ort_format(output, mode=mode)
        golden_error["ort"] = _golden_error(str(files.model), doc)
        report["ort"] = {"path": str(files.model), "bytes": files.model_bytes, "required_operators": str(files.config),
                         "keeps_bitset": files.keeps_bitset}
    report["golden"]["max_abs"] = golden_error
    return report


def _golden_error(model: bytes | str, doc: dict) -> float:
    """max |p - expected| of the golden rows through a default ONNX Runtime session (as an app opens
    the file); ParityError above the golden tolerance (and the checked file is removed)."""
    import onnxruntime as ort

    from mome_edge.runtime import golden

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    cat, num = golden.golden_inputs(doc)
    probs = np.stack(session.run(doc["tasks"], {INPUT_CATEGORICAL: cat, INPUT_NUMERICAL: num}), axis=1)
    err = golden.golden_max_abs(doc, probs)
    if not err <= doc["tolerance"]:
        if isinstance(model, str):
            Path(model).unlink(missing_ok=True)
        raise ParityError(f"the exported model misses its golden rows by {err:.3g} (tolerance {doc['tolerance']:g}); "
                          "this is an exporter bug, please report it with the artifact")
    return err
