# Helpers for the command-line tests: each check prints one TAP line.
# Source it from a tests/cli/*.sh script; BIN is the programs' folder.
BIN=${BIN:-bin}
SHARED=${ELASTIC_SHARED:-../shared/datasets}
# a checkout elsewhere than beside shared/ still finds the workplace's copy
[ -d "$SHARED" ] || [ ! -d /work/shared/datasets ] || SHARED=/work/shared/datasets
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# plan N: the script runs N checks; tests/run.sh fails it when it reports
# another number (a script that exits early cannot lose checks silently)
plan() { echo "1..$1"; }
ok()   { echo "ok - $*"; }
notok(){ echo "not ok - $*"; }
skip() { echo "ok - $* # SKIP"; }
# expect_fail NAME PATTERN CMD...: CMD must exit non-zero and print PATTERN (grep -E) on stderr/stdout
expect_fail() {
    local name=$1 pat=$2; shift 2
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -ne 0 ] && grep -qE -- "$pat" <<<"$out"; then ok "$name"; else
        notok "$name (exit $rc, wanted /$pat/)"; echo "$out" | head -5 | sed 's/^/# /'; fi
}
# expect_ok NAME CMD...: CMD must exit 0
expect_ok() {
    local name=$1; shift
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then ok "$name"; else notok "$name (exit $rc)"; echo "$out" | tail -5 | sed 's/^/# /'; fi
}
