"""Canonical JSON and checksums: the one spelling of a manifest that its SHA-256 covers."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import numpy as np

from mome_edge.sha256 import sha256_hex


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def assemble_object(members: Mapping[str, str]) -> str:
    """The canonical JSON of an object from its members' canonical texts (keys sorted)."""
    return "{" + ",".join(f"{json.dumps(key)}:{text}" for key, text in sorted(members.items())) + "}"


def sha256_text(text: str) -> str:
    return sha256_hex(text.encode("ascii"))


def jsonable(obj: Any) -> Any:
    """Plain JSON values (numpy scalars/arrays become numbers/lists, NaN/inf become null)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
