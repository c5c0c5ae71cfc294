"""Property-based fuzzing in CI (hypothesis) of the artifact reader and the runtime's ONNX
loading path, plus a short run of the fuzz target (fuzz/fuzz_artifact.py).

tests/test_artifact.py already damages raw bytes with hypothesis; here hypothesis writes
*re-signed* files: any JSON value at any place of the manifest, any safetensors index, any
bytes as a mask, so that every example passes the checksums and meets the deep validators.
Corrupted .onnx files run in a child process: whatever ONNX Runtime does with them, the
calling process must survive and see one clear error.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mutants import ArtifactParts, _json_paths, _layout, check_mutant, crafted_model, resign
from mome_edge.artifact.writer import artifact_bytes

EXAMPLES = 300
ROOT = Path(__file__).resolve().parents[2]
ONNX_MUTANTS = 200  # per exported file, in a child process

_PARTS = {w: ArtifactParts.parse(artifact_bytes(crafted_model(), weights=w)) for w in ("fp32", "int8")}
_PATHS = {w: [p for p in _json_paths(parts.manifest()) if p and p[0] not in ("manifest_sha256", "payload_sha256")] for w, parts in _PARTS.items()}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from(["raw", "sc", "zlib", "mome", "mmoe", "softmax", "fixed", "int8", "fp16", "float32", "int64", "union", "dense"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)
settings_ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(data: bytes) -> None:
    check_mutant(data, trace_memory=False)  # MutantFailure on any violation


@settings_
@given(weights=st.sampled_from(["fp32", "int8"]), where=st.integers(min_value=0), value=json_values, also_header=st.booleans())
def test_any_value_anywhere_in_a_re_signed_manifest(weights: str, where: int, value, also_header: bool) -> None:
    parts = _PARTS[weights]
    manifest = parts.manifest()
    path = _PATHS[weights][where % len(_PATHS[weights])]
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    tensors = parts.tensors()
    if also_header and path[0] == "tensors":  # keep the header in step, to get past the header-vs-manifest check
        try:
            data = resign(manifest, tensors, entries=_layout(manifest, tensors))
        except (KeyError, TypeError, AttributeError):
            data = resign(manifest, tensors)
    else:
        data = resign(manifest, tensors, entries=parts.entries, payload=parts.payload)
    _check(data)


entry_values = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I8", "U8", "I64", "F64", "BOOL", ""]) | json_values,
        "shape": st.lists(st.integers(min_value=-2, max_value=2**65), max_size=4) | json_values,
        "data_offsets": st.lists(st.integers(min_value=-2, max_value=2**65), min_size=2, max_size=2) | json_values,
    }
)


@settings_
@given(weights=st.sampled_from(["fp32", "int8"]), changes=st.dictionaries(st.integers(min_value=0, max_value=40), entry_values, min_size=1, max_size=3))
def test_any_safetensors_index_with_a_valid_manifest(weights: str, changes: dict) -> None:
    parts = _PARTS[weights]
    entries = json.loads(json.dumps(parts.entries))
    names = sorted(entries)
    for index, entry in changes.items():
        entries[names[index % len(names)] if index < 2 * len(names) else f"extra{index}"] = entry
    _check(resign(parts.manifest(), {}, entries=entries, payload=parts.payload))


@settings_
@given(weights=st.sampled_from(["fp32", "int8"]), layer=st.integers(0, 1), expert=st.integers(0, 3), blob=st.binary(max_size=96),
       encoding=st.sampled_from(["raw", "sc", "zlib"]), xor=st.booleans())
def test_any_bytes_as_an_expert_mask(weights: str, layer: int, expert: int, blob: bytes, encoding: str, xor: bool) -> None:
    parts = _PARTS[weights]
    manifest, tensors = parts.manifest(), parts.tensors()
    masks = manifest["layers"][layer]["masks"]
    start = sum(m["bytes"] for m in masks[:expert])
    stored = tensors[f"layers.{layer}.masks"]
    stored[start : start + masks[expert]["bytes"]] = blob
    masks[expert].update(bytes=len(blob), encoding=encoding, xor_previous=xor)
    manifest["tensors"][f"layers.{layer}.masks"]["shape"] = [len(stored)]
    _check(resign(manifest, tensors, entries=_layout(manifest, tensors)))


# --- corrupted .onnx files, in a child process -------------------------------------------------------
_ONNX_DRIVER = r"""
import json, os, random, sys
sys.path[:0] = sys.argv[1].split(os.pathsep)
from mutants import MutantFailure, check_onnx, resign_onnx
source = open(sys.argv[2], "rb").read()
rng = random.Random(int(sys.argv[3]))
counts, failures = {}, []
for i in range(int(sys.argv[4])):
    data = bytearray(source)
    how = rng.choice(["flip", "flip", "truncate", "insert", "byte"])
    if how == "flip":
        for _ in range(rng.choice((1, 2, 4))):
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        del data[rng.randrange(len(data)):]
    elif how == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        data[rng.randrange(len(data))] = rng.choice((0, 0x7F, 0x80, 0xFF))
    # most mutants are re-signed (else the checksum rejects them all before ONNX Runtime parses them)
    resigned = rng.random() < 0.8
    try:
        outcome = check_onnx(resign_onnx(bytes(data)) if resigned else bytes(data))
    except MutantFailure as exc:
        failures.append(f"{i} {how}: {exc}")
        continue
    counts[outcome] = counts.get(outcome, 0) + 1
    if not resigned and outcome != "rejected" and bytes(data) != source:
        failures.append(f"{i} {how}: a mutant that was not re-signed got past the checksum ({outcome})")
print(json.dumps({"counts": counts, "failures": failures}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("experts", ["bitset", "dense"])
def test_corrupted_onnx_files_give_one_clear_error_and_never_kill_the_caller(experts: str, tmp_path: Path) -> None:
    from mome_edge.artifact.reader import parse_artifact
    from mome_edge.exporters.onnx_export import export_onnx, onnx_bytes, weight_source

    loaded = parse_artifact(artifact_bytes(crafted_model(), weights="int8"))
    onnx = tmp_path / f"crafted-{experts}.onnx"
    onnx.write_bytes(onnx_bytes(export_onnx(loaded.model, source=weight_source(loaded), experts=experts, simplify=False, validate=False)))
    done = subprocess.run(
        [sys.executable, "-c", _ONNX_DRIVER, str(ROOT / "tests" / "hardening"), str(onnx), "7", str(ONNX_MUTANTS)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "tests" / "hardening")},
    )
    assert done.returncode == 0, f"the child died (signal {-done.returncode if done.returncode < 0 else None}): {done.stderr[-2000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["failures"], result["failures"][:10]
    assert sum(result["counts"].values()) == ONNX_MUTANTS
    assert result["counts"].get("rejected", 0) > 0 and result["counts"].get("loaded", 0) > 0
    assert done.stderr.strip() == "", done.stderr[-2000:]  # ONNX Runtime's own error logs stay quiet


@pytest.mark.slow
@pytest.mark.parametrize("target", ["mome", "mome-resigned"])
def test_the_fuzz_target_runs_clean(target: str, tmp_path: Path) -> None:
    # The short CI run of the fuzz target: atheris when installed (as in the documented long
    # run), else its seeded mutation loop. Either way: no finding, exit code 0.
    corpus = tmp_path / "corpus"
    script = str(ROOT / "fuzz" / "fuzz_artifact.py")
    subprocess.run([sys.executable, script, "--make-corpus", str(corpus)], check=True, capture_output=True, timeout=300)
    try:
        import atheris  # noqa: F401

        argv = [sys.executable, script, "--target", target, str(corpus), "-runs=1500", f"-seed={random.Random(target).randrange(1, 2**31)}"]
    except ImportError:
        argv = [sys.executable, script, "--target", target, "--no-atheris", "--iterations", "300", str(corpus)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FINDING" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-3000:]
