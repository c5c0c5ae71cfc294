"""Pickle-free training state: tensors in safetensors, everything else as JSON metadata.

One file per checkpoint, written atomically, so a checkpoint is either whole or absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from mome_edge.atomic import atomic_write_bytes
from mome_edge.errors import ArtifactError

META_KEY = "mome_edge"
OPTIM_PREFIX = "optim."  # optimizer state tensors: optim.<param index>.<state key>


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    plain = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
    payload = safetensors_bytes(plain, metadata={META_KEY: json.dumps(meta, allow_nan=True)})
    atomic_write_bytes(path, payload)


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta_text = (handle.metadata() or {}).get(META_KEY)
            if meta_text is None:
                raise ArtifactError(f"{path} is a safetensors file but not one written by mome-edge; point to a run folder's file")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return tensors, json.loads(meta_text)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} does not exist; check the path") from exc
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, ArtifactError):
            raise
        raise ArtifactError(f"{path} is corrupt or not a safetensors file ({exc}); re-create it") from exc


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer's state into named tensors plus JSON (param groups, scalars)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIM_PREFIX}{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(OPTIM_PREFIX):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


# ===== the training checkpoint: its key scheme lives here and nowhere else ==================
# One safetensors file per epoch: "model.<name>" (the current model), "best.<name>" (the
# best-on-validation state of the current phase), "optim.<index>.<key>" (optimizer state)
# and "rng.torch"; the JSON metadata holds the structure, optimizer scalars, trainer state
# and the metrics history.
MODEL_PREFIX = "model."
BEST_PREFIX = "best."
RNG_KEY = "rng.torch"
CHECKPOINT_NAME = "epoch-{epoch:04d}.safetensors"  # sorts by epoch (runs.checkpoint_paths)


@dataclass(frozen=True, kw_only=True)
class TrainingCheckpoint:
    """What one epoch's checkpoint holds, by role (no key prefixes)."""

    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    rng_state: torch.Tensor
    optimizer_tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]  # "structure", "optimizer", "state", "history" (+ what callers add)


def checkpoint_path(folder: str | Path, epoch: int) -> Path:
    return Path(folder) / CHECKPOINT_NAME.format(epoch=epoch)


def write_checkpoint(
    path: str | Path, *, model: torch.nn.Module, best: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
    meta: Mapping[str, Any],
) -> None:
    """Model, best state, optimizer and RNG into one atomic file; `meta` gets the optimizer's JSON."""
    optim_tensors, optim_meta = optimizer_tensors(optimizer)
    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"{BEST_PREFIX}{k}": v for k, v in best.items()})
    tensors.update(optim_tensors)
    tensors[RNG_KEY] = torch.get_rng_state()
    save_tensors(path, tensors, {**meta, "optimizer": optim_meta})


def read_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """One checkpoint split by role. Raises ArtifactError (unreadable) or KeyError (incomplete)."""
    tensors, meta = load_tensors(path)
    return TrainingCheckpoint(
        model_state={k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)},
        best_state={k[len(BEST_PREFIX):]: v for k, v in tensors.items() if k.startswith(BEST_PREFIX)},
        rng_state=tensors[RNG_KEY],
        optimizer_tensors={k: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)},
        meta=meta,
    )
