"""Storage, accuracy and latency of what ships: MoME vs MMoE on census-income at the demo's
default sizes. Trains both (or reuses --runs-dir), compiles fp32 and int8, exports ONNX (MoME
bitset, MMoE dense), evaluates the shipped files, and benches all of them in one
`mome-edge bench` run. Writes benchmarks/results/deploy.json and deploy.md.

    .venv/bin/python benchmarks/deploy.py [--data-dir DIR] [--work DIR] [--runs 300]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mome_edge.data import default_data_dir

RESULTS = Path(__file__).parent / "results"


def cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mome_edge.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"mome-edge {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/deploy-bench"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    data_dir = str(args.data_dir or default_data_dir())
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"dataset": "census-income", "models": {}}
    for kind in ("mome", "mmoe"):
        if not (work / kind / "model.safetensors").exists():
            cli("train", "--model", kind, "--dataset", "census-income", "--data-dir", data_dir, "--out", str(work / kind), "--quiet")
        for weights in ("fp32", "int8"):
            name = f"{kind}-{weights}"
            compiled = json.loads(cli("compile", str(work / kind), "-o", str(work / f"{name}.mome"), "--weights", weights,
                                      "--data-dir", data_dir, "--json"))
            experts = "bitset" if kind == "mome" else "dense"
            exported = json.loads(cli("export", str(work / f"{name}.mome"), "-o", str(work / f"{name}.onnx"), "--experts", experts, "--json"))
            shipped = json.loads(cli("evaluate", str(work / f"{name}.onnx"), "--dataset", "census-income", "--data-dir", data_dir, "--json"))
            described = json.loads(cli("inspect", str(work / f"{name}.mome"), "--json"))
            report["models"][name] = {
                "artifact_bytes": (work / f"{name}.mome").stat().st_size,
                "onnx_bytes": (work / f"{name}.onnx").stat().st_size,
                "bits_per_expert_weight": described.get("bits_per_expert_weight"),
                "dense_mmoe_bytes": described.get("dense_mmoe_bytes"),
                "compile": compiled,
                "export_parity_max_abs": exported.get("parity_max_abs"),
                "onnx_test": shipped["tasks"],
            }
    bench = json.loads(cli("bench", *(str(work / f"{n}.onnx") for n in ("mome-fp32", "mmoe-fp32")), str(work / "mome-fp32.mome"),
                           "--batch", "1,512", "--threads", "1", "--runs", str(args.runs), "--warmup", "20",
                           "--experts", "materialize,on-demand", "--memory-budget-mb", "0", "--json"))
    report["bench"] = bench
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "deploy.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "deploy.md").write_text(render(report) + "\n")
    print(render(report))


def render(report: dict) -> str:
    m = report["models"]
    mmoe = m["mmoe-fp32"]
    lines = ["| file | .mome bytes | vs MMoE fp32 | .onnx bytes | vs MMoE fp32 | mask bits/expert weight | income AUC (ONNX) | marital AUC (ONNX) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, e in m.items():
        lines.append(
            f"| {name} | {e['artifact_bytes']:,} | 1/{mmoe['artifact_bytes'] / e['artifact_bytes']:.1f} | {e['onnx_bytes']:,} | "
            f"1/{mmoe['onnx_bytes'] / e['onnx_bytes']:.1f} | {e['bits_per_expert_weight'] if e['bits_per_expert_weight'] is not None else 'n/a'} | "
            f"{e['onnx_test']['income']['auc']:.4f} | {e['onnx_test']['marital']['auc']:.4f} |"
        )
    lines += ["", "| model | experts | batch | p50 ms | p90 ms | rows/s | added RSS MiB | p50 vs first | added RSS vs first |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["bench"]["results"]:
        lines.append(
            f"| {Path(r['model']).name} | {r.get('experts', '')} | {r['batch']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['rows_per_s']:,.0f} | "
            f"{r.get('added_rss_mb', float('nan')):.1f} | {r['ratios']['p50_ms']:.2f} | {r['ratios'].get('added_rss_mb', float('nan')):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
