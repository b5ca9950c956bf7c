#!/usr/bin/env bash
# Analytics benchmark: CLV against lifetimes, recommendations against implicit, forecasts on
# real series and on the demo shop's sales; references installed here and measured in the same run (bench/analytics.py).
# Usage: bench/analytics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore lifetimes==0.11.3 implicit==0.7.3 pmdarima==2.1.1 statsmodels pandas
python3 ../shared/datasets/fetch.py --out datasets > /dev/null
python3 bench/series_export.py datasets/series > /dev/null
cargo build --release -q -p confidant -p confidant-bench
target/release/demo-sales --out datasets/demo 2> /dev/null   # the demo shop's daily sales, fixed seed and end
export OPENBLAS_NUM_THREADS=1
python3 bench/analytics.py
