#!/usr/bin/env bash
# One PostgreSQL's write rate for Confidant's rows on this machine, beside SQLite's, in one
# run: the same demo rows, 100 per transaction, durable commits. PostgreSQL over 1, 2 and 4
# connections (one per node). Needs a PostgreSQL server (CONFIDANT_TEST_DATABASE_URL, default
# the local one).
#   bench/pg-insert.sh [CUSTOMERS]
set -euo pipefail
cd "$(dirname "$0")/.."
C="${1:-3000}"
export CONFIDANT_TEST_DATABASE_URL="${CONFIDANT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo build --release -q -p confidant-bench --bin pg-insert --bin raw-insert
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
./target/release/raw-insert --db "$work/raw.db" --customers "$C" --rows-per-commit 100 --rows events-only
./target/release/pg-insert --customers "$C" --rows-per-commit 100
