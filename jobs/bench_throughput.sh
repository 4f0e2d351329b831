#!/usr/bin/env bash
# Training throughput of elastic_train vs the PyTorch peer (same model, same
# config, same data, same machine, run one after the other): PyTorch eager as
# written plainly (logits at every position), eager with the loss gathered at
# target positions (what elastic does), and that under torch.compile. Prints
# tokens/s, peak RSS and elastic's ratio to each; writes JSON under OUT.
#   jobs/bench_throughput.sh DATA.h5 [L] [batch] [steps]
# Environment: THREADS (default: all cores), OUT (default runs/bench), REPEAT (default 2),
# MODEL (sasrec, elastic or recgrela; default sasrec) and EXTRA (the model's
# options, given to both sides, e.g. EXTRA="--experts 8 --chunk 16").
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; L=${2:-50}; B=${3:-128}; steps=${4:-60}
threads=${THREADS:-$(nproc)}; out=${OUT:-runs/bench}; repeat=${REPEAT:-2}
mkdir -p "$out"
model=${MODEL:-sasrec}
common="--L $L --d 64 --layers 2 --heads 2 --batch $B --dropout 0.2 ${EXTRA:-}"
tok() { python3 - "$1" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"type":"train"' in l]
recs = recs[2:] if len(recs) > 3 else recs[1:]  # drop the first intervals: warm-up
print(f"{sum(r['tokens_per_s'] for r in recs) / len(recs):.0f} {max(r['peak_rss_mb'] for r in recs):.0f}")
PY
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads $threads"
echo "config: $model d=64 2 layers 2 heads L=$L batch $B dropout 0.2 ${EXTRA:-}, full CE over all items, data $data"
for r in $(seq "$repeat"); do
    rm -f "$out/c.jsonl"
    bin/elastic_train --model "$model" --data "$data" $common --steps "$steps" --log-every 10 --eval-every 1000000 \
        --eval-users 1 --test false --threads "$threads" --metrics "$out/c.jsonl" >/dev/null
    read -r c_tok c_rss < <(tok "$out/c.jsonl")
    peer() {  # name, extra flags -> "tok/s rss"
        python3 jobs/bench_torch.py --model "$model" --data "$data" $common --steps $((steps / 2)) --warmup 5 \
            --threads "$threads" "${@:2}" --json "$out/$1.json" >/dev/null 2>&1
        python3 -c "import json;r=json.load(open('$out/$1.json'));print(round(r['tokens_per_s']), round(r['peak_rss_mib']))"
    }
    read -r te te_rss < <(peer eager)
    read -r tg tg_rss < <(peer gather --gather)
    read -r tc tc_rss < <(peer compile --gather --compile)
    ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
    echo "run $r: elastic $c_tok tok/s (rss $c_rss MB) | torch eager $te ($te_rss MB) $(ratio "$c_tok" "$te") | torch eager gathered-loss $tg ($tg_rss MB) $(ratio "$c_tok" "$tg") | torch.compile gathered-loss $tc ($tc_rss MB) $(ratio "$c_tok" "$tc")"
done
