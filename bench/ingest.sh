#!/usr/bin/env bash
# Ingestion benchmark, all in one run on this machine:
#   1. the raw limit: the rows the server stores for the same messages (events, profiles,
#      identifiers, traits) inserted straight into SQLite (no server), with Confidant's whole
#      schema and durability settings, 100 and 10,000 messages per commit; and the earlier,
#      cheaper baseline (event rows only, one profile, in order) for comparison;
#   2. the server at its peak: `confidant serve` (durable: synchronous=FULL, WAL) fed
#      100-message batches on /v1/batch by a separate load process over loopback;
#   3. the server at half that peak rate (open loop), for latency percentiles;
#   and first, the disk's own fdatasync latency (the floor of any durable acknowledgement).
# Usage: bench/ingest.sh [customers]   (about 58 messages per customer; default 5000)
set -euo pipefail
cd "$(dirname "$0")/.."
CUSTOMERS=${1:-5000}
cargo build --release -q -p confidant -p confidant-bench
BIN=./target/release
T=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

disk=$($BIN/fsync-probe --file "$T/probe" --count 500 --interval-ms 10)
raw100=$($BIN/raw-insert --db "$T/raw.db" --customers "$CUSTOMERS" --rows-per-commit 100)
raw10k=$($BIN/raw-insert --db "$T/raw.db" --customers "$CUSTOMERS" --rows-per-commit 10000)
rawev=$($BIN/raw-insert --db "$T/raw.db" --customers "$CUSTOMERS" --rows-per-commit 100 --rows events-only)
rm -f "$T"/raw.db*

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
[log]
level = "warn"
TOML
$BIN/confidant serve --config "$T/confidant.toml" 2> "$T/server.log" &
SERVER=$!
for _ in $(seq 100); do grep -q "listening on" "$T/server.log" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^confidant listening on //p' "$T/server.log")

peak=$($BIN/ingest-load --url "$URL" --write-key "$KEY" --customers "$CUSTOMERS" --concurrency 16 --run "peak$$")
rate=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['events_per_second'] / 2 / 100, 1))" "$peak")
# The server's own histograms over the half-peak phase tell the client's share of the
# latency from the server's: time to answer /v1/batch, and time from queueing a batch to
# its durable acknowledgement.
curl -s "$URL/metrics" > "$T/metrics.before"
half=$($BIN/ingest-load --url "$URL" --write-key "$KEY" --customers "$CUSTOMERS" --concurrency 64 --rate "$rate" --run "half$$")
curl -s "$URL/metrics" > "$T/metrics.after"

python3 - "$raw100" "$raw10k" "$peak" "$half" "$disk" "$rawev" "$T/metrics.before" "$T/metrics.after" <<'PY'
import json, re, sys
raw100, raw10k, peak, half, disk, rawev = (json.loads(a) for a in sys.argv[1:7])

def buckets(path, name, label):
    out = {}
    for line in open(path):
        if line.startswith(name + "_bucket") and label in line:
            le = re.search(r'le="([^"]+)"', line).group(1)
            out[le] = float(line.split()[-1])
    return out

def shares_over(name, label, bounds_ms):
    """Shares (%) of the half-peak phase's observations above each of `bounds_ms` (bucket bounds)."""
    a, b = buckets(sys.argv[7], name, label), buckets(sys.argv[8], name, label)
    total = b["+Inf"] - a.get("+Inf", 0)
    def over(ms):
        le = next(k for k in b if k != "+Inf" and abs(float(k) * 1000 - ms) < 1e-6)
        return 100 * (1 - (b[le] - a.get(le, 0)) / total) if total else 0.0
    return [over(ms) for ms in bounds_ms]
p = peak["events_per_second"]
print(json.dumps({"disk_fdatasync": disk, "raw_100_per_commit": raw100, "raw_10000_per_commit": raw10k, "raw_events_only_100_per_commit": rawev, "server_peak": peak, "server_half_peak": half}, indent=1))
print()
d = disk["latency_ms"]
print(f"disk: append 16 KiB + fdatasync, 100/s: p50 {d['p50']:.1f} ms, p90 {d['p90']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms")
print(f"raw SQLite insert, the server's rows, 100 messages/commit:    {raw100['rows_per_second']:>10,.0f} messages/s")
print(f"raw SQLite insert, the server's rows, 10,000 messages/commit: {raw10k['rows_per_second']:>10,.0f} messages/s")
print(f"raw SQLite insert, event rows only, in order, 100/commit:     {rawev['rows_per_second']:>10,.0f} messages/s")
print(f"server peak, durable:                  {p:>10,.0f} events/s  (p50 {peak['latency_ms']['p50']:.1f} ms, p99 {peak['latency_ms']['p99']:.1f} ms)")
print(f"server at half peak ({half['rate_batches_per_second']} batches/s): {half['events_per_second']:>8,.0f} events/s  p50 {half['latency_ms']['p50']:.1f} ms, p90 {half['latency_ms']['p90']:.1f} ms, p99 {half['latency_ms']['p99']:.1f} ms")
for what, name, label in [("request /v1/batch", "confidant_http_request_duration_seconds", 'route="/v1/batch"'), ("queue to journal ack", "confidant_ingest_commit_duration_seconds", "")]:
    s8, s16, s32 = shares_over(name, label, [8, 16, 32])
    print(f"  server side, {what}: over 8 ms {s8:.2f} %, over 16 ms {s16:.2f} %, over 32 ms {s32:.2f} %")
print(f"ratio server / raw (100 messages/commit):    {p / raw100['rows_per_second']:.2f}")
print(f"ratio server / raw (10,000 messages/commit): {p / raw10k['rows_per_second']:.2f}")
print(f"ratio server / raw event rows only (100/commit): {p / rawev['rows_per_second']:.2f}")
print(f"against RudderStack's ~3,000 events/s per 8-vCPU node: {p / 3000:.1f}x on 2 cores")
PY
