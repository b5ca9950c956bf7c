"""Analytics benchmark: Confidant's models against the reference libraries, in one run.
  1. CLV: `confidant clv fit` vs lifetimes (BG/NBD + Gamma-Gamma) on CDNOW, whole process each.
  2. Recommendations: `confidant recs eval` vs implicit on MovieLens-100k, leave-last-out, k = 10;
     ALS over 10 seeds on both sides (the spread between seeds is larger than the differences).
  3. Forecasts: `confidant forecast eval` on real series shipped by pmdarima and statsmodels.
Run through bench/analytics.sh, which installs the references and fetches the data."""
import json, statistics, subprocess, sys, time
BIN = "./target/release/confidant"
RUNS = 5

def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out

def last_json(out):
    return json.loads(out.strip().splitlines()[-1]) if out.strip().startswith("{\"") else json.loads(out)

print("## CLV on CDNOW (cdnow_sample.csv, calibration end 1997-09-30, weeks)")
ours_t, theirs_t = [], []
for _ in range(RUNS):
    t, out = timed([BIN, "clv", "fit", "--transactions", "datasets/cdnow_sample.csv", "--customer-col", "customer_id", "--date-col", "date",
                    "--value-col", "dollars", "--calibration-end", "1997-09-30", "--period", "week"])
    ours_t.append(t); ours = json.loads(out)
    t, out = timed(["python3", "bench/ref_clv.py", "datasets/cdnow_sample.csv", "1997-09-30"])
    theirs_t.append(t); theirs = json.loads(out.strip().splitlines()[-1])
fmt = lambda d: ", ".join(f"{k} {v:.4g}" for k, v in sorted(d.items()) if k not in ("customers", "log_likelihood"))
print(f"confidant: customers {ours['customers']}; BG/NBD {fmt(ours['bgnbd'])}, LL {ours['bgnbd']['log_likelihood']:.1f}; Gamma-Gamma {fmt(ours['gamma_gamma'])} on {ours['gamma_gamma']['customers']}")
print(f"lifetimes: customers {theirs['customers']}; BG/NBD {fmt(theirs['bgnbd'])}; Gamma-Gamma {fmt(theirs['gamma_gamma'])} on {theirs['gamma_gamma']['customers']}")
mo, mt = statistics.median(ours_t), statistics.median(theirs_t)
print(f"whole process, median of {RUNS}: confidant {mo:.3f} s, lifetimes {mt:.3f} s: lifetimes / confidant = {mt / mo:.1f}x\n")

print("## Recommendations on MovieLens-100k (leave-last-out, k = 10)")
base = [BIN, "recs", "eval", "--interactions", "datasets/ml100k.csv", "--user-col", "user_id", "--item-col", "item_id", "--time-col", "timestamp", "--protocol", "loo", "--k", "10"]
def ours_run(model, *extra):
    return json.loads(subprocess.run(base + ["--model", model, *extra], check=True, capture_output=True, text=True).stdout)
def ref_run(model, *extra):
    out = subprocess.run(["python3", "bench/ref_recs.py", "datasets/ml100k.csv", model, *extra], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])
row = lambda name, d: print(f"{name:<34} HR@10 {d['hr_at_k']:.4f}  NDCG@10 {d['ndcg_at_k']:.4f}  train {d['train_s']:.3f} s")
for model in ["popular", "itemknn"]:
    row(f"confidant {model}", ours_run(model)); row(f"implicit {model}", ref_run(model))
def mean(runs):
    return {k: statistics.mean(r[k] for r in runs) for k in ("hr_at_k", "ndcg_at_k", "train_s")}
for alpha in ["1", "10"]:
    seeds = [str(s) for s in range(1, 11)]
    ours = [ours_run("als", "--seed", s, "--alpha", alpha) for s in seeds]
    theirs = [ref_run("als", "--seed", s, "--alpha", alpha) for s in seeds]
    row(f"confidant als alpha={alpha} (10 seeds)", mean(ours)); row(f"implicit als alpha={alpha} (10 seeds)", mean(theirs))
    print(f"  HR@10 range: confidant {min(r['hr_at_k'] for r in ours):.4f}-{max(r['hr_at_k'] for r in ours):.4f}, implicit {min(r['hr_at_k'] for r in theirs):.4f}-{max(r['hr_at_k'] for r in theirs):.4f}; "
          f"train time implicit / confidant = {mean(theirs)['train_s'] / mean(ours)['train_s']:.2f}x")
row("confidant als seed 42", ours_run("als", "--seed", "42")); row("implicit als seed 42", ref_run("als", "--seed", "42"))
print()

print("## Forecasts on real series (rolling origin, MASE)")
for name, h, w in [("monthly", "12", "3"), ("quarterly", "4", "4"), ("demo_categories", "14", "3"), ("demo_products", "14", "3")]:
    d = json.loads(subprocess.run([BIN, "forecast", "eval", "--series", f"datasets/{'demo' if name.startswith('demo') else 'series'}/{name}.csv", "--id-col", "id", "--date-col", "date", "--value-col", "value",
                                   "--horizon", h, "--windows", w], check=True, capture_output=True, text=True).stdout)
    models = ", ".join(f"{k} {v['mase']:.3f}" for k, v in sorted(d["models"].items(), key=lambda x: x[1]["mase"]))
    print(f"{name} ({d['series']} series, horizon {h}, {w} windows): auto {d['auto']['mase']:.3f}, seasonal naive {d['models']['seasonal_naive']['mase']:.3f}, "
          f"auto / seasonal naive = {d['auto_over_seasonal_naive']:.3f}; chosen {d['auto']['chosen']}")
    print(f"  every model: {models}")
