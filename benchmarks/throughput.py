"""Training throughput at the paper's AliExpress dimensions (16 fields x 128 + 63 numerical,
8 experts, base [512, 256], batch 2048): MoME phase 1, MoME phase 2, MMoE at the same nominal
sizes, and a loop-over-experts MoME phase 2 in the style of the authors' reference code.

Models are measured in interleaved rounds in one process (noise hits all alike); the figure
is the median step time after warm-up. Writes benchmarks/results/throughput.json.

    .venv/bin/python benchmarks/throughput.py [--steps 6] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mome_edge.config import ModelConfig, TrainConfig
from mome_edge.encoding import CategoricalEncoder, FeatureSpec, NumericalScaler
from mome_edge.train.layers import MaskedExpertLinear, expert_matmul
from mome_edge.train.model import MoME, build_model
from mome_edge.train.phases import remove_closed_neurons
from mome_edge.train.loop import make_optimizer

RESULTS = Path(__file__).parent / "results"
PENALTY_WEIGHT = {"mome-phase1": 0.1, "mome-phase2": 0.1, "mome-phase2-loop": 0.1}  # lambda per model (dense: none)
FIELDS, VOCAB, NUMERICAL = 16, 1000, 63


def paper_spec() -> FeatureSpec:
    return FeatureSpec(
        dataset="aliexpress-dims",
        categorical=tuple(CategoricalEncoder(name=f"categorical_{i + 1}", vocabulary=tuple(map(str, range(VOCAB - 1)))) for i in range(FIELDS)),
        numerical=tuple(NumericalScaler(name=f"numerical_{i + 1}", mean=0.0, std=1.0) for i in range(NUMERICAL)),
        tasks=("ctr", "ctcvr"),
    )


def loop_over_experts_forward(self: MaskedExpertLinear, h: torch.Tensor) -> torch.Tensor:
    """What the reference code does: one masked matmul per expert in a Python loop."""
    outs = []
    for e in range(self.gate_mu.shape[0]):
        z = torch.clamp(self.gate_mu[e] + self.sigma * torch.randn_like(self.gate_mu[e]), 0, 1) if self.training else torch.clamp(self.gate_mu[e], 0, 1)
        x = h if h.dim() == 2 else h[e]
        outs.append(x @ (z * self.weight).t() + self.bias)
    return torch.stack(outs)


class LoopMaskedExpertLinear(MaskedExpertLinear):
    forward = loop_over_experts_forward


def build_models(batch: int) -> dict[str, torch.nn.Module]:
    spec = paper_spec()
    config = ModelConfig(kind="mome", embedding_dim=128, hidden=(512, 256), experts=8, tower_hidden=(64,))
    phase1 = MoME(config, spec)
    phase2, _ = remove_closed_neurons(phase1, spec)
    loop = remove_closed_neurons(phase1, spec)[0]
    for layer in loop.base:
        layer.__class__ = LoopMaskedExpertLinear
    mmoe = build_model(ModelConfig(kind="mmoe", embedding_dim=128, hidden=(512, 256), experts=8, tower_hidden=(64,)), spec)
    return {"mome-phase1": phase1, "mome-phase2": phase2, "mmoe": mmoe, "mome-phase2-loop": loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    models = build_models(args.batch)
    cat = torch.randint(0, VOCAB, (args.batch, FIELDS))
    num = torch.randn(args.batch, NUMERICAL)
    labels = (torch.rand(args.batch, 2) < 0.05).float()
    optimizers = {name: make_optimizer(m, TrainConfig()) for name, m in models.items()}

    def step(name: str) -> float:
        model, optimizer = models[name], optimizers[name]
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, num), labels) + model.penalty(PENALTY_WEIGHT.get(name, 0.0))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for name in models:
        models[name].train()
        for _ in range(args.warmup):
            step(name)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name in models:
            times[name] += [step(name) for _ in range(args.steps)]
    report = {"batch": args.batch, "threads": args.threads, "dims": {"fields": FIELDS, "embedding": 128, "numerical": NUMERICAL, "experts": 8, "hidden": [512, 256]}, "models": {}}
    base = statistics.median(times["mmoe"])
    for name, values in times.items():
        med = statistics.median(values)
        report["models"][name] = {"median_step_s": med, "samples_per_s": args.batch / med, "throughput_vs_mmoe": base / med, "steps": len(values)}
        print(f"{name:>18}: {args.batch / med:8.0f} samples/s  (median step {med * 1000:.0f} ms, {base / med:.2f}x MMoE)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
