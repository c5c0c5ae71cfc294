#!/usr/bin/env bash
# End to end on census-income: train MoME and MMoE -> compile -> inspect -> export -> evaluate
# what ships -> bench both side by side.
#
#   MOME_DATA_DIR=../shared/data bash examples/census_end_to_end.sh [OUT_DIR]
#
# MOME_EXAMPLE_FAST=1 trains tiny models on a 6,000-row subset (what the test suite runs).
set -euo pipefail
DATA_DIR=${MOME_DATA_DIR:-$(dirname "$0")/../../shared/data}
OUT=${1:-runs/census-end-to-end}
MOME_EDGE=${MOME_EDGE:-mome-edge}
TRAIN_FLAGS=()
BENCH_FLAGS=(--batch 1,32,512 --threads 1,2 --runs 200 --warmup 20)
if [[ "${MOME_EXAMPLE_FAST:-0}" == 1 ]]; then
    TRAIN_FLAGS=(--max-rows 6000 --hidden 32,16 --experts 4 --epochs 4 --neuron-epochs 1 --harden-epochs 1 --quiet)
    BENCH_FLAGS=(--batch 1,64 --threads 1 --runs 5 --warmup 1)
fi
mkdir -p "$OUT"

for model in mome mmoe; do
    "$MOME_EDGE" train --model "$model" --dataset census-income --data-dir "$DATA_DIR" --out "$OUT/$model" "${TRAIN_FLAGS[@]}"
    "$MOME_EDGE" compile "$OUT/$model" -o "$OUT/$model.mome" --data-dir "$DATA_DIR"
done
"$MOME_EDGE" compile "$OUT/mome" -o "$OUT/mome-int8.mome" --weights int8 --data-dir "$DATA_DIR"

# Where the bytes go, mask densities and expert overlap (and a picture of them).
"$MOME_EDGE" inspect "$OUT/mome.mome" --plot "$OUT/mome-masks.png"

# MoME ships its masks as bitsets, in two modes: speed (experts expanded when the session
# starts) and memory (rebuilt one at a time inside each call); MMoE ships dense experts.
# Each export also writes its golden rows (mome.golden.json) for ports to check themselves.
"$MOME_EDGE" export "$OUT/mome.mome" -o "$OUT/mome.onnx" --mode speed --ort
"$MOME_EDGE" export "$OUT/mome.mome" -o "$OUT/mome-memory.onnx" --mode memory --ort
"$MOME_EDGE" export "$OUT/mmoe.mome" -o "$OUT/mmoe.onnx" --experts dense

# The accuracy of exactly what ships.
"$MOME_EDGE" evaluate "$OUT/mome.onnx" --dataset census-income --data-dir "$DATA_DIR" --json > "$OUT/mome-onnx-test.json"

# Latency, throughput, memory and bytes, each model in a fresh process, ratios to the first.
"$MOME_EDGE" bench "$OUT/mome.onnx" "$OUT/mome-memory.onnx" "$OUT/mmoe.onnx" "${BENCH_FLAGS[@]}" --json > "$OUT/bench.json"
"$MOME_EDGE" bench "$OUT/mome.onnx" "$OUT/mome-memory.onnx" "$OUT/mmoe.onnx" "${BENCH_FLAGS[@]}" --plot "$OUT/bench.png"
echo "done: $OUT"
