#!/usr/bin/env bash
# make demo: the point of the project in about two minutes on 2 cores.
# Synthetic users with long histories (100 to 600 events) whose interests
# come back long after they were last seen; ELASTIC (interest experts and its
# memory bank) and SASRec, the quadratic baseline, trained side by side on
# the same data and budget; their test numbers printed together and their
# validation curves plotted in one figure (runs/demo/valid.png, with
# loss.png and throughput.png); then what a training step costs by length
# for the quadratic and the linear models (runs/demo/bench.png, log-log).
# Runs from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_DIR:-runs/demo}
steps=${DEMO_STEPS:-120}
mkdir -p "$out"
echo "== a synthetic long-history dataset ($out/synth.h5)"
bin/elastic_prep synth -o "$out/synth.h5" --users 2000 --items 1000 --clusters 40 \
    --min-len 100 --max-len 600 --p-long 0.5 --seed 1 > /dev/null
bin/elastic_prep info "$out/synth.h5" | head -4
common="--data $out/synth.h5 --L 200 --batch 32 --d 64 --steps $steps --eval-every 40 --eval-users 500 --log-every 20"
for model in sasrec elastic; do
    extra=""
    [ $model = elastic ] && extra="--experts 8 --chunk 32 --mem-slots 65536"
    echo "== training $model for $steps steps (L = 200)"
    rm -f "$out/$model.jsonl"
    bin/elastic_train $common --model $model $extra --metrics "$out/$model.jsonl" \
        > "$out/$model.log" 2>&1 || { tail -5 "$out/$model.log"; exit 1; }
    grep -E '^(step [0-9]+/|done)' "$out/$model.log" | tail -2
done
echo "== test (full ranking over all items, history not masked)"
for model in sasrec elastic; do
    printf '%-8s %s\n' "$model" "$(grep -m1 -E '^test  ' "$out/$model.log" | sed -E 's/^test +//; s/ \| [0-9]+ users.*//')"
done
printf '%-8s %s\n' "popular" "$(grep -m1 -E '^test-pop' "$out/elastic.log" | sed -E 's/^test-pop +//; s/ \| [0-9]+ users.*//')"
echo "== a training step by sequence length (batch 2): quadratic SASRec against the linear models"
rm -f "$out/bench.jsonl"
bin/elastic_bench --models sasrec-plain,elastic,recgrela --L 256,1024,4096,8192 --batch 2 \
    --steps 1 --json "$out/bench.jsonl" | grep -vE '^(blas|batch)'
if command -v gnuplot >/dev/null; then
    jobs/plot.sh "$out" "$out/sasrec.jsonl" "$out/elastic.jsonl" 2>/dev/null
    jobs/plot.sh --bench "$out" "$out/bench.jsonl"
else
    echo "(no gnuplot: no plots; make deps installs gnuplot-nox)"
fi
