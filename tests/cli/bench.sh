#!/usr/bin/env bash
# elastic_bench's other modes: --infer (one user's request by length),
# --stream (the streamed state of the models that have one; SASRec none),
# --sgemm (the device's peaks: on the emulated CUDA device, bf16, TF32 and
# fp32 products and a copy), --profile's GFLOP/s for the calls that count
# their operations, and --recompute all (SASRec's FFN rebuilt too, for the
# memory at equal settings; 1 leaves SASRec as it is), recorded in the JSON,
# and --ce-block (the loss's block rows, for tuning it on a GPU); --infer
# --profile on the emulated device.
. "$(dirname "$0")/lib.sh"
plan 11
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
for r in 1 all; do
    $B --models sasrec-fused,elastic --L 128 --batch 4 --items 200 --d 32 --steps 1 --threads 1 \
        --recompute $r --json "$TMP/rc_$r.jsonl" > /dev/null 2>&1
done
rc() { grep "\"model\":\"$2\"" "$TMP/rc_$1.jsonl" | sed -nE 's/.*"recompute":([01]).*/\1/p'; }
act() { grep "\"model\":\"$2\"" "$TMP/rc_$1.jsonl" | sed -nE 's/.*"act_mb":([0-9.]+).*/\1/p'; }
[ "$(rc 1 sasrec-fused)$(rc 1 elastic)$(rc all sasrec-fused)$(rc all elastic)" = 0111 ] &&
    awk -v a="$(act all sasrec-fused)" -v b="$(act 1 sasrec-fused)" 'BEGIN { exit !(a + 0 < b + 0) }' \
    && ok "--recompute 1 leaves SASRec as it is, all rebuilds its FFN too (less memory), as the JSON says" \
    || notok "--recompute all ($(rc 1 sasrec-fused)$(rc 1 elastic)$(rc all sasrec-fused)$(rc all elastic); act $(act 1 sasrec-fused) -> $(act all sasrec-fused))"
for cb in 0 8 128; do
    $B --models sasrec-fused --L 64 --batch 2 --items 20000 --d 32 --steps 1 --threads 1 \
        --ce-block $cb --json "$TMP/cb.jsonl" > "$TMP/cb.txt" 2>&1
done
dev() { grep "\"ce_block\":$1}" "$TMP/cb.jsonl" | sed -nE 's/.*"dev_peak_mb":([0-9.]+).*/\1/p'; }
[ "$(grep -c '"ok":true' "$TMP/cb.jsonl" 2>/dev/null)" = 3 ] && ! $B --ce-block -1 > /dev/null 2>&1 &&
    awk -v a="$(dev 8)" -v b="$(dev 128)" 'BEGIN { exit !(a + 0 > 0 && a + 0 < b + 0) }' \
    && ok "--ce-block: blocks of 8 rows take less memory than of 128 (20000 items), recorded; -1 refused" \
    || { notok "--ce-block (dev MB $(dev 8) / $(dev 128))"; tail -3 "$TMP/cb.txt" | sed 's/^/# /'; }
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
    # the loss's parts under the table, each timed, none beyond the loss's own line
    awk '$1 == "crossentropy_tied_into" { ce = $3 } /^ *loss: / { n++; s += $(NF - 1) }
         END { exit !(n == 5 && s > 0 && s <= ce * 1.001) }' <<<"$out" \
        && ok "--profile: the loss's five parts, within its line" \
        || { notok "--profile: the loss's parts"; echo "$out" | grep -E 'crossentropy|loss:' | sed 's/^/# /'; }
    # the products' parts: bias and product forward, dinp, dw and bias sums backward
    awk '$1 == "matmul_forward" { f = $3 } $1 == "matmul_backward" { b = $3 }
         /^ *matmul: / { nf++; sf += $(NF - 1) } /^ *matmul backward: / { nb++; sb += $(NF - 1) }
         END { exit !(nf == 2 && nb == 3 && sf > 0 && sf <= f * 1.001 && sb > 0 && sb <= b * 1.001) }' \
        <<<"$out" && ok "--profile: the products' parts, within their lines" \
        || { notok "--profile: the products' parts"; echo "$out" | grep -E 'matmul' | sed 's/^/# /'; }
    # the emulator's census: every kernel of the request with its launches
    out=$(CUDA_EMU_CENSUS=1 $B --device cuda --infer 1 --models recgrela --L 32 --items 100 --d 32 \
        --steps 1 2>&1)
    grep -q '^cuda_emu census' <<<"$out" && awk '$1 == "k_la_out" && $2 == 4 { f = 1 } END { exit !f }' <<<"$out" \
        && ok "CUDA_EMU_CENSUS: the kernels of two requests, each with its launches" \
        || { notok "CUDA_EMU_CENSUS"; echo "$out" | head -8 | sed 's/^/# /'; }
    out=$($B --device cuda --infer 1 --models elastic --L 64 --items 100 --d 32 --chunk 16 --steps 2 \
        --profile 2>&1)
    grep -q '^elastic L=64, per request' <<<"$out" && grep -qE '^  interest_aggregate_forward ' <<<"$out" \
        && ok "--infer --profile: each call's share of a request" \
        || { notok "--infer --profile"; echo "$out" | tail -5 | sed 's/^/# /'; }
else
    for i in 1 2 3 4 5 6; do skip "the CUDA emulator is not built ($EMU)"; done
fi
# jobs/ratios.py: gpu_check's table, each elastic configuration against the
# peers of its own model and length (an elastic_bench line without impl left out)
if command -v python3 > /dev/null; then
    cat > "$TMP/r.jsonl" <<'EOF2'
{"impl":"elastic","model":"sasrec","L":256,"tokens_per_s":3000,"device_peak_mb":300}
{"impl":"torch","model":"sasrec","L":256,"tokens_per_s":1000,"gpu_peak_mib":8000}
{"impl":"torch compile","model":"sasrec","L":256,"tokens_per_s":2000,"gpu_peak_mib":3000}
{"impl":"torch compile","model":"sasrec","L":4096,"tokens_per_s":500}
{"model":"sasrec-fused","L":256,"tokens_per_s":9999}
EOF2
    out=$(python3 jobs/ratios.py "$TMP/r.jsonl" 2>&1)
    grep -q '^| sasrec | 256 | elastic | 3,000 | 3.00 | 1.50 | 300 |$' <<<"$out" &&
        ! grep -q '9,999' <<<"$out" && ok "jobs/ratios.py: x eager and x compile against the same run's peers" \
        || { notok "jobs/ratios.py"; echo "$out" | sed 's/^/# /'; }
else
    skip "jobs/ratios.py: no python3"
fi
