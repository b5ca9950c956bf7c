"""Writes real public series shipped inside Python packages as `id,date,value` CSV files:
monthly.csv (pmdarima: airpassengers, wineind; statsmodels: elec_equip, co2 monthly means)
and quarterly.csv (pmdarima: ausbeer, woolyrnq, austres). Usage: series_export.py OUT_DIR"""
import sys, os
import pandas as pd
import pmdarima.datasets as pm
import statsmodels.api as sm
from statsmodels.datasets import elec_equip
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
def frame(name, values, start, freq):
    values = pd.Series(list(values), dtype=float).interpolate()  # a few shipped series have a missing value
    idx = pd.date_range(start=start, periods=len(values), freq=freq)
    return pd.DataFrame({"id": name, "date": idx.strftime("%Y-%m-%d"), "value": values.values})
monthly = [
    frame("airpassengers", pm.load_airpassengers(), "1949-01-01", "MS"),
    frame("wineind", pm.load_wineind(), "1980-01-01", "MS"),
    frame("elec_equip", elec_equip.load().data.iloc[:, 0].values, "1995-01-01", "MS"),
]
co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().ffill()
monthly.append(frame("co2", co2.values, co2.index[0].strftime("%Y-%m-%d"), "MS"))
pd.concat(monthly).to_csv(f"{out}/monthly.csv", index=False)
quarterly = [
    frame("ausbeer", pm.load_ausbeer(), "1956-01-01", "QS"),
    frame("woolyrnq", pm.load_woolyrnq(), "1965-01-01", "QS"),
    frame("austres", pm.load_austres(), "1971-04-01", "QS"),
]
pd.concat(quarterly).to_csv(f"{out}/quarterly.csv", index=False)
print("written", out)
