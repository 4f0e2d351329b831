#!/usr/bin/env bash
# Plots (gnuplot, PNG) of what runs did, from their metrics files, several runs
# overlaid; or of elastic_bench's output.
#   jobs/plot.sh OUT_DIR RUN.jsonl [RUN2.jsonl ...]
#       OUT_DIR/loss.png        training loss, and the learning rate below it
#       OUT_DIR/valid.png       validation HR@10 and NDCG@10 by step, each run's
#                               popularity baseline dashed
#       OUT_DIR/throughput.png  training tokens/s by step
#   jobs/plot.sh --bench OUT_DIR BENCH.jsonl [MORE.jsonl ...]
#       OUT_DIR/bench.png       ms per step and peak memory against L, per model,
#                               log-log (device memory when the run was on a GPU)
# A run is named by its file name without .jsonl. Needs gnuplot (Debian:
# gnuplot-nox; make deps installs it).
set -euo pipefail
bench=0
[ "${1:-}" = --bench ] && { bench=1; shift; }
if [ $# -lt 2 ] || [ "$1" = --help ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    [ "${1:-}" = --help ] && exit 0 || exit 2
fi
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot not found (Debian: gnuplot-nox)" >&2; exit 1; }
out=$1
shift
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$@"; do [ -r "$f" ] || { echo "plot.sh: cannot read $f" >&2; exit 1; }; done

# field KEY: the number after "KEY": in a JSON line (empty when absent)
extract='function field(k,   m) { if (match($0, "\"" k "\":[-+0-9.eE]+")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m } return "" }
function text(k,   m) { if (match($0, "\"" k "\":\"[^\"]*\"")) { m = substr($0, RSTART, RLENGTH); sub(/^[^:]*:"/, "", m); sub(/"$/, "", m); return m } return "" }'
term='set terminal pngcairo noenhanced size 1000,600 font ",11"; set grid; set key outside right top'
bterm='set terminal pngcairo noenhanced size 1000,600 font ",11"; set grid; set key inside top left'

if [ $bench = 1 ]; then
    # one table per model: L ms/step peak-MB (device memory on a GPU run)
    cat "$@" | awk "$extract"'
        /"ok":true/ { m = text("model"); if (m == "") next;
                      mem = field("dev_peak_mb"); if (text("device") != "cuda" || mem == "") mem = field("peak_rss_mb");
                      print field("L"), field("ms_per_step"), mem > ("'"$tmp"'/" m ".tsv") }'
    models=$(cd "$tmp" && ls *.tsv 2>/dev/null | sed 's/\.tsv$//')
    [ -n "$models" ] || { echo "plot.sh: no successful elastic_bench records in $*" >&2; exit 1; }
    ms="" mem=""
    for m in $models; do
        sort -n "$tmp/$m.tsv" -o "$tmp/$m.tsv"
        ms="$ms${ms:+, }'$tmp/$m.tsv' using 1:2 with linespoints title '$m'"
        mem="$mem${mem:+, }'$tmp/$m.tsv' using 1:3 with linespoints title '$m'"
    done
    gnuplot <<GP
$bterm
set output '$out/bench.png'
set multiplot layout 1,2
set logscale xy; set xlabel 'sequence length L'
set title 'step time'; set ylabel 'ms per step'
plot $ms
set title 'peak memory'; set ylabel 'MB'
plot $mem
unset multiplot
GP
    echo "plot.sh: wrote $out/bench.png"
    exit 0
fi

loss="" lr="" valid="" pop="" tps=""
i=0
for f in "$@"; do
    i=$((i + 1))
    name=$(basename "$f" .jsonl)
    awk "$extract"'
        /"type":"train"/ { print field("step"), field("loss"), field("lr"), field("tokens_per_s") > "'"$tmp/train$i"'" }
        /"type":"valid"/ { print field("step"), field("hr@10"), field("ndcg@10") > "'"$tmp/valid$i"'" }
        /"type":"valid-pop"/ { print field("hr@10"), field("ndcg@10") > "'"$tmp/pop$i"'" }' "$f"
    for k in train valid pop; do touch "$tmp/$k$i"; done
    [ -s "$tmp/train$i" ] || { echo "plot.sh: $f has no training records" >&2; exit 1; }
    loss="$loss${loss:+, }'$tmp/train$i' using 1:2 with lines title '$name'"
    lr="$lr${lr:+, }'$tmp/train$i' using 1:3 with lines title '$name'"
    tps="$tps${tps:+, }'$tmp/train$i' using 1:4 with lines title '$name'"
    if [ -s "$tmp/valid$i" ]; then
        valid="$valid${valid:+, }'$tmp/valid$i' using 1:2 with linespoints title '$name HR@10', '$tmp/valid$i' using 1:3 with linespoints title '$name NDCG@10'"
    fi
    if [ -s "$tmp/pop$i" ]; then
        read -r phr pnd < "$tmp/pop$i"
        pop="$pop${pop:+, }$phr with lines dashtype 2 title '$name popularity HR@10', $pnd with lines dashtype 3 title '$name popularity NDCG@10'"
    fi
done
gnuplot <<GP
$term
set output '$out/loss.png'
set multiplot layout 2,1
set title 'training loss'; set ylabel 'loss'; set xlabel ''
plot $loss
set title 'learning rate'; set ylabel 'lr'; set xlabel 'step'
plot $lr
unset multiplot
set output '$out/throughput.png'
set title 'training throughput'; set ylabel 'tokens/s'; set xlabel 'step'
plot $tps
GP
if [ -n "$valid" ]; then
    gnuplot <<GP
$term
set output '$out/valid.png'
set title 'validation'; set ylabel 'metric'; set xlabel 'step'
plot $valid${pop:+, $pop}
GP
    echo "plot.sh: wrote $out/loss.png, $out/valid.png, $out/throughput.png"
else
    echo "plot.sh: wrote $out/loss.png, $out/throughput.png (no validation records)"
fi
