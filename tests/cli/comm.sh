#!/usr/bin/env bash
# The programs that check themselves on several ranks, each run under mpirun
# on 2, 3 and 4 ranks; every rank checks what it received and the failures are
# summed over ranks:
# - tests/test_comm.c: the communicator's collectives (variable all-to-all
#   with skewed and empty buckets, a rank sending nothing, rows at scattered
#   offsets, the count exchange, all-gather, mean);
# - tests/test_dist.c: the row-sharded memory bank (lookups with skewed
#   owners, repeated ids, a rank that looks up nothing; gradients summed at
#   their owners) and SASRec, RecGRELA and ELASTIC trained 5 steps with
#   dropout beside a one-process reference (the same losses, dense
#   parameters, bank rows and moments).
. "$(dirname "$0")/lib.sh"
plan 6
TESTBIN=${TESTBIN:-build/tests}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 CMOCKA_MESSAGE_OUTPUT=TAP
progs="test_comm:6 test_dist:5"  # program:checks
if ! command -v mpirun >/dev/null || ! timeout 60 mpirun --oversubscribe -np 2 true >/dev/null 2>&1; then
    for p in $progs; do for n in 2 3 4; do
        skip "${p%%:*} on $n ranks (mpirun missing or cannot start 2 processes here)"
    done; done
    exit 0
fi
for p in $progs; do
    prog=${p%%:*} want=${p#*:}
    for n in 2 3 4; do
        out=$(timeout 120 mpirun --oversubscribe -np $n "$TESTBIN/$prog" 2>&1); rc=$?
        good=$(grep -c '^ok ' <<<"$out"); bad=$(grep -c '^not ok ' <<<"$out")
        if [ $rc -eq 0 ] && [ "$good" = "$want" ] && [ "$bad" = 0 ]; then ok "$prog on $n ranks: $want of $want"
        else notok "$prog on $n ranks (exit $rc, $good ok, $bad not ok)"; grep -E 'not ok|ERROR|error' <<<"$out" | head -5 | sed 's/^/# /'; fi
    done
done
