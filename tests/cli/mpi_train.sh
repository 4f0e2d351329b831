#!/usr/bin/env bash
# elastic_train over MPI ranks: 1, 2 and 4 ranks print the same losses and
# validation metrics with dropout on, for every model (ELASTIC with its memory
# bank sharded over the ranks); --mem-budget refuses a bank one rank cannot
# hold and the same bank trains over 4; a checkpoint written by 2 ranks (one
# bank shard each) resumes exactly at 2 and refuses a missing or corrupt
# shard, naming it; --comm-stats reports the exchanges; a killed rank ends
# the job.
. "$(dirname "$0")/lib.sh"
plan 17
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi="mpirun --oversubscribe -np"
if ! command -v mpirun >/dev/null || ! timeout 60 $mpi 2 true >/dev/null 2>&1; then
    for i in $(seq 16); do skip "mpirun check $i (mpirun missing or cannot start 2 processes here)"; done
    exit 0
fi
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 600 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
T="$BIN/elastic_train --threads 1"
bank="--model elastic --chunk 8 --experts 3 --mem-slots 256 --mem-topk 4"
lines() { grep -E '^(step (5|10|15|20)/|valid(-pop)? +step)' | sed -E 's/ \| [0-9.]+ tok\/s.*//'; }
# a job that hangs (a collective one rank skipped) fails instead of stalling the suite
mpi="timeout -k 5 120 $mpi"

# the same numbers at 1, 2 and 4 ranks: losses at every progress line and the
# validation, the popularity baseline's too (evaluation split over the ranks;
# 33 users leave rank 0 one batch more than the others, so a rank out of users
# still takes part in the bank's exchanges)
for spec in "sasrec|--model sasrec" "recgrela|--model recgrela" \
    "elastic --no-memory|--model elastic --chunk 8 --no-memory" "elastic, its bank sharded|$bank"; do
    label=${spec%%|*}
    dp="${spec#*|} --data $TMP/s.h5 --L 20 --batch 32 --d 32 --steps 10 --log-every 5 --eval-every 10 --eval-users 33 --test false --dropout 0.2"
    l1=$($mpi 1 $T $dp 2>&1 | lines); l2=$($mpi 2 $T $dp 2>&1 | lines); l4=$($mpi 4 $T $dp 2>&1 | lines)
    if [ "$(grep -c . <<<"$l1")" = 4 ] && [ "$l1" = "$l2" ] && [ "$l1" = "$l4" ]; then
        ok "$label: mpirun -np 1, 2 and 4 give the same losses and validation, dropout on"
    else notok "$label: mpirun -np 1 vs 2 vs 4"; printf '%s\n---\n%s\n---\n%s\n' "$l1" "$l2" "$l4" | sed 's/^/# /'; fi
done
# the dense all-reduce after backward instead of overlapped with it (the
# last model of the loop, ELASTIC with its bank): the same numbers
lo=$($mpi 2 $T $dp --allreduce-overlap false 2>&1 | lines)
if [ -n "$lo" ] && [ "$lo" = "$l2" ]; then ok "--allreduce-overlap false: the same losses and validation at 2 ranks"
else notok "--allreduce-overlap false differs"; printf '%s\n---\n%s\n' "$l2" "$lo" | sed 's/^/# /'; fi
expect_fail "a global batch the ranks do not divide is refused" "--batch 32 is the global batch, split over the 3 ranks: it must be a multiple of 3" \
    $mpi 3 $T --data "$TMP/s.h5" --L 20 --batch 32 --steps 2

# a bank one rank cannot hold: 65536 rows x 32 with its moments is 25 MB
big="--model elastic --data $TMP/s.h5 --L 20 --chunk 8 --experts 3 --mem-slots 65536 --mem-topk 4 --batch 32 --d 32 --steps 4 --log-every 2 --eval-users 50 --test false --mem-budget 8"
expect_fail "a bank over --mem-budget on one rank is refused, naming the ranks it needs" "needs at least 4 ranks \(mpirun -np 4\)" \
    $mpi 1 $T $big
out=$($mpi 4 $T $big 2>&1)
if grep -q "sharded over 4 ranks: 6.0 MB per rank" <<<"$out" && grep -q '^done: 4 steps' <<<"$out"; then
    ok "the same bank trains on 4 ranks, 6.0 MB of it on each"
else notok "the bank over 4 ranks"; tail -5 <<<"$out" | sed 's/^/# /'; fi

# checkpoints at 2 ranks: one bank shard per rank, resumed exactly
ck="$bank --data $TMP/s.h5 --L 20 --batch 32 --d 32 --log-every 5 --eval-every 10 --eval-users 150 --dropout 0.2"
$mpi 2 $T $ck --steps 20 > "$TMP/full.log" 2>&1 || notok "2 ranks uninterrupted"
$mpi 2 $T $ck --steps 10 --ckpt-dir "$TMP/ck" > "$TMP/a.log" 2>&1 || notok "2 ranks first half"
m="$TMP/ck/step_00000010/MANIFEST"
if [ -f "$m" ] && grep -q '^dense.h5 ' "$m" && grep -q '^bank-00000-of-00002.h5 ' "$m" && grep -q '^bank-00001-of-00002.h5 ' "$m" && [ "$(wc -l < "$m")" = 4 ]; then
    ok "a checkpoint of 2 ranks: dense.h5 and one bank shard per rank, all in the manifest"
else notok "checkpoint files"; ls "$TMP/ck/step_00000010" | sed 's/^/# /'; fi
cp -r "$TMP/ck/step_00000010" "$TMP/ck_missing"; cp -r "$TMP/ck/step_00000010" "$TMP/ck_bad"
$mpi 2 $T $ck --steps 20 --ckpt-dir "$TMP/ck" --resume latest > "$TMP/b.log" 2>&1 || notok "2 ranks resumed"
pick() { grep -E '^(step (15|20)/|valid +step 20 )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//'; }
if [ "$(pick "$TMP/b.log" | grep -c .)" = 3 ] && diff <(pick "$TMP/full.log") <(pick "$TMP/b.log") >/dev/null; then
    ok "resumed at 2 ranks: the same losses and validation as the uninterrupted run"
else notok "2-rank resume differs"; diff <(pick "$TMP/full.log") <(pick "$TMP/b.log") | head | sed 's/^/# /'; fi
rm "$TMP/ck_missing/bank-00001-of-00002.h5"
expect_fail "a missing bank shard is refused, naming it" "bank-00001-of-00002\.h5: missing" \
    $mpi 2 $T $ck --steps 20 --resume "$TMP/ck_missing"
printf 'x' | dd of="$TMP/ck_bad/bank-00000-of-00002.h5" bs=1 seek=3000 conv=notrunc status=none
expect_fail "a corrupt bank shard is refused, naming it" "bank-00000-of-00002\.h5: FNV-1a checksum" \
    $mpi 2 $T $ck --steps 20 --resume "$TMP/ck_bad"
# the same checkpoint of 2 ranks resumed at 1 and 4: each rank reads its own
# rows from the shards that hold them, and the run goes on as at 2
for np in 1 4; do
    $mpi $np $T $ck --steps 20 --resume "$TMP/ck/step_00000010" > "$TMP/np$np.log" 2>&1
    if [ "$(pick "$TMP/np$np.log" | grep -c .)" = 3 ] && diff <(pick "$TMP/full.log") <(pick "$TMP/np$np.log") >/dev/null; then
        ok "a bank checkpoint of 2 ranks resumed at $np: the same losses and validation as the 2-rank run"
    else notok "a 2-rank checkpoint resumed at $np differs"; diff <(pick "$TMP/full.log") <(pick "$TMP/np$np.log") | head -4 | sed 's/^/# /'; tail -2 "$TMP/np$np.log" | sed 's/^/# /'; fi
done

# a checkpoint that one rank cannot write (rank 0's dense.h5 over a 256 KB
# file size limit; rank 1's shard fits): every rank stops with the reason,
# nothing of that checkpoint is left, no temporary folder, no rank hangs
# (the limit is set in each rank, not on mpirun, whose own files it would break)
out=$(timeout -k 5 120 $mpi 2 bash -c "trap '' XFSZ; ulimit -f 256; exec $T $ck --steps 4 --ckpt-dir $TMP/ckf --ckpt-every 2" 2>&1); rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qE "cannot write checkpoint .*step_00000002 \(nothing of it is kept.*\): rank 0: .*dense\.h5" <<<"$out" \
    && [ -z "$(ls -A "$TMP/ckf" 2>/dev/null)" ]; then
    ok "a checkpoint one rank cannot write: every rank stops, nothing of it is left"
else notok "a checkpoint one rank cannot write (exit $rc)"; grep -E 'error' <<<"$out" | head -3 | sed 's/^/# /'; ls -A "$TMP/ckf" | sed 's/^/# /'; fi

# --comm-stats: a line per progress line and a metrics record, counting the
# training steps' exchanges only (a validation every step does not add its
# lookups: every interval shows the same lookups per step)
out=$($mpi 2 $T $ck --steps 4 --log-every 2 --eval-every 1 --eval-users 50 --test false --comm-stats --metrics "$TMP/m.jsonl" 2>&1)
n=$(grep -oE '^comm +step [0-9]+ \| bank lookups [0-9]+' <<<"$out" | awk '{print $NF}' | sort -u)
if grep -qE '^comm +step 4 \| bank lookups [0-9]+ -> [0-9]+ unique .*ids [0-9.]+ MB, rows [0-9.]+ MB, grads [0-9.]+ MB .*dense all-reduce [0-9.]+ MB \| waiting' <<<"$out" \
    && grep -q '"type":"comm","step":4' "$TMP/m.jsonl" && [ "$(grep -c . <<<"$n")" = 1 ] && [ "$n" -gt 0 ]; then
    ok "--comm-stats prints and records the training exchanges ($n lookups a step, validations not counted)"
else notok "--comm-stats"; grep -E '^comm|error' <<<"$out" | head -3 | sed 's/^/# /'; fi

# a rank killed mid-run (inside the bank's exchanges): the job ends
# (non-zero), no rank is left waiting
$mpi 2 $BIN/elastic_train $bank --data "$TMP/s.h5" --L 20 --batch 32 --d 32 --steps 1000000 \
    --log-every 1 --eval-every 0 --test false --threads 1 > "$TMP/kill.log" 2>&1 &
job=$!
for _ in $(seq 100); do grep -q '^step ' "$TMP/kill.log" && break; sleep 0.2; done
victim=$(pgrep -f "^$BIN/elastic_train .*--steps 1000000" | tail -1)
[ -n "$victim" ] && kill -9 "$victim"
for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.2; done
if kill -0 $job 2>/dev/null; then
    notok "a killed rank ends the job (still running after 60 s)"; pkill -9 -f "steps 1000000"
elif wait $job; then notok "a killed rank ends the job (exit status 0)"
elif pgrep -f "^$BIN/elastic_train .*--steps 1000000" >/dev/null; then
    notok "a killed rank ends the job (a rank is left running)"
else ok "a killed rank (ELASTIC, bank sharded) ends the job with an error, no rank left running"; fi
