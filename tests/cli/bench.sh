#!/usr/bin/env bash
# elastic_bench's other modes: --infer (one user's request by length),
# --stream (the streamed state of the models that have one; SASRec none),
# --sgemm (the device's peaks: on the emulated CUDA device, bf16, TF32 and
# fp32 products and a copy), and --profile's GFLOP/s for the calls that count
# their operations.
. "$(dirname "$0")/lib.sh"
plan 4
B=$BIN/elastic_bench
$B --infer 1 --L 32,64 --models sasrec-fused,elastic,recgrela --items 200 --d 32 --steps 3 \
    --threads 1 --json "$TMP/infer.jsonl" > "$TMP/infer.txt" 2>&1
n=$(grep -c '"infer":' "$TMP/infer.jsonl" 2>/dev/null)
bad=$(grep '"infer":' "$TMP/infer.jsonl" 2>/dev/null | grep -cE '"median_ms":(0\.0+|-)[,}]')
[ "$n" = 6 ] && [ "$bad" = 0 ] && ok "--infer: a request timed for 3 models at 2 lengths" \
    || { notok "--infer ($n lines)"; tail -3 "$TMP/infer.txt" | sed 's/^/# /'; }
$B --stream 64 --models sasrec-fused,elastic,recgrela --items 200 --d 32 --chunk 16 --threads 1 \
    --json "$TMP/stream.jsonl" > "$TMP/stream.txt" 2>&1
[ "$(grep -o '"stream":"[a-z]*"' "$TMP/stream.jsonl" | tr '\n' ' ')" = '"stream":"elastic" "stream":"recgrela" ' ] \
    && ok "--stream: ELASTIC and RecGRELA measured, SASRec (no state) left out" \
    || { notok "--stream"; tail -3 "$TMP/stream.txt" | sed 's/^/# /'; }
EMU=${CUDA_EMU:-build/emu/libelastic_cuda_emu.so}
if [ -e "$EMU" ]; then
    export ELASTIC_CUDA_LIB=$(realpath "$EMU")
    out=$($B --device cuda --sgemm 32 --steps 1 2>&1)
    grep -q '^bf16 gemm 32' <<<"$out" && grep -q '^tf32 gemm 32' <<<"$out" && grep -q '^fp32 gemm 32' <<<"$out" &&
        grep -qE '^copy .* GB/s' <<<"$out" && ok "--sgemm on CUDA: bf16, TF32 and fp32 products and a copy" \
        || { notok "--sgemm on CUDA"; echo "$out" | tail -3 | sed 's/^/# /'; }
    out=$($B --device cuda --models sasrec-fused --L 16 --batch 2 --items 100 --d 32 --steps 1 --profile 2>&1)
    awk '$1 == "matmul_forward" && NF == 5 && $5 + 0 > 0 { f = 1 } END { exit !f }' <<<"$out" \
        && ok "--profile: GFLOP/s on the matrix products' line" \
        || { notok "--profile GFLOP/s"; echo "$out" | grep -E 'call|matmul' | sed 's/^/# /'; }
else
    for i in 1 2; do skip "the CUDA emulator is not built ($EMU)"; done
fi
