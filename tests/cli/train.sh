#!/usr/bin/env bash
# elastic_train from the command line: bad input rejected clearly, --help,
# resume continues exactly, and a model trained on real data beats popularity.
. "$(dirname "$0")/lib.sh"
plan 29
T="$BIN/elastic_train --threads 2"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 600 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }

expect_ok   "train --help" $T --help
expect_fail "missing dataset file named" "nope\.h5" $T --data "$TMP/nope.h5" --steps 1
expect_fail "no --data" "--data is required" $T --steps 1
expect_fail "L of 0" "--L must be at least 1" $T --data "$TMP/s.h5" --L 0
expect_fail "batch of 0" "--batch must be at least 1" $T --data "$TMP/s.h5" --batch 0
expect_fail "unknown option" "unknown option '--bogus'" $T --data "$TMP/s.h5" --bogus 1
expect_fail "bad number" "bad value 'abc' for --lr" $T --data "$TMP/s.h5" --lr abc
# --device cuda where it cannot run says why (no GPU or driver here, no CUDA in
# this build, or, with a GPU, that the trainer does not run on it yet)
expect_fail "--device cuda without a usable GPU says why" "--device cuda: (no usable CUDA GPU here|this build has no CUDA backend|the CUDA backend has a first part|no CUDA version yet)" \
    $T --data "$TMP/s.h5" --device cuda --steps 1
head -c 3000 "$TMP/s.h5" > "$TMP/trunc.h5"
expect_fail "truncated HDF5 named" "trunc\.h5" $T --data "$TMP/trunc.h5" --steps 1
printf 'this is not hdf5\n' > "$TMP/text.h5"
expect_fail "non-HDF5 file named" "text\.h5" $T --data "$TMP/text.h5" --steps 1
expect_fail "batch larger than the data" "fewer training windows|batch" \
    $T --data "$TMP/s.h5" --batch 100000 --steps 1

# resume: 18 steps + checkpoint, then resume to 40, against 40 straight
common="--data $TMP/s.h5 --L 20 --batch 32 --d 32 --log-every 5 --eval-every 10 --eval-users 200 --dropout 0.2"
$T $common --steps 40 > "$TMP/full.log" 2>&1 || notok "uninterrupted run"
sh -c 'exit 0' & dead=$!; wait $dead  # a pid with no process: a killed run's leftover
stale="$TMP/ck/.tmp.step_00000006.$(cat /proc/sys/kernel/hostname).$dead"
mkdir -p "$stale" && touch "$stale/dense.h5"
$T $common --steps 18 --ckpt-dir "$TMP/ck" --ckpt-every 6 > "$TMP/a.log" 2>&1 || notok "first half"
[ -e "$stale" ] && notok "a killed run's temporary checkpoint is removed" \
    || ok "a killed run's temporary checkpoint is removed"
$T $common --steps 40 --ckpt-dir "$TMP/ck" --resume latest > "$TMP/b.log" 2>&1 || notok "resumed half"
grep -q "resumed from .*step_00000018" "$TMP/b.log" && ok "resume picks the latest checkpoint" \
    || notok "resume picks the latest checkpoint"
pick() { grep -E '^(step (2[0-9]|3[0-9]|40)/|valid +step (20|30|40) )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//'; }
if [ -n "$(pick "$TMP/b.log")" ] && diff <(pick "$TMP/full.log") <(pick "$TMP/b.log") >/dev/null; then
    ok "resumed run prints the same losses and metrics as an uninterrupted one"
else
    notok "resumed run differs"; diff <(pick "$TMP/full.log") <(pick "$TMP/b.log") | head | sed 's/^/# /'
fi
expect_fail "resume with another --batch refused" "--batch is 16 here but 32 in the checkpoint" \
    $T $common --batch 16 --steps 40 --resume "$TMP/ck/step_00000018"
cp -r "$TMP/ck/step_00000018" "$TMP/bad_ck"
printf 'x' | dd of="$TMP/bad_ck/dense.h5" bs=1 seek=5000 conv=notrunc status=none
expect_fail "corrupt checkpoint named" "bad_ck.*(checksum|corrupt)" $T $common --steps 40 --resume "$TMP/bad_ck"
ls -d "$TMP"/ck/.tmp* >/dev/null 2>&1 && notok "temporary checkpoint left behind" || ok "no temporary checkpoint left behind"

# resume after the best validation, with worse ones following: the resumed
# run must keep the best metric (no false "(best)") and test the kept best
# parameters, as the uninterrupted run does. A small set overfits, so the best
# validation comes well before the end; the checkpoint is taken at the
# validation after it, read off the uninterrupted run (numerics differ by CPU)
$BIN/elastic_prep synth -o "$TMP/s40.h5" --users 40 --items 300 --clusters 5 --min-len 5 \
    --max-len 30 --seed 5 >/dev/null
bcommon="--data $TMP/s40.h5 --L 20 --batch 16 --d 32 --dropout 0 --lr 2e-2 --log-every 5 --eval-every 5 --patience 0"
$T $bcommon --steps 150 > "$TMP/bfull.log" 2>&1 || notok "best-then-worse uninterrupted run"
bstep=$(grep -E '^valid +step [0-9]+ .*\(best\)$' "$TMP/bfull.log" | tail -1 | awk '{print $3}')
if [ -z "$bstep" ] || [ "$bstep" -gt 140 ]; then
    skip "resumed after the best validation (the best came last on this CPU: step '$bstep')"
else
    ck=$((bstep + 5))
    $T $bcommon --steps $ck --ckpt-dir "$TMP/bck" > /dev/null 2>&1 || notok "best-then-worse first part"
    $T $bcommon --steps 150 --ckpt-dir "$TMP/bck" --resume latest > "$TMP/bres.log" 2>&1 || notok "best-then-worse resumed"
    bpick() { grep -E '^(valid +step ([0-9]+) |test)' "$1" | awk -v c=$ck '$1 != "valid" || $3 > c'; }
    if [ "$(bpick "$TMP/bres.log" | grep -c '^valid')" -ge 1 ] && diff <(bpick "$TMP/bfull.log") <(bpick "$TMP/bres.log") >/dev/null; then
        ok "resumed after the best validation (step $bstep, checkpoint $ck): same best-model marks and test lines as uninterrupted"
    else
        notok "resumed after the best: validation or test lines differ"; diff <(bpick "$TMP/bfull.log") <(bpick "$TMP/bres.log") | head | sed 's/^/# /'
    fi
fi

# (training over MPI ranks: tests/cli/mpi_train.sh)
# more threads than the CPUs the process may run on (what mpirun's default
# binding to one core per rank does) is warned about
if command -v taskset >/dev/null; then
    out=$(taskset -c 0 $BIN/elastic_train --data "$TMP/s.h5" --L 20 --steps 1 --threads 2 --test false 2>&1)
    grep -q "warning: --threads 2, but this rank may run on 1 CPU(s) only .*--bind-to none" <<<"$out" \
        && ok "--threads above the CPUs of the affinity mask is warned about" \
        || { notok "affinity warning"; head -3 <<<"$out" | sed 's/^/# /'; }
else skip "affinity warning (no taskset)"; fi

# ELASTIC, memory bank included, resumes exactly too
ecommon="--model elastic --data $TMP/s.h5 --L 20 --chunk 8 --experts 3 --mem-slots 256 --mem-topk 4 --batch 32 --d 32 --log-every 5 --eval-every 10 --eval-users 200"
$T $ecommon --steps 30 > "$TMP/efull.log" 2>&1 || notok "elastic uninterrupted run"
$T $ecommon --steps 13 --ckpt-dir "$TMP/eck" --ckpt-every 13 > "$TMP/ea.log" 2>&1 || notok "elastic first half"
$T $ecommon --steps 30 --ckpt-dir "$TMP/eck" --resume latest > "$TMP/eb.log" 2>&1 || notok "elastic resumed half"
epick() { grep -E '^(step (1[5-9]|2[0-9]|30)/|valid +step (20|30) )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//'; }
if [ -n "$(epick "$TMP/eb.log")" ] && diff <(epick "$TMP/efull.log") <(epick "$TMP/eb.log") >/dev/null; then
    ok "elastic: resumed run (memory bank and its moments) matches an uninterrupted one"
else
    notok "elastic resumed run differs"; diff <(epick "$TMP/efull.log") <(epick "$TMP/eb.log") | head | sed 's/^/# /'
fi
grep -qE "^diag .*memory rows read since the last validation: [0-9.]+% \([0-9]+ of 256\) .*expert load" "$TMP/efull.log" && ok "elastic prints memory usage and expert load" \
    || notok "elastic diagnostics missing"
expect_fail "mem-slots must be a square" "perfect square" $T $ecommon --mem-slots 1000 --steps 1
expect_fail "elastic needs even head width" "even head width" $T $ecommon --d 30 --heads 2 --steps 1

# RecGRELA resumes exactly, and its ablations run
rcommon="--model recgrela --data $TMP/s.h5 --L 20 --chunk 8 --batch 32 --d 32 --log-every 5 --eval-every 10 --eval-users 200"
$T $rcommon --steps 30 > "$TMP/rfull.log" 2>&1 || notok "recgrela uninterrupted run"
$T $rcommon --steps 13 --ckpt-dir "$TMP/rck" --ckpt-every 13 > "$TMP/ra.log" 2>&1 || notok "recgrela first half"
$T $rcommon --steps 30 --ckpt-dir "$TMP/rck" --resume latest > "$TMP/rb.log" 2>&1 || notok "recgrela resumed half"
if [ -n "$(epick "$TMP/rb.log")" ] && diff <(epick "$TMP/rfull.log") <(epick "$TMP/rb.log") >/dev/null; then
    ok "recgrela: resumed run matches an uninterrupted one"
else
    notok "recgrela resumed run differs"; diff <(epick "$TMP/rfull.log") <(epick "$TMP/rb.log") | head | sed 's/^/# /'
fi
expect_ok "recgrela --no-local --no-gate trains" $T $rcommon --no-local --no-gate --steps 3 --test false
expect_fail "recgrela needs even head width" "even head width" $T $rcommon --d 30 --heads 2 --steps 1

# integration: SASRec on MovieLens beats the popularity baseline
ML="$SHARED/ml-latest-small/ratings.csv"
if [ -f "$ML" ]; then
    $BIN/elastic_prep convert --format movielens-csv "$ML" -o "$TMP/ml.h5" >/dev/null
    $T --data "$TMP/ml.h5" --L 100 --batch 64 --epochs 30 --patience 0 --dropout 0.2 \
        --log-every 100 > "$TMP/ml.log" 2>&1
    model=$(awk '$1=="test" && /not masked/ {for(i=1;i<=NF;i++) if($i=="NDCG@10") print $(i+1)}' "$TMP/ml.log")
    pop=$(awk '$1=="test-pop" && /not masked/ {for(i=1;i<=NF;i++) if($i=="NDCG@10") print $(i+1)}' "$TMP/ml.log")
    if [ -n "$model" ] && [ -n "$pop" ] && awk -v a="$model" -v b="$pop" 'BEGIN{exit !(a > b)}'; then
        ok "ml-latest-small: SASRec test NDCG@10 $model > popularity $pop"
    else
        notok "ml-latest-small: SASRec test NDCG@10 '$model' vs popularity '$pop'"; tail -5 "$TMP/ml.log" | sed 's/^/# /'
    fi
else
    skip "ml-latest-small integration ($ML not found)"
fi

# elastic_bench: runs every model and rejects bad options
out=$($BIN/elastic_bench --models sasrec-plain,sasrec-fused,elastic,elastic-nomem,recgrela --L 32,48 \
      --items 100 --steps 1 --threads 2 --json "$TMP/bench.jsonl" 2>&1)
if [ "$(grep -c '"ok":true' "$TMP/bench.jsonl" 2>/dev/null)" = 10 ]; then ok "elastic_bench times every model and length"
else notok "elastic_bench"; echo "$out" | tail -5 | sed 's/^/# /'; fi
expect_fail "elastic_bench rejects an unknown option" "unknown option" $BIN/elastic_bench --bogus 1
