#!/usr/bin/env bash
# elastic_eval: a checkpoint's test metrics equal the trainer's final test
# (both protocols), on 1 and 2 ranks, from a checkpoint of 2 ranks too;
# --recommend writes each user's top K with the dataset's own ids, the same
# on 2 ranks; bad command lines are refused clearly.
. "$(dirname "$0")/lib.sh"
plan 12
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
E=$BIN/elastic_eval
T="$BIN/elastic_train --threads 2"
# a dataset with string ids: users u0.., items i0.. (a CSV through the converter)
awk 'BEGIN { srand(7); for (u = 0; u < 300; u++) { n = 8 + int(rand() * 30);
     for (t = 0; t < n; t++) printf "u%d,i%d,%d\n", u, int(rand() * rand() * 200), t } }' > "$TMP/i.csv"
$BIN/elastic_prep convert --format csv "$TMP/i.csv" -o "$TMP/s.h5" > /dev/null 2>&1 || { notok "dataset"; exit 1; }
ck="--model elastic --chunk 8 --experts 3 --mem-slots 256 --mem-topk 4 --data $TMP/s.h5 --L 20 --batch 32 --d 32 --log-every 10 --eval-every 10 --eval-users 100 --dropout 0.2 --steps 30"
$T $ck --ckpt-dir "$TMP/ck" > "$TMP/train.log" 2>&1 || notok "training"
trainer=$(grep '^test  ' "$TMP/train.log" | sed -E 's/ \(model of step [0-9]+\)$//')

expect_ok "elastic_eval --help" $E --help
expect_fail "--ckpt and --data are required" "--ckpt and --data are required" $E --data "$TMP/s.h5"
expect_fail "--split all needs --recommend" "goes with --recommend" $E --ckpt "$TMP/ck" --data "$TMP/s.h5" --split all
expect_fail "a missing checkpoint is named" "nope" $E --ckpt "$TMP/nope" --data "$TMP/s.h5"
got=$( ($E --ckpt "$TMP/ck" --data "$TMP/s.h5" --threads 2; $E --ckpt "$TMP/ck" --data "$TMP/s.h5" --threads 2 --mask-history true) 2>/dev/null)
[ -n "$trainer" ] && [ "$got" = "$trainer" ] \
    && ok "the trainer's final test lines, both protocols, from its checkpoint" \
    || { notok "elastic_eval differs from the trainer"; diff <(echo "$trainer") <(echo "$got") | sed 's/^/# /'; }
if command -v mpirun >/dev/null; then
    mpi="timeout -k 5 120 mpirun --oversubscribe -np 2"
    got2=$($mpi $E --ckpt "$TMP/ck" --data "$TMP/s.h5" --threads 1 2>/dev/null)
    [ "$got2" = "$(head -1 <<<"$trainer")" ] && ok "on 2 ranks: the same numbers" || { notok "2 ranks differ"; echo "# $got2"; }
    $mpi $T $ck --threads 1 --ckpt-dir "$TMP/ck2" > "$TMP/train2.log" 2>&1
    got3=$($E --ckpt "$TMP/ck2" --data "$TMP/s.h5" --threads 2 2>/dev/null)
    [ -n "$got3" ] && [ "$got3" = "$(grep '^test  ' "$TMP/train2.log" | head -1 | sed -E 's/ \(model of step [0-9]+\)$//')" ] \
        && ok "a checkpoint of 2 ranks (its bank in 2 shards) evaluated on 1: the trainer's numbers" \
        || { notok "2-rank checkpoint on 1 rank"; echo "# $got3"; }
else
    for i in 1 2; do skip "no mpirun"; done
fi
# recommendations: K per user with the dataset's ids, history left out
$E --ckpt "$TMP/ck" --data "$TMP/s.h5" --recommend 5 --exclude-seen --split all -o "$TMP/rec.csv" 2>/dev/null
if [ "$(head -1 "$TMP/rec.csv")" = "user,rank,item,score" ] && [ "$(tail -n +2 "$TMP/rec.csv" | wc -l)" = 1500 ] &&
    [ "$(tail -n +2 "$TMP/rec.csv" | cut -d, -f1 | sort -u | wc -l)" = 300 ] &&
    tail -n +2 "$TMP/rec.csv" | awk -F, '$1 !~ /^u[0-9]+$/ || $3 !~ /^i[0-9]+$/ || $2 < 1 || $2 > 5 { bad = 1 } END { exit bad }'; then
    ok "--recommend 5: 5 lines for each of 300 users, original user and item ids"
else notok "--recommend output"; head -3 "$TMP/rec.csv" | sed 's/^/# /'; fi
# only the requested users, in the order asked, the same lines as for all
printf 'u7\nu0\nu123\n' > "$TMP/ids.txt"
$E --ckpt "$TMP/ck" --data "$TMP/s.h5" --recommend 5 --exclude-seen --split all --user-ids "$TMP/ids.txt" \
    -o "$TMP/some.csv" 2>/dev/null
want=$(for u in u7 u0 u123; do grep "^$u," "$TMP/rec.csv"; done)
[ -n "$want" ] && [ "$(tail -n +2 "$TMP/some.csv")" = "$want" ] \
    && ok "--user-ids: only the users asked for, in their order, their lines as among all" \
    || { notok "--user-ids"; head -4 "$TMP/some.csv" | sed 's/^/# /'; }
printf 'u7\nnobody\n' > "$TMP/bad_ids.txt"
expect_fail "--user-ids names an unknown user with its line" "bad_ids\.txt:2: user 'nobody' is not in the dataset" \
    $E --ckpt "$TMP/ck" --data "$TMP/s.h5" --recommend 5 --split all --user-ids "$TMP/bad_ids.txt"
seen=$(tail -n +2 "$TMP/rec.csv" | awk -F, 'NR == FNR { s[$1 "," $2] = 1; next } s[$1 "," $3] { n++ } END { print n + 0 }' "$TMP/i.csv" -)
[ "$seen" = 0 ] && ok "--exclude-seen: no recommended item is in its user's history" || notok "$seen recommended items were seen"
if command -v mpirun >/dev/null; then
    $mpi $E --ckpt "$TMP/ck" --data "$TMP/s.h5" --threads 1 --recommend 5 --exclude-seen --split all -o "$TMP/rec2.csv" 2>/dev/null
    diff <(sort "$TMP/rec.csv") <(sort "$TMP/rec2.csv") >/dev/null && ! ls "$TMP"/rec2.csv.part* >/dev/null 2>&1 \
        && ok "--recommend on 2 ranks: the same recommendations in one file" || notok "2-rank recommendations differ"
else
    skip "no mpirun"
fi
