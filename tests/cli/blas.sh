#!/usr/bin/env bash
# The BLAS core: printed at start by elastic_train and elastic_bench and
# recorded in the bench's JSON; a user's OPENBLAS_CORETYPE wins. The
# correction itself needs a CPU that OpenBLAS mistakes for an older one: qemu
# user mode presents one (an Intel CPUID of family 15 with AVX2, which
# OpenBLAS 0.3.21 takes for Prescott, the issue's case); the corrected program
# re-executes itself natively, the warning-free path of a real VM.
. "$(dirname "$0")/lib.sh"
plan 9
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 200 --items 100 --clusters 5 --min-len 5 \
    --max-len 30 --seed 3 >/dev/null || { notok "synthetic dataset"; exit 1; }
T="$BIN/elastic_train --threads 1 --data $TMP/s.h5 --L 10 --batch 16 --d 16 --steps 4 --log-every 2 --eval-every 4 --eval-users 50"
BENCH="$BIN/elastic_bench --threads 1 --models sasrec-fused --L 8 --batch 2 --d 16 --items 50 --steps 1"
line_re='^blas: OpenBLAS .*; core [A-Za-z0-9_]+ \((CPU: (sse|avx|avx2|avx512)|not x86)'
core_of() { sed -nE 's/^blas: .*; core ([A-Za-z0-9_]+) \(.*/\1/p' "$1" | head -1; }
json_core() { sed -nE 's/.*"blas_core":"([^"]*)".*/\1/p' "$1" | head -1; }

$T > "$TMP/t.log" 2>&1
if [ "$(grep -cE "$line_re" "$TMP/t.log")" = 1 ] && grep -q '^done: 4 steps' "$TMP/t.log"; then
    ok "elastic_train prints the BLAS core at start: $(core_of "$TMP/t.log")"
else notok "elastic_train's blas line"; head -3 "$TMP/t.log" | sed 's/^/# /'; fi

$BENCH --json "$TMP/b.json" > "$TMP/b.log" 2>&1
c=$(core_of "$TMP/b.log")
if [ -n "$c" ] && grep -qE "$line_re" "$TMP/b.log" && [ "$(json_core "$TMP/b.json")" = "$c" ]; then
    ok "elastic_bench prints the core and records it (blas_core) in its JSON"
else notok "elastic_bench's blas line and JSON"; cat "$TMP/b.log" "$TMP/b.json" | head -5 | sed 's/^/# /'; fi

OPENBLAS_CORETYPE=Prescott $T > "$TMP/tp.log" 2>&1
if grep -qE '^blas: .*; core Prescott \(.*set by OPENBLAS_CORETYPE=Prescott' "$TMP/tp.log" &&
    grep -q '^done:' "$TMP/tp.log"; then
    ok "a user's OPENBLAS_CORETYPE=Prescott is kept and named as the user's"
else notok "OPENBLAS_CORETYPE=Prescott"; grep -E '^blas|error' "$TMP/tp.log" | head -3 | sed 's/^/# /'; fi

OPENBLAS_CORETYPE=Prescott $BENCH --json "$TMP/bp.json" > /dev/null 2>&1
[ "$(json_core "$TMP/bp.json")" = Prescott ] && ok "elastic_bench records the user's core" ||
    notok "elastic_bench records '$(json_core "$TMP/bp.json")', not Prescott"

# the emulated CPU: what OpenBLAS itself detects there is the probe, before any of our code
Q="qemu-x86_64 -cpu max,vendor=GenuineIntel,family=15,model=6"
why=""
if ! command -v qemu-x86_64 >/dev/null; then why="qemu-x86_64 missing (Debian: qemu-user)"
elif [ "$(uname -m)" != x86_64 ]; then why="not an x86-64 machine"
# a sanitizer's shadow memory does not map under qemu: it grinds, then is killed
elif ldd "$BIN/elastic_bench" 2>/dev/null | grep -qE 'lib[amt]san'; then why="a sanitizer build"
else
    v=$(qemu-x86_64 --version | sed -nE 's/.*version ([0-9]+)\.([0-9]+).*/\1 \2/p')
    read -r vmaj vmin <<<"$v"
    # TCG emulates AVX2 from qemu 7.2 on; before, the emulated CPU is an SSE one
    if [ -z "$vmaj" ] || [ "$vmaj" -lt 7 ] || { [ "$vmaj" = 7 ] && [ "$vmin" -lt 2 ]; }; then
        why="qemu older than 7.2 (no AVX2 in emulation)"
    else
        OPENBLAS_VERBOSE=2 ELASTIC_BLAS_FIX=0 timeout 60 $Q $BIN/elastic_bench --sgemm 8 --steps 1 \
            > "$TMP/q0.log" 2>&1
        rc=$?
        if [ $rc -ne 0 ]; then why="elastic_bench does not run under qemu-x86_64 (exit $rc)"
        elif [ "$(grep -m1 '^Core: ' "$TMP/q0.log")" != "Core: Prescott" ]; then
            why="the emulated CPU does not make OpenBLAS pick Prescott ($(grep -m1 '^Core' "$TMP/q0.log"))"
        fi
    fi
fi
if [ -n "$why" ]; then
    for w in "ELASTIC_BLAS_FIX=0" "correction" "user wins over a correction" "under mpirun" \
        "bench records the correction"; do skip "$w ($why)"; done
    exit 0
fi

if grep -qE '^blas: .*; core Prescott \(CPU: avx2; weaker than Haswell, not corrected: ELASTIC_BLAS_FIX=0\)' "$TMP/q0.log"; then
    ok "ELASTIC_BLAS_FIX=0 leaves OpenBLAS's Prescott in place and says so"
else notok "ELASTIC_BLAS_FIX=0"; grep -E '^(blas|Core)' "$TMP/q0.log" | sed 's/^/# /'; fi

OPENBLAS_VERBOSE=2 timeout 120 $Q $T > "$TMP/qt.log" 2>&1
# OpenBLAS loads twice: Prescott in the emulated process, then the corrected core after the re-exec
if [ "$(grep '^Core: ' "$TMP/qt.log" | tr '\n' ' ')" = "Core: Prescott Core: Haswell " ] &&
    grep -qE '^blas: .*; core Haswell \(CPU: [a-z0-9]+; corrected from Prescott\)' "$TMP/qt.log" &&
    grep -q '^done: 4 steps' "$TMP/qt.log"; then
    ok "OpenBLAS's Prescott on an AVX2 CPU is corrected to Haswell by one re-exec, same arguments"
else notok "correction"; grep -E '^(blas|Core|done)|warning|error' "$TMP/qt.log" | sed 's/^/# /'; fi

OPENBLAS_VERBOSE=2 OPENBLAS_CORETYPE=Prescott timeout 120 $Q $BIN/elastic_bench --sgemm 8 \
    --steps 1 > "$TMP/qu.log" 2>&1
if [ "$(grep -c '^Core: ' "$TMP/qu.log")" = 1 ] &&
    grep -qE '^blas: .*; core Prescott \(CPU: avx2; set by OPENBLAS_CORETYPE=Prescott, weaker than Haswell\)' "$TMP/qu.log"; then
    ok "a user's OPENBLAS_CORETYPE wins over a correction that would apply"
else notok "user wins over a correction"; grep -E '^(blas|Core)' "$TMP/qu.log" | sed 's/^/# /'; fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if command -v mpirun >/dev/null && timeout 60 mpirun --oversubscribe -np 2 true >/dev/null 2>&1; then
    timeout 120 mpirun --oversubscribe -np 2 $Q $T --comm mpi > "$TMP/qm.log" 2>&1
    if [ "$(grep -c '^blas: ' "$TMP/qm.log")" = 1 ] &&
        grep -qE '^blas: .*corrected from Prescott' "$TMP/qm.log" &&
        grep -q '2 rank(s)' "$TMP/qm.log" && grep -q '^done: 4 steps' "$TMP/qm.log"; then
        ok "under mpirun -np 2 both ranks re-exec before MPI init; rank 0 prints the line"
    else notok "under mpirun"; grep -E '^(blas|done)|rank|error' "$TMP/qm.log" | head -5 | sed 's/^/# /'; fi
else skip "under mpirun (mpirun missing or cannot start 2 processes here)"; fi

timeout 120 $Q $BENCH --json "$TMP/qb.json" > "$TMP/qb.log" 2>&1
if [ "$(json_core "$TMP/qb.json")" = Haswell ] && grep -q 'corrected from Prescott' "$TMP/qb.log"; then
    ok "elastic_bench records the corrected core"
else notok "bench records the correction ('$(json_core "$TMP/qb.json")')"; head -3 "$TMP/qb.log" | sed 's/^/# /'; fi
