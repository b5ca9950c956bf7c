//! Lifetime value and churn: BG/NBD (Fader, Hardie and Lee 2005) for the purchase process and
//! Gamma-Gamma (Fader, Hardie and Lee 2005, "RFM and CLV") for the spend per purchase, both
//! fitted by maximum likelihood.
//!
//! Conventions (Fader and Hardie's, and the `lifetimes` package's): purchases on the same day
//! are one purchase whose value is their sum; `frequency` counts repeat purchase days (the
//! first one is the birth of the customer, not a repeat); recency and age are measured from
//! the first purchase in periods of `period_days` days; the monetary value is the mean of the
//! repeat purchases only, and Gamma-Gamma is fitted on the customers with a positive one.

use std::collections::HashMap;

use serde::Serialize;

use crate::special::{hyp2f1, ln_gamma, log_add_exp, nelder_mead};
use crate::AnalyticsError;

/// One purchase: a customer key, a day number (days since any fixed epoch) and its value.
#[derive(Clone, Debug)]
pub struct Purchase<K> {
    pub customer: K,
    pub day: i64,
    pub value: f64,
}

/// What the models see of one customer in the calibration period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Repeat purchase days (x).
    pub frequency: u32,
    /// From the first to the last purchase, in periods (t_x).
    pub recency: f64,
    /// From the first purchase to the end of calibration, in periods (T).
    pub age: f64,
    /// Mean value of the repeat purchases; 0 without any.
    pub monetary: f64,
}

/// Summaries per customer, for purchases up to and including `calibration_end` (a day number).
/// Customers whose first purchase falls after it are left out (they are not born yet).
pub fn summarise<K: Clone + Eq + std::hash::Hash + Ord>(
    purchases: &[Purchase<K>],
    calibration_end: i64,
    period_days: f64,
) -> Result<Vec<(K, Summary)>, AnalyticsError> {
    let first = purchases.iter().map(|p| p.day).min().ok_or(AnalyticsError::NotEnoughData { what: "purchases", need: 1, have: 0 })?;
    if calibration_end < first {
        return Err(AnalyticsError::CalibrationBeforeFirstPurchase { calibration_end, first_purchase: first });
    }
    let mut days: HashMap<&K, HashMap<i64, f64>> = HashMap::new();
    for p in purchases.iter().filter(|p| p.day <= calibration_end) {
        *days.entry(&p.customer).or_default().entry(p.day).or_insert(0.0) += p.value;
    }
    let mut out: Vec<(K, Summary)> = days
        .into_iter()
        .map(|(k, by_day)| {
            let mut d: Vec<(i64, f64)> = by_day.into_iter().collect();
            d.sort_by_key(|x| x.0);
            let (first, last) = (d[0].0, d[d.len() - 1].0);
            let repeats = &d[1..];
            let monetary = if repeats.is_empty() { 0.0 } else { repeats.iter().map(|x| x.1).sum::<f64>() / repeats.len() as f64 };
            let s = Summary {
                frequency: repeats.len() as u32,
                recency: (last - first) as f64 / period_days,
                age: (calibration_end - first) as f64 / period_days,
                monetary,
            };
            (k.clone(), s)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The fitted BG/NBD model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    /// The log-likelihood of the calibration data at these parameters (Fader and Hardie's).
    pub log_likelihood: f64,
}

/// Summaries grouped by identical (x, t_x, T): the likelihood is computed once per group.
fn grouped(data: &[Summary]) -> Vec<(u32, f64, f64, f64)> {
    let mut m: HashMap<(u32, u64, u64), f64> = HashMap::new();
    for s in data {
        *m.entry((s.frequency, s.recency.to_bits(), s.age.to_bits())).or_insert(0.0) += 1.0;
    }
    let mut v: Vec<_> = m.into_iter().map(|((x, t, a), n)| (x, f64::from_bits(t), f64::from_bits(a), n)).collect();
    v.sort_by(|a, b| (a.0, a.1, a.2).partial_cmp(&(b.0, b.1, b.2)).expect("finite"));
    v
}

fn bgnbd_ll(groups: &[(u32, f64, f64, f64)], r: f64, alpha: f64, a: f64, b: f64) -> f64 {
    let (lg_r, lg_ab, lg_b) = (ln_gamma(r), ln_gamma(a + b), ln_gamma(b));
    let mut ll = 0.0;
    for &(x, tx, t, n) in groups {
        let x = x as f64;
        let a1 = ln_gamma(r + x) - lg_r + r * alpha.ln();
        let a2 = lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x);
        let a3 = -(r + x) * (alpha + t).ln();
        let a4 = if x > 0.0 { a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + tx).ln() } else { f64::NEG_INFINITY };
        ll += n * (a1 + a2 + log_add_exp(a3, a4));
    }
    ll
}

fn check_finite(params: &[(&'static str, f64)], model: &'static str) -> Result<(), AnalyticsError> {
    for &(name, v) in params {
        if !v.is_finite() || v <= 0.0 || v > 1e9 {
            return Err(AnalyticsError::NoFit { model, reason: format!("parameter {name} went to {v}: the data do not identify the model (too few repeat purchases?)") });
        }
    }
    Ok(())
}

impl BgNbd {
    /// Maximum likelihood over (r, α, a, b), searched in log space.
    pub fn fit(data: &[Summary]) -> Result<BgNbd, AnalyticsError> {
        if data.len() < 10 {
            return Err(AnalyticsError::NotEnoughData { what: "customers", need: 10, have: data.len() });
        }
        let repeaters = data.iter().filter(|s| s.frequency > 0).count();
        if repeaters < 2 {
            return Err(AnalyticsError::NotEnoughData { what: "customers with a repeat purchase", need: 2, have: repeaters });
        }
        let groups = grouped(data);
        // Scale time so that α starts near 1 whatever the period; undone at the end.
        let scale = data.iter().map(|s| s.age).fold(0.0, f64::max).max(1e-9);
        let scaled: Vec<_> = groups.iter().map(|&(x, tx, t, n)| (x, tx / scale, t / scale, n)).collect();
        let f = |p: &[f64]| -bgnbd_ll(&scaled, p[0].exp(), p[1].exp(), p[2].exp(), p[3].exp());
        let (p, _) = nelder_mead(f, &[0.0, 0.0, 0.0, 0.0], 0.5, 1e-13, 40_000);
        let (r, alpha, a, b) = (p[0].exp(), p[1].exp() * scale, p[2].exp(), p[3].exp());
        check_finite(&[("r", r), ("alpha", alpha), ("a", a), ("b", b)], "BG/NBD")?;
        Ok(BgNbd { r, alpha, a, b, log_likelihood: bgnbd_ll(&groups, r, alpha, a, b) })
    }

    /// The probability that the customer is still active at the end of calibration.
    pub fn p_alive(&self, s: &Summary) -> f64 {
        if s.frequency == 0 {
            return 1.0;
        }
        let x = s.frequency as f64;
        let ln_odds = self.a.ln() - (self.b + x - 1.0).ln() + (self.r + x) * ((self.alpha + s.age).ln() - (self.alpha + s.recency).ln());
        1.0 / (1.0 + ln_odds.exp())
    }

    /// Expected purchases in the next `t` periods, given the customer's history.
    pub fn expected_purchases(&self, s: &Summary, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let x = s.frequency as f64;
        let big_t = s.age;
        let z = t / (alpha + big_t + t);
        let head = (a + b + x - 1.0) / (a - 1.0);
        let tail = 1.0 - ((alpha + big_t) / (alpha + big_t + t)).powf(r + x) * hyp2f1(r + x, b + x, a + b + x - 1.0, z);
        let denom = if x > 0.0 { 1.0 + a / (b + x - 1.0) * ((alpha + big_t) / (alpha + s.recency)).powf(r + x) } else { 1.0 };
        head * tail / denom
    }

    /// Expected purchases of a new customer over `t` periods (the population curve).
    pub fn expected_purchases_new(&self, t: f64) -> f64 {
        let (r, alpha, a, b) = (self.r, self.alpha, self.a, self.b);
        let z = t / (alpha + t);
        (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * hyp2f1(r, b, a + b - 1.0, z))
    }
}

/// The fitted Gamma-Gamma spend model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub v: f64,
    /// How many customers it was fitted on (those with a positive mean repeat value).
    pub customers: usize,
}

fn gg_ll(data: &[(f64, f64)], p: f64, q: f64, v: f64) -> f64 {
    let (lg_q, qv) = (ln_gamma(q), q * v.ln());
    data.iter()
        .map(|&(x, m)| ln_gamma(p * x + q) - ln_gamma(p * x) - lg_q + qv + (p * x - 1.0) * m.ln() + p * x * x.ln() - (p * x + q) * (x * m + v).ln())
        .sum()
}

impl GammaGamma {
    pub fn fit(data: &[Summary]) -> Result<GammaGamma, AnalyticsError> {
        let returning: Vec<(f64, f64)> = data.iter().filter(|s| s.frequency > 0 && s.monetary > 0.0).map(|s| (s.frequency as f64, s.monetary)).collect();
        if returning.len() < 10 {
            return Err(AnalyticsError::NotEnoughData { what: "customers with a positive repeat purchase value", need: 10, have: returning.len() });
        }
        let scale = returning.iter().map(|r| r.1).sum::<f64>() / returning.len() as f64;
        let scaled: Vec<_> = returning.iter().map(|&(x, m)| (x, m / scale)).collect();
        let f = |p: &[f64]| -gg_ll(&scaled, p[0].exp(), p[1].exp(), p[2].exp());
        let (p, _) = nelder_mead(f, &[0.0, 0.0, 0.0], 0.5, 1e-13, 40_000);
        let (pp, q, v) = (p[0].exp(), p[1].exp(), p[2].exp() * scale);
        check_finite(&[("p", pp), ("q", q), ("v", v)], "Gamma-Gamma")?;
        Ok(GammaGamma { p: pp, q, v, customers: returning.len() })
    }

    /// The expected mean value of the customer's future purchases.
    pub fn expected_value(&self, s: &Summary) -> f64 {
        let x = s.frequency as f64;
        if x == 0.0 || s.monetary <= 0.0 {
            // The population mean, p v / (q - 1), when it exists.
            return if self.q > 1.0 { self.p * self.v / (self.q - 1.0) } else { f64::NAN };
        }
        self.p * (self.v + x * s.monetary) / (self.p * x + self.q - 1.0)
    }
}

/// Customer lifetime value over `months` months of 30 days, each month's expected purchases
/// valued at the expected spend and discounted at `monthly_discount`.
pub fn lifetime_value(bg: &BgNbd, gg: &GammaGamma, s: &Summary, period_days: f64, months: u32, monthly_discount: f64) -> f64 {
    let spend = gg.expected_value(s);
    let per_month = 30.0 / period_days;
    let mut clv = 0.0;
    let mut before = 0.0;
    for m in 1..=months {
        let now = bg.expected_purchases(s, m as f64 * per_month);
        clv += (now - before) * spend / (1.0 + monthly_discount).powi(m as i32);
        before = now;
    }
    clv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(frequency: u32, recency: f64, age: f64, monetary: f64) -> Summary {
        Summary { frequency, recency, age, monetary }
    }

    #[test]
    fn summaries_follow_fader_and_hardie() {
        let p = |c: &str, day: i64, value: f64| Purchase { customer: c.to_owned(), day, value };
        let data = vec![p("a", 0, 10.0), p("a", 0, 5.0), p("a", 14, 20.0), p("a", 28, 40.0), p("a", 100, 99.0), p("b", 7, 3.0), p("c", 80, 1.0)];
        let got = summarise(&data, 70, 7.0).unwrap();
        // a: first day 0 (15 merged), repeats on 14 and 28; c is not born by day 70.
        assert_eq!(got, vec![("a".to_owned(), s(2, 4.0, 10.0, 30.0)), ("b".to_owned(), s(0, 0.0, 9.0, 0.0))]);
        assert!(matches!(summarise(&data, -1, 7.0), Err(AnalyticsError::CalibrationBeforeFirstPurchase { .. })));
    }

    // Hand-checked values at Fader, Hardie and Lee's CDNOW parameters (r = 0.243, α = 4.414,
    // a = 0.793, b = 2.426), for their example customer x = 2, t_x = 30.43, T = 38.86:
    // P(alive) = 1 / (1 + 0.793/3.426 · (43.274/34.844)^2.243) = 1 / (1 + 0.2315 · 1.6258)
    // = 0.7266; E[Y(39) | x, t_x, T] = 1.226 (the paper's worked value); a new customer's
    // E[X(52)] = 1.446. The lifetimes package gives the same three numbers.
    const CDNOW: BgNbd = BgNbd { r: 0.243, alpha: 4.414, a: 0.793, b: 2.426, log_likelihood: 0.0 };

    #[test]
    fn p_alive_and_conditional_expectation_match_the_papers() {
        let c = s(2, 30.43, 38.86, 0.0);
        let pa = CDNOW.p_alive(&c);
        assert!((pa - 0.7266).abs() < 1e-3, "P(alive) {pa}");
        let e = CDNOW.expected_purchases(&c, 39.0);
        assert!((e - 1.226).abs() < 1e-3, "E[Y(39)] {e}");
        assert_eq!(CDNOW.p_alive(&s(0, 0.0, 30.0, 0.0)), 1.0);
        let n = CDNOW.expected_purchases_new(52.0);
        assert!((n - 1.446).abs() < 1e-3, "E[X(52)] {n}");
    }

    #[test]
    fn gamma_gamma_expectation_is_the_weighted_mean() {
        let gg = GammaGamma { p: 6.25, q: 3.74, v: 15.44, customers: 0 };
        // Fader, Hardie and Lee: E[M] = (p v + p x m) / (p x + q - 1).
        let e = gg.expected_value(&s(2, 10.0, 20.0, 30.0));
        let hand = (6.25 * 15.44 + 6.25 * 2.0 * 30.0) / (6.25 * 2.0 + 3.74 - 1.0);
        assert!((e - hand).abs() < 1e-12);
        assert!((gg.expected_value(&s(0, 0.0, 20.0, 0.0)) - 6.25 * 15.44 / 2.74).abs() < 1e-12);
    }

    #[test]
    fn too_little_data_is_a_clear_error() {
        let few = vec![s(0, 0.0, 10.0, 0.0); 20];
        assert!(matches!(BgNbd::fit(&few), Err(AnalyticsError::NotEnoughData { what: "customers with a repeat purchase", .. })));
        assert!(matches!(BgNbd::fit(&few[..3]), Err(AnalyticsError::NotEnoughData { what: "customers", .. })));
        assert!(matches!(GammaGamma::fit(&few), Err(AnalyticsError::NotEnoughData { .. })));
    }
}
