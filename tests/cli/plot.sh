#!/usr/bin/env bash
# jobs/plot.sh on committed metrics files (two runs of make demo, and its
# elastic_bench lines): every PNG written, non-empty, a PNG; bad input refused.
. "$(dirname "$0")/lib.sh"
plan 4
if ! command -v gnuplot >/dev/null; then
    for i in 1 2 3 4; do skip "no gnuplot (Debian: gnuplot-nox)"; done
    exit 0
fi
png() { [ -s "$1" ] && [ "$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; }
jobs/plot.sh "$TMP/runs" tests/data/plot_sasrec.jsonl tests/data/plot_elastic.jsonl > /dev/null 2>&1
png "$TMP/runs/loss.png" && png "$TMP/runs/valid.png" && png "$TMP/runs/throughput.png" \
    && ok "two runs overlaid: loss.png, valid.png, throughput.png" || { notok "run plots"; ls -la "$TMP/runs" | sed 's/^/# /'; }
jobs/plot.sh --bench "$TMP/bench" tests/data/plot_bench.jsonl > /dev/null 2>&1
png "$TMP/bench/bench.png" && ok "elastic_bench lines: bench.png" || notok "bench plot"
printf 'not json\n' > "$TMP/bad.jsonl"
expect_fail "a file without training records is named" "bad\.jsonl has no training records" jobs/plot.sh "$TMP/x" "$TMP/bad.jsonl"
expect_fail "a missing file is named" "cannot read $TMP/nope\.jsonl" jobs/plot.sh "$TMP/x" "$TMP/nope.jsonl"
