#!/usr/bin/env bash
# elastic_prep: converters round-trip hand-written files exactly, filters give
# known answers, bad input fails clearly with no output left behind, and the
# real datasets (when ../shared/datasets exists) convert to their known sizes.
# Run from the repository root after `make bin/elastic_prep`.
source "$(dirname "$0")/lib.sh"
plan 107
P=$BIN/elastic_prep
if [ ! -x "$P" ]; then notok "elastic_prep not built ($P)"; exit 1; fi

# same NAME FILE_A FILE_B
same() {
    if cmp -s "$2" "$3"; then ok "$1"; else notok "$1"; diff "$2" "$3" | head -10 | sed 's/^/# /'; fi
}
# no_output NAME PATH: neither PATH nor PATH.tmp exists
no_output() {
    if [ ! -e "$2" ] && [ ! -e "$2.tmp" ]; then ok "$1"; else notok "$1 ($2 left behind)"; fi
}
# info_has NAME FILE REGEX: `info FILE` succeeds and prints a line matching REGEX
info_has() {
    local out
    if out=$("$P" info "$2" 2>&1) && grep -qE -- "$3" <<<"$out"; then ok "$1"; else
        notok "$1 (wanted /$3/)"; echo "$out" | head -12 | sed 's/^/# /'; fi
}

# ---- help and usage
expect_ok "--help" "$P" --help
for c in convert synth info export; do expect_ok "$c --help" "$P" $c --help; done
out=$("$P" convert --format seq --frobnicate 1 x -o "$TMP/x.h5" 2>&1); rc=$?
if [ $rc -eq 2 ] && grep -q "unknown option '--frobnicate'" <<<"$out"; then ok "unknown option: exit 2 and named"; else
    notok "unknown option (exit $rc)"; echo "$out" | sed 's/^/# /'; fi
no_output "unknown option: no output" "$TMP/x.h5"
expect_fail "unknown format" "unknown --format 'parquet'" "$P" convert --format parquet x -o "$TMP/x.h5"
expect_fail "unknown command" "unknown command 'frob'" "$P" frob
expect_fail "convert without -o" "-o OUT.h5 is required" "$P" convert --format seq x

# ---- seq -> h5 -> seq is the identity (string ids, repeats, long and short lines)
cat >"$TMP/a.seq" <<'EOF'
u1 i1 i2 i3
u2 i4 i1 i1 i5 i6
alice x y z i2
7 i6 i5 i4 i3 i2 i1
EOF
expect_ok "convert seq" "$P" convert --format seq "$TMP/a.seq" -o "$TMP/a.h5"
expect_ok "export seq" "$P" export "$TMP/a.h5" --format seq -o "$TMP/a.out"
same "seq round trip is exact" "$TMP/a.seq" "$TMP/a.out"
info_has "info users" "$TMP/a.h5" '^users: 4$'
info_has "info items (remapped by first appearance)" "$TMP/a.h5" '^items: 9$'
info_has "info interactions" "$TMP/a.h5" '^interactions: 18$'
info_has "info source" "$TMP/a.h5" '^source: seq:a.seq$'
info_has "info filter" "$TMP/a.h5" '^filter: min_rating=none kcore=0 min_len=3 duplicates=unchecked$'
info_has "info lengths" "$TMP/a.h5" '^history length: min 3 mean 4.5 p50 4 p90 6 p99 6 max 6$'
expect_fail "export csv needs timestamps" "has no /timestamps" "$P" export "$TMP/a.h5" --format csv -o "$TMP/a.csv"
no_output "export failure leaves nothing" "$TMP/a.csv"

# ---- csv with timestamps and ties -> h5 -> csv in (user, time, row) order
cat >"$TMP/b.csv" <<'EOF'
user,item,timestamp
bob,m3,30
ann,m1,5
bob,m1,10
ann,m2,5
bob,m2,10
ann,m9,1
bob,m4,40
ann,m3,7
carl,m1,1
carl,m2,2
EOF
cat >"$TMP/b.want" <<'EOF'
user,item,timestamp
bob,m1,10
bob,m2,10
bob,m3,30
bob,m4,40
ann,m9,1
ann,m1,5
ann,m2,5
ann,m3,7
EOF
out=$("$P" convert --format csv "$TMP/b.csv" -o "$TMP/b.h5" 2>&1)
if grep -q "dropped .* 1 users (2 rows) with fewer than 3 items" <<<"$out"; then ok "csv: short user dropped and counted"; else
    notok "csv: short user count"; echo "$out" | sed 's/^/# /'; fi
expect_ok "export csv" "$P" export "$TMP/b.h5" --format csv -o "$TMP/b.out"
same "csv sorted by time, ties by row order" "$TMP/b.want" "$TMP/b.out"
# The export reads back as the same dataset (header detected).
expect_ok "convert exported csv" "$P" convert --format csv "$TMP/b.out" -o "$TMP/b2.h5"
# progress on stderr: the totals line (every 2 s and an ETA on inputs that take longer)
out=$("$P" convert --format csv "$TMP/b.out" -o "$TMP/b3.h5" --progress always 2>&1 >/dev/null)
grep -qE "^convert: .*b\.out: [0-9]+ MB, [0-9]+ rows in [0-9.]+ s \([0-9]+ rows/s\)$" <<<"$out" \
    && ok "--progress always: MB, rows and rows/s on stderr" || { notok "--progress"; echo "# $out"; }
out=$("$P" convert --format csv "$TMP/b.out" -o "$TMP/b4.h5" 2>&1 >/dev/null)
[ -z "$out" ] && ok "a small input: no progress lines by default" || { notok "default progress"; echo "# $out"; }
expect_fail "--progress takes auto, always or never" "--progress 'bogus' is not auto, always or never" \
    "$P" convert --format csv "$TMP/b.out" -o "$TMP/b5.h5" --progress bogus
expect_ok "export again" "$P" export "$TMP/b2.h5" --format csv -o "$TMP/b2.out"
same "csv export is a fixed point" "$TMP/b.out" "$TMP/b2.out"
# Tab-separated, no header, explicit options.
tail -n +2 "$TMP/b.csv" | tr ',' '\t' >"$TMP/b.tsv"
expect_ok "tsv with --delimiter tab --header no" "$P" convert --format csv --delimiter tab --header no "$TMP/b.tsv" -o "$TMP/b3.h5"
expect_ok "export tsv-converted" "$P" export "$TMP/b3.h5" --format csv -o "$TMP/b3.out"
same "tsv gives the same dataset" "$TMP/b.want" "$TMP/b3.out"

# ---- MovieLens ratings.dat and RecBole .inter
cat >"$TMP/ratings.dat" <<'EOF'
1::10::5::978300760
1::20::3::978300700
2::10::4::978300800
1::30::4::978300760
2::40::2::978300801
2::50::1::978300799
EOF
cat >"$TMP/dat.want" <<'EOF'
user,item,timestamp
1,20,978300700
1,10,978300760
1,30,978300760
2,50,978300799
2,10,978300800
2,40,978300801
EOF
expect_ok "convert ratings.dat" "$P" convert --format movielens-dat "$TMP/ratings.dat" -o "$TMP/dat.h5"
"$P" export "$TMP/dat.h5" --format csv -o "$TMP/dat.out" >/dev/null 2>&1
same "ratings.dat order" "$TMP/dat.want" "$TMP/dat.out"
printf 'user_id:token\titem_id:token\trating:float\ttimestamp:float\n' >"$TMP/x.inter"
printf '1\t10\t5.0\t978300760.0\n1\t20\t3.0\t978300700.0\n2\t10\t4.0\t978300800\n1\t30\t4.0\t978300760\n2\t40\t2.0\t978300801\n2\t50\t1.0\t978300799\n' >>"$TMP/x.inter"
expect_ok "convert .inter" "$P" convert --format recbole "$TMP/x.inter" -o "$TMP/inter.h5"
"$P" export "$TMP/inter.h5" --format csv -o "$TMP/inter.out" >/dev/null 2>&1
same ".inter order (columns by name)" "$TMP/dat.want" "$TMP/inter.out"
# Columns in another order are found by name.
printf 'timestamp:float\titem_id:token\tuser_id:token\n3\ta\tu\n1\tb\tu\n2\tc\tu\n' >"$TMP/y.inter"
expect_ok "convert .inter, other column order" "$P" convert --format recbole "$TMP/y.inter" -o "$TMP/y.h5"
"$P" export "$TMP/y.h5" --format seq -o "$TMP/y.out" >/dev/null 2>&1
if [ "$(cat "$TMP/y.out")" = "u b c a" ]; then ok ".inter named columns"; else notok ".inter named columns: $(cat "$TMP/y.out")"; fi

# ---- min-rating and k-core with a known answer
# min-rating 3 drops (1,d) and (4,a). 3-core, round 1: user 4 (e d) has 2,
# item f has 1 -> 3 rows; round 2: item e is left with users 3 and 5 (2),
# then user 5 with a alone -> 3 rows; stable: users 1 2 3 with a b c.
cat >"$TMP/k.csv" <<'EOF'
userId,movieId,rating,timestamp
1,a,5,1
1,b,4,2
1,c,4,3
1,d,1,4
2,a,4,1
2,b,5,2
2,c,3,3
3,a,3,1
3,b,4,2
3,c,5,3
3,e,4,4
4,a,2,1
4,e,5,2
4,d,5,3
5,a,4,1
5,e,4,2
5,f,4,3
EOF
cat >"$TMP/k.want" <<'EOF'
1 a b c
2 a b c
3 a b c
EOF
out=$("$P" convert --format movielens-csv --min-rating 3 --kcore 3 "$TMP/k.csv" -o "$TMP/k.h5" 2>&1)
if grep -q "dropped 2 below min rating, 6 by 3-core in 2 rounds, 0 users" <<<"$out"; then ok "min-rating + k-core counts"; else
    notok "min-rating + k-core counts"; echo "$out" | sed 's/^/# /'; fi
"$P" export "$TMP/k.h5" --format seq -o "$TMP/k.out" >/dev/null 2>&1
same "min-rating 3 + 3-core result" "$TMP/k.want" "$TMP/k.out"
info_has "filter recorded" "$TMP/k.h5" '^filter: min_rating=3 kcore=3 min_len=3 duplicates=drop$'
# Without filters: user 4 keeps a e d; item ids by first appearance a b c d e.
"$P" convert --format movielens-csv "$TMP/k.csv" -o "$TMP/k0.h5" >/dev/null 2>&1
"$P" export "$TMP/k0.h5" --format seq -o "$TMP/k0.out" >/dev/null 2>&1
if [ "$(sed -n 4p "$TMP/k0.out")" = "4 a e d" ]; then ok "no filter keeps everyone"; else notok "no filter: $(cat "$TMP/k0.out")"; fi
expect_fail "min-rating on a format without ratings" "needs a rating column" "$P" convert --format seq --min-rating 3 "$TMP/a.seq" -o "$TMP/nr.h5"
no_output "no output after a filter error" "$TMP/nr.h5"
expect_fail "everything filtered away" "no users left" "$P" convert --format movielens-csv --kcore 10 "$TMP/k.csv" -o "$TMP/k10.h5"
no_output "no output when nothing is left" "$TMP/k10.h5"

# ---- bad input: clear message, non-zero exit, nothing at the output path
expect_fail "missing input file" "nope.csv: cannot open: No such file" "$P" convert --format csv "$TMP/nope.csv" -o "$TMP/m.h5"
no_output "missing input: no output" "$TMP/m.h5"
{ echo "userId,movieId,rating,timestamp"; for i in $(seq 1 40); do echo "1,$i,4.0,$((1000 + i))"; done; echo "2,5,4.0"; echo "2,6,4.0,7"; } >"$TMP/bad.csv"
expect_fail "malformed csv line names file and line" "bad.csv:42: expected 4 comma-separated fields, got 3" "$P" convert --format movielens-csv "$TMP/bad.csv" -o "$TMP/bad.h5"
no_output "malformed csv: no output" "$TMP/bad.h5"
printf '1::2::3::4\n1::2::3\n' >"$TMP/bad.dat"
expect_fail "malformed ratings.dat line" "bad.dat:2: expected 4 '::'-separated fields, got 3" "$P" convert --format movielens-dat "$TMP/bad.dat" -o "$TMP/bad.h5"
printf 'userId,movieId,rating,timestamp\n1,2,x,4\n' >"$TMP/badr.csv"
expect_fail "non-numeric rating" "badr.csv:2: rating 'x' is not a number" "$P" convert --format movielens-csv "$TMP/badr.csv" -o "$TMP/bad.h5"
printf 'u1 i1 i2 i3\nlonely\n' >"$TMP/bad.seq"
expect_fail "seq line without items" "bad.seq:2: expected a user id followed by at least one item" "$P" convert --format seq "$TMP/bad.seq" -o "$TMP/bad.h5"
printf 'user,item\n' >"$TMP/hdr.csv"
expect_fail "header only" "no interactions" "$P" convert --format csv "$TMP/hdr.csv" -o "$TMP/bad.h5"
no_output "bad inputs: no output" "$TMP/bad.h5"

expect_ok "synth" "$P" synth -o "$TMP/s.h5" --users 3000 --items 400 --min-len 5 --max-len 60 --seed 9
info_has "synth info" "$TMP/s.h5" '^users: 3000$'
expect_ok "synth again, same seed" "$P" synth -o "$TMP/s2.h5" --users 3000 --items 400 --min-len 5 --max-len 60 --seed 9
"$P" export "$TMP/s.h5" --format seq -o "$TMP/s.out" >/dev/null 2>&1
"$P" export "$TMP/s2.h5" --format seq -o "$TMP/s2.out" >/dev/null 2>&1
same "synth is deterministic" "$TMP/s.out" "$TMP/s2.out"
expect_fail "synth rejects min-len < 3" "min-len '2' is not an integer >= 3" "$P" synth -o "$TMP/s3.h5" --min-len 2
no_output "synth usage error: no output" "$TMP/s3.h5"

head -c 2000 "$TMP/s.h5" >"$TMP/trunc.h5"
expect_fail "truncated HDF5 file" "trunc.h5: .*truncated file" "$P" info "$TMP/trunc.h5"
cp "$TMP/s.h5" "$TMP/corrupt.h5"
size=$(stat -c %s "$TMP/corrupt.h5")
printf '\xde\xad\xbe\xef\xde\xad\xbe\xef\xde\xad\xbe\xef\xde\xad\xbe\xef' |
    dd of="$TMP/corrupt.h5" bs=1 seek=$((size / 2)) conv=notrunc status=none
expect_fail "corrupt HDF5 file (bytes flipped mid-file)" "corrupt.h5: .*(checksum|failed)" "$P" info "$TMP/corrupt.h5"
expect_fail "export of a corrupt file fails" "corrupt.h5" "$P" export "$TMP/corrupt.h5" --format seq -o "$TMP/c.out"
no_output "corrupt export: no output" "$TMP/c.out"
# Outputs are renamed into place, never over a link, a pipe or a device.
mkfifo "$TMP/fifo"
expect_fail "convert refuses a non-regular output" "fifo: not a regular file" "$P" convert --format seq "$TMP/a.seq" -o "$TMP/fifo"
if [ -p "$TMP/fifo" ]; then ok "the fifo is left alone"; else notok "the fifo was replaced"; fi
echo old >"$TMP/real.txt"
ln -s real.txt "$TMP/link.txt"
"$P" export "$TMP/a.h5" --format seq -o "$TMP/link.txt" >/dev/null 2>&1
if [ -L "$TMP/link.txt" ] && cmp -s "$TMP/real.txt" "$TMP/a.seq"; then ok "export through a symbolic link keeps the link"; else notok "export through a symbolic link"; fi
if [ "$("$P" export "$TMP/a.h5" --format seq -o - | head -1)" = "u1 i1 i2 i3" ]; then ok "export -o - writes stdout"; else notok "export -o -"; fi
expect_fail "not an HDF5 file" "a.seq: cannot open as an HDF5 file" "$P" info "$TMP/a.seq"
expect_fail "info of a missing file" "missing.h5: cannot open" "$P" info "$TMP/missing.h5"

# ---- numbers out of range fail like malformed lines (nothing stored as INT64_MIN)
printf 'user,item,timestamp\nu,a,1\nu,b,99999999999999999999\nu,c,3\n' >"$TMP/big.csv"
expect_fail "csv: timestamp beyond int64" "big.csv:3: timestamp '99999999999999999999' is out of range" "$P" convert --format csv "$TMP/big.csv" -o "$TMP/big.h5"
no_output "timestamp beyond int64: no output" "$TMP/big.h5"
printf 'u,a,1e999\nu,b,1\nu,c,3\n' >"$TMP/big1.csv"
expect_fail "csv: an overflowing first line is data, not a header" "big1.csv:1: timestamp '1e999' is out of range" "$P" convert --format csv "$TMP/big1.csv" -o "$TMP/big.h5"
printf 'userId,movieId,rating,timestamp\n1,2,4,5\n1,3,1e39,6\n' >"$TMP/bigr.csv"
expect_fail "movielens-csv: rating beyond float" "bigr.csv:3: rating '1e39' is out of range" "$P" convert --format movielens-csv "$TMP/bigr.csv" -o "$TMP/big.h5"
printf '1::2::3::4\n1::3::3::-9223372036854775809\n' >"$TMP/big.dat"
expect_fail "movielens-dat: timestamp below int64" "big.dat:2: timestamp '-9223372036854775809' is out of range" "$P" convert --format movielens-dat "$TMP/big.dat" -o "$TMP/big.h5"
printf 'user_id:token\titem_id:token\ttimestamp:float\n1\t2\t9.3e18\n' >"$TMP/big.inter"
expect_fail "recbole: float timestamp beyond int64" "big.inter:2: timestamp '9.3e18' is out of range" "$P" convert --format recbole "$TMP/big.inter" -o "$TMP/big.h5"
no_output "out-of-range numbers: no output" "$TMP/big.h5"
# int64 extremes and timestamps past 2^53 are kept exactly; ids stay text
U=99999999999999999999
printf 'user,item,timestamp\n%s,a,9223372036854775807\n%s,b,1700000000123456789\n%s,c,-9223372036854775808\n' $U $U $U >"$TMP/ext.csv"
printf 'user,item,timestamp\n%s,c,-9223372036854775808\n%s,b,1700000000123456789\n%s,a,9223372036854775807\n' $U $U $U >"$TMP/ext.want"
"$P" convert --format csv "$TMP/ext.csv" -o "$TMP/ext.h5" >/dev/null 2>&1
"$P" export "$TMP/ext.h5" --format csv -o "$TMP/ext.out" >/dev/null 2>&1
same "int64 timestamps exact, numeric-looking ids kept as text" "$TMP/ext.want" "$TMP/ext.out"

# ---- duplicate (user, item, timestamp) rows: counted, dropped by default
printf 'user,item,timestamp\nu,a,1\nu,b,2\nu,a,1\nu,c,2\nu,b,2\nu,b,3\nv,x,1\nv,x,1\nv,x,1\nw,p,1\nw,q,2\nw,r,3\n' >"$TMP/d.csv"
printf 'u a b c b\nw p q r\n' >"$TMP/d.want"
out=$("$P" convert --format csv "$TMP/d.csv" -o "$TMP/d.h5" 2>&1)
if grep -q "^duplicates: 4 rows repeat an earlier (user, item, timestamp), dropped$" <<<"$out" &&
    grep -q "1 users (1 rows) with fewer than 3 items" <<<"$out"; then ok "duplicates counted, dropped before the short-user filter"; else
    notok "duplicates counted"; echo "$out" | sed 's/^/# /'; fi
"$P" export "$TMP/d.h5" --format seq -o "$TMP/d.out" >/dev/null 2>&1
same "duplicates dropped, the first row kept (adjacent or not)" "$TMP/d.want" "$TMP/d.out"
info_has "filter records duplicates=drop" "$TMP/d.h5" 'duplicates=drop$'
out=$("$P" convert --format csv --duplicates keep "$TMP/d.csv" -o "$TMP/dk.h5" 2>&1)
"$P" export "$TMP/dk.h5" --format seq -o "$TMP/dk.out" >/dev/null 2>&1
if grep -q "^duplicates: 4 rows .*, kept" <<<"$out" && [ "$(head -1 "$TMP/dk.out")" = "u a a b c b b" ]; then ok "--duplicates keep keeps them"; else
    notok "--duplicates keep"; echo "$out" | sed 's/^/# /'; sed 's/^/# /' "$TMP/dk.out"; fi
expect_fail "--duplicates takes drop or keep" "--duplicates 'maybe' is not drop or keep" "$P" convert --format csv --duplicates maybe "$TMP/d.csv" -o "$TMP/dm.h5"
if "$P" convert --help | grep -q -- "--duplicates drop|keep"; then ok "convert --help documents --duplicates"; else notok "convert --help lacks --duplicates"; fi
out=$("$P" convert --format seq "$TMP/a.seq" -o "$TMP/a2.h5" 2>&1)
if grep -q "^duplicates: not checked" <<<"$out"; then ok "seq: duplicates not checked, repeats kept"; else notok "seq: duplicates line"; echo "$out" | sed 's/^/# /'; fi

# ---- the output is never the input
cp "$TMP/b.csv" "$TMP/in.csv"
expect_fail "convert -o INPUT refused" "in.csv: is the input file" "$P" convert --format csv "$TMP/in.csv" -o "$TMP/in.csv"
ln -s in.csv "$TMP/in.link"
expect_fail "convert -o a link to the input refused" "in.link: is the input file" "$P" convert --format csv "$TMP/in.csv" -o "$TMP/in.link"
ln "$TMP/in.csv" "$TMP/in.hard"
expect_fail "convert -o a hard link to the input refused" "in.hard: is the input file" "$P" convert --format csv "$TMP/in.csv" -o "$TMP/in.hard"
expect_fail "convert -o the input by another path refused" "is the input file" "$P" convert --format csv "$TMP/in.csv" -o "$TMP/../$(basename "$TMP")/./in.csv"
cp "$TMP/b.csv" "$TMP/t.csv.tmp"
expect_fail "convert refuses an output whose .tmp is the input" "t.csv.tmp is the input file" "$P" convert --format csv "$TMP/t.csv.tmp" -o "$TMP/t.csv"
same "the input is unchanged" "$TMP/b.csv" "$TMP/in.csv"
cp "$TMP/a.h5" "$TMP/ain.h5"
expect_fail "export -o INPUT refused" "ain.h5: is the input file" "$P" export "$TMP/ain.h5" --format seq -o "$TMP/ain.h5"
info_has "export: the input is intact" "$TMP/ain.h5" '^users: 4$'

# ---- a full file system: exit 1 naming the output and the reason, nothing left
full() {  # NAME KIB OUT CMD...: CMD with files limited to KIB KiB (EFBIG, not SIGXFSZ)
    local name=$1 kib=$2 o=$3; shift 3
    local out rc
    out=$( (trap '' XFSZ; ulimit -f "$kib"; "$@") 2>&1); rc=$?
    if [ $rc -eq 1 ] && grep -q "$(basename "$o"): .*File too large" <<<"$out" && [ ! -e "$o" ] && [ ! -e "$o.tmp" ]; then ok "$name"; else
        notok "$name (exit $rc)"; echo "$out" | head -3 | sed 's/^/# /'; ls "$o"* 2>/dev/null | sed 's/^/# left: /'; fi
}
"$P" synth -o "$TMP/big.h5" --users 20000 --items 5000 >/dev/null 2>&1
"$P" export "$TMP/big.h5" --format seq -o "$TMP/big.seq" >/dev/null 2>&1
full "synth on a full disk" 64 "$TMP/full1.h5" "$P" synth -o "$TMP/full1.h5" --users 20000 --items 5000
full "convert on a full disk" 64 "$TMP/full2.h5" "$P" convert --format seq "$TMP/big.seq" -o "$TMP/full2.h5"
full "export on a full disk" 64 "$TMP/full3.seq" "$P" export "$TMP/big.h5" --format seq -o "$TMP/full3.seq"
# just under the finished size: the data fits, the final flush does not
kib=$(($(stat -c %s "$TMP/big.h5") / 1024 - 1))
full "synth: the final flush fails" "$kib" "$TMP/full4.h5" "$P" synth -o "$TMP/full4.h5" --users 20000 --items 5000

# ---- repeated items and the fingerprint in info
printf 'u1 a b a c a\nu2 x y z x\nu3 p q p r\nu4 a a b\n' >"$TMP/rep.seq"
"$P" convert --format seq "$TMP/rep.seq" -o "$TMP/rep.h5" >/dev/null 2>&1
info_has "info: repeated interactions" "$TMP/rep.h5" '^repeated items: 31.25% of interactions \(5\)'
info_has "info: repeated test and validation targets" "$TMP/rep.h5" '^repeated targets: test 50.00% \(2 users\), validation 50.00% \(2\)'
# the value a separate FNV-1a (Python, over h5dump's numbers) gives for rep.h5
info_has "info: fingerprint, 16 hex digits" "$TMP/rep.h5" '^fingerprint: e71761b3a79e824f$'
fp() { "$P" info "$1" 2>/dev/null | sed -n 's/^fingerprint: //p'; }
"$P" convert --format seq "$TMP/rep.seq" -o "$TMP/rep2.h5" >/dev/null 2>&1
sed 's/u4 a a b/u4 a a c/' "$TMP/rep.seq" >"$TMP/rep3.seq"
"$P" convert --format seq "$TMP/rep3.seq" -o "$TMP/rep3.h5" >/dev/null 2>&1
if [ -n "$(fp "$TMP/rep.h5")" ] && [ "$(fp "$TMP/rep.h5")" = "$(fp "$TMP/rep2.h5")" ] && [ "$(fp "$TMP/rep.h5")" != "$(fp "$TMP/rep3.h5")" ]; then
    ok "fingerprint: same contents same value, one item changed another"; else notok "fingerprint: $(fp "$TMP/rep.h5") $(fp "$TMP/rep2.h5") $(fp "$TMP/rep3.h5")"; fi

# ---- the real datasets
conv_real() {  # NAME FORMAT INPUT OUT USERS ITEMS [INTERACTIONS]
    local name=$1 fmt=$2 in=$3 out=$4
    if [ ! -f "$in" ]; then skip "$name: $in not present"; return; fi
    local t0=$SECONDS
    if ! o=$("$P" convert --format "$fmt" "$in" -o "$out" 2>&1); then notok "$name: convert"; echo "$o" | sed 's/^/# /'; return; fi
    echo "# $name: $(head -1 <<<"$o")"
    local info
    info=$("$P" info "$out" 2>&1)
    echo "$info" | sed 's/^/#   /'
    if grep -qx "users: $5" <<<"$info" && grep -qx "items: $6" <<<"$info" &&
        { [ -z "${7:-}" ] || grep -qx "interactions: $7" <<<"$info"; }; then
        ok "$name: $5 users, $6 items${7:+, $7 interactions} ($((SECONDS - t0)) s)"
    else notok "$name: expected $5 users, $6 items ${7:-}"; fi
}
if [ -d "$SHARED" ]; then
    conv_real "ml-latest-small" movielens-csv "$SHARED/ml-latest-small/ratings.csv" "$TMP/ml.h5" 671 9066 100004
    conv_real "amazon-beauty" seq "$SHARED/amazon-beauty/Beauty.txt" "$TMP/beauty.h5" 22363 12101 198502
    conv_real "amazon-sports" seq "$SHARED/amazon-sports/Sports_and_Outdoors.txt" "$TMP/sports.h5" 35598 18357 296337
    if [ -f "$TMP/beauty.h5" ]; then
        "$P" export "$TMP/beauty.h5" --format seq -o "$TMP/beauty.out" >/dev/null 2>&1
        same "amazon-beauty: seq round trip is exact" "$SHARED/amazon-beauty/Beauty.txt" "$TMP/beauty.out"
    fi
else
    skip "real datasets: $SHARED not present"
fi
