#!/usr/bin/env bash
# The memory bank's exchanges at P = 1, 2, 4 ranks (issue 9): per training
# step, the ids sent to owners, the rows sent back, the row gradients sent to
# owners (bytes that leave a rank), lookups before and after deduplication,
# the most and the mean rows an owner served, the dense all-reduce's payload,
# and the time waiting on communication; plus tokens/s. Two workloads:
#   beauty: Amazon Beauty, ELASTIC as in its accuracy runs: L 50, C 16, batch
#           128, d 64, k 8, 65536 slots
#   long:   a synthetic long-history set, L 1024, C 64, k 8 (batch 8, d 64)
# Prints a table row per (workload, P, progress interval of EVERY steps): the
# lookups spread out as training goes (at initialisation the interests of all
# users are alike and select the same few slots). Keeps the logs and the
# metrics JSON lines under OUT.
#   jobs/bench_exchange.sh [beauty] [long]        (default: both)
# Environment: SHARED (default ../shared/datasets), OUT (default
# runs/exchange), BIN (default bin), STEPS (default 200 for beauty, 60 for
# long), EVERY (default STEPS / 4),
# RANKS (default "1 2 4"), THREADS (per rank; default cores / P, at least 1).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED:-../shared/datasets}; out=${OUT:-runs/exchange}; bin=${BIN:-bin}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cores=$(nproc)
printf '%-7s %2s %5s %9s %9s %6s %10s %10s %10s %9s %9s %10s %9s %8s\n' workload P step lookups \
    unique dedup "ids KB" "rows KB" "grads KB" "srv max" "srv mean" "dense KB" "wait ms" "tok/s"
for w in ${*:-beauty long}; do
    case $w in
    beauty)
        [ -f "$out/beauty.h5" ] || "$bin/elastic_prep" convert --format seq \
            "$shared/amazon-beauty/Beauty.txt" -o "$out/beauty.h5" >/dev/null
        steps=${STEPS:-200}
        opts="--data $out/beauty.h5 --L 50 --batch 128 --d 64 --experts 8 --chunk 16" ;;
    long)
        [ -f "$out/long.h5" ] || "$bin/elastic_prep" synth -o "$out/long.h5" --users 400 \
            --items 20000 --min-len 1100 --max-len 4000 --seed 9 >/dev/null
        steps=${STEPS:-60}
        opts="--data $out/long.h5 --L 1024 --batch 8 --d 64 --experts 8 --chunk 64" ;;
    *) echo "unknown workload $w (beauty, long)" >&2; exit 2 ;;
    esac
    for P in ${RANKS:-1 2 4}; do
        t=${THREADS:-$(( cores / P > 0 ? cores / P : 1 ))}
        log="$out/$w-np$P.log" js="$out/$w-np$P.jsonl"
        rm -f "$js"
        # unbound: mpirun would pin a rank's T threads to one core
        mpirun --oversubscribe --bind-to none -np "$P" "$bin/elastic_train" --model elastic $opts --steps "$steps" \
            --log-every "${EVERY:-$((steps / 4))}" --eval-every 0 --eval-users 1 --test false --comm-stats \
            --threads "$t" --metrics "$js" > "$log" 2>&1
        # one row per progress interval (the first one holds step 1 alone)
        python3 - "$js" "$w" "$P" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
train = {r["step"]: r for r in recs if r["type"] == "train"}
for c in (r for r in recs if r["type"] == "comm" and r["step"] > 1):
    t = train[c["step"]]
    print("%-7s %2s %5d %9.0f %9.0f %6.2f %10.1f %10.1f %10.1f %9.0f %9.0f %10.1f %9.1f %8.0f" % (
        sys.argv[2], sys.argv[3], c["step"], c["lookups"], c["unique"],
        c["lookups"] / max(c["unique"], 1), c["id_bytes"] / 1024, c["row_bytes"] / 1024,
        c["grad_bytes"] / 1024, c["served_max"], c["served_mean"], c["dense_bytes"] / 1024,
        1e3 * c["wait_s"], t["tokens_per_s"]))
PY
    done
done
