#!/usr/bin/env bash
# Ingestion with 1, 2 and 3 `confidant serve` nodes on one PostgreSQL, all in one run on this
# machine: each round starts from a fresh database, starts the nodes (the same master key,
# nothing else shared), and feeds them 100-message batches on /v1/batch from a separate load
# process over loopback, batch i to node i mod n. The same workload against one node on the
# embedded SQLite is measured in the same run, for the ratio.
# Usage: bench/pg-nodes.sh [customers] [postgres admin URL]
#   (about 58 messages per customer; default 2000; URL default: CONFIDANT_TEST_DATABASE_URL or
#   postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
CUSTOMERS=${1:-2000}
ADMIN=${2:-${CONFIDANT_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
cargo build --release -q -p confidant -p confidant-bench
BIN=./target/release
T=$(mktemp -d)
PIDS=()
DB=confidant_bench_$$
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT
KEY=wk_bench_0123456789abcdef
export CONFIDANT_MASTER_KEY=$(python3 -c "import secrets; print(secrets.token_hex(32))")
BASE=${ADMIN%/*}

start_node() { # $1: node number, $2: database_url line (empty for SQLite); sets NODE_URL
  mkdir -p "$T/n$1"
  cat > "$T/n$1/confidant.toml" <<TOML
$2
data_dir = "$T/n$1/data"
[server]
listen = "127.0.0.1:0"
[[sources]]
name = "bench"
write_key = "$KEY"
[[api_keys]]
name = "ops"
key = "ak_bench_0123456789abcdef"
role = "admin"
[jobs]
audiences_refresh_seconds = 0
campaigns_seconds = 0
[log]
level = "warn"
TOML
  $BIN/confidant serve --config "$T/n$1/confidant.toml" > /dev/null 2> "$T/n$1/server.log" &
  PIDS+=($!)
  for _ in $(seq 300); do grep -q "listening on" "$T/n$1/server.log" 2>/dev/null && break; sleep 0.1; done
  NODE_URL=$(sed -n 's/^confidant listening on //p' "$T/n$1/server.log")
}

stop_nodes() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

RESULTS=()
# SQLite, one node, the same workload.
start_node 0 ""
RESULTS+=("$($BIN/ingest-load --url "$NODE_URL" --write-key "$KEY" --customers "$CUSTOMERS" --concurrency 16 --run "sqlite$$")")
stop_nodes
for n in 1 2 3; do
  psql -q "$ADMIN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql -q "$ADMIN" -c "CREATE DATABASE $DB" >/dev/null
  urls=()
  for i in $(seq "$n"); do start_node "$n$i" "database_url = \"$BASE/$DB\""; urls+=("$NODE_URL"); done
  list=$(IFS=,; echo "${urls[*]}")
  RESULTS+=("$($BIN/ingest-load --url "$list" --write-key "$KEY" --customers "$CUSTOMERS" --concurrency $((16 * n)) --run "pg$n-$$")")
  events=$(psql -tA "$BASE/$DB" -c "SELECT count(*) FROM events")
  profiles=$(psql -tA "$BASE/$DB" -c "SELECT count(*) FROM profiles WHERE merged_into IS NULL")
  RESULTS+=("{\"stored_events\": $events, \"live_profiles\": $profiles}")
  stop_nodes
done

python3 - "${RESULTS[@]}" <<'PY'
import json, sys
r = [json.loads(a) for a in sys.argv[1:]]
sqlite, rounds = r[0], [(r[i], r[i + 1]) for i in range(1, len(r), 2)]
print(json.dumps({"sqlite_one_node": sqlite, "postgres": [{"nodes": n + 1, "load": a, "database": b} for n, (a, b) in enumerate(rounds)]}, indent=1))
print()
s = sqlite["events_per_second"]
print(f"SQLite, 1 node:      {s:>9,.0f} events/s  p50 {sqlite['latency_ms']['p50']:.1f} ms, p99 {sqlite['latency_ms']['p99']:.1f} ms")
for n, (a, b) in enumerate(rounds, 1):
    e = a["events_per_second"]
    print(f"PostgreSQL, {n} node{'s' if n > 1 else ' '}: {e:>9,.0f} events/s  p50 {a['latency_ms']['p50']:.1f} ms, p99 {a['latency_ms']['p99']:.1f} ms"
          f"  ({e / s:.2f} of SQLite; {e / 3000:.1f}x RudderStack's ~3,000/s per node; {b['stored_events']} events, {b['live_profiles']} profiles stored; errors {a.get('errors', 0)})")
PY
