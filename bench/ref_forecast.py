"""statsforecast on the same rolling-origin protocol as `confidant forecast eval`: for each
series, `windows` consecutive test windows of `h` periods at the end, each forecast from
everything before it; MASE scaled by the training part's in-sample seasonal naive error (lag
m, or 1 when that is zero or too short). Models: AutoETS (statsforecast's automatic
exponential smoothing), SeasonalNaive, CrostonOptimized, TSB. Prints JSON.
Usage: ref_forecast.py SERIES_CSV SEASON H WINDOWS"""
import json, sys, time, warnings
import numpy as np
import pandas as pd
from statsforecast.models import AutoETS, SeasonalNaive, CrostonOptimized, TSB

warnings.filterwarnings("ignore")
path, m, h, windows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
df = pd.read_csv(path)

def mase(train, actual, fc, m):
    def scale(lag):
        if len(train) <= lag:
            return None
        d = np.mean(np.abs(train[lag:] - train[:-lag]))
        return d if d > 0 else None
    s = scale(max(m, 1)) or scale(1)
    return None if s is None else float(np.mean(np.abs(actual - fc)) / s)

models = {
    "auto_ets": lambda: AutoETS(season_length=m),
    "seasonal_naive": lambda: SeasonalNaive(season_length=m),
    "croston_optimized": lambda: CrostonOptimized(),
    "tsb": lambda: TSB(alpha_d=0.1, alpha_p=0.1),
}
scores = {k: [] for k in models}
# Warm numba's compilation outside the clock.
AutoETS(season_length=m).forecast(y=np.arange(1.0, 3 * m + 10), h=h)
started = time.perf_counter()
for _, g in df.groupby("id", sort=False):
    y = g["value"].to_numpy(dtype=float)
    for w in range(windows):
        cut = len(y) - (windows - w) * h
        if cut < 2:
            continue
        train, test = y[:cut], y[cut:cut + h]
        for name, make in models.items():
            try:
                fc = make().forecast(y=train, h=h)["mean"]
            except Exception:
                continue
            s = mase(train, test, np.asarray(fc), m)
            if s is not None:
                scores[name].append(s)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "models": {k: {"mase": float(np.mean(v)) if v else None, "scored": len(v)} for k, v in scores.items()}}))
