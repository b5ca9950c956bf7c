#!/usr/bin/env bash
# Forecasts against statsforecast on the same protocol: `confidant forecast eval` (automatic
# choice by an inner backtest) and statsforecast's AutoETS, SeasonalNaive, CrostonOptimized and
# TSB (bench/ref_forecast.py), on the real series of bench/series_export.py; MASE per set and
# whole-process time, both measured in this run.
# Usage: bench/forecast_ref.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore statsforecast==2.0.1 pmdarima==2.1.1 statsmodels pandas
python3 bench/series_export.py datasets/series > /dev/null
cargo build --release -q -p confidant
for set in "monthly 12 12 3" "quarterly 4 4 4"; do
  read -r name m h w <<< "$set"
  t0=$(date +%s.%N)
  ours=$(target/release/confidant forecast eval --series "datasets/series/$name.csv" --id-col id --date-col date --value-col value --horizon "$h" --windows "$w" 2>/dev/null)
  t1=$(date +%s.%N)
  ref=$(python3 bench/ref_forecast.py "datasets/series/$name.csv" "$m" "$h" "$w")
  t2=$(date +%s.%N)
  python3 - "$name" "$ours" "$ref" "$t0" "$t1" "$t2" <<'PY'
import json, sys
name, ours, ref = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
t0, t1, t2 = map(float, sys.argv[4:7])
o, r = ours["models"], ref["models"]
print(f"{name}: confidant auto {ours['auto']['mase']:.3f} | statsforecast AutoETS {r['auto_ets']['mase']:.3f} "
      f"| seasonal naive {o['seasonal_naive']['mase']:.3f} vs {r['seasonal_naive']['mase']:.3f} "
      f"| TSB {o['tsb']['mase']:.3f} vs {r['tsb']['mase']:.3f} "
      f"| time {t1 - t0:.2f} s vs {t2 - t1:.2f} s (fits alone {ref['seconds']:.2f} s)")
PY
done
