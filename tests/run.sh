#!/usr/bin/env bash
# Runs every test program given on the command line (cmocka, in TAP mode) and
# every tests/cli/*.sh script (which print TAP lines too), then prints one
# final line "N passed, N failed, N skipped". A program that dies without
# reporting counts as one failure.
set -u
cd "$(dirname "$0")/.."
export CMOCKA_MESSAGE_OUTPUT=TAP
# tests are not benchmarks: idle OpenMP threads sleep rather than spin, so a
# loaded machine does not turn every tiny parallel region into a wait
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
pass=0 fail=0 skip=0
failed_names=()
run_one() {
    local name=$1; shift
    local log
    log=$(mktemp)
    local t0=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local p f s
    # a SKIP directive marks a skipped check, on "ok" lines (our scripts) or
    # "not ok" ones (cmocka's skip())
    p=$(grep -E '^ok ' "$log" | grep -vc '# SKIP')
    s=$(grep -E '^(not )?ok ' "$log" | grep -c '# SKIP')
    f=$(grep -E '^not ok ' "$log" | grep -vc '# SKIP')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "not ok - $name exited with status $rc" >>"$log"; fi
    # a TAP plan "1..N" must match the checks reported (cmocka prints one too)
    local planned
    planned=$(grep -E '^1\.\.[0-9]+$' "$log" | head -1 | cut -d. -f3)
    if [ -n "$planned" ] && [ "$planned" -ne $((p + s + f)) ]; then
        f=$((f + 1)); echo "not ok - $name planned $planned checks, reported $((p + s + f - 1))" >>"$log"
    fi
    if [ -z "$planned" ] && [[ "$name" == *.sh ]]; then
        f=$((f + 1)); echo "not ok - $name declares no plan (plan N in tests/cli/lib.sh)" >>"$log"
    fi
    pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
    printf '%-40s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $((SECONDS - t0))
    if [ "$f" -gt 0 ]; then
        failed_names+=("$name")
        sed 's/^/    | /' "$log" | tail -n 60
    fi
    rm -f "$log"
}
for t in "$@"; do run_one "$(basename "$t")" "$t"; done
# the CUDA tests again, their kernels run by the CUDA emulator (tests/cuda_emu),
# a block's threads in index order and then in reverse (a thread reading what a
# higher-indexed one writes without a barrier between fails one of the two)
for t in "$@"; do
    case "$(basename "$t")" in test_cuda | test_cuda_*) ;; *) continue ;; esac
    [ -n "${CUDA_EMU:-}" ] || continue
    run_one "$(basename "$t") (CUDA emulator)" env ELASTIC_CUDA_LIB="$(realpath "$CUDA_EMU")" "$t"
    run_one "$(basename "$t") (CUDA emulator, threads in reverse)" env CUDA_EMU_ORDER=reverse \
        ELASTIC_CUDA_LIB="$(realpath "$CUDA_EMU")" "$t"
done
for s in tests/cli/*.sh; do [ "$(basename "$s")" = lib.sh ] && continue; [ -e "$s" ] && run_one "$(basename "$s")" bash "$s"; done
[ ${#failed_names[@]} -gt 0 ] && echo "failing: ${failed_names[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
