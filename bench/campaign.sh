#!/usr/bin/env bash
# Campaign throughput to a local SMTP server (aiosmtpd, counting only), 100,000 recipients by
# default, with the bare SMTP client on the same server side by side.
#   bench/campaign.sh [RECIPIENTS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
C="${2:-8}"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r tests/smtp/requirements.txt
cargo build --release -q -p confidant-bench --bin campaign-bench
work="$(mktemp -d)"
trap 'kill $SINK 2>/dev/null || true; rm -rf "$work"' EXIT
coproc SINKP { exec python3 tests/smtp/sink.py "$work/mail" --count-only; }
SINK=$SINKP_PID
read -r PORT <&"${SINKP[0]}"
./target/release/campaign-bench --dir "$work/data" --recipients "$N" --smtp-port "$PORT" --connections "$C"
