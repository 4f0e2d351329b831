#!/usr/bin/env bash
# The one command for a GPU node (../shared/GPU.md): finds or unpacks the
# dependencies (jobs/offline-deps.sh: .debs carried with the project), builds
# with CUDA for this GPU, runs every CUDA parity test and the GPU benchmark
# (the PyTorch peers on the same GPU), and writes under OUT:
#   report.md     what ran, on which card, with every test line and timing
#   test_cuda.tap the parity tests' own output
#   bench.jsonl   one JSON line per benchmark configuration
#   build.log     the build
# Meant to finish within 8 minutes; each part has its own time limit.
#   jobs/gpu_check.sh OUT          (default runs/gpu_check)
# Environment: CUDA_ARCH (default sm_90), DEP (an unpacked prefix to use),
# TORCH_L (the peers' lengths, default "256 1024 4096").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$out"
out=$(realpath "$out")
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
        jobs/offline-deps.sh unpack "$dep" .debs >> "$out/build.log" 2>&1 \
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
    all $b/tests/test_cuda $b/tests/test_dist >> "$out/build.log" 2>&1
rc=$?
say "build: exit $rc after $(elapsed) s (log: build.log)"
[ $rc -eq 0 ] || { tail -20 "$out/build.log" | tee -a "$report"; exit 1; }

# ---- CUDA parity tests (TAP), and a CPU check that the build works here
export CMOCKA_MESSAGE_OUTPUT=TAP
timeout 120 $b/tests/test_cuda > "$out/test_cuda.tap" 2>&1
rc=$?
pass=$(grep -cE '^ok ' "$out/test_cuda.tap"); fail=$(grep -E '^not ok ' "$out/test_cuda.tap" | grep -vc '# SKIP')
skip=$(grep -c '# SKIP' "$out/test_cuda.tap")
say ""
say "## CUDA parity tests: $pass passed, $fail failed, $skip skipped (exit $rc)"
say '```'
grep -E '^(ok|not ok|#)' "$out/test_cuda.tap" | tee -a "$report"
say '```'
timeout 60 $b/tests/test_dist > "$out/test_dist.tap" 2>&1
rc=$?
say "CPU sanity (test_dist, one process): $(grep -cE '^ok ' "$out/test_dist.tap") passed, exit $rc"

# ---- benchmark: the PyTorch peers on this GPU (elastic's own GPU step is
# not wired yet: the trainer refuses --device cuda until it is)
say ""
say "## Benchmark (PyTorch SASRec on this GPU; tokens/s, GPU peak)"
say '```'
data="$out/bench_data.h5"
timeout 60 python3 jobs/bench_torch_sasrec.py --make-data "$data" --users 2000 --items 20000 \
    --mean-len 3000 >> "$out/build.log" 2>&1 || say "no benchmark data (python3 with torch, numpy, h5py?)"
for L in ${TORCH_L:-256 1024 4096}; do
    for mode in "" "--compile"; do
        [ $(elapsed) -gt 420 ] && { say "time budget reached: stopped before L=$L $mode"; break 2; }
        js="$out/torch_L${L}${mode:+_compile}.json"
        if timeout 90 python3 jobs/bench_torch_sasrec.py --data "$data" --L "$L" --d 64 --layers 2 \
            --heads 2 --batch $((65536 / L)) --steps 20 --warmup 5 --device cuda --tf32 $mode \
            --json "$js" 2>&1 | tail -1 | tee -a "$report"; then
            [ -f "$js" ] && python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$js" >> "$out/bench.jsonl"
        fi
    done
done
say '```'
say ""
say "done in $(elapsed) s"
