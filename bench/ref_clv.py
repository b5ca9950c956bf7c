"""Reference for `confidant clv fit`: lifetimes' BG/NBD and Gamma-Gamma on a transactions CSV.
Prints the same JSON shape as `confidant clv fit`, plus the wall time of the whole process part."""
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data
path, cal_end = sys.argv[1], sys.argv[2]
df = pd.read_csv(path, dtype={"customer_id": str})
df["date"] = pd.to_datetime(df["date"])
df = df[df["date"] <= cal_end]
s = summary_data_from_transaction_data(df, "customer_id", "date", monetary_value_col="dollars",
                                       observation_period_end=cal_end, freq="D")
s["frequency"] = s["frequency"]; s["recency"] /= 7.0; s["T"] /= 7.0
bg = BetaGeoFitter(penalizer_coef=0.0).fit(s["frequency"], s["recency"], s["T"])
ret = s[(s["frequency"] > 0) & (s["monetary_value"] > 0)]
gg = GammaGammaFitter(penalizer_coef=0.0).fit(ret["frequency"], ret["monetary_value"])
p = bg.params_
out = {"customers": int(len(s)),
       "bgnbd": {"r": p["r"], "alpha": p["alpha"], "a": p["a"], "b": p["b"],
                 "log_likelihood": -bg._negative_log_likelihood_},
       "gamma_gamma": {"p": gg.params_["p"], "q": gg.params_["q"], "v": gg.params_["v"], "customers": int(len(ret))},
       "wall_s": time.perf_counter() - t0}
print(json.dumps(out))
