#!/usr/bin/env bash
# make demo: a small synthetic dataset, a few hundred SASRec steps, test metrics
# beside the popularity baseline. Runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_DIR:-runs/demo}
mkdir -p "$out"
echo "== making a synthetic dataset ($out/synth.h5)"
bin/elastic_prep synth -o "$out/synth.h5" --users 4000 --items 2000 --clusters 40 \
    --min-len 10 --max-len 120 --seed 1
bin/elastic_prep info "$out/synth.h5"
echo "== training SASRec (d=64, 2 layers, L=50) for 300 steps"
bin/elastic_train --data "$out/synth.h5" --L 50 --batch 64 --steps 300 --eval-every 100 \
    --log-every 25 --metrics "$out/metrics.jsonl" --ckpt-dir "$out/ckpt"
echo "== metrics in $out/metrics.jsonl, checkpoints in $out/ckpt"
