#!/usr/bin/env bash
# Accuracy on the shared real datasets, DESIGN §2 protocol (SASRec by default;
# MODEL=elastic and EXTRA="--experts 8 ..." for the others).
# Trains each to early stopping on validation NDCG@10 and prints the test lines
# (history unmasked and masked, each beside popularity). Logs under OUT.
#   jobs/accuracy.sh [beauty] [sports] [ml]      (default: all three)
# Environment: SHARED (default ../shared/datasets), OUT (default runs/accuracy), THREADS,
# MODEL, EXTRA (more trainer options, given last so they override the dataset's
# defaults, e.g. EXTRA="--dropout 0.2 --seed 2"), TAG (suffix of the log names),
# BIN (folder of the programs, default bin: point it at a copy to keep
# rebuilding while runs go on).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/datasets}; out=${OUT:-runs/accuracy}; threads=${THREADS:-0}
mkdir -p "$out"
sets=${*:-beauty sports ml}
bin=${BIN:-bin}
common="--model ${MODEL:-sasrec} --d 64 --layers 2 --heads 2 --batch 128 --lr 1e-3 --threads $threads"
for s in $sets; do
    case $s in
    beauty) src="$shared/amazon-beauty/Beauty.txt"; fmt=seq
            opts="--L 50 --dropout 0.5 --epochs 200 --patience 5" ;;
    sports) src="$shared/amazon-sports/Sports_and_Outdoors.txt"; fmt=seq
            opts="--L 50 --dropout 0.5 --epochs 200 --patience 5" ;;
    ml)     src="$shared/ml-latest-small/ratings.csv"; fmt=movielens-csv
            opts="--L 200 --batch 64 --dropout 0.2 --epochs 300 --patience 10" ;;
    *) echo "unknown dataset $s (beauty, sports, ml)" >&2; exit 2 ;;
    esac
    [ -f "$out/$s.h5" ] || "$bin/elastic_prep" convert --format $fmt "$src" -o "$out/$s.h5" >/dev/null
    echo "== $s: elastic_train $common $opts ${EXTRA:-}"
    start=$(date +%s)
    "$bin/elastic_train" --data "$out/$s.h5" $common $opts ${EXTRA:-} --log-every 500 \
        --metrics "$out/$s${TAG:-}.jsonl" > "$out/$s${TAG:-}.log" 2>&1
    log="$out/$s${TAG:-}.log"
    echo "   trained in $(( $(date +%s) - start )) s; $(grep -m1 '^early stop' "$log" || echo 'no early stop')"
    grep -E '^(test|test-pop) ' "$log" | sed 's/^/   /'
done
