#!/usr/bin/env bash
# elastic_train when things go wrong: a full disk during a checkpoint or a
# metrics write, an unwritable checkpoint folder, a corrupt newest checkpoint,
# a resume that would change the run, a diverging run, bad option values.
# Every failure must be loud (a message naming what and where, non-zero exit)
# and lose nothing (no partial checkpoint, the previous one intact).
. "$(dirname "$0")/lib.sh"
plan 35
T="$BIN/elastic_train --threads 2"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 300 --items 200 --clusters 8 --min-len 5 \
    --max-len 40 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
$BIN/elastic_prep synth -o "$TMP/other.h5" --users 300 --items 200 --clusters 8 --min-len 5 \
    --max-len 40 --seed 4 >/dev/null || { notok "second synthetic dataset"; exit 1; }
small="--data $TMP/s.h5 --L 16 --batch 16 --d 16 --log-every 2 --eval-every 4 --eval-users 50"

# ---- a full file system: a small tmpfs where this machine lets us mount one
# (root), otherwise a file-size limit (writes then fail with EFBIG, not a signal);
# limited KB CMD runs CMD under that limit where there is no tmpfs
FULL="$TMP/full"
mkdir -p "$FULL"
if mount -t tmpfs -o size=1m tmpfs "$FULL" 2>/dev/null; then
    trap 'umount "$FULL" 2>/dev/null; rm -rf "$TMP"' EXIT
    limited() { shift; "$@"; }
    # fill LEFT: all but LEFT KB (16: the start-up probe of the folder passes, a
    # checkpoint cannot)
    fill() { local kb; kb=$(df --output=avail -k "$FULL" | tail -1)
             dd if=/dev/zero of="$FULL/fill" bs=1k count=$((kb > $1 ? kb - $1 : 0)) 2>/dev/null; }
    echo "# full disk: a 1 MB tmpfs"
else
    # (output through a pipe: the limit applies to files, the caller's log too)
    limited() { local kb=$1; shift; (trap '' XFSZ; ulimit -f "$kb"; "$@" 2>&1) | cat
                return "${PIPESTATUS[0]}"; }
    fill() { :; }
    echo "# full disk: ulimit -f 40 (no tmpfs here)"
fi
NOSPACE="No space left on device|File too large"
$T $small --steps 4 --ckpt-dir "$FULL/ck" > "$TMP/full1.log" 2>&1 \
    && ok "a first checkpoint fits" || { notok "a first checkpoint fits"; tail -3 "$TMP/full1.log" | sed 's/^/# /'; }
fill 16
limited 40 $T $small --steps 8 --ckpt-dir "$FULL/ck" --resume latest > "$TMP/full2.log" 2>&1; rc=$?
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qE "cannot write checkpoint $FULL/ck/step_00000008.*($NOSPACE)" "$TMP/full2.log"; then
    ok "checkpoint on a full disk: a clear error naming the folder and the reason"
else
    notok "checkpoint on a full disk (exit $rc)"; tail -3 "$TMP/full2.log" | sed 's/^/# /'
fi
ls -a "$FULL/ck" | grep -q '^\.tmp' && notok "full disk: the partial checkpoint is removed" \
    || ok "full disk: the partial checkpoint is removed"
rm -f "$FULL/fill"
out=$($T $small --steps 4 --ckpt-dir "$FULL/ck" --resume latest --test false 2>&1)
grep -q "resumed from $FULL/ck/step_00000004" <<<"$out" && ok "full disk: the previous checkpoint is intact" \
    || { notok "full disk: the previous checkpoint is intact"; echo "$out" | tail -3 | sed 's/^/# /'; }
fill 0
limited 0 $T $small --steps 2 --metrics "$FULL/m.jsonl" > "$TMP/full3.log" 2>&1; rc=$?
[ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -qE "cannot write metrics file $FULL/m.jsonl: ($NOSPACE)" "$TMP/full3.log" \
    && ok "metrics on a full disk stop the run, naming the file" \
    || { notok "metrics on a full disk (exit $rc)"; tail -3 "$TMP/full3.log" | sed 's/^/# /'; }
rm -f "$FULL/fill"
expect_fail "--metrics /dev/full stops the run" "cannot write metrics file /dev/full: No space left" \
    $T $small --steps 2 --metrics /dev/full

# ---- the checkpoint folder is checked (and made) before training starts
touch "$TMP/afile"
out=$($T $small --steps 2 --ckpt-dir "$TMP/afile/ck" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "checkpoint directory $TMP/afile/ck" <<<"$out" && ! grep -q '^step ' <<<"$out" \
    && ok "an unusable --ckpt-dir is refused before the first step" \
    || { notok "unusable --ckpt-dir (exit $rc)"; echo "$out" | tail -3 | sed 's/^/# /'; }
expect_ok "--ckpt-dir with missing parents is made" $T $small --steps 4 --ckpt-dir "$TMP/a/b/ck" --test false
[ -d "$TMP/a/b/ck/step_00000004" ] && ok "its checkpoint is there" || notok "its checkpoint is there"

# ---- a corrupt newest checkpoint: refused by default, set aside on request
$T $small --steps 8 --ckpt-dir "$TMP/ck" --test false > /dev/null 2>&1 || notok "checkpointed run"
printf 'x' | dd of="$TMP/ck/step_00000008/dense.h5" bs=1 seek=3000 conv=notrunc status=none
expect_fail "--resume latest names a corrupt newest checkpoint and stops" \
    "step_00000008.*checksum.*--resume-fallback" $T $small --steps 12 --ckpt-dir "$TMP/ck" --resume latest
[ -d "$TMP/ck/step_00000008" ] && ok "the corrupt checkpoint is left as it was" || notok "corrupt checkpoint left"
out=$($T $small --steps 12 --ckpt-dir "$TMP/ck" --resume latest --resume-fallback --test false 2>&1)
grep -q "resumed from $TMP/ck/step_00000004" <<<"$out" && grep -q "warning: .*step_00000008 fails verification" <<<"$out" \
    && ok "--resume-fallback says which failed and resumes from the newest intact one" \
    || { notok "--resume-fallback"; echo "$out" | head -5 | sed 's/^/# /'; }
[ -d "$TMP/ck/step_00000008.corrupt" ] && [ -d "$TMP/ck/step_00000008" ] \
    && ok "the corrupt one is kept as evidence, a new step_00000008 written beside it" \
    || { notok "corrupt checkpoint kept"; ls "$TMP/ck" | sed 's/^/# /'; }

# ---- resume refuses what would change the model or its trajectory
rs="--steps 20 --ckpt-dir $TMP/ck --resume latest"
expect_fail "resume on other data (same item count) refused" "other data .*fingerprint" \
    $T ${small/$TMP\/s.h5/$TMP/other.h5} $rs
expect_fail "resume with another --seed refused" "--seed is 7 here but 42" $T $small $rs --seed 7
expect_fail "resume with another --dropout refused" "--dropout is 0.1 here" $T $small $rs --dropout 0.1
expect_fail "resume with --mask-history refused" "--mask-history is true here" $T $small $rs --mask-history
out=$($T $small $rs --lr 2e-3 --schedule cosine --warmup 2 --test false 2>&1)
grep -q "resume: --lr is 0.002 here, 0.001 in the checkpoint" <<<"$out" && grep -q "resume: --schedule is cosine" <<<"$out" \
    && grep -q "resume: --warmup is 2" <<<"$out" && ok "resume with another --lr, --schedule, --warmup goes on and says so" \
    || { notok "resume with another --lr/--schedule/--warmup"; echo "$out" | grep -E "resume|error" | sed 's/^/# /'; }
out=$($T $small --steps 4 --ckpt-dir "$TMP/ck" --resume latest 2>&1)
grep -q "nothing to train" <<<"$out" && ! grep -q '^step ' <<<"$out" && ok "--steps below the checkpoint's step says nothing was trained" \
    || { notok "--steps below the checkpoint's step"; echo "$out" | tail -3 | sed 's/^/# /'; }
ecommon="--model elastic --chunk 4 --experts 2 --mem-slots 64 --mem-topk 4 $small"
$T $ecommon --steps 2 --ckpt-dir "$TMP/eck" --test false > /dev/null 2>&1 || notok "elastic checkpoint"
ers="--steps 4 --ckpt-dir $TMP/eck --resume latest"
expect_fail "elastic: resume with --no-memory refused" "--no-memory is true here" $T $ecommon $ers --no-memory
expect_fail "elastic: resume with another --mem-topk refused" "--mem-topk is 2 here but 4" $T $ecommon $ers --mem-topk 2
expect_fail "elastic: resume with another --chunk refused" "--chunk is 8 here but 4" $T $ecommon $ers --chunk 8
rcommon="--model recgrela --chunk 4 $small"
$T $rcommon --steps 2 --ckpt-dir "$TMP/rck" --test false > /dev/null 2>&1 || notok "recgrela checkpoint"
rrs="--steps 4 --ckpt-dir $TMP/rck --resume latest"
expect_fail "recgrela: resume with --no-gate refused" "--no-gate is true here" $T $rcommon $rrs --no-gate
expect_fail "recgrela: resume with --no-local refused" "--no-local is true here" $T $rcommon $rrs --no-local
expect_ok "sasrec: a model's irrelevant option (--chunk) may change" $T $small --steps 8 --ckpt-dir "$TMP/ck" --resume latest --chunk 8 --test false

# ---- --keep-last keeps the newest N
$T $small --steps 12 --ckpt-every 2 --keep-last 2 --ckpt-dir "$TMP/kck" --test false > /dev/null 2>&1
[ "$(ls "$TMP/kck" | tr '\n' ' ')" = "step_00000010 step_00000012 " ] && ok "--keep-last 2 keeps the newest two" \
    || { notok "--keep-last 2"; ls "$TMP/kck" | sed 's/^/# /'; }

# ---- divergence: stopped by default, warned about on request; no nan printed
expect_fail "a diverging run stops with the loss and the bound" "training diverged at step [0-9]+ .*loss .*bound" \
    $T $small --steps 20 --lr 1e6
out=$($T $ecommon --steps 8 --lr 1e6 --on-divergence warn 2>&1); rc=$?
[ $rc -eq 0 ] && grep -q "^WARNING: training diverged" <<<"$out" && ok "--on-divergence warn goes on, warning at each progress line" \
    || { notok "--on-divergence warn (exit $rc)"; echo "$out" | tail -3 | sed 's/^/# /'; }
grep -i "nan" <<<"$out" | grep -q . && { notok "a diverged ELASTIC prints nan"; grep -i nan <<<"$out" | head -2 | sed 's/^/# /'; } \
    || ok "a diverged ELASTIC's diagnostics say so instead of printing nan"

# ---- option values: the message says what is wanted
expect_fail "--seed -1: a non-negative integer" "bad value '-1' for --seed \(a non-negative integer\)" $T $small --seed -1
expect_fail "a bad boolean is named as such" "bad value 'maybe' for --mask-history \(true or false\)" $T $small --mask-history maybe

# ---- the ETA is a bound when early stopping may end the run sooner
e1=$($T $small --steps 4 --test false 2>&1 | grep -c '^step .*| eta <=')
e0=$($T $small --steps 4 --test false --patience 0 2>&1 | grep -c '^step .*| eta <=')
[ "$e1" -gt 0 ] && [ "$e0" = 0 ] && ok "the ETA says <= only when early stopping is on" \
    || notok "ETA bound marks ($e1 with --patience, $e0 without)"

# ---- the metrics records: wall time, the validation's epoch, the tested model's step
$T $small --steps 8 --metrics "$TMP/m.jsonl" > /dev/null 2>&1
grep '"type":"train"' "$TMP/m.jsonl" | grep -q '"time":1[0-9]\{9\}' && ok "metrics records carry the wall time" \
    || notok "metrics records carry the wall time"
grep '"type":"valid"' "$TMP/m.jsonl" | head -1 | grep -q '"epoch":' && ok "validation records carry the epoch" \
    || notok "validation records carry the epoch"
best=$(grep '"type":"valid"' "$TMP/m.jsonl" | sed -E 's/.*"step":([0-9]+).*"ndcg@10":([0-9.]+).*/\2 \1/' | sort -k1,1gr -k2,2n | head -1 | cut -d' ' -f2)
grep '"type":"test"' "$TMP/m.jsonl" | head -1 | grep -q "\"step\":$best,.*\"last_step\":8" \
    && ok "the test record carries the tested model's step ($best) and the last step" \
    || { notok "test record's step (best $best)"; grep '"type":"test"' "$TMP/m.jsonl" | head -1 | cut -c1-120 | sed 's/^/# /'; }
