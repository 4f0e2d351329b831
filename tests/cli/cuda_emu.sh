#!/usr/bin/env bash
# Whole training steps with --device cuda through the CUDA emulator
# (tests/cuda_emu: the backend's kernels, their launches and copies run on the
# CPU): every model trains to the same losses and validation numbers as on the
# CPU, so what the trainer hands the backend (device memory only, in the right
# order) is checked on a machine without a GPU; and so is comm's nccl backend
# at 2 ranks, over the emulator's NCCL (tests/cuda_emu/nccl.h: MPI beneath).
# The GPU itself is checked by jobs/gpu_check.sh.
. "$(dirname "$0")/lib.sh"
plan 21
EMU=${CUDA_EMU:-build/emu/libelastic_cuda_emu.so}
if [ ! -e "$EMU" ]; then
    for i in $(seq 20); do skip "the CUDA emulator is not built ($EMU)"; done
    exit 0
fi
export ELASTIC_CUDA_LIB=$(realpath "$EMU")
T="$BIN/elastic_train --threads 2"
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 300 --items 200 --clusters 8 --min-len 5 \
    --max-len 80 --seed 5 >/dev/null || { notok "synthetic dataset"; exit 1; }
common="--data $TMP/s.h5 --L 40 --batch 8 --d 32 --steps 4 --log-every 1 --eval-every 4 --eval-users 50 --test false --dropout 0.2 --precision fp32"
# the numbers of a log: losses and gradient norms per step, validation metrics
nums() { grep -E '^(step |valid )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//; s/ \| epoch [^|]*//' | grep -oE '[0-9]+\.[0-9]+'; }
same() {  # same NAME A B: every number within TOL (1e-4) relative (the exp of another libm call order)
    paste <(nums "$2") <(nums "$3") | awk -v n="$1" -v tol="${TOL:-1e-4}" '
        { k++; a = $1 + 0; b = $2 + 0; e = a - b; if (e < 0) e = -e; m = (a < 0 ? -a : a);
          if (e > tol * (m > 1e-3 ? m : 1e-3)) { bad++; if (bad < 3) print "# " n ": " $1 " against " $2 } }
        END { if (k < 5 || bad) { print "not ok - " n " (" k " numbers, " bad + 0 " differ)"; exit 1 }
              print "ok - " n " (" k " numbers agree)" }'
}
for model in "sasrec --attention fused" "sasrec --attention plain" "recgrela --chunk 8" \
    "elastic --no-memory --chunk 8 --experts 4" "elastic --chunk 8 --experts 4 --mem-slots 4096"; do
    tag=$(echo "$model" | tr -d ' -')
    $T $common --model $model --device cpu > "$TMP/$tag.cpu" 2>&1
    $T $common --model $model --device cuda > "$TMP/$tag.cuda" 2>&1 \
        || { notok "$model through the emulator: $(grep -m1 -E 'error|cuda_emu' "$TMP/$tag.cuda")"; continue; }
    same "$model: CPU and emulated CUDA steps and validation" "$TMP/$tag.cpu" "$TMP/$tag.cuda"
done
# bf16 matrix products (the emulator rounds their inputs as the tensor cores
# do): SASRec's steps and validation within 2% of the CPU's fp32
$T $common --model sasrec --device cuda --precision bf16 > "$TMP/bf16.cuda" 2>&1
TOL=2e-2 same "sasrec --precision bf16: within 2% of the CPU's fp32" "$TMP/sasrecattentionfused.cpu" "$TMP/bf16.cuda"
diff <(nums "$TMP/sasrecattentionfused.cuda") <(nums "$TMP/bf16.cuda") > /dev/null \
    && notok "--precision bf16 changed nothing" || ok "--precision bf16 rounds the products: not fp32's numbers"
# the default precision, TF32: the fused attention on the tensor cores (the
# emulator's wmma rounds to TF32) and the loss in half logits blocks; SASRec's
# steps and validation within 0.1% of the CPU's fp32
$T $common --model sasrec --device cuda --precision tf32 > "$TMP/tf32.cuda" 2>&1
TOL=1e-3 same "sasrec --precision tf32 (tensor cores, half logits): within 0.1% of the CPU's fp32" \
    "$TMP/sasrecattentionfused.cpu" "$TMP/tf32.cuda"
# the loss without a logits block (ELASTIC_CE=fused: half tiles on the tensor
# cores, the logits made where they are used): the same bound
ELASTIC_CE=fused $T $common --model sasrec --device cuda --precision tf32 > "$TMP/cef.cuda" 2>&1
TOL=1e-3 same "sasrec ELASTIC_CE=fused (the loss's logits never stored): within 0.1% of the CPU's fp32" \
    "$TMP/sasrecattentionfused.cpu" "$TMP/cef.cuda"
# every kernel of a step with a block's threads run last index first
# (CUDA_EMU_ORDER=reverse: a read of what another thread writes with no
# barrier between gives other numbers): ELASTIC with its bank, RecGRELA, and
# SASRec at TF32 (the tensor-core attention, half logits), the same numbers
# as in index order
rev=""
for c in "elasticchunk8experts4memslots4096:--model elastic --chunk 8 --experts 4 --mem-slots 4096" \
    "recgrelachunk8:--model recgrela --chunk 8" "tf32:--model sasrec --precision tf32"; do
    want=${c%%:*}; [ "$want" = tf32 ] && want_log="$TMP/tf32.cuda" || want_log="$TMP/$want.cuda"
    CUDA_EMU_ORDER=reverse $T $common ${c#*:} --device cuda > "$TMP/rev_$want.log" 2>&1
    diff <(nums "$want_log") <(nums "$TMP/rev_$want.log") > /dev/null && [ -n "$(nums "$want_log")" ] \
        || rev="$rev $want"
done
[ -z "$rev" ] && ok "ELASTIC, RecGRELA and SASRec (TF32) steps with each block's threads in reverse: the same numbers" \
    || notok "threads in reverse change the numbers of:$rev"
# the bank's rows and moments through a checkpoint and back onto the device
ck="--model elastic --chunk 8 --experts 4 --mem-slots 4096 --device cuda"
$T $common $ck --steps 2 --ckpt-dir "$TMP/ck" --ckpt-every 2 > "$TMP/half.log" 2>&1
$T $common $ck --ckpt-dir "$TMP/ck" --resume latest > "$TMP/resumed.log" 2>&1
# exactly: a resumed run repeats the bits (the emulator runs in a fixed order)
later() { grep -E '^(step [34]/|valid )' "$1" | sed -E 's/ \| [0-9.]+ tok\/s.*//'; }
if diff <(later "$TMP/elasticchunk8experts4memslots4096.cuda") <(later "$TMP/resumed.log") >/dev/null &&
    [ "$(later "$TMP/resumed.log" | wc -l)" -eq 3 ]; then
    ok "elastic with its bank: resumed on the device, the same bits as never stopped"
else
    notok "elastic with its bank: resumed on the device, the same bits as never stopped"
    diff <(later "$TMP/elasticchunk8experts4memslots4096.cuda") <(later "$TMP/resumed.log") | head -4 | sed 's/^/# /'
fi
# two ranks, each on its (emulated) GPU: the dense gradients' all-reduce and
# the bank's exchange go through host copies; the numbers are one rank's
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# (--comm auto keeps mpi: the two ranks share one GPU, which NCCL refuses);
# then over NCCL (--comm nccl): the all-reduces on device memory, the bank's
# rows sent device to device in grouped sends and receives
for comm in auto nccl; do
    for ov in true false; do
        if command -v mpirun >/dev/null; then
            timeout -k 5 120 mpirun --oversubscribe -np 2 -x ELASTIC_CUDA_LIB $BIN/elastic_train \
                --threads 1 $common $ck --allreduce-overlap $ov --comm $comm > "$TMP/np2$comm$ov.log" 2>&1
            same "elastic with its bank: 2 ranks on the device, --comm $comm (overlap $ov), give the CPU's numbers" \
                "$TMP/elasticchunk8experts4memslots4096.cpu" "$TMP/np2$comm$ov.log"
        else
            skip "2 ranks on the device (--comm $comm, overlap $ov): no mpirun"
        fi
    done
done
if command -v mpirun >/dev/null; then
    grep -q "^comm: mpi (device memory through host copies), 2 ranks" "$TMP/np2autotrue.log" &&
        grep -q "^comm: nccl, 2 ranks" "$TMP/np2nccltrue.log" \
        && ok "--comm auto takes mpi for ranks sharing a GPU; --comm nccl takes NCCL" \
        || notok "the comm backends reported"
else
    skip "comm backends: no mpirun"
fi
expect_fail "--comm nccl on the CPU is refused by name" "--comm nccl needs --device cuda" \
    $T $common --model sasrec --steps 1 --comm nccl
$T $common --model sasrec --device cuda --steps 1 --eval-every 0 --metrics "$TMP/m.jsonl" \
    > /dev/null 2>&1
grep -q "cuda:0 (CPU emulation" "$TMP/sasrecattentionfused.cuda" &&
    grep -qE '^done: .*, device peak [0-9]+ MB$' "$TMP/sasrecattentionfused.cuda" &&
    grep '"type":"train"' "$TMP/m.jsonl" | grep -qE '"device_peak_mb":[0-9.]+' \
    && ok "the trainer reports the emulated device, and its peak memory (at the end, in the metrics)" \
    || notok "the trainer reports the emulated device"
# What a step waits for on the host (the emulator counts synchronisations and
# cudaFree, which waits on a GPU): the step's one read of its sums at the end,
# plus, with the bank on one rank (read in place, no exchange), the push's
# distinct rows (they size its sums), and with --comm-stats each lookup's
# (2 layers: 2 more). Steps 3 to 6 (the first ones allocate): the difference
# of a 6-step and a 2-step run, over 4.
waits() {  # waits MODEL...: host waits per step
    local a b
    a=$(ELASTIC_EMU_WAITS=1 $T $common --model "$@" --steps 2 --log-every 100 --eval-every 0 \
        --device cuda 2>&1 | sed -n 's/^cuda_emu: \([0-9]*\) host waits$/\1/p')
    b=$(ELASTIC_EMU_WAITS=1 $T $common --model "$@" --steps 6 --log-every 100 --eval-every 0 \
        --device cuda 2>&1 | sed -n 's/^cuda_emu: \([0-9]*\) host waits$/\1/p')
    [ -n "$a" ] && [ -n "$b" ] && echo $(((b - a) / 4)) $(((b - a) % 4))
}
w=$(waits sasrec)
[ "$w" = "1 0" ] && ok "a SASRec step waits for the device once, at its end" \
    || notok "a SASRec step waits for the device once (per step, remainder: ${w:-none})"
w=$(waits elastic --chunk 8 --experts 4 --mem-slots 4096)
[ "$w" = "2 0" ] && ok "an ELASTIC step waits once, and for its bank's distinct rows (one)" \
    || notok "an ELASTIC step's waits: 1 + the bank's 1 (per step, remainder: ${w:-none})"
w=$(waits elastic --chunk 8 --experts 4 --mem-slots 4096 --comm-stats)
[ "$w" = "4 0" ] && ok "with --comm-stats, 2 more: each lookup's distinct rows (2 layers)" \
    || notok "an ELASTIC step's waits with --comm-stats: 4 (per step, remainder: ${w:-none})"
