#!/usr/bin/env bash
# Recommendation serving benchmark: `confidant serve` (durable SQLite) loaded with
# MovieLens-100k as Product Viewed events (100,000 events, 943 users who consented to
# personalisation, 1,682 products), trained, then GET /api/recommendations at a fixed rate
# from a separate process (30 % of requests with a product as context), latency measured from
# each request's due time.
# Usage: bench/recs.sh [rate per second] [seconds]   (default 1000 for 30 s)
# Needs datasets/ml100k.csv: python3 tests/datasets/fetch_analytics.py datasets
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-1000}
SECONDS_=${2:-30}
cargo build --release -q -p confidant -p confidant-bench
BIN=./target/release
T=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
KEY=wk_bench_0123456789abcdef
cat > "$T/confidant.toml" <<TOML
data_dir = "$T/data"
[server]
listen = "127.0.0.1:0"
[[sources]]
name = "bench"
write_key = "$KEY"
[[api_keys]]
name = "ops"
key = "ak_bench_0123456789abcdef"
role = "admin"
[[api_keys]]
name = "site"
key = "ak_site_0123456789abcdef"
role = "marketer"
[log]
level = "warn"
TOML
$BIN/confidant serve --config "$T/confidant.toml" 2> "$T/server.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$T/server.log" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^confidant listening on //p' "$T/server.log")
$BIN/recs-load --url "$URL" --write-key "$KEY" --admin-key ak_bench_0123456789abcdef --marketer-key ak_site_0123456789abcdef \
  --interactions datasets/ml100k.csv --rate "$RATE" --seconds "$SECONDS_" | tee "$T/out.json"
python3 - "$T/out.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f"{r['requests']} requests offered at {r['offered_per_second']:.0f}/s, achieved {r['achieved_per_second']:.0f}/s, "
      f"errors {r['errors']}, personalised {r['personalised']}")
print(f"latency: p50 {l['p50']:.2f} ms, p90 {l['p90']:.2f} ms, p99 {l['p99']:.2f} ms, p99.9 {l['p999']:.2f} ms, max {l['max']:.2f} ms")
print(f"training on {r['users']} users x {r['items']} items: {r['train']['seconds']:.2f} s (HTTP round trip)")
PY
