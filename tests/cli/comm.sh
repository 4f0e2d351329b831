#!/usr/bin/env bash
# The communicator's collectives on 2, 3 and 4 MPI ranks: tests/test_comm.c's
# checks (variable all-to-all with skewed and empty buckets, a rank sending
# nothing, rows at scattered offsets, the count exchange, all-gather, mean)
# run under mpirun; every rank checks what it received.
. "$(dirname "$0")/lib.sh"
plan 3
TESTBIN=${TESTBIN:-build/tests}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 CMOCKA_MESSAGE_OUTPUT=TAP
if ! command -v mpirun >/dev/null || ! timeout 60 mpirun --oversubscribe -np 2 true >/dev/null 2>&1; then
    for n in 2 3 4; do skip "test_comm on $n ranks (mpirun missing or cannot start 2 processes here)"; done
    exit 0
fi
for n in 2 3 4; do
    out=$(timeout 120 mpirun --oversubscribe -np $n "$TESTBIN/test_comm" 2>&1); rc=$?
    good=$(grep -c '^ok ' <<<"$out"); bad=$(grep -c '^not ok ' <<<"$out")
    if [ $rc -eq 0 ] && [ "$good" = 6 ] && [ "$bad" = 0 ]; then ok "test_comm on $n ranks: 6 of 6"
    else notok "test_comm on $n ranks (exit $rc, $good ok, $bad not ok)"; grep -E 'not ok|ERROR|error' <<<"$out" | head -5 | sed 's/^/# /'; fi
done
