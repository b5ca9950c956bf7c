//! Demand forecasting for stock: seasonal naive, exponential smoothing (simple, damped Holt,
//! Holt-Winters additive, damped additive and multiplicative), and the intermittent-demand
//! methods Croston, SBA (Syntetos-Boylan) and TSB (Teunter-Syntetos-Babai). The model of
//! each series is chosen by a rolling-origin backtest on MASE; prediction intervals come from
//! the same backtest (the spread of its errors at each step ahead), so they hold for
//! whichever model is chosen, intermittent ones included.

use serde::Serialize;

use crate::special::nelder_mead;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Model {
    Naive,
    SeasonalNaive,
    Ses,
    HoltDamped,
    HoltWintersAdditive,
    HoltWintersDampedAdditive,
    HoltWintersMultiplicative,
    Croston,
    Sba,
    Tsb,
}

impl Model {
    pub const ALL: [Model; 10] = [
        Model::Naive,
        Model::SeasonalNaive,
        Model::Ses,
        Model::HoltDamped,
        Model::HoltWintersAdditive,
        Model::HoltWintersDampedAdditive,
        Model::HoltWintersMultiplicative,
        Model::Croston,
        Model::Sba,
        Model::Tsb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Model::Naive => "naive",
            Model::SeasonalNaive => "seasonal_naive",
            Model::Ses => "ets_ann",
            Model::HoltDamped => "ets_adn",
            Model::HoltWintersAdditive => "ets_aaa",
            Model::HoltWintersDampedAdditive => "ets_ada",
            Model::HoltWintersMultiplicative => "ets_aam",
            Model::Croston => "croston",
            Model::Sba => "sba",
            Model::Tsb => "tsb",
        }
    }

    /// Whether the model can be fitted on this history with season length `m`.
    pub fn applies(self, y: &[f64], m: usize) -> bool {
        let n = y.len();
        match self {
            Model::Naive | Model::Ses => n >= 2,
            Model::SeasonalNaive => n >= m.max(1),
            Model::HoltDamped => n >= 4,
            Model::HoltWintersAdditive | Model::HoltWintersDampedAdditive => m >= 2 && n >= 2 * m + 2,
            Model::HoltWintersMultiplicative => m >= 2 && n >= 2 * m + 2 && y.iter().all(|&v| v > 0.0),
            Model::Croston | Model::Sba | Model::Tsb => n >= 2 && y.iter().any(|&v| v > 0.0),
        }
    }

    /// Point forecasts for the next `h` periods, or None when the model does not apply.
    pub fn forecast(self, y: &[f64], m: usize, h: usize) -> Option<Vec<f64>> {
        if !self.applies(y, m) {
            return None;
        }
        let out = match self {
            Model::Naive => vec![*y.last()?; h],
            Model::SeasonalNaive => {
                let m = m.max(1);
                (0..h).map(|k| y[y.len() - m + (k % m)]).collect()
            }
            Model::Ses => ets(y, m, Trend::None, Season::None, h),
            Model::HoltDamped => ets(y, m, Trend::Damped, Season::None, h),
            Model::HoltWintersAdditive => ets(y, m, Trend::Linear, Season::Additive, h),
            Model::HoltWintersDampedAdditive => ets(y, m, Trend::Damped, Season::Additive, h),
            Model::HoltWintersMultiplicative => ets(y, m, Trend::Linear, Season::Multiplicative, h),
            Model::Croston => vec![croston(y, 0.1); h],
            Model::Sba => vec![croston(y, 0.1) * (1.0 - 0.1 / 2.0); h],
            Model::Tsb => vec![tsb(y, 0.1, 0.1); h],
        };
        out.iter().all(|v| v.is_finite()).then_some(out)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Trend {
    None,
    Linear,
    Damped,
}

#[derive(Clone, Copy, PartialEq)]
enum Season {
    None,
    Additive,
    Multiplicative,
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Runs the smoothing recursions; returns the one-step sum of squared errors and the
/// h-step forecast from the end of the series.
/// Smoothing parameters: level α, slope β, season γ, damping φ.
#[derive(Clone, Copy)]
struct Smoothing {
    alpha: f64,
    beta: f64,
    gamma: f64,
    phi: f64,
}

fn ets_run(y: &[f64], m: usize, trend: Trend, season: Season, p: Smoothing, h: usize) -> (f64, Vec<f64>) {
    let Smoothing { alpha, beta, gamma, phi } = p;
    let m = if season == Season::None { 1 } else { m };
    // Initial states from the first season(s), as in Hyndman et al.'s heuristic.
    let first: f64 = y[..m].iter().sum::<f64>() / m as f64;
    let mut level = if season == Season::None { y[0] } else { first };
    let mut slope = match (trend, season) {
        (Trend::None, _) => 0.0,
        (_, Season::None) => y[1] - y[0],
        _ => (y[m..2 * m].iter().sum::<f64>() / m as f64 - first) / m as f64,
    };
    let mut seasonal: Vec<f64> = match season {
        Season::None => vec![0.0],
        Season::Additive => y[..m].iter().map(|v| v - first).collect(),
        Season::Multiplicative => y[..m].iter().map(|v| v / first).collect(),
    };
    let start = if season == Season::None { 1 } else { m };
    let mut sse = 0.0;
    for (t, &obs) in y.iter().enumerate().skip(start) {
        let s = seasonal[t % m];
        let base = level + phi * slope;
        let fit = match season {
            Season::None => base,
            Season::Additive => base + s,
            Season::Multiplicative => base * s,
        };
        sse += (obs - fit).powi(2);
        let new_level = match season {
            Season::None => alpha * obs + (1.0 - alpha) * base,
            Season::Additive => alpha * (obs - s) + (1.0 - alpha) * base,
            Season::Multiplicative => alpha * obs / s + (1.0 - alpha) * base,
        };
        if trend != Trend::None {
            slope = beta * (new_level - level) + (1.0 - beta) * phi * slope;
        }
        match season {
            Season::None => {}
            Season::Additive => seasonal[t % m] = gamma * (obs - base) + (1.0 - gamma) * s,
            Season::Multiplicative => seasonal[t % m] = gamma * obs / base + (1.0 - gamma) * s,
        }
        level = new_level;
    }
    let n = y.len();
    let mut out = Vec::with_capacity(h);
    let mut damp_sum = 0.0;
    let mut phi_k = 1.0;
    for k in 1..=h {
        phi_k *= phi;
        damp_sum += if trend == Trend::None { 0.0 } else { phi_k };
        let base = level + damp_sum * slope;
        let s = seasonal[(n + k - 1) % m];
        out.push(match season {
            Season::None => base,
            Season::Additive => base + s,
            Season::Multiplicative => base * s,
        });
    }
    (sse, out)
}

/// Fits the smoothing parameters by least squares of the one-step errors, then forecasts.
fn ets(y: &[f64], m: usize, trend: Trend, season: Season, h: usize) -> Vec<f64> {
    // Parameters through a logistic map: α ∈ (0,1), β = α·b, γ = (1-α)·g, φ ∈ (0.8, 0.98).
    let unpack = |p: &[f64]| {
        let alpha = 0.0001 + 0.9998 * logistic(p[0]);
        let beta = alpha * logistic(p[1]);
        let gamma = (1.0 - alpha) * logistic(p[2]);
        let phi = match trend {
            Trend::Damped => 0.8 + 0.18 * logistic(p[3]),
            _ => 1.0,
        };
        Smoothing { alpha, beta, gamma, phi }
    };
    let dims = 1 + usize::from(trend != Trend::None) + usize::from(season != Season::None) + usize::from(trend == Trend::Damped);
    let expand = |p: &[f64]| -> [f64; 4] {
        let mut full = [0.0, -2.0, -2.0, 0.0];
        let mut it = p.iter();
        full[0] = *it.next().expect("alpha");
        if trend != Trend::None {
            full[1] = *it.next().expect("beta");
        }
        if season != Season::None {
            full[2] = *it.next().expect("gamma");
        }
        if trend == Trend::Damped {
            full[3] = *it.next().expect("phi");
        }
        full
    };
    let objective = |p: &[f64]| {
        ets_run(y, m, trend, season, unpack(&expand(p)), 0).0
    };
    let start = vec![-1.0; dims];
    let (best, _) = nelder_mead(objective, &start, 1.0, 1e-8, 400 * dims);
    ets_run(y, m, trend, season, unpack(&expand(&best)), h).1
}

/// Croston's method: sizes and intervals between demands smoothed separately; the forecast
/// is size / interval.
fn croston(y: &[f64], alpha: f64) -> f64 {
    let mut size = None::<f64>;
    let mut interval = None::<f64>;
    let mut since = 1.0;
    for &v in y {
        if v > 0.0 {
            size = Some(size.map_or(v, |z| z + alpha * (v - z)));
            interval = Some(interval.map_or(since, |p| p + alpha * (since - p)));
            since = 1.0;
        } else {
            since += 1.0;
        }
    }
    match (size, interval) {
        (Some(z), Some(p)) => z / p,
        _ => 0.0,
    }
}

/// TSB: the probability of a demand is updated every period (so it decays through long runs
/// of zeros, unlike Croston), the size only when there is a demand.
fn tsb(y: &[f64], alpha_size: f64, alpha_prob: f64) -> f64 {
    let first = y.iter().position(|&v| v > 0.0).unwrap_or(0);
    let mut prob = y.iter().filter(|&&v| v > 0.0).count() as f64 / y.len() as f64;
    let mut size = y[first].max(0.0);
    for &v in &y[first..] {
        let d = if v > 0.0 { 1.0 } else { 0.0 };
        prob += alpha_prob * (d - prob);
        if v > 0.0 {
            size += alpha_size * (v - size);
        }
    }
    prob * size
}

/// Mean absolute scaled error of a forecast: its mean absolute error over the in-sample mean
/// absolute error of the seasonal naive method (lag `m`, or lag 1 when the series is shorter
/// than two seasons or flat at lag m). None when the training series is constant.
pub fn mase(train: &[f64], actual: &[f64], forecast: &[f64], m: usize) -> Option<f64> {
    let scale = |lag: usize| -> Option<f64> {
        if train.len() <= lag {
            return None;
        }
        let d: f64 = train.windows(lag + 1).map(|w| (w[lag] - w[0]).abs()).sum::<f64>() / (train.len() - lag) as f64;
        (d > 0.0).then_some(d)
    };
    let s = scale(m.max(1)).or_else(|| scale(1))?;
    let mae = actual.iter().zip(forecast).map(|(a, f)| (a - f).abs()).sum::<f64>() / actual.len().max(1) as f64;
    Some(mae / s)
}

/// Rolling-origin backtest: `windows` consecutive non-overlapping test windows of `h`
/// periods at the end of `y`, each forecast from everything before it.
/// Returns per model the mean MASE over the windows where it applied, and its errors by
/// step ahead (actual - forecast).
pub fn backtest(y: &[f64], m: usize, h: usize, windows: usize, models: &[Model]) -> Vec<(Model, f64, Vec<Vec<f64>>)> {
    let mut out = Vec::new();
    for &model in models {
        let mut total = 0.0;
        let mut count = 0;
        let mut errors = vec![Vec::new(); h];
        for w in 0..windows {
            let Some(cut) = y.len().checked_sub((windows - w) * h) else { continue };
            let (train, test) = (&y[..cut], &y[cut..cut + h]);
            let Some(f) = model.forecast(train, m, h) else { continue };
            if let Some(score) = mase(train, test, &f, m) {
                total += score;
                count += 1;
            }
            for (k, (a, p)) in test.iter().zip(&f).enumerate() {
                errors[k].push(a - p);
            }
        }
        if count > 0 {
            out.push((model, total / count as f64, errors));
        }
    }
    out
}

/// A forecast with its model and 80 % and 95 % prediction intervals.
#[derive(Clone, Debug, Serialize)]
pub struct Forecast {
    pub model: Model,
    pub point: Vec<f64>,
    pub lower_80: Vec<f64>,
    pub upper_80: Vec<f64>,
    pub lower_95: Vec<f64>,
    pub upper_95: Vec<f64>,
    /// The chosen model's mean MASE in the backtest (None when the series was too short to
    /// backtest and the seasonal naive method was used as it is).
    pub backtest_mase: Option<f64>,
}

/// Whether a series is intermittent: more than a third of its periods without demand.
pub fn intermittent(y: &[f64]) -> bool {
    y.iter().filter(|&&v| v == 0.0).count() * 3 > y.len()
}

/// The candidate models for a series. For intermittent demand, the methods that repeat one
/// past value are left out: a window of zeros makes them look perfect in a backtest, and they
/// then forecast no demand at all for a product that does sell.
pub fn candidates(y: &[f64]) -> Vec<Model> {
    if intermittent(y) {
        vec![Model::Ses, Model::Croston, Model::Sba, Model::Tsb]
    } else {
        Model::ALL.iter().copied().filter(|m| !matches!(m, Model::Croston | Model::Sba | Model::Tsb)).collect()
    }
}

/// Chooses the model with the lowest backtest MASE (seasonal naive when nothing can be
/// backtested) and forecasts `h` periods with intervals from the backtest errors.
pub fn auto(y: &[f64], m: usize, h: usize, windows: usize) -> Option<Forecast> {
    if y.is_empty() || h == 0 {
        return None;
    }
    let results = backtest(y, m, h, windows.max(1), &candidates(y));
    let best = results.iter().min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let (model, score, errors) = match best {
        Some((model, score, errors)) => (*model, Some(*score), errors.clone()),
        None => (if y.len() >= m { Model::SeasonalNaive } else { Model::Naive }, None, vec![Vec::new(); h]),
    };
    let point = model.forecast(y, m, h).or_else(|| Model::Naive.forecast(y, m, h)).unwrap_or_else(|| vec![y[y.len() - 1]; h]);
    // Without backtest errors, the spread of the one-step changes stands in, growing as √k.
    let fallback = {
        let d: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
        (d.iter().map(|x| x * x).sum::<f64>() / d.len().max(1) as f64).sqrt()
    };
    let nonneg = y.iter().all(|&v| v >= 0.0);
    let clamp = |v: f64| if nonneg { v.max(0.0) } else { v };
    let mut f = Forecast { model, point: point.clone(), lower_80: vec![], upper_80: vec![], lower_95: vec![], upper_95: vec![], backtest_mase: score };
    for (k, p) in point.iter().enumerate() {
        let e = &errors[k];
        let sd = if e.len() >= 2 { (e.iter().map(|x| x * x).sum::<f64>() / e.len() as f64).sqrt() } else { fallback * ((k + 1) as f64).sqrt() };
        f.lower_80.push(clamp(p - 1.2816 * sd));
        f.upper_80.push(clamp(p + 1.2816 * sd));
        f.lower_95.push(clamp(p - 1.96 * sd));
        f.upper_95.push(clamp(p + 1.96 * sd));
    }
    Some(f)
}

/// Mean MASE per model and for the automatic choice over a set of series, each evaluated on
/// its last `windows` windows of `h` periods; the automatic choice is made, for each
/// window, by a backtest on the data before that window only.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub series: usize,
    pub windows: usize,
    pub horizon: usize,
    /// (model name, mean MASE, number of series-windows it was scored on).
    pub models: Vec<(String, f64, usize)>,
    pub auto: f64,
    pub auto_scored: usize,
    /// How often each model was chosen.
    pub chosen: Vec<(String, usize)>,
}

pub fn evaluate(series: &[Vec<f64>], m: usize, h: usize, windows: usize, inner_windows: usize) -> Evaluation {
    use rayon::prelude::*;
    // Per series: (model, MASE) for every model and window; (MASE, model chosen) per window.
    type Scores = (Vec<(Model, f64)>, Vec<(f64, Model)>);
    let per_series: Vec<Scores> = series
        .par_iter()
        .map(|y| {
            let mut plain = Vec::new();
            let mut chosen = Vec::new();
            for w in 0..windows {
                let Some(cut) = y.len().checked_sub((windows - w) * h) else { continue };
                if cut < 2 {
                    continue;
                }
                let (train, test) = (&y[..cut], &y[cut..cut + h]);
                for model in Model::ALL {
                    if let Some(f) = model.forecast(train, m, h) {
                        if let Some(s) = mase(train, test, &f, m) {
                            plain.push((model, s));
                        }
                    }
                }
                if let Some(f) = auto(train, m, h, inner_windows) {
                    if let Some(s) = mase(train, test, &f.point, m) {
                        chosen.push((s, f.model));
                    }
                }
            }
            (plain, chosen)
        })
        .collect();
    let mut models = Vec::new();
    for model in Model::ALL {
        let scores: Vec<f64> = per_series.iter().flat_map(|(p, _)| p.iter().filter(|x| x.0 == model).map(|x| x.1)).collect();
        if !scores.is_empty() {
            models.push((model.name().to_owned(), scores.iter().sum::<f64>() / scores.len() as f64, scores.len()));
        }
    }
    let autos: Vec<(f64, Model)> = per_series.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let mut chosen: Vec<(String, usize)> = Model::ALL.iter().map(|m| (m.name().to_owned(), autos.iter().filter(|x| x.1 == *m).count())).filter(|x| x.1 > 0).collect();
    chosen.sort_by_key(|c| std::cmp::Reverse(c.1));
    Evaluation {
        series: series.len(),
        windows,
        horizon: h,
        models,
        auto: autos.iter().map(|x| x.0).sum::<f64>() / autos.len().max(1) as f64,
        auto_scored: autos.len(),
        chosen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol)
    }

    #[test]
    fn naive_methods_repeat_the_past() {
        let y = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        assert_eq!(Model::Naive.forecast(&y, 3, 2).unwrap(), vec![7.0, 7.0]);
        assert_eq!(Model::SeasonalNaive.forecast(&y, 3, 4).unwrap(), vec![5.0, 6.0, 7.0, 5.0]);
    }

    #[test]
    fn croston_sba_tsb_match_hand_computations() {
        // Demands 4 at t=1 and 2 at t=4 (0-based): sizes 4 → 4 + 0.1(2-4) = 3.8; intervals
        // 2 (first demand after one zero) → 2 + 0.1(3-2) = 2.1. Croston = 3.8/2.1.
        let y = [0.0, 4.0, 0.0, 0.0, 2.0, 0.0];
        let c = Model::Croston.forecast(&y, 1, 1).unwrap()[0];
        assert!((c - 3.8 / 2.1).abs() < 1e-12, "{c}");
        let s = Model::Sba.forecast(&y, 1, 1).unwrap()[0];
        assert!((s - 0.95 * 3.8 / 2.1).abs() < 1e-12);
        // TSB from t=1: p0 = 2/6; p: +0.1(1-p), -0.1p, -0.1p, +0.1(1-p), -0.1p; size 4 then 3.8.
        let mut p = 2.0 / 6.0;
        for d in [1.0, 0.0, 0.0, 1.0, 0.0] {
            p += 0.1 * (d - p);
        }
        let t = Model::Tsb.forecast(&y, 1, 1).unwrap()[0];
        assert!((t - p * 3.8).abs() < 1e-12, "{t}");
    }

    #[test]
    fn exponential_smoothing_recovers_clean_patterns() {
        // A straight line: Holt (damped, φ ≤ 0.98) continues it closely over three steps.
        let line: Vec<f64> = (0..40).map(|t| 10.0 + 2.0 * t as f64).collect();
        let f = Model::HoltDamped.forecast(&line, 1, 3).unwrap();
        assert!(close(&f, &[90.0, 92.0, 94.0], 0.5), "{f:?}");
        // A pure additive season with trend: Holt-Winters additive reproduces it.
        let season = [5.0, -3.0, 0.0, -2.0];
        let y: Vec<f64> = (0..48).map(|t| 100.0 + t as f64 + season[t % 4]).collect();
        let f = Model::HoltWintersAdditive.forecast(&y, 4, 4).unwrap();
        let want: Vec<f64> = (48..52).map(|t| 100.0 + t as f64 + season[t % 4]).collect();
        assert!(close(&f, &want, 0.5), "{f:?} vs {want:?}");
        // Multiplicative season: same with factors.
        let factors = [1.3, 0.8, 1.0, 0.9];
        let y: Vec<f64> = (0..48).map(|t| (100.0 + t as f64) * factors[t % 4]).collect();
        let f = Model::HoltWintersMultiplicative.forecast(&y, 4, 4).unwrap();
        let want: Vec<f64> = (48..52).map(|t| (100.0 + t as f64) * factors[t % 4]).collect();
        assert!(close(&f, &want, 1.0), "{f:?} vs {want:?}");
        // A constant: simple smoothing says the constant.
        assert!(close(&Model::Ses.forecast(&[3.0; 10], 1, 2).unwrap(), &[3.0, 3.0], 1e-9));
        // Multiplicative needs positive data.
        assert!(Model::HoltWintersMultiplicative.forecast(&[0.0; 20], 4, 2).is_none());
    }

    #[test]
    fn mase_is_scaled_by_the_seasonal_naive_error() {
        // In-sample seasonal (lag 2) differences: |3-1|, |4-2| → scale 2. MAE 1 → MASE 0.5.
        let m = mase(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0], &[4.0, 7.0], 2).unwrap();
        assert!((m - 0.5).abs() < 1e-12);
        assert_eq!(mase(&[2.0; 5], &[2.0], &[2.0], 1), None);
    }

    #[test]
    fn the_automatic_choice_finds_the_season() {
        let season = [10.0, 2.0, 3.0, 4.0, 5.0, 30.0, 25.0];
        let y: Vec<f64> = (0..140).map(|t| season[t % 7] + 0.05 * t as f64).collect();
        let f = auto(&y, 7, 7, 3).unwrap();
        assert!(matches!(f.model, Model::HoltWintersAdditive | Model::HoltWintersDampedAdditive | Model::HoltWintersMultiplicative | Model::SeasonalNaive), "{:?}", f.model);
        assert!(f.lower_95.iter().zip(&f.point).all(|(l, p)| l <= p) && f.upper_95.iter().zip(&f.upper_80).all(|(u, u8)| u >= u8));
        // An intermittent series gets an intermittent-demand method or a smoother.
        let sparse: Vec<f64> = (0..120).map(|t| if t % 9 == 0 { 3.0 } else { 0.0 }).collect();
        assert!(intermittent(&sparse));
        let f = auto(&sparse, 7, 7, 3).unwrap();
        assert!(f.point.iter().all(|&v| v >= 0.0) && f.lower_95.iter().all(|&v| v >= 0.0));
    }
}
