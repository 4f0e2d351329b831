#!/usr/bin/env bash
# The trainer killed with SIGKILL at random moments while it checkpoints
# every step (ELASTIC with a 24 MB bank state, so most of the time is spent
# writing), 20 times, each run resuming where the last one was killed: every
# folder under a final name passes elastic_ckpt verify after every kill,
# there is always a newest complete one, and the last resume loads it.
. "$(dirname "$0")/lib.sh"
plan 4
T="$BIN/elastic_train --threads 2"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 400 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
ck="--model elastic --chunk 8 --experts 3 --mem-slots 65536 --mem-topk 4 --data $TMP/s.h5 --L 20 --batch 16 --d 32 --log-every 1 --eval-every 0 --test false --steps 400 --ckpt-dir $TMP/ck --ckpt-every 1 --keep-last 3"
trials=20 bad=0 none=0 killed=0 checked=0
for i in $(seq $trials); do
    resume=""; [ -d "$TMP/ck" ] && ls -d "$TMP"/ck/step_* >/dev/null 2>&1 && resume="--resume latest"
    $T $ck $resume > "$TMP/run$i.log" 2>&1 &
    pid=$!
    sleep "0.$(( (RANDOM % 9) + 3 ))$(( RANDOM % 10 ))"  # 0.30 to 1.19 s
    kill -9 $pid 2>/dev/null && killed=$((killed + 1))
    wait $pid 2>/dev/null
    n=0
    for d in "$TMP"/ck/step_*; do
        [ -d "$d" ] || continue
        n=$((n + 1)); checked=$((checked + 1))
        $BIN/elastic_ckpt verify "$d" > "$TMP/v.log" 2>&1 || { bad=$((bad + 1)); sed 's/^/# /' "$TMP/v.log" | head -2; }
    done
    [ $n -gt 0 ] || none=$((none + 1))
done
[ $killed -ge 15 ] && ok "$killed of $trials runs killed mid-run (the rest had ended)" \
    || notok "only $killed of $trials runs were still running when killed"
[ $bad -eq 0 ] && ok "after every kill, every checkpoint under a final name verifies ($checked checks)" \
    || notok "$bad of $checked checkpoints under a final name fail verification"
[ $none -le 2 ] && ok "a complete checkpoint was there after $((trials - none)) of $trials kills" \
    || notok "no complete checkpoint after $none kills"
out=$($T $ck --resume latest --steps 3 2>&1 | grep -m1 "resumed from\|error") 
grep -q "resumed from $TMP/ck/step_" <<<"$out" && ok "the last resume loads the newest: ${out#resumed from $TMP/ck/}" \
    || { notok "resume after the kills"; echo "# $out"; }
