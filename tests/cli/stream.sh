#!/usr/bin/env bash
# elastic_eval --stream (RecGRELA and ELASTIC): a new user fed another user's
# whole history gets, after its last event, the top items the windowed
# evaluation gives that user; states saved midway and reloaded go on to the
# same recommendations; bad input is refused by name.
. "$(dirname "$0")/lib.sh"
plan 8
E=$BIN/elastic_eval
$BIN/elastic_prep synth -o "$TMP/s.h5" --users 200 --items 150 --clusters 8 --min-len 5 \
    --max-len 40 --seed 4 > /dev/null || { notok "dataset"; exit 1; }
$BIN/elastic_prep export "$TMP/s.h5" --format seq -o "$TMP/s.txt" > /dev/null
# L = 64 above every history (40): the window holds all of it, as the stream
# does. ELASTIC's chunks (8) start at the window's first position, the
# stream's at the user's first event: they are the same chunks for a history
# of whole chunks (64 - n a multiple of 8), so the user is one of 32 events.
u=$(awk 'NF - 1 == 32 { print $1; exit }' "$TMP/s.txt")
[ -n "$u" ] || { notok "a user of 32 events in the synthetic set"; exit 1; }
grep -E "^$u " "$TMP/s.txt" | tr ' ' '\n' | tail -n +2 | sed 's/^/newcomer /' > "$TMP/ev.txt"
head -10 "$TMP/ev.txt" > "$TMP/a.txt"; tail -n +11 "$TMP/ev.txt" > "$TMP/b.txt"
printf '3 7\n' >> "$TMP/a.txt"   # a user of the dataset too, kept in the states
printf '3 9\n' >> "$TMP/b.txt"
cat "$TMP/a.txt" "$TMP/b.txt" > "$TMP/ab.txt"
for model in recgrela elastic; do
ck=$TMP/ck_$model
$BIN/elastic_train --threads 2 --model $model --chunk 8 --experts 3 --mem-slots 1024 --data "$TMP/s.h5" \
    --L 64 --batch 16 --d 32 --steps 30 --log-every 30 --eval-every 0 --test false --ckpt-dir "$ck" \
    > /dev/null 2>&1 || notok "training $model"
$E --ckpt "$ck" --data "$TMP/s.h5" --stream "$TMP/ev.txt" --recommend 5 -o "$TMP/st.csv" 2>/dev/null
$E --ckpt "$ck" --data "$TMP/s.h5" --split all --recommend 5 -o "$TMP/all.csv" 2>/dev/null
n=$(wc -l < "$TMP/ev.txt")
got=$(awk -F, -v n="$n" '$1 == n { print $3 "," $4 }' "$TMP/st.csv")
want=$(awk -F, -v u="$u" '$1 == u { print $2 "," $3 }' "$TMP/all.csv")
# and the scores, to float tolerance
close=$(paste -d, <(awk -F, -v n="$n" '$1 == n { print $5 }' "$TMP/st.csv") \
                  <(awk -F, -v u="$u" '$1 == u { print $4 }' "$TMP/all.csv") |
        awk -F, '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-4 * (1 + ($2 < 0 ? -$2 : $2))) bad = 1 } END { print bad ? "no" : "yes" }')
[ -n "$got" ] && [ "$got" = "$want" ] && [ "$close" = yes ] \
    && ok "$model: user $u's history streamed ($n events): its top 5 and their scores as the windowed evaluation's" \
    || { notok "$model: streamed top 5 differ"; echo "# stream: $got" | tr '\n' ' '; echo; echo "# window: $want" | tr '\n' ' '; echo; }
# states saved after 10 events and reloaded: the same recommendations after
rm -f "$TMP/states"
$E --ckpt "$ck" --data "$TMP/s.h5" --stream "$TMP/ab.txt" --recommend 3 -o "$TMP/ab.csv" 2>/dev/null
$E --ckpt "$ck" --data "$TMP/s.h5" --stream "$TMP/a.txt" --states "$TMP/states" -o /dev/null 2>/dev/null
$E --ckpt "$ck" --data "$TMP/s.h5" --stream "$TMP/b.txt" --states "$TMP/states" --recommend 3 -o "$TMP/b.csv" 2>/dev/null
k=$(wc -l < "$TMP/a.txt")
if diff <(awk -F, -v k="$k" '$1 > k { $1 = ""; print }' "$TMP/ab.csv") <(awk -F, '{ $1 = ""; print }' "$TMP/b.csv") >/dev/null &&
    [ -s "$TMP/b.csv" ]; then
    ok "$model: states saved after $k events and reloaded: the same recommendations as one stream"
else notok "$model: reloaded states differ"; fi
done
# many users (the table of states grows twice over): 150 newcomers, each
# with an event before the states are saved and one after
awk 'BEGIN { for (u = 0; u < 150; u++) print "new" u, 1 + u % 100 }' > "$TMP/m1.txt"
awk 'BEGIN { for (u = 149; u >= 0; u--) print "new" u, 1 + (u * 7) % 100 }' > "$TMP/m2.txt"
cat "$TMP/m1.txt" "$TMP/m2.txt" > "$TMP/m12.txt"
$E --ckpt "$TMP/ck_recgrela" --data "$TMP/s.h5" --stream "$TMP/m12.txt" --recommend 2 -o "$TMP/m12.csv" 2>/dev/null
$E --ckpt "$TMP/ck_recgrela" --data "$TMP/s.h5" --stream "$TMP/m1.txt" --states "$TMP/mstates" -o /dev/null 2>/dev/null
$E --ckpt "$TMP/ck_recgrela" --data "$TMP/s.h5" --stream "$TMP/m2.txt" --states "$TMP/mstates" --recommend 2 -o "$TMP/m2.csv" 2>/dev/null
# and a user's second recommendations there are those of its two events alone
alone() { grep -E "^$1 " "$TMP/m12.txt" > "$TMP/one.txt"
          $E --ckpt "$TMP/ck_recgrela" --data "$TMP/s.h5" --stream "$TMP/one.txt" --recommend 2 2>/dev/null |
              awk -F, '$1 == 2 { $1 = ""; print }'; }
in_m12() { awk -F, -v u="$1" '$2 == u && $1 > 150 { $1 = ""; print }' "$TMP/m12.csv"; }
if [ "$(wc -l < "$TMP/m2.csv")" = 300 ] &&
    diff <(awk -F, '$1 > 150 { $1 = ""; print }' "$TMP/m12.csv") <(awk -F, '{ $1 = ""; print }' "$TMP/m2.csv") > /dev/null &&
    [ -n "$(alone new7)" ] && [ "$(alone new7)" = "$(in_m12 new7)" ] && [ "$(alone new100)" = "$(in_m12 new100)" ]; then
    ok "150 users' states kept apart and saved and reloaded: each goes on as its own stream"
else notok "many users' states"; fi
grep -q '^elastic-stream-states 1$' "$TMP/states" && ok "the states file: its header, the users' states" || notok "states file"
printf 'newcomer 100000\n' > "$TMP/bad.txt"
expect_fail "an unknown item is named with its line" "bad\.txt:1: item '100000' is not in the dataset" \
    $E --ckpt "$TMP/ck_elastic" --data "$TMP/s.h5" --stream "$TMP/bad.txt"
$BIN/elastic_train --threads 2 --model sasrec --data "$TMP/s.h5" --L 64 --batch 16 --d 32 \
    --steps 2 --log-every 2 --eval-every 0 --test false --ckpt-dir "$TMP/cks" > /dev/null 2>&1
expect_fail "SASRec is refused: no state to carry" "sasrec has no state to carry" \
    $E --ckpt "$TMP/cks" --data "$TMP/s.h5" --stream "$TMP/ev.txt"
