"""Reference for `confidant recs eval`: the implicit package under the same leave-last-out
protocol. Usage: ref_recs.py FILE als|itemknn|popular [--k 10] [--weight binary|value]
Each user's last interaction (latest time, ties broken by the larger item id) is held out; the
top k are ranked over the whole catalogue, excluding the user's training items."""
import argparse, json, os, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np, pandas as pd, scipy.sparse as sp
ap = argparse.ArgumentParser()
ap.add_argument("file"); ap.add_argument("model"); ap.add_argument("--k", type=int, default=10)
ap.add_argument("--weight", default="binary"); ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--threads", type=int, default=0); ap.add_argument("--alpha", type=float, default=1.0)
a = ap.parse_args()
t_all = time.perf_counter()
df = pd.read_csv(a.file)
df = df.sort_values(["user_id", "timestamp", "item_id"])
last = df.groupby("user_id").tail(1)
train = df.drop(last.index)
users = {u: i for i, u in enumerate(sorted(df.user_id.unique()))}
items = {v: i for i, v in enumerate(sorted(df.item_id.unique()))}
ui = train.user_id.map(users).values; ii = train.item_id.map(items).values
vals = np.ones(len(train), dtype=np.float32) if a.weight == "binary" else train.rating.values.astype(np.float32)
m = sp.csr_matrix((vals, (ui, ii)), shape=(len(users), len(items)))
m.sum_duplicates()
if a.weight == "binary": m.data[:] = 1.0
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender
t = time.perf_counter()
if a.model == "als":
    model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, alpha=a.alpha, random_state=a.seed, num_threads=a.threads)
    model.fit(m, show_progress=False)
elif a.model == "itemknn":
    model = CosineRecommender(K=50, num_threads=a.threads)
    model.fit(m, show_progress=False)
train_s = time.perf_counter() - t
held_u = last.user_id.map(users).values; held_i = last.item_id.map(items).values
if a.model == "popular":
    pop = np.asarray((m > 0).sum(axis=0)).ravel().astype(float)
    order = np.lexsort((np.arange(len(pop)), -pop))
    recs = []
    for u in held_u:
        seen = set(m[u].indices); recs.append([i for i in order if i not in seen][:a.k])
    recs = np.array(recs)
else:
    recs, _ = model.recommend(held_u, m[held_u], N=a.k, filter_already_liked_items=True)
hits = 0; ndcg = 0.0
for r, h in zip(recs, held_i):
    w = np.where(np.asarray(r) == h)[0]
    if len(w): hits += 1; ndcg += 1.0 / np.log2(w[0] + 2)
n = len(held_u)
print(json.dumps({"model": a.model, "users": n, "hr_at_k": hits / n, "ndcg_at_k": ndcg / n, "precision_at_k": hits / n / a.k,
                  "train_s": train_s, "wall_s": time.perf_counter() - t_all}))
