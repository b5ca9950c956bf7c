#!/usr/bin/env bash
# Deduplication benchmark, in one run on this machine:
#   1. FEBRL 1 and 2: `confidant dedupe` and Splink 5 (DuckDB, bench/splink_febrl.py) on the
#      same file, each timed as a whole process, pair F1 against the true pairs;
#   2. synthetic customers (crates/bench synth-people, fixed seed, ~10 % duplicates with typos,
#      swapped names, missing fields, day/month swaps): time, peak memory and F1.
# Usage: bench/dedupe.sh [records]   (default 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${1:-1000000}
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "splink==5.0.0" pandas
python3 tests/datasets/fetch_febrl.py datasets
cargo build --release -q -p confidant -p confidant-bench
BIN=./target/release
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

now() { date +%s.%N; }
for set in febrl1 febrl2; do
  start=$(now)
  ours=$($BIN/confidant dedupe "datasets/$set.csv" --id rec_id --ignore true_cluster --pairs-out "$T/$set.csv" --truth "datasets/${set}_true_pairs.csv" 2>/dev/null)
  ours_s=$(echo "$(now) - $start" | bc)
  ours_f1=$(echo "$ours" | sed -n 's/.*F1 \([0-9.]*\).*/\1/p')
  ref=$(python3 bench/splink_febrl.py "datasets/$set.csv" "datasets/${set}_true_pairs.csv" 2>/dev/null | tail -1)
  ref_s=$(echo "$ref" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')
  ref_f1=$(echo "$ref" | python3 -c 'import json,sys; print(json.load(sys.stdin)["f1"])')
  printf '%s: confidant %.2f s F1 %s | splink %.2f s F1 %s | splink / confidant time: %.1fx\n' "$set" "$ours_s" "$ours_f1" "$ref_s" "$ref_f1" "$(echo "$ref_s / $ours_s" | bc -l)"
done

$BIN/synth-people --records "$RECORDS" --out "$T/people.csv" --truth "$T/truth.csv" 2>/dev/null
/usr/bin/time -f "%e %M" -o "$T/time" $BIN/confidant dedupe "$T/people.csv" --id rec_id --pairs-out "$T/pairs.csv" --truth "$T/truth.csv" 2>/dev/null > "$T/out"
read -r secs kb < "$T/time"
printf 'synthetic %s records: %s s wall, %.2f GiB peak, %s\n' "$RECORDS" "$secs" "$(echo "$kb / 1048576" | bc -l)" "$(grep -o 'F1 [0-9.]*' "$T/out")"
