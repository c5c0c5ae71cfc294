"""Fuzz target: the `.mome` reader (and, with --target onnx, the runtime's `.onnx` loading path).

Coverage-guided with atheris (libFuzzer) when it is installed; otherwise a seeded mutation
loop over the same seeds (tests/hardening/mutants.py), so that the target always runs.

Targets: `mome` feeds the bytes to the reader as they are (the checksums stop most changes);
`mome-resigned` first re-signs any input that still splits into header, manifest and payload
(payload_sha256 and manifest_sha256 recomputed, docs/artifact-format.md section 2), so that
the fuzzer's edits of offsets, shapes, manifest fields, mask and tensor bytes reach the
deeper validators; `onnx` re-signs the bytes' mome.sha256 (so mutants get past the checksum) and feeds
them to the device runtime's `Predictor`.

Property (what counts as a finding): for any input bytes, `parse_artifact` either raises
ArtifactError with a one-line message, or returns a model whose numpy reference predicts
finite probabilities in [0, 1] on hostile ids (or refuses rows that overflow float32 with a
DataError). For --target onnx: `Predictor(bytes)` raises ArtifactError, or loads and predicts
the same way. Any other exception, a crash or a hang is a finding.

    python fuzz/fuzz_artifact.py --make-corpus fuzz/corpus             # seed files (valid artifacts)
    python fuzz/fuzz_artifact.py fuzz/corpus -max_total_time=3600      # atheris, one hour
    python fuzz/fuzz_artifact.py --target mome-resigned fuzz/corpus -max_total_time=3600
    python fuzz/fuzz_artifact.py fuzz/corpus -runs=200                 # a short run
    python fuzz/fuzz_artifact.py --target onnx fuzz/corpus-onnx -max_total_time=3600
    python fuzz/fuzz_artifact.py --no-atheris --iterations 100000      # without atheris
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hardening"))  # the mutant generator and the property


try:
    import atheris
except ImportError:  # the fallback loop below needs nothing else
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        import mome_edge.artifact.reader  # noqa: F401  (instrumented: coverage guides the fuzzer)
        import mome_edge.artifact.masks  # noqa: F401
        import mome_edge.artifact.compiled  # noqa: F401

import hashlib  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402

from mutants import (  # noqa: E402
    METADATA_KEY,
    ArtifactParts,
    MutantFailure,
    canonical,
    check_mutant,
    check_onnx,
    crafted_model,
    pack_header,
    random_mutants,
    resign_onnx,
)

TARGET = "mome"


def resign_bytes(data: bytes) -> bytes:
    """`data` with both checksums recomputed when it still splits into an 8-byte length, a JSON
    header with a string manifest and a payload; otherwise `data` unchanged."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        manifest = json.loads(header["__metadata__"][METADATA_KEY])
        payload = data[8 + n :]
        manifest["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        manifest.pop("manifest_sha256", None)
        manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest).encode("ascii")).hexdigest()
        header["__metadata__"][METADATA_KEY] = canonical(manifest)
        return pack_header(header) + payload
    except Exception:  # not splittable (or not canonicalisable): fuzz the bytes as they are
        return data


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    if TARGET == "onnx":
        check_onnx(resign_onnx(data))  # re-signed: past the SHA-256, into ONNX Runtime's parser
    elif TARGET == "mome-resigned":
        check_mutant(resign_bytes(data), trace_memory=False, describe=True)
    else:
        check_mutant(data, trace_memory=False, describe=True)


def make_corpus(folder: Path, target: str) -> None:
    """Valid seed files: the crafted MoME (every mask encoding, padding bits) at fp32/fp16/int8."""
    from mome_edge.artifact.writer import artifact_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for weights in ("fp32", "fp16", "int8"):
        data = artifact_bytes(crafted_model(), weights=weights)
        if target == "onnx":
            from mome_edge.artifact.reader import parse_artifact
            from mome_edge.exporters.onnx_export import export_onnx, onnx_bytes, weight_source

            loaded = parse_artifact(data)
            for experts in ("bitset", "dense"):
                model = export_onnx(loaded.model, source=weight_source(loaded), experts=experts, simplify=False, validate=False)
                (folder / f"crafted-{weights}-{experts}.onnx").write_bytes(onnx_bytes(model))
        else:
            (folder / f"crafted-{weights}.mome").write_bytes(data)
    print(f"wrote {len(list(folder.iterdir()))} seed files to {folder}")


def fallback_loop(seeds: list[bytes], iterations: int, seed: int) -> int:
    """Without atheris: seeded structural and raw mutants of the seeds (the corruption suite's
    generators), each checked by TestOneInput; returns the number of findings."""
    rng = random.Random(seed)
    findings, start = 0, time.perf_counter()
    parts = [ArtifactParts.parse(s) for s in seeds] if TARGET != "onnx" else None
    for i in range(iterations):
        if parts:
            mutant = next(random_mutants(rng.choice(parts), rng, 1, classes=(rng.choice(_CLASSES),)))
            data, label = mutant.data, f"{mutant.cls}: {mutant.detail[:100]}"
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.choice((1, 2, 4))):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
            if rng.random() < 0.2:
                del data[rng.randrange(len(data)) :]
            data, label = bytes(data), "bit flips / truncation"
        try:
            TestOneInput(data)
        except MutantFailure as exc:
            findings += 1
            print(f"FINDING {i} ({label}): {exc}", file=sys.stderr)
    print(f"{iterations} inputs, {findings} findings, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return findings


_CLASSES = ("bit-flip", "truncate", "splice", "header-length", "offsets", "shape", "dtype", "manifest-value", "manifest-drop",
            "json-numbers", "mask-length", "mask-padding", "mask-encoding", "value-flip", "value-set", "tensor-table", "header-json")


def main() -> None:
    global TARGET
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--target", choices=("mome", "mome-resigned", "onnx"), default="mome")
    parser.add_argument("--make-corpus", type=Path, help="write valid seed files into this folder and exit")
    parser.add_argument("--no-atheris", action="store_true", help="use the seeded mutation loop even if atheris is installed")
    parser.add_argument("--iterations", type=int, default=10_000, help="inputs of the mutation loop (without atheris)")
    parser.add_argument("--seed", type=int, default=0)
    args, rest = parser.parse_known_args()
    TARGET = args.target
    if args.make_corpus is not None:
        make_corpus(args.make_corpus, "onnx" if args.target == "onnx" else "mome")
        return
    if atheris is not None and not args.no_atheris:
        atheris.Setup([sys.argv[0], *rest], TestOneInput)
        atheris.Fuzz()
        return
    folders = [Path(a) for a in rest if not a.startswith("-") and Path(a).is_dir()]
    seeds = [p.read_bytes() for folder in folders for p in sorted(folder.iterdir()) if p.is_file()]
    if not seeds:
        from mome_edge.artifact.writer import artifact_bytes

        seeds = [artifact_bytes(crafted_model(), weights=w) for w in ("fp32", "int8")]
        if TARGET == "onnx":
            raise SystemExit("--target onnx without atheris needs a corpus folder: run --make-corpus DIR --target onnx first")
    sys.exit(1 if fallback_loop(seeds, args.iterations, args.seed) else 0)


if __name__ == "__main__":
    main()
