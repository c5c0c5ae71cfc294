"""Corruption benchmark: >= 100,000 seeded mutants of valid artifacts against the `.mome` reader.

The same generators and property as the CI suite (tests/hardening/mutants.py,
tests/hardening/test_corrupt_artifacts.py), at scale. Bases: tiny MoME and MMoE runs trained
here on synthetic data (fp32 and int8) and the crafted MoME whose masks use every stored form.
Writes counts to benchmarks/results/corruption.json: rejected / loaded / overflow per mutation
class, failures (must be 0), the slowest load and the largest traced peak memory (also as a
multiple of the file size).

    python benchmarks/corruption.py                    # 100,000 random mutants + boundaries + big JSON
    python benchmarks/corruption.py -n 5000 --no-json  # quick
    python benchmarks/corruption.py --memory-every 1   # trace memory on every load (slower)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hardening"))

from mutants import (  # noqa: E402
    RANDOM_MUTATORS,
    ArtifactParts,
    MutantFailure,
    boundary_mutants,
    check_mutant,
    crafted_model,
    json_mutants,
    mask_bomb,
    random_mutants,
)

RESULTS = ROOT / "benchmarks" / "results" / "corruption.json"
TINY_ROWS = 3_000


def trained_bases(folder: Path) -> dict[str, bytes]:
    """The CI suite's tiny runs (tests/conftest.py sizes), trained once here."""
    from mome_edge.artifact.writer import artifact_bytes
    from mome_edge.compile.compiler import compile_run
    from mome_edge.config import ModelConfig, TrainConfig
    from mome_edge.data import make_mmoe_synthetic
    from mome_edge.runs import DatasetRef
    from mome_edge.train.loop import train

    data = make_mmoe_synthetic(n_rows=TINY_ROWS, seed=0)
    ref = DatasetRef(name="synthetic", seed=0, synthetic_rows=TINY_ROWS)
    model_config = ModelConfig(kind="mome", hidden=(32, 16), experts=3, embedding_dim=4, tower_hidden=(8,))
    train_config = TrainConfig(epochs=5, neuron_epochs=1, harden_epochs=1, batch_size=256, lr=1e-2, seed=0)
    out = {}
    for kind in ("mome", "mmoe"):
        run = folder / kind
        train(run_dir=run, data=data, model_config=dataclasses.replace(model_config, kind=kind), train_config=train_config,
              dataset=ref, progress=False)
        compiled = compile_run(run)
        for weights in ("fp32", "int8"):
            out[f"{kind}-{weights}"] = artifact_bytes(compiled, weights=weights)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--mutants", type=int, default=100_000, help="random mutants in total (spread over bases and classes)")
    parser.add_argument("--seed", type=int, default=20_251_128)
    parser.add_argument("--memory-every", type=int, default=10, help="trace peak memory on every k-th load (tracing is slow)")
    parser.add_argument("--no-json", action="store_true", help="skip the big-JSON mutants (10^6 entries, deep nesting)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bases = trained_bases(Path(tmp))
    from mome_edge.artifact.writer import artifact_bytes

    for weights in ("fp32", "int8"):
        bases[f"crafted-{weights}"] = artifact_bytes(crafted_model(), weights=weights)
    setup_s = time.perf_counter() - started

    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    messages: collections.Counter = collections.Counter()
    failures: list[str] = []
    slowest = {"seconds": 0.0}
    slowest_small = {"seconds": 0.0}  # files under 1 MB: every mutant of the small bases
    class_seconds: dict[str, float] = collections.defaultdict(float)
    heaviest = {"peak_bytes": 0}
    worst_ratio = {"ratio": 0.0}
    checked = 0

    def run(base: str, family: str, mutants) -> None:
        nonlocal checked
        for mutant in mutants:
            trace = args.memory_every > 0 and checked % args.memory_every == 0
            checked += 1
            try:
                outcome = check_mutant(mutant.data, trace_memory=trace)
            except MutantFailure as exc:
                failures.append(f"{base} {family} {mutant.cls}: {mutant.detail[:160]}: {exc}")
                counts[mutant.cls]["failure"] += 1
                continue
            counts[mutant.cls][outcome.status] += 1
            if outcome.status != "loaded":
                messages[outcome.message.replace("mutant.mome", "").split(";")[0][:70]] += 1
            class_seconds[mutant.cls] = max(class_seconds[mutant.cls], outcome.seconds)
            if len(mutant.data) < 1_000_000 and outcome.seconds > slowest_small["seconds"]:
                slowest_small.update(seconds=outcome.seconds, mutant=f"{base} {mutant.cls}: {mutant.detail[:120]}", file_bytes=len(mutant.data))
            if outcome.seconds > slowest["seconds"]:
                slowest.update(seconds=outcome.seconds, mutant=f"{base} {mutant.cls}: {mutant.detail[:120]}", file_bytes=len(mutant.data))
            if trace and outcome.peak_bytes > heaviest["peak_bytes"]:
                heaviest.update(peak_bytes=outcome.peak_bytes, mutant=f"{base} {mutant.cls}: {mutant.detail[:120]}", file_bytes=len(mutant.data))
            if trace and outcome.peak_bytes / len(mutant.data or b"x") > worst_ratio["ratio"] and len(mutant.data) > 100_000:
                worst_ratio.update(ratio=outcome.peak_bytes / len(mutant.data), mutant=f"{base} {mutant.cls}: {mutant.detail[:120]}")

    per_base = max(1, args.mutants // len(bases))
    loop_start = time.perf_counter()
    for i, (name, data) in enumerate(sorted(bases.items())):
        parts = ArtifactParts.parse(data)
        run(name, "boundary", boundary_mutants(parts))
        run(name, "random", random_mutants(parts, random.Random(args.seed + i), per_base))
        print(f"{name}: done, {checked:,} mutants so far, {len(failures)} failures, {time.perf_counter() - loop_start:.0f} s", file=sys.stderr)
    if not args.no_json:
        run("mome-int8", "json", json_mutants(ArtifactParts.parse(bases["mome-int8"])))
    for weights in ("fp32", "int8"):
        run(f"crafted-{weights}", "bomb", [_as_mutant(mask_bomb(6_000, weights))])
    seconds = time.perf_counter() - loop_start

    total = collections.Counter()
    for cls_counts in counts.values():
        total.update(cls_counts)
    report = {
        "mutants": checked,
        "seconds": round(seconds, 1),
        "setup_seconds": round(setup_s, 1),
        "mutants_per_second": round(checked / seconds, 1),
        "totals": dict(total),
        "failures": len(failures),
        "failure_examples": failures[:20],
        "per_class": {cls: dict(c) for cls, c in sorted(counts.items())},
        "max_load_seconds": slowest,
        "max_load_seconds_under_1mb": slowest_small,
        "max_load_seconds_per_class": {cls: round(v, 4) for cls, v in sorted(class_seconds.items())},
        "max_peak_memory": heaviest,
        "max_peak_per_file_byte_above_100kb": worst_ratio,
        "memory_traced_every": args.memory_every,
        "top_rejections": dict(messages.most_common(25)),
        "bases": {name: len(data) for name, data in sorted(bases.items())},
        "classes": list(RANDOM_MUTATORS),
        "seed": args.seed,
        "command": " ".join(["python", "benchmarks/corruption.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from mome_edge.atomic import atomic_write_json

    atomic_write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("mutants", "seconds", "totals", "failures", "max_load_seconds", "max_load_seconds_under_1mb", "max_peak_memory")}, indent=2))
    sys.exit(1 if failures else 0)


def _as_mutant(data: bytes):
    from mutants import Mutant

    return Mutant("mask-bomb", "6000 x 6000 all-zero sc masks, 4 experts", data)


if __name__ == "__main__":
    main()
