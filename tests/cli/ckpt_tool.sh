#!/usr/bin/env bash
# elastic_ckpt: info and verify on a trainer's checkpoint; reshard round trip
# 1 -> 2 -> 4 -> 1 with the bank's rows and moments bit-identical, verify on
# each; a resharded checkpoint resumed at its new rank count goes on as the
# original run; export; damaged checkpoints (a flipped byte, a missing shard,
# a manifest of another rank count, a shard of another run) refused naming
# the file.
. "$(dirname "$0")/lib.sh"
plan 22
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=$BIN/elastic_ckpt
T="$BIN/elastic_train --threads 1"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 600 --items 300 --clusters 10 --min-len 5 \
    --max-len 60 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
ck="--model elastic --chunk 8 --experts 3 --mem-slots 256 --mem-topk 4 --data $TMP/s.h5 --L 20 --batch 36 --d 32 --log-every 5 --eval-every 10 --eval-users 150 --dropout 0.2"
$T $ck --steps 10 --ckpt-dir "$TMP/one" > /dev/null 2>&1 || notok "a 1-rank checkpoint"
one="$TMP/one/step_00000010"

expect_ok "elastic_ckpt --help" $C --help
expect_fail "an unknown command is named" "unknown command 'bogus'" $C bogus "$one"
out=$($C info "$TMP/one" 2>&1)
grep -q "model elastic, step 10 (epoch 1, next batch 10), written by 1 rank" <<<"$out" &&
    grep -q "memory bank: 256 rows x 32" <<<"$out" && grep -q "mem-slots = 256" <<<"$out" &&
    grep -q "step_00000010" <<<"$out" \
    && ok "info on a --ckpt-dir: its newest checkpoint, model, step, ranks, bank, config" \
    || { notok "info"; echo "$out" | head -5 | sed 's/^/# /'; }
expect_ok "verify passes on the trainer's checkpoint" $C verify "$one"

# 1 -> 2 -> 4 -> 1: every step verified, the end bit-identical to the start
$C reshard "$one" --ranks 2 -o "$TMP/r2" > /dev/null 2>&1 && $C verify "$TMP/r2" > /dev/null 2>&1 \
    && ok "reshard to 2 ranks, verified" || notok "reshard to 2 ranks"
grep -c '^bank-0000[01]-of-00002.h5 ' "$TMP/r2/MANIFEST" | grep -q 2 \
    && ok "its manifest lists one shard per rank" || notok "r2 manifest"
$C reshard "$TMP/r2" --ranks 4 -o "$TMP/r4" > /dev/null 2>&1 && $C verify "$TMP/r4" > /dev/null 2>&1 \
    && ok "reshard 2 -> 4, verified" || notok "reshard 2 -> 4"
$C merge "$TMP/r4" -o "$TMP/r1" > /dev/null 2>&1 && $C verify "$TMP/r1" > /dev/null 2>&1 \
    && ok "merge 4 -> 1, verified" || notok "merge 4 -> 1"
if h5diff "$one/bank-00000-of-00001.h5" "$TMP/r1/bank-00000-of-00001.h5" >/dev/null 2>&1 &&
    h5diff "$one/dense.h5" "$TMP/r1/dense.h5" >/dev/null 2>&1; then
    ok "1 -> 2 -> 4 -> 1: the bank's rows, moments and attributes bit-identical, dense.h5 too"
else notok "round trip differs"; h5diff "$one/bank-00000-of-00001.h5" "$TMP/r1/bank-00000-of-00001.h5" 2>&1 | head -3 | sed 's/^/# /'; fi

# resharded for 3 ranks, resumed there: the uninterrupted run's numbers
if command -v mpirun >/dev/null; then
    mpi="timeout -k 5 120 mpirun --oversubscribe -np"
    $T $ck --steps 20 > "$TMP/full.log" 2>&1
    $C reshard "$one" --ranks 3 -o "$TMP/r3" > /dev/null 2>&1
    $mpi 3 $T $ck --steps 20 --resume "$TMP/r3" > "$TMP/r3.log" 2>&1
    pick() { grep -E '^(step (15|20)/|valid +step 20 )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//'; }
    if [ "$(pick "$TMP/r3.log" | grep -c .)" = 3 ] && diff <(pick "$TMP/full.log") <(pick "$TMP/r3.log") >/dev/null; then
        ok "resharded to 3 and resumed on 3 ranks: the same losses and validation as one rank straight"
    else notok "resharded resume differs"; diff <(pick "$TMP/full.log") <(pick "$TMP/r3.log") | head -4 | sed 's/^/# /'; fi
else
    skip "resume after reshard: no mpirun"
fi

# export: the item table and the bank in one file
$C export "$TMP/r4" -o "$TMP/e.h5" > /dev/null 2>&1
ls=$(h5ls "$TMP/e.h5" 2>&1)
grep -qE '^bank +Dataset \{256, 32\}' <<<"$ls" && grep -qE '^item_embeddings +Dataset \{300, 32\}' <<<"$ls" \
    && ok "export: item_embeddings [300, 32] and the bank [256, 32] in one HDF5 file" \
    || { notok "export"; echo "$ls" | sed 's/^/# /'; }
$C export "$one" -o "$TMP/e1.h5" > /dev/null 2>&1
h5diff "$TMP/e.h5" "$TMP/e1.h5" > /dev/null 2>&1 && ok "the export is the same from 4 shards as from 1" \
    || notok "export from 4 shards differs"

# bad input and damaged checkpoints, each named
expect_fail "reshard never replaces an existing OUT" "r2 exists" $C reshard "$one" --ranks 2 -o "$TMP/r2"
expect_fail "a bad --ranks is refused" "bad --ranks '0'" $C reshard "$one" --ranks 0 -o "$TMP/x"
cp -r "$TMP/r2" "$TMP/flip"
printf 'x' | dd of="$TMP/flip/bank-00001-of-00002.h5" bs=1 seek=5000 conv=notrunc status=none
expect_fail "verify names a shard with a flipped byte" "bank-00001-of-00002\.h5: FNV-1a checksum" $C verify "$TMP/flip"
expect_fail "reshard refuses it too, leaving nothing" "bank-00001-of-00002\.h5: FNV-1a checksum" $C reshard "$TMP/flip" --ranks 3 -o "$TMP/flip3"
[ ! -e "$TMP/flip3" ] && ! ls -d "$TMP"/flip3.tmp.* >/dev/null 2>&1 && ok "no output, no temporary folder" || notok "reshard left files"
cp -r "$TMP/r2" "$TMP/miss" && rm "$TMP/miss/bank-00000-of-00002.h5"
expect_fail "verify names a missing shard" "bank-00000-of-00002\.h5: missing" $C verify "$TMP/miss"
cp -r "$TMP/r2" "$TMP/world" && grep -v '^bank-00001' "$TMP/r2/MANIFEST" > "$TMP/world/MANIFEST"
expect_fail "a manifest of another rank count is refused" "lists 1 bank shards, dense.h5 says 2 ranks" $C verify "$TMP/world"
expect_fail "resuming from it names the shard the manifest lacks" "bank-00001-of-00002\.h5: not in the checkpoint's manifest" \
    $T $ck --steps 20 --resume "$TMP/world"
# a shard of another run (another seed, the same shapes) copied in
$T $ck --steps 10 --seed 9 --ckpt-dir "$TMP/other" > /dev/null 2>&1
$C reshard "$TMP/other/step_00000010" --ranks 2 -o "$TMP/other2" > /dev/null 2>&1
cp -r "$TMP/r2" "$TMP/mix" && cp "$TMP/other2/bank-00001-of-00002.h5" "$TMP/mix/"
expect_fail "verify names a shard of another run" "mix/bank-00001-of-00002\.h5: FNV-1a checksum" $C verify "$TMP/mix"
expect_fail "resuming from it names that shard" "mix/bank-00001-of-00002\.h5: FNV-1a checksum" \
    $T $ck --steps 20 --resume "$TMP/mix"
