#!/usr/bin/env bash
# Graceful stop: SIGTERM, SIGINT (one process) and SIGUSR1 (through mpirun,
# which forwards it to every rank), SIGTERM and SIGINT to jobs/mpirun.sh (the
# launcher that turns them into the SIGUSR1 mpirun forwards), and SIGTERM
# sent to each rank as srun does, mid-run: every rank finishes its step, a complete checkpoint is
# written, the exit status is 75 (requeue), and --resume latest goes on to the
# uninterrupted run's numbers (at the same rank count: over 150 steps one and
# two ranks agree only to the rounding of their differently ordered sums,
# NOTES "Slurm"). A second signal during the checkpoint changes nothing.
. "$(dirname "$0")/lib.sh"
plan 14
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T="$BIN/elastic_train --threads 1"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 600 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
run="--model elastic --chunk 8 --experts 3 --mem-slots 4096 --mem-topk 4 --data $TMP/s.h5 --L 20 --batch 32 --d 32 --log-every 1 --eval-every 0 --test false --dropout 0.2 --steps 150"
$T $run > "$TMP/full.log" 2>&1 || notok "uninterrupted run"
# after: the progress lines past step N of a log
after() { grep -E '^step [0-9]+/' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//' |
          awk -v n="$2" '{ split($2, a, "/"); if (a[1] + 0 > n) print }'; }
# stop_and_resume NAME SIGNAL HOW REFERENCE LAUNCH...: start, signal once the
# run is going, check the exit, the message, the checkpoint and the resumed
# numbers against the uninterrupted run's log REFERENCE
stop_and_resume() {
    local name=$1 sig=$2 how=$3 full=$4; shift 4
    local ck="$TMP/ck_$name" log="$TMP/$name.log"
    # job control for the launcher: a background job of a script otherwise
    # starts with SIGINT ignored, which a shell cannot trap (a ^C at a
    # terminal reaches a foreground job)
    [ "$how" = launcher ] && set -m
    "$@" $run --ckpt-dir "$ck" > "$log" 2>&1 &
    local pid=$!
    set +m
    for _ in $(seq 200); do grep -q '^step 10/' "$log" && break; sleep 0.05; done
    # the process signalled: the trainer itself; mpirun (under timeout); or,
    # as srun does, each rank (mpirun's children)
    local target=$pid
    [ "$how" = mpirun ] && target=$(pgrep -P $pid)
    [ "$how" = ranks ] && target=$(pgrep -P "$(pgrep -P $pid)")
    kill -"$sig" $target
    wait $pid; local rc=$?
    # the launcher hands the ranks the SIGUSR1 that mpirun forwards
    local want=$sig; [ "$how" = launcher ] && want=USR1
    local at; at=$(grep -oE "^stopped by SIG$want at step [0-9]+" "$log" | grep -oE '[0-9]+$')
    if [ $rc -eq 75 ] && [ -n "$at" ] && $BIN/elastic_ckpt verify "$ck/step_$(printf %08d "$at")" >/dev/null 2>&1; then
        ok "$name: stopped at step $at with exit 75 and a checkpoint that verifies"
    else notok "$name (exit $rc, step '${at}')"; tail -3 "$log" | sed 's/^/# /'; return; fi
    "$@" $run --ckpt-dir "$ck" --resume latest > "$log.2" 2>&1
    if [ "$(after "$log.2" "$at" | grep -c .)" -gt 0 ] && diff <(after "$full" "$at") <(after "$log.2" "$at") >/dev/null; then
        ok "$name: resumed, the uninterrupted run's losses to step 150"
    else notok "$name: resumed run differs"; diff <(after "$full" "$at") <(after "$log.2" "$at") | head -4 | sed 's/^/# /'; fi
}
stop_and_resume sigterm TERM pid "$TMP/full.log" $T
stop_and_resume sigint INT pid "$TMP/full.log" $T
if command -v mpirun >/dev/null; then
    mpi="timeout -k 5 120 mpirun --oversubscribe -np 2"
    $mpi $T $run > "$TMP/full2.log" 2>&1 || notok "uninterrupted run on 2 ranks"
    stop_and_resume mpi_usr1 USR1 mpirun "$TMP/full2.log" $mpi $T
    stop_and_resume ranks_term TERM ranks "$TMP/full2.log" $mpi $T
    launch="timeout -k 5 120 $PWD/jobs/mpirun.sh --oversubscribe -np 2"
    stop_and_resume launcher_term TERM launcher "$TMP/full2.log" $launch $T
    stop_and_resume launcher_int INT launcher "$TMP/full2.log" $launch $T
else
    for i in 1 2 3 4 5 6 7 8; do skip "no mpirun"; done
fi
# a second signal while the checkpoint is written (a bank of 1M rows: ~0.5 s of writing)
big="$TMP/ck_twice"
$T $run --mem-slots 1048576 --ckpt-dir "$big" > "$TMP/twice.log" 2>&1 &
pid=$!
for _ in $(seq 400); do grep -q '^step 3/' "$TMP/twice.log" && break; sleep 0.05; done
kill -TERM $pid; sleep 0.3; kill -TERM $pid 2>/dev/null; kill -INT $pid 2>/dev/null
wait $pid; rc=$?
at=$(grep -oE "^stopped by SIGTERM at step [0-9]+" "$TMP/twice.log" | grep -oE '[0-9]+$')
[ $rc -eq 75 ] && [ -n "$at" ] && $BIN/elastic_ckpt verify "$big" > /dev/null 2>&1 \
    && ok "three signals: one stop at step $at, its checkpoint verifies, exit 75" \
    || { notok "signals during the checkpoint (exit $rc)"; tail -3 "$TMP/twice.log" | sed 's/^/# /'; }
n=$(ls -d "$big"/step_* 2>/dev/null | wc -l)
[ "$n" = 1 ] && ! ls -d "$big"/.tmp.* >/dev/null 2>&1 && ok "one checkpoint, no temporary folder left" \
    || { notok "after the signals: $n checkpoints"; ls -a "$big" | sed 's/^/# /'; }
