#!/usr/bin/env bash
# Training throughput of elastic_train vs the PyTorch peer (same model, same
# config, same data, same machine, run one after the other; eager and
# torch.compile). Prints both and the ratio; writes JSON under OUT.
#   jobs/bench_throughput.sh DATA.h5 [L] [batch] [steps]
# Environment: THREADS (default: all cores), OUT (default runs/bench), REPEAT (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; L=${2:-50}; B=${3:-128}; steps=${4:-60}
threads=${THREADS:-$(nproc)}; out=${OUT:-runs/bench}; repeat=${REPEAT:-2}
mkdir -p "$out"
common="--L $L --d 64 --layers 2 --heads 2 --batch $B --dropout 0.2"
tok() { python3 - "$1" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"type":"train"' in l]
recs = recs[2:] if len(recs) > 3 else recs[1:]  # drop the first intervals: warm-up
print(f"{sum(r['tokens_per_s'] for r in recs) / len(recs):.0f} {max(r['peak_rss_mb'] for r in recs):.0f}")
PY
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads $threads"
echo "config: SASRec d=64 2 layers 2 heads L=$L batch $B dropout 0.2, full CE over all items, data $data"
for r in $(seq "$repeat"); do
    rm -f "$out/c.jsonl"
    bin/elastic_train --data "$data" $common --steps "$steps" --log-every 10 --eval-every 1000000 \
        --eval-users 1 --test false --threads "$threads" --metrics "$out/c.jsonl" >/dev/null
    read -r c_tok c_rss < <(tok "$out/c.jsonl")
    python3 jobs/bench_torch_sasrec.py --data "$data" $common --steps $((steps / 2)) --warmup 5 \
        --threads "$threads" --json "$out/t.json" >/dev/null
    t_tok=$(python3 -c "import json;print(round(json.load(open('$out/t.json'))['tokens_per_s']))")
    t_rss=$(python3 -c "import json;print(round(json.load(open('$out/t.json'))['peak_rss_mib']))")
    python3 jobs/bench_torch_sasrec.py --data "$data" $common --steps $((steps / 2)) --warmup 5 \
        --threads "$threads" --compile --json "$out/tc.json" >/dev/null
    tc_tok=$(python3 -c "import json;print(round(json.load(open('$out/tc.json'))['tokens_per_s']))")
    echo "run $r: elastic $c_tok tok/s (rss $c_rss MB) | torch eager $t_tok tok/s (rss $t_rss MB) | torch.compile $tc_tok tok/s | ratio vs eager $(python3 -c "print(f'{$c_tok/$t_tok:.2f}')")x, vs compile $(python3 -c "print(f'{$c_tok/$tc_tok:.2f}')")x"
done
