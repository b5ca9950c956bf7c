//! Recommendations from implicit feedback: item-item nearest neighbours (cosine or BM25),
//! implicit ALS (Hu, Koren and Volinsky 2008, solved by conjugate gradient as in Takács et
//! al. 2011), and popularity; with the leave-last-out evaluation.
//!
//! Users and items are dense indices here; the caller maps its ids (pseudonymous profile ids,
//! product ids) to and from them, and decides who may be in the training data at all.

use rayon::prelude::*;
use serde::Serialize;

use crate::AnalyticsError;

/// A sparse user × item matrix of confidences, stored both ways (CSR and its transpose).
#[derive(Clone, Debug)]
pub struct Interactions {
    pub users: usize,
    pub items: usize,
    user_ptr: Vec<usize>,
    user_items: Vec<u32>,
    user_values: Vec<f32>,
    item_ptr: Vec<usize>,
    item_users: Vec<u32>,
    item_values: Vec<f32>,
}

fn csr(rows: usize, triples: &mut [(u32, u32, f32)]) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    triples.sort_unstable_by_key(|t| (t.0, t.1));
    let mut ptr = vec![0usize; rows + 1];
    let mut cols = Vec::with_capacity(triples.len());
    let mut vals: Vec<f32> = Vec::with_capacity(triples.len());
    let mut last: Option<(u32, u32)> = None;
    for &(r, c, v) in triples.iter() {
        if last == Some((r, c)) {
            *vals.last_mut().expect("a previous value") += v;
            continue;
        }
        last = Some((r, c));
        ptr[r as usize + 1] += 1;
        cols.push(c);
        vals.push(v);
    }
    for r in 0..rows {
        ptr[r + 1] += ptr[r];
    }
    (ptr, cols, vals)
}

impl Interactions {
    /// From (user, item, confidence) triples; repeated pairs add up.
    pub fn new(users: usize, items: usize, triples: &[(u32, u32, f32)]) -> Interactions {
        let mut by_user = triples.to_vec();
        let (user_ptr, user_items, user_values) = csr(users, &mut by_user);
        let mut by_item: Vec<(u32, u32, f32)> = (0..users).flat_map(|u| (user_ptr[u]..user_ptr[u + 1]).map(move |k| (u, k))).map(|(u, k)| (user_items[k], u as u32, user_values[k])).collect();
        let (item_ptr, item_users, item_values) = csr(items, &mut by_item);
        Interactions { users, items, user_ptr, user_items, user_values, item_ptr, item_users, item_values }
    }

    /// The items of a user with their confidences.
    pub fn user(&self, u: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        let r = self.user_ptr[u]..self.user_ptr[u + 1];
        self.user_items[r.clone()].iter().copied().zip(self.user_values[r].iter().copied())
    }

    fn user_slice(&self, u: usize) -> (&[u32], &[f32]) {
        let r = self.user_ptr[u]..self.user_ptr[u + 1];
        (&self.user_items[r.clone()], &self.user_values[r])
    }

    fn item_slice(&self, i: usize) -> (&[u32], &[f32]) {
        let r = self.item_ptr[i]..self.item_ptr[i + 1];
        (&self.item_users[r.clone()], &self.item_values[r])
    }

    pub fn nnz(&self) -> usize {
        self.user_items.len()
    }

    /// How many users interacted with each item.
    pub fn item_counts(&self) -> Vec<u32> {
        (0..self.items).map(|i| (self.item_ptr[i + 1] - self.item_ptr[i]) as u32).collect()
    }
}

/// The k best (score, item) pairs, best first, ties to the smaller item index; `skip` items
/// (sorted) are left out.
pub fn top_k(scores: &[f32], k: usize, skip: &[u32]) -> Vec<(u32, f32)> {
    let mut c: Vec<(u32, f32)> = scores.iter().enumerate().filter(|(i, s)| s.is_finite() && skip.binary_search(&(*i as u32)).is_err()).map(|(i, &s)| (i as u32, s)).collect();
    let better = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if c.len() > k {
        c.select_nth_unstable_by(k, better);
        c.truncate(k);
    }
    c.sort_unstable_by(better);
    c
}

/// A trained recommender.
pub trait Recommender: Sync {
    /// Scores of every item for a user described by their interactions (item, confidence),
    /// which need not have been in the training data.
    fn score(&self, history: &[(u32, f32)]) -> Vec<f32>;
    /// Items similar to one item, best first, itself excluded.
    fn similar(&self, item: u32, n: usize) -> Vec<(u32, f32)>;
}

/// Popularity: the number of distinct users per item.
#[derive(Clone, Debug, Serialize)]
pub struct Popular {
    pub counts: Vec<u32>,
}

impl Popular {
    pub fn fit(data: &Interactions) -> Popular {
        Popular { counts: data.item_counts() }
    }
}

impl Recommender for Popular {
    fn score(&self, _history: &[(u32, f32)]) -> Vec<f32> {
        self.counts.iter().map(|&c| c as f32).collect()
    }
    fn similar(&self, item: u32, n: usize) -> Vec<(u32, f32)> {
        top_k(&self.score(&[]), n, &[item])
    }
}

/// How item vectors are weighted before the item-item similarity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Weighting {
    /// Each item's vector of users scaled to unit length: cosine similarity.
    Cosine,
    /// Okapi BM25 over the items' vectors of users (k1 = 100, b = 0.8), the weighting that
    /// helps most when a few users interact with everything.
    Bm25,
}

/// Item-item nearest neighbours: each item keeps its `k` most similar items (itself
/// included, as the reference does); a user's score for an item is the sum of the
/// similarities from the items they interacted with, weighted by their confidence.
#[derive(Clone, Debug)]
pub struct ItemKnn {
    /// Per item, its neighbours and similarities, best first.
    pub neighbours: Vec<Vec<(u32, f32)>>,
}

impl ItemKnn {
    pub fn fit(data: &Interactions, k: usize, weighting: Weighting) -> ItemKnn {
        // Weighted item vectors over users.
        let weights: Vec<f32> = match weighting {
            Weighting::Cosine => (0..data.items)
                .flat_map(|i| {
                    let (_, v) = data.item_slice(i);
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter().map(move |x| if norm > 0.0 { x / norm } else { 0.0 })
                })
                .collect(),
            Weighting::Bm25 => {
                let (k1, b) = (100.0f32, 0.8f32);
                let n = data.items as f32;
                let user_df: Vec<f32> = (0..data.users).map(|u| (data.user_ptr[u + 1] - data.user_ptr[u]) as f32).collect();
                let lengths: Vec<f32> = (0..data.items).map(|i| data.item_slice(i).1.iter().sum()).collect();
                let avg = lengths.iter().sum::<f32>() / n.max(1.0);
                (0..data.items)
                    .flat_map(|i| {
                        let (users, v) = data.item_slice(i);
                        let norm = 1.0 - b + b * lengths[i] / avg.max(f32::MIN_POSITIVE);
                        let user_df = &user_df;
                        users.iter().zip(v).map(move |(&u, &x)| {
                            let idf = (n / user_df[u as usize]).ln().max(0.0);
                            x * (k1 + 1.0) / (k1 * norm + x) * idf
                        })
                    })
                    .collect()
            }
        };
        // The same weights, laid out per user, to walk co-occurrences.
        let mut per_user: Vec<Vec<(u32, f32)>> = vec![Vec::new(); data.users];
        for i in 0..data.items {
            let (users, _) = data.item_slice(i);
            for (j, &u) in users.iter().enumerate() {
                per_user[u as usize].push((i as u32, weights[data.item_ptr[i] + j]));
            }
        }
        let neighbours = (0..data.items)
            .into_par_iter()
            .map_init(
                || vec![0f32; data.items],
                |acc, i| {
                    let (users, _) = data.item_slice(i);
                    let mut touched = Vec::new();
                    for (j, &u) in users.iter().enumerate() {
                        let wi = weights[data.item_ptr[i] + j];
                        for &(other, wo) in &per_user[u as usize] {
                            if acc[other as usize] == 0.0 {
                                touched.push(other);
                            }
                            acc[other as usize] += wi * wo;
                        }
                    }
                    let mut row: Vec<(u32, f32)> = touched.iter().map(|&o| (o, acc[o as usize])).filter(|x| x.1 > 0.0).collect();
                    for &o in &touched {
                        acc[o as usize] = 0.0;
                    }
                    let better = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                    if row.len() > k {
                        row.select_nth_unstable_by(k, better);
                        row.truncate(k);
                    }
                    row.sort_unstable_by(better);
                    row
                },
            )
            .collect();
        ItemKnn { neighbours }
    }
}

impl Recommender for ItemKnn {
    fn score(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let mut s = vec![0f32; self.neighbours.len()];
        for &(i, c) in history {
            if let Some(row) = self.neighbours.get(i as usize) {
                for &(j, w) in row {
                    s[j as usize] += c * w;
                }
            }
        }
        s
    }
    fn similar(&self, item: u32, n: usize) -> Vec<(u32, f32)> {
        self.neighbours.get(item as usize).map(|r| r.iter().copied().filter(|x| x.0 != item).take(n).collect()).unwrap_or_default()
    }
}

/// Hyperparameters of implicit ALS.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct AlsParams {
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    /// Confidence = alpha × value for the observed pairs (1 for the unobserved ones).
    pub alpha: f32,
    /// Conjugate-gradient steps per solve; 0 solves exactly (Cholesky).
    pub cg_steps: usize,
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams { factors: 64, iterations: 15, regularization: 0.05, alpha: 1.0, cg_steps: 3, seed: 42 }
    }
}

/// Implicit ALS: user and item factors such that x_u·y_i approaches the preference (1 where
/// observed, 0 elsewhere), weighted by the confidence.
#[derive(Clone, Debug)]
pub struct Als {
    pub factors: usize,
    /// Users × factors, row-major.
    pub user_factors: Vec<f32>,
    /// Items × factors, row-major.
    pub item_factors: Vec<f32>,
    regularization: f32,
    /// YᵀY + λI of the final item factors, to fold in users not seen in training.
    yty: Vec<f32>,
    alpha: f32,
}

/// A dot product in eight lanes, so that it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// YᵀY + λI for Y (n × f, row-major).
fn gram(y: &[f32], f: usize, lambda: f32) -> Vec<f32> {
    let g = y
        .par_chunks(f * 256)
        .map(|block| {
            let mut g = vec![0f32; f * f];
            for row in block.chunks(f) {
                for a in 0..f {
                    let ra = row[a];
                    let ga = &mut g[a * f..(a + 1) * f];
                    for (gb, rb) in ga.iter_mut().zip(row) {
                        *gb += ra * rb;
                    }
                }
            }
            g
        })
        .reduce(|| vec![0f32; f * f], |mut a, b| {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            a
        });
    let mut g = g;
    for a in 0..f {
        g[a * f + a] += lambda;
    }
    g
}

/// One conjugate-gradient solve of (YᵀY + λI + Yᵀ(Cu - I)Y) x = YᵀCu p(u), from x.
#[allow(clippy::too_many_arguments)]
fn cg_solve(x: &mut [f32], yty: &[f32], y: &[f32], f: usize, items: &[u32], conf: &[f32], alpha: f32, steps: usize) {
    let mut r = vec![0f32; f];
    // r = b - A x
    for a in 0..f {
        r[a] = -dot(&yty[a * f..(a + 1) * f], x);
    }
    for (&i, &c) in items.iter().zip(conf) {
        let c = c * alpha;
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        let coef = if c == 1.0 { 1.0 } else { c - (c - 1.0) * dot(yi, x) };
        r.iter_mut().zip(yi).for_each(|(r, v)| *r += coef * v);
    }
    let mut p = r.clone();
    let mut rs_old = dot(&r, &r);
    if rs_old < 1e-20 {
        return;
    }
    let mut ap = vec![0f32; f];
    for _ in 0..steps {
        for a in 0..f {
            ap[a] = dot(&yty[a * f..(a + 1) * f], &p);
        }
        for (&i, &c) in items.iter().zip(conf) {
            let c = c * alpha;
            if c == 1.0 {
                continue;
            }
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            let coef = (c - 1.0) * dot(yi, &p);
            ap.iter_mut().zip(yi).for_each(|(a, v)| *a += coef * v);
        }
        let step = rs_old / dot(&p, &ap);
        x.iter_mut().zip(&p).for_each(|(x, p)| *x += step * p);
        r.iter_mut().zip(&ap).for_each(|(r, a)| *r -= step * a);
        let rs_new = dot(&r, &r);
        if rs_new < 1e-20 {
            break;
        }
        let beta = rs_new / rs_old;
        p.iter_mut().zip(&r).for_each(|(p, r)| *p = r + beta * *p);
        rs_old = rs_new;
    }
}

/// Solves (YᵀY + λI + Yᵀ(Cu - I)Y) x = YᵀCu p(u) exactly, by Cholesky in f64. `base` is
/// the factor of YᵀY + λI, shared by every row whose confidences are all 1.
#[allow(clippy::too_many_arguments)]
fn cholesky_solve(x: &mut [f32], yty: &[f32], base: Option<&[f64]>, y: &[f32], f: usize, items: &[u32], conf: &[f32], alpha: f32) {
    let mut b = vec![0f64; f];
    let mut plain = true;
    for (&i, &c) in items.iter().zip(conf) {
        let c = (c * alpha) as f64;
        plain &= c == 1.0;
        let yi = &y[i as usize * f..(i as usize + 1) * f];
        for (bk, &v) in b.iter_mut().zip(yi) {
            *bk += c * v as f64;
        }
    }
    let own;
    let factor = match base {
        Some(base) if plain => base,
        _ => {
            let mut a: Vec<f64> = yty.iter().map(|&v| v as f64).collect();
            for (&i, &c) in items.iter().zip(conf) {
                let c = (c * alpha) as f64;
                if c == 1.0 {
                    continue;
                }
                let yi = &y[i as usize * f..(i as usize + 1) * f];
                for r in 0..f {
                    let w = (c - 1.0) * yi[r] as f64;
                    for (acol, &v) in a[r * f..r * f + r + 1].iter_mut().zip(yi) {
                        *acol += w * v as f64;
                    }
                }
            }
            if !cholesky_factor(&mut a, f) {
                return;
            }
            own = a;
            &own
        }
    };
    let sol = cholesky_substitute(factor, &b, f);
    x.iter_mut().zip(sol).for_each(|(x, s)| *x = s as f32);
}

/// Factors a symmetric positive definite A in place (lower triangle, A = L Lᵀ); false when
/// A is not positive definite.
fn cholesky_factor(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    true
}

/// Solves L Lᵀ z = b.
fn cholesky_substitute(l: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut z = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            z[i] -= l[i * n + k] * z[k];
        }
        z[i] /= l[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            z[i] -= l[k * n + i] * z[k];
        }
        z[i] /= l[i * n + i];
    }
    z
}

/// One half-step of ALS: every row of `x` solved against the fixed `y`.
fn half_step<'a>(x: &mut [f32], y: &[f32], f: usize, rows: impl Fn(usize) -> (&'a [u32], &'a [f32]) + Sync, lambda: f32, alpha: f32, cg_steps: usize) {
    let yty = gram(y, f, lambda);
    if cg_steps == 0 {
        let mut base: Vec<f64> = yty.iter().map(|&v| v as f64).collect();
        let base = cholesky_factor(&mut base, f).then_some(base);
        x.par_chunks_mut(f).enumerate().for_each(|(r, xr)| {
            let (cols, conf) = rows(r);
            cholesky_solve(xr, &yty, base.as_deref(), y, f, cols, conf, alpha);
        });
    } else {
        x.par_chunks_mut(f).enumerate().for_each(|(r, xr)| {
            let (cols, conf) = rows(r);
            cg_solve(xr, &yty, y, f, cols, conf, alpha, cg_steps);
        });
    }
}

impl Als {
    pub fn fit(data: &Interactions, params: &AlsParams) -> Result<Als, AnalyticsError> {
        if params.factors == 0 || params.iterations == 0 {
            return Err(AnalyticsError::InvalidParameter("ALS needs at least one factor and one iteration".into()));
        }
        if data.nnz() == 0 {
            return Err(AnalyticsError::NotEnoughData { what: "interactions", need: 1, have: 0 });
        }
        let f = params.factors;
        let mut rng = crate::Rng::new(params.seed);
        let mut init = |n: usize| -> Vec<f32> { (0..n * f).map(|_| rng.unit() as f32 * 0.01).collect() };
        let mut xu = init(data.users);
        let mut yi = init(data.items);
        let lambda = params.regularization;
        for _ in 0..params.iterations {
            half_step(&mut xu, &yi, f, |u| data.user_slice(u), lambda, params.alpha, params.cg_steps);
            half_step(&mut yi, &xu, f, |i| data.item_slice(i), lambda, params.alpha, params.cg_steps);
        }
        let yty = gram(&yi, f, lambda);
        Ok(Als { factors: f, user_factors: xu, item_factors: yi, regularization: lambda, yty, alpha: params.alpha })
    }

    /// Scores for a training user from their stored factors.
    pub fn score_user(&self, u: usize) -> Vec<f32> {
        let f = self.factors;
        let x = &self.user_factors[u * f..(u + 1) * f];
        self.item_factors.chunks(f).map(|y| dot(x, y)).collect()
    }

    /// Forgets a user: their factors become zero (an erased subject leaves the model at once;
    /// the next training leaves them out of the data).
    pub fn forget_user(&mut self, u: usize) {
        let f = self.factors;
        self.user_factors[u * f..(u + 1) * f].iter_mut().for_each(|x| *x = 0.0);
    }

    pub fn regularization(&self) -> f32 {
        self.regularization
    }
}

impl Recommender for Als {
    /// Folds the history in: solves for a user vector against the trained item factors.
    fn score(&self, history: &[(u32, f32)]) -> Vec<f32> {
        let f = self.factors;
        let mut h: Vec<(u32, f32)> = history.iter().copied().filter(|x| (x.0 as usize) < self.item_factors.len() / f).collect();
        h.sort_unstable_by_key(|x| x.0);
        let (items, conf): (Vec<u32>, Vec<f32>) = h.into_iter().unzip();
        let mut x = vec![0f32; f];
        cg_solve(&mut x, &self.yty, &self.item_factors, f, &items, &conf, self.alpha, f.min(32));
        self.item_factors.chunks(f).map(|y| dot(&x, y)).collect()
    }
    fn similar(&self, item: u32, n: usize) -> Vec<(u32, f32)> {
        let f = self.factors;
        let Some(y) = self.item_factors.get(item as usize * f..(item as usize + 1) * f) else { return Vec::new() };
        let ny = dot(y, y).sqrt().max(f32::MIN_POSITIVE);
        let s: Vec<f32> = self.item_factors.chunks(f).map(|z| dot(y, z) / (ny * dot(z, z).sqrt().max(f32::MIN_POSITIVE))).collect();
        top_k(&s, n, &[item])
    }
}

/// Ranking quality at k under leave-last-out.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct RankingMetrics {
    pub users: usize,
    pub hr_at_k: f64,
    pub ndcg_at_k: f64,
    pub precision_at_k: f64,
}

/// Evaluates top-k lists against one held-out item per user: hit rate, NDCG (one relevant
/// item, so IDCG = 1) and precision.
pub fn evaluate(held_out: &[(usize, u32)], k: usize, mut top: impl FnMut(usize) -> Vec<(u32, f32)> ) -> RankingMetrics {
    let (mut hits, mut ndcg) = (0usize, 0f64);
    for &(u, item) in held_out {
        if let Some(rank) = top(u).iter().take(k).position(|x| x.0 == item) {
            hits += 1;
            ndcg += 1.0 / ((rank + 2) as f64).log2();
        }
    }
    let n = held_out.len().max(1) as f64;
    RankingMetrics { users: held_out.len(), hr_at_k: hits as f64 / n, ndcg_at_k: ndcg / n, precision_at_k: hits as f64 / n / k as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two groups of users with disjoint tastes: items 0-2 and items 3-5.
    fn two_tastes() -> Interactions {
        let mut t = Vec::new();
        for u in 0..10u32 {
            let base = if u < 5 { 0 } else { 3 };
            for i in 0..3 {
                if i != 2 || (u != 0 && u != 5) {
                    t.push((u, base + i, 1.0));
                }
            }
        }
        Interactions::new(10, 6, &t)
    }

    #[test]
    fn interactions_add_up_repeats_and_transpose() {
        let d = Interactions::new(2, 3, &[(0, 2, 1.0), (0, 0, 1.0), (0, 2, 2.0), (1, 0, 1.0)]);
        assert_eq!(d.user(0).collect::<Vec<_>>(), vec![(0, 1.0), (2, 3.0)]);
        assert_eq!(d.item_counts(), vec![2, 0, 1]);
        assert_eq!(d.nnz(), 3);
    }

    #[test]
    fn item_knn_cosine_matches_a_hand_computation() {
        // Users: u0 {0,1}, u1 {0,1}, u2 {0,2}. Item vectors over users: i0 = (1,1,1), i1 = (1,1,0),
        // i2 = (0,0,1). cos(i0,i1) = 2/(√3·√2) = 0.8165, cos(i0,i2) = 1/√3 = 0.5774, cos(i1,i2) = 0.
        let d = Interactions::new(3, 3, &[(0, 0, 1.0), (0, 1, 1.0), (1, 0, 1.0), (1, 1, 1.0), (2, 0, 1.0), (2, 2, 1.0)]);
        let m = ItemKnn::fit(&d, 10, Weighting::Cosine);
        let sim = m.similar(0, 5);
        assert_eq!(sim.len(), 2);
        assert_eq!(sim[0].0, 1);
        assert!((sim[0].1 - 0.816_496_6).abs() < 1e-5);
        assert!((sim[1].1 - 0.577_350_3).abs() < 1e-5);
        assert!(m.similar(1, 5).iter().all(|x| x.0 != 2), "no co-occurrence, no neighbour");
        // A user who has item 1 only: item 0 scores 0.8165, item 2 nothing.
        let s = m.score(&[(1, 1.0)]);
        assert!((s[0] - 0.816_496_6).abs() < 1e-5 && s[2] == 0.0);
        // With K = 2 (itself and one other) item 0 keeps item 1 only.
        assert_eq!(ItemKnn::fit(&d, 2, Weighting::Cosine).similar(0, 5).len(), 1);
    }

    #[test]
    fn models_recommend_within_a_taste() {
        let d = two_tastes();
        let als = Als::fit(&d, &AlsParams { factors: 4, iterations: 20, regularization: 0.01, ..AlsParams::default() }).unwrap();
        let knn = ItemKnn::fit(&d, 10, Weighting::Cosine);
        let bm25 = ItemKnn::fit(&d, 10, Weighting::Bm25);
        for (name, model) in [("als", &als as &dyn Recommender), ("knn", &knn), ("bm25", &bm25)] {
            // User 0 lacks item 2 of their group; user 5 lacks item 5.
            let seen0: Vec<u32> = d.user(0).map(|x| x.0).collect();
            assert_eq!(top_k(&model.score(&d.user(0).collect::<Vec<_>>()), 1, &seen0)[0].0, 2, "{name}");
            let seen5: Vec<u32> = d.user(5).map(|x| x.0).collect();
            assert_eq!(top_k(&model.score(&d.user(5).collect::<Vec<_>>()), 1, &seen5)[0].0, 5, "{name}");
            assert!(model.similar(3, 2).iter().all(|x| x.0 >= 3), "{name}: similar items stay in the group");
        }
        // The stored factors say the same as folding in.
        assert_eq!(top_k(&als.score_user(0), 1, &[0, 1])[0].0, 2);
    }

    #[test]
    fn a_forgotten_user_has_no_personal_scores() {
        let d = two_tastes();
        let mut als = Als::fit(&d, &AlsParams { factors: 4, iterations: 5, ..AlsParams::default() }).unwrap();
        als.forget_user(3);
        assert!(als.score_user(3).iter().all(|&s| s == 0.0));
        assert!(als.user_factors[3 * 4..4 * 4].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn metrics_match_a_hand_computation() {
        // User 0's item at rank 0 (gain 1), user 1's at rank 2 (gain 1/log2(4) = 0.5), user 2 missed.
        let lists = [vec![(7, 1.0), (1, 0.5)], vec![(1, 1.0), (2, 0.9), (9, 0.8)], vec![(3, 1.0)]];
        let m = evaluate(&[(0, 7), (1, 9), (2, 4)], 3, |u| lists[u].clone());
        assert!((m.hr_at_k - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.ndcg_at_k - 1.5 / 3.0).abs() < 1e-12);
        assert!((m.precision_at_k - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn top_k_skips_and_breaks_ties_by_index() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2, &[]), vec![(1, 3.0), (2, 3.0)]);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2, &[1]), vec![(2, 3.0), (3, 2.0)]);
    }
}
