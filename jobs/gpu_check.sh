#!/usr/bin/env bash
# The one command for a GPU node (../shared/GPU.md): finds or unpacks the
# dependencies (jobs/offline-deps.sh: .debs carried with the project), builds
# with CUDA for this GPU, runs every CUDA parity test and the GPU benchmark
# (the PyTorch peers on the same GPU), and writes under OUT:
#   report.md     what ran, on which card, with every test line and timing
#   test_cuda.tap the parity tests' own output
#   bench.jsonl   one JSON line per benchmark configuration
#   build.log     the build (and the other logs; with BUNDLE=1 all of them in
#                 logs.tgz, see below)
# Meant to finish within 8 minutes; each part has its own time limit.
#   jobs/gpu_check.sh OUT          (default runs/gpu_check)
# Carry .debs to the node (jobs/offline-deps.sh fetch: 31 MB); .whl (h5py, 19 MB) only where
# the node's Python lacks h5py (the PyTorch peer reads the data with it).
# Environment: CUDA_ARCH (default sm_90), DEP (an unpacked prefix to use),
# BENCH_L (elastic_bench's lengths, default 256,1024,4096), INFER_L (the
# inference lengths, default 1024,4096,16384), TORCH_MODELS and TORCH_L (the
# PyTorch comparison's models and lengths, default "sasrec elastic recgrela"
# and "256 1024 4096 16384", as far as the time budget goes), BENCH_BUDGET (seconds after which no new comparison
# starts, default 380), HARD_END (by when every PyTorch run must end,
# default 470: the whole check stays under 8 minutes), PARTS (which parts run,
# default "tests steps bench profile peaks infer torch": a rerun with little
# device time left names the ones it needs; "torchprof", never by default,
# adds torch.profiler's view of torch.compile's SASRec step, TORCHPROF_L
# "4096 256"), STEP_CASES (the whole-step cases,
# default every one: "fused plain recgrela nomem elastic np2 nccl bf16 tf32 cef"; np2
# and nccl compare with elastic's CPU run, bf16, tf32 and cef (tf32 with
# ELASTIC_CE=fused) with fused's: name those too).
set -uo pipefail
cd "$(dirname "$0")/.."
part() { [[ " ${PARTS:-tests steps bench profile peaks infer torch} " == *" $1 "* ]]; }
out=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
out=$(realpath "$out")
# BUNDLE=1 (for a device machine that brings back few files): the logs, the
# step logs and the synthetic data in a temporary folder, tarred into
# logs.tgz at the end without the data; only report.md, bench.jsonl,
# bench-recompute.jsonl, test_cuda.tap and logs.tgz land in OUT
work=$out
if [ "${BUNDLE:-0}" = 1 ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
fi
report="$out/report.md"
t0=$(date +%s)
say() { echo "$*" | tee -a "$report"; }
elapsed() { echo $(($(date +%s) - t0)); }
: > "$report"
say "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
say ""
say '```'
(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: none") | tee -a "$report"
nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
echo "nvcc: ${nvcc:-none} $($nvcc --version 2>/dev/null | tail -1)" | tee -a "$report"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tail -1 | tee -a "$report"
say '```'

# ---- dependencies: the system's, else the carried .debs under a prefix
dep=${DEP:-}
if [ -z "$dep" ] && ! pkg-config --exists hdf5 openblas ompi-c cmocka 2>/dev/null; then
    dep=${TMPDIR:-/tmp}/elastic-dep
    if [ ! -e "$dep/usr/include/hdf5/serial/hdf5.h" ]; then
        jobs/offline-deps.sh unpack "$dep" .debs >> "$work/build.log" 2>&1 \
            || { say "FAIL: no dependencies: neither installed nor carried in .debs (jobs/offline-deps.sh fetch)"; exit 1; }
    fi
fi
if [ -n "$dep" ]; then
    eval "$(jobs/offline-deps.sh env "$dep")"
    say "dependencies: unpacked under $dep"
else
    say "dependencies: installed"
fi

# ---- build, for this machine and this GPU
b=build-gpu
jobs=$(nproc 2>/dev/null || echo 4)
timeout 240 make -j"$jobs" DEP="$dep" B=$b BINDIR=$b/bin CUDA_ARCH="${CUDA_ARCH:-sm_90}" \
    all $b/tests/test_cuda $b/tests/test_cuda_mixers $b/tests/test_cuda_graph $b/tests/test_dist \
    >> "$work/build.log" 2>&1
rc=$?
say "build: exit $rc after $(elapsed) s (log: build.log)"
[ $rc -eq 0 ] || { tail -20 "$work/build.log" | tee -a "$report"; exit 1; }
missing=$(ldd $b/bin/* $b/tests/test_cuda $b/tests/test_cuda_mixers $b/tests/test_cuda_graph $b/tests/test_dist 2>/dev/null | grep 'not found' | sort -u)
[ -z "$missing" ] || { say "FAIL: libraries the node lacks (add their packages to jobs/offline-deps.sh):"; say "$missing"; exit 1; }
say "NCCL: $(ldd $b/bin/libelastic_cuda.so 2>/dev/null | grep -o 'libnccl[^ ]* => [^ ]*' || echo 'not linked (no nccl.h at build time: --comm nccl unavailable)')"

# ---- CUDA parity tests (TAP), each in its own process (an illegal address
# kills the GPU context, and would hide every test after it) with blocking
# launches, so a kernel's fault is reported at its own launch; a test that
# dies is rerun under compute-sanitizer, which names the kernel and line
if part tests; then
export CMOCKA_MESSAGE_OUTPUT=TAP
: > "$out/test_cuda.tap"
died=""
for prog in test_cuda test_cuda_mixers test_cuda_graph; do
for t in $(grep -oE 'cmocka_unit_test\(test_[a-z0-9_]+\)' tests/$prog.c | sed 's/.*(\(.*\))/\1/'); do
    CUDA_LAUNCH_BLOCKING=1 timeout 60 $b/tests/$prog "$t" > "$work/t.log" 2>&1
    rc=$?
    cat "$work/t.log" >> "$out/test_cuda.tap"
    grep -qE '^ok ' "$work/t.log" || { died="$died $prog:$t"; grep -E '^#|error' "$work/t.log" | tail -8 | sed "s/^/  [$t] /" >> "$out/test_cuda.tap"; }
    [ $rc -eq 0 ] || grep -qE '^not ok' "$work/t.log" || echo "not ok - $t (died, exit $rc)" >> "$out/test_cuda.tap"
done
done
rm -f "$work/t.log"
pass=$(grep -cE '^ok ' "$out/test_cuda.tap"); fail=$(grep -E '^not ok ' "$out/test_cuda.tap" | grep -vc '# SKIP')
skip=$(grep -c '# SKIP' "$out/test_cuda.tap")
say ""
say "## CUDA parity tests: $pass passed, $fail failed, $skip skipped"
say '```'
grep -E '^(ok|not ok|#|  \[)' "$out/test_cuda.tap" | grep -v '^# \(device\|skipped\)' | tee -a "$report"
say '```'
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
for pt in $(echo $died | cut -d' ' -f1-3); do
    [ -n "$san" ] || break
    say "compute-sanitizer on $pt:"
    timeout 90 "$san" --print-limit 4 $b/tests/${pt%%:*} "${pt#*:}" 2>&1 | grep -E '=========|^#' | head -24 | tee -a "$report"
done
# shared-memory races in the warp-owned attention (a warp reading what
# another wrote without a barrier passes on the emulator, which runs threads in
# turn): racecheck's hazard count over its tensor-core and CUDA-core cases
if [ -n "$san" ]; then
    timeout 60 "$san" --tool racecheck --racecheck-report hazard $b/tests/test_cuda_mixers \
        test_attention_wide_heads > "$work/racecheck.log" 2>&1
    say "racecheck (test_attention_wide_heads): exit $?, $(grep -cE '(Error|Warning): Race' "$work/racecheck.log") hazards; $(grep -E 'RACECHECK SUMMARY' "$work/racecheck.log" | head -1)"
    # and the fused loss's tiles (shared by a block's warps) and warp rooms
    timeout 60 "$san" --tool racecheck --racecheck-report hazard $b/tests/test_cuda \
        test_crossentropy_fused_small > "$work/racecheck_ce.log" 2>&1
    say "racecheck (test_crossentropy_fused_small): exit $?, $(grep -cE '(Error|Warning): Race' "$work/racecheck_ce.log") hazards; $(grep -E 'RACECHECK SUMMARY' "$work/racecheck_ce.log" | head -1)"
fi
timeout 60 $b/tests/test_dist > "$work/test_dist.tap" 2>&1
rc=$?
say "CPU sanity (test_dist, one process): $(grep -cE '^ok ' "$work/test_dist.tap") passed, exit $rc"
fi


# the PyTorch peer reads the data with h5py: from the carried wheels if the
# node's Python lacks it
if ! python3 -c "import h5py" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    pyl=${TMPDIR:-/tmp}/elastic-pylib
    python3 -m pip install --quiet --no-index --no-deps --find-links .whl --target "$pyl" h5py \
        >> "$work/build.log" 2>&1 && export PYTHONPATH=$pyl${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import h5py" 2>/dev/null || say "no h5py: the PyTorch peer cannot run (jobs/offline-deps.sh fetch carries it in .whl)"

# ---- whole training steps: SASRec (fused and plain attention), RecGRELA and
# ELASTIC with and without its bank, 20 steps with dropout, CPU against CUDA
# (fp32), losses compared at every progress line; then ELASTIC on two ranks
# sharing the GPU (MPI through host copies) and on one rank over NCCL, each
# against the CPU's one
data="$work/synth.h5"
$b/bin/elastic_prep synth -o "$data" --users 4000 --items 20000 --min-len 20 --max-len 3000 \
    --seed 4 >> "$work/build.log" 2>&1
if part steps; then
say ""
say "## Whole steps, CPU against CUDA (fp32): losses at steps 1, 5, ..., 20"
say '```'
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for model in "sasrec --attention fused" "sasrec --attention plain" "recgrela --chunk 16" \
    "elastic --no-memory --chunk 16 --experts 4" "elastic --chunk 16 --experts 4" "np2" "nccl" "bf16" \
    "tf32" "cef"; do
    case "$model" in  # the case's short name, for STEP_CASES
        *fused) short=fused ;; *plain) short=plain ;; recgrela*) short=recgrela ;;
        *no-memory*) short=nomem ;; elastic*) short=elastic ;; *) short=$model ;;
    esac
    [[ " ${STEP_CASES:-fused plain recgrela nomem elastic np2 nccl bf16 tf32 cef} " == *" $short "* ]] || continue
    bound=1e-3
    if [ "$model" = bf16 ] || [ "$model" = tf32 ] || [ "$model" = cef ]; then  # against the CPU's fp32: looser bounds
        p=$model cef=""
        [ $p = cef ] && p=tf32 cef=fused  # the loss without a logits block (ELASTIC_CE=fused), at TF32
        model="sasrec --attention fused"
        common="--data $data --model $model --L 128 --batch 32 --d 64 --steps 20 --log-every 5 --eval-every 20 --eval-users 500 --test false --dropout 0.2 --precision fp32"
        tag=$p${cef:+_cef}
        cp "$work/step_sasrecattentionfused_cpu.log" "$work/step_${tag}_cpu.log"
        ELASTIC_CE=$cef timeout 120 $b/bin/elastic_train $common --device cuda --precision $p \
            > "$work/step_${tag}_cuda.log" 2>&1
        # tf32, the default: the attention on the tensor cores, the loss in half logits
        model="$model, --precision $p${cef:+, ELASTIC_CE=fused}" bound=$([ $p = bf16 ] && echo 2e-2 || echo 5e-3)
    elif [ "$model" = nccl ]; then  # comm's nccl backend at one rank (NCCL takes one rank a GPU)
        model="elastic --chunk 16 --experts 4"
        common="--data $data --model $model --L 128 --batch 32 --d 64 --steps 20 --log-every 5 --eval-every 20 --eval-users 500 --test false --dropout 0.2 --precision fp32"
        cp "$work/step_elasticchunk16experts4_cpu.log" "$work/step_nccl_cpu.log"
        timeout 150 mpirun -np 1 $b/bin/elastic_train $common --threads 4 --device cuda \
            --comm nccl > "$work/step_nccl_cuda.log" 2>&1
        grep -m1 '^comm:' "$work/step_nccl_cuda.log" | tee -a "$report"
        tag=nccl model="$model, mpirun -np 1 --comm nccl"
    elif [ "$model" = np2 ]; then
        model="elastic --chunk 16 --experts 4"
        common="--data $data --model $model --L 128 --batch 32 --d 64 --steps 20 --log-every 5 --eval-every 20 --eval-users 500 --test false --dropout 0.2 --precision fp32"
        cp "$work/step_elasticchunk16experts4_cpu.log" "$work/step_np2_cpu.log"
        timeout 150 mpirun --oversubscribe -np 2 $b/bin/elastic_train $common --threads 4 \
            --device cuda > "$work/step_np2_cuda.log" 2>&1
        tag=np2 model="$model, mpirun -np 2 on one GPU"
    else
        tag=$(echo "$model" | tr -d " -")
        common="--data $data --model $model --L 128 --batch 32 --d 64 --steps 20 --log-every 5 --eval-every 20 --eval-users 500 --test false --dropout 0.2 --precision fp32"
        timeout 120 $b/bin/elastic_train $common --device cpu > "$work/step_${tag}_cpu.log" 2>&1
        CUDA_LAUNCH_BLOCKING=1 timeout 120 $b/bin/elastic_train $common --device cuda > "$work/step_${tag}_cuda.log" 2>&1
    fi
    say "$model:"
    python3 - "$work/step_${tag}_cpu.log" "$work/step_${tag}_cuda.log" "$bound" <<'PY' 2>&1 | tee -a "$report"
import re, sys
def losses(f):
    return [float(m.group(1)) for m in re.finditer(r"^step \d+/\d+ .*?loss ([0-9.]+)", open(f).read(), re.M)]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
if not a or len(a) != len(b):
    print("FAIL: steps missing (cpu %d lines, cuda %d lines)" % (len(a), len(b)))
    print(open(sys.argv[2]).read()[-600:])
else:
    worst, bound = max(abs(x - y) / abs(x) for x, y in zip(a, b)), float(sys.argv[3])
    for x, y in zip(a, b): print("  cpu %.6f  cuda %.6f" % (x, y))
    print("  %s: worst relative difference %.2e (bound %g)" % ("PASS" if worst <= bound else "FAIL", worst, bound))
PY
done
say '```'
fi

# ---- every model's step on the GPU by length: time and device memory
if part bench; then
say ""
say "## elastic_bench on this GPU (batch 8, TF32): ms/step, tokens/s, device memory"
say '```'
timeout 150 $b/bin/elastic_bench --device cuda --models sasrec-fused,sasrec-plain,elastic,elastic-nomem,recgrela \
    --L ${BENCH_L:-256,1024,4096} --batch 8 --steps 3 --json "$out/bench.jsonl" 2>&1 | tee -a "$report"
say '```'
# ELASTIC's memory goal at 4096 (at most 10% of plain SASRec's, below fused
# SASRec's): ELASTIC and RecGRELA with --recompute 1 beside SASRec as it is,
# then every model with its FFN rebuilt too (--recompute all: equal settings)
say "At 4096 with --recompute 1 (ELASTIC, RecGRELA), then --recompute all (SASRec's FFN too):"
say '```'
for r in 1 all; do
    timeout 60 $b/bin/elastic_bench --device cuda --models elastic,recgrela,sasrec-fused --recompute $r \
        --L 4096 --batch 8 --steps 3 --json "$out/bench-recompute.jsonl" 2>&1 | grep -v '^blas:' | tail -3 | tee -a "$report"
done
say '```'
# the fused attention on the tensor cores (TF32, the default) against the
# CUDA cores (--precision fp32: every product in fp32, cuBLAS's too)
say "SASRec (fused) with --precision fp32 (the attention on the CUDA cores; above: TF32 tensor cores):"
say '```'
timeout 60 $b/bin/elastic_bench --device cuda --models sasrec-fused --precision fp32 --L 1024,4096 \
    --batch 8 --steps 3 2>&1 | grep -v '^blas:' | tail -2 | tee -a "$report"
say '```'
fi
# where a step's time goes, at the trainer's comparison shape (32K tokens, 20000 items)
if part profile; then
say ""
say "## Profile: each kernel's and copy's GPU time per step (timing events, nothing waits), batch 128 x 256"
say '```'
timeout 120 $b/bin/elastic_bench --device cuda --models sasrec-fused,sasrec-plain,recgrela,elastic --L 256 \
    --batch 128 --items 20000 --steps 5 --profile 2>&1 | grep -v '^blas:' | tee -a "$report"
say '```'
# the loss's block rows (the default blocks, up to 512 MB, stream through
# device memory 5 times; a block the L2 cache holds might not go there at all)
say ""
say "## The loss's block: fused SASRec at 128 x 256, 20000 items, by --ce-block (fp32 rows; the half path takes twice as many)"
say '```'
for cb in 0 1024 512 256; do
    timeout 30 $b/bin/elastic_bench --device cuda --models sasrec-fused --L 256 --batch 128 \
        --items 20000 --steps 5 --ce-block $cb 2>&1 | tail -1 | sed "s/^/--ce-block $cb: /" | tee -a "$report"
done
# the softmax rows in registers (every load of a row in flight at once)
# against shared memory: the step by block size, then the loss's parts
for cb in 0 512; do
    ELASTIC_CE_ROWS=registers timeout 30 $b/bin/elastic_bench --device cuda --models sasrec-fused \
        --L 256 --batch 128 --items 20000 --steps 5 --ce-block $cb 2>&1 | tail -1 \
        | sed "s/^/ELASTIC_CE_ROWS=registers --ce-block $cb: /" | tee -a "$report"
done
ELASTIC_CE_ROWS=registers timeout 30 $b/bin/elastic_bench --device cuda --models sasrec-fused \
    --L 256 --batch 128 --items 20000 --steps 5 --profile 2>&1 \
    | grep -E 'per step|crossentropy|loss:' | sed 's/^/registers: /' | tee -a "$report"
# the loss without a logits block (loss_fused.cu: the logits made on the
# tensor cores where they are used, three times, never stored), 16 rows a
# warp (fused) and 32 (fused2)
for cef in fused fused2; do
    ELASTIC_CE=$cef timeout 30 $b/bin/elastic_bench --device cuda --models sasrec-fused,elastic \
        --L 256 --batch 128 --items 20000 --steps 5 2>&1 | tail -2 | sed "s/^/ELASTIC_CE=$cef: /" \
        | tee -a "$report"
    ELASTIC_CE=$cef timeout 30 $b/bin/elastic_bench --device cuda --models sasrec-fused \
        --L 256 --batch 128 --items 20000 --steps 5 --profile 2>&1 \
        | grep -E 'per step|crossentropy|loss:' | sed "s/^/$cef: /" | tee -a "$report"
done
say '```'
# and at a long window, where ELASTIC fell behind its PyTorch peer (H200, 2026-11-26)
say ""
say "## Profile at batch 8 x 4096"
say '```'
timeout 90 $b/bin/elastic_bench --device cuda --models elastic,sasrec-fused,sasrec-plain --L 4096 \
    --batch 8 --items 20000 --steps 3 --profile 2>&1 | grep -v '^blas:' | tee -a "$report"
say '```'
# the fused attention's tensor cores with a loop tile of 32 (less shared
# memory a block, more blocks an SM) against the default's lines above
say "fused SASRec at 8 x 4096 with ELASTIC_ATTN_TILE=32:"
say '```'
ELASTIC_ATTN_TILE=32 timeout 60 $b/bin/elastic_bench --device cuda --models sasrec-fused --L 4096 \
    --batch 8 --items 20000 --steps 3 --profile 2>&1 | grep -E 'per step|attention_fused|^sasrec' \
    | tee -a "$report"
say '```'
fi

# ---- the GPU's measured peaks, for the kernels' rates above to be read
# against; one user's request (forward + every item's score) by length
if part peaks; then
say ""
say "## Measured peaks: cuBLAS GEMM (TF32, fp32) and device copy bandwidth"
say '```'
timeout 60 $b/bin/elastic_bench --device cuda --sgemm 8192 --steps 10 --json "$out/bench.jsonl" 2>&1 \
    | grep -v '^blas:' | tee -a "$report"
say '```'
fi
if part infer; then
say ""
say "## Inference: one user's request (forward over L items + scores of 20000 items), TF32"
say '```'
timeout 90 $b/bin/elastic_bench --device cuda --infer 1 --L ${INFER_L:-1024,4096,16384} \
    --models sasrec-fused,elastic,recgrela --items 20000 --steps 20 --json "$out/bench.jsonl" 2>&1 \
    | grep -v '^blas:' | tee -a "$report"
say '```'
say "The same requests without graphs (ELASTIC_CUDA_GRAPHS=0: every kernel launched by the host):"
say '```'
ELASTIC_CUDA_GRAPHS=0 timeout 90 $b/bin/elastic_bench --device cuda --infer 1 \
    --L ${INFER_L:-1024,4096,16384} --models sasrec-fused,elastic,recgrela --items 20000 --steps 20 \
    --json "$out/bench.jsonl" 2>&1 | grep -v '^blas:' | tee -a "$report"
say '```'
say "ELASTIC's request at 16384, where it goes (timing events around each call, no graph):"
say '```'
timeout 60 $b/bin/elastic_bench --device cuda --infer 1 --L 16384 --models elastic --items 20000 \
    --steps 10 --profile 2>&1 | grep -v '^blas:' | sed -n '/per request/,$p' | tee -a "$report"
say '```'
fi

# ---- benchmark: elastic_train on this GPU beside the PyTorch peer of the
# same model (jobs/bench_torch.py: the oracle for SASRec, the linear-cost
# peers of jobs/torch_peers.py for ELASTIC and RecGRELA), same data and batch
# of ~32K tokens, eager and torch.compile, in the same run
if part torch; then
say ""
say "## Benchmark: training tokens/s on this GPU (TF32), elastic against PyTorch"
say '```'
# length-major: every model at a length before any at the next, so the time
# budget cuts the longest lengths, not whole models
# long histories for the long windows (the synthetic set above stops at 3000)
$b/bin/elastic_prep synth -o "$work/synth_long.h5" --users 300 --items 20000 --min-len 4000 \
    --max-len 20000 --seed 5 >> "$work/build.log" 2>&1
# elastic_run IMPL ENV ARGS...: elastic_train for 50 steps (the figure: the
# last 25) with ENV (VAR=value or "") and ARGS at this L and batch; its line
# in the report, its last progress record in bench.jsonl as IMPL
elastic_run() {
    local impl=$1 envs=$2 log="$work/$(echo "$1 $2 $3 $4 $5 $6" | tr -c 'A-Za-z0-9\n' _)_L$L.jsonl" line
    shift 2
    line=$(env $envs timeout 90 $b/bin/elastic_train --data "$bdata" "$@" --L "$L" --batch $bsz \
        --d 64 --steps 50 --log-every 25 --eval-every 0 --eval-users 1 --test false --device cuda \
        --metrics "$log" 2>&1 | grep -E '^(step 50/|done)' | tr '\n' ' ')
    say "$impl${envs:+ $envs} $* L=$L batch $bsz: ${line:-FAILED (see $(basename "$log"))}"
    grep '"type":"train"' "$log" 2>/dev/null | tail -1 | sed "s/^{/{\"impl\":\"$impl\",\"model\":\"$2\",\"L\":$L,\"batch\":$bsz,/" >> "$out/bench.jsonl"
}
for L in ${TORCH_L:-256 1024 4096 16384}; do
    bdata=$data; [ "$L" -gt 2048 ] && bdata="$work/synth_long.h5"
    for model in ${TORCH_MODELS:-sasrec elastic recgrela}; do
        [ $(elapsed) -gt ${BENCH_BUDGET:-380} ] && { say "time budget reached: stopped before $model L=$L"; break 2; }
        bsz=$((32768 / L))
        elastic_run elastic "" --model $model
        # the loss without a logits block, for its ratio in the same run
        elastic_run "elastic ce-fused" ELASTIC_CE=fused --model $model
        # SASRec's materialised attention, as the PyTorch peer's
        [ $model = sasrec ] && elastic_run "elastic plain" "" --model sasrec --attention plain
        for mode in "" "--compile"; do
            # every run ends by ~${HARD_END:-470} s: a late torch.compile gets what is left
            left=$(( ${HARD_END:-470} - $(elapsed) )); [ $left -gt 150 ] && left=150
            [ $left -lt 30 ] && { say "time budget reached: no torch $model L=$L $mode"; continue; }
            js="$work/torch_${model}_L${L}${mode:+_compile}.json"
            timeout $left python3 jobs/bench_torch.py --model $model --data "$bdata" --L "$L" --d 64 \
                --layers 2 --heads 2 --batch $bsz --steps 20 --warmup 5 --device cuda --tf32 $mode \
                --json "$js" 2>&1 | tail -1 | tee -a "$report"
            [ -f "$js" ] && python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$js" >> "$out/bench.jsonl"
        done
    done
done
say '```'
say ""
say "Ratios (jobs/ratios.py bench.jsonl: each elastic configuration against the peer of the same run):"
say ""
python3 jobs/ratios.py "$out/bench.jsonl" 2>&1 | tee -a "$report"
fi
# ---- opt-in (PARTS="... torchprof"): where torch.compile's SASRec step goes,
# kernel by kernel, to read beside elastic_bench --profile (5 steps each)
if part torchprof; then
say ""
say "## torch.compile's SASRec step by kernel (torch.profiler, 5 steps)"
say '```'
for L in ${TORCHPROF_L:-4096 256}; do
    bdata=$data; [ "$L" -gt 2048 ] && bdata="$work/synth_long.h5"
    [ -e "$bdata" ] || $b/bin/elastic_prep synth -o "$work/synth_long.h5" --users 300 --items 20000 \
        --min-len 4000 --max-len 20000 --seed 5 >> "$work/build.log" 2>&1
    left=$(( ${HARD_END:-470} + 60 - $(elapsed) )); [ $left -gt 120 ] && left=120
    [ $left -lt 40 ] && { say "time budget reached: no profile at L=$L"; continue; }
    timeout $left python3 jobs/bench_torch.py --model sasrec --data "$bdata" --L "$L" --d 64 \
        --layers 2 --heads 2 --batch $((32768 / L)) --steps 3 --warmup 5 --device cuda --tf32 \
        --compile --profile 5 2>&1 | sed -n '/^torch.profiler/,$p' | tee -a "$report"
done
say '```'
fi
say ""
say "done in $(elapsed) s"
if [ "$work" != "$out" ]; then
    tar czf "$out/logs.tgz" -C "$work" --exclude='*.h5' . && rm -rf "$work"
fi
