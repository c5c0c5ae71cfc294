"""Names every stage shares, each with one home: the model kinds, the data splits, the
weight precisions.

Train, compile, artifact, exporters, runtime and the CLI all import these from here, so that a
new kind or split is added once. (Format-specific names live with their format: the artifact's
in `mome_edge.artifact.format`, the bit order in `mome_edge.artifact.masks`, the ONNX metadata
keys and runtime modes in `mome_edge.onnx_contract`.)
"""

from __future__ import annotations

MODEL_KINDS: tuple[str, ...] = ("mome", "mmoe", "ple", "shared-bottom", "single-task")
SPLITS: tuple[str, ...] = ("train", "validation", "test")
WEIGHT_FORMATS: tuple[str, ...] = ("fp32", "fp16", "int8")  # storage precisions of a compiled artifact (and of a budget)
