//! Special functions and a derivative-free minimiser: what the models need and std lacks.

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9: relative error below 1e-14).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin().abs()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The Gauss hypergeometric function ₂F₁(a, b; c; z) for 0 ≤ z < 1, by its series.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    debug_assert!((0.0..1.0).contains(&z));
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 0..100_000 {
        let k = k as f64;
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-15 * sum.abs() {
            break;
        }
    }
    sum
}

/// ln(e^a + e^b) without overflow.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Minimises `f` from `start` by Nelder-Mead, restarted from its own result until a restart
/// no longer improves (the usual cure for the simplex collapsing early). Non-finite values
/// count as +∞, so `f` can refuse a region by returning NaN or ∞.
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64], step: f64, tolerance: f64, max_evals: usize) -> (Vec<f64>, f64) {
    let n = start.len();
    let eval = |x: &[f64]| {
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut best = start.to_vec();
    let mut best_value = eval(&best);
    let mut evals = 0;
    loop {
        let mut simplex: Vec<Vec<f64>> = vec![best.clone()];
        for i in 0..n {
            let mut p = best.clone();
            p[i] += step;
            simplex.push(p);
        }
        let mut values: Vec<f64> = simplex.iter().map(|p| eval(p)).collect();
        evals += n + 1;
        while evals < max_evals {
            let mut order: Vec<usize> = (0..=n).collect();
            order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
            simplex = order.iter().map(|&i| simplex[i].clone()).collect();
            values = order.iter().map(|&i| values[i]).collect();
            let spread = (values[n] - values[0]).abs();
            if spread <= tolerance * (values[0].abs() + tolerance) {
                break;
            }
            let centroid: Vec<f64> = (0..n).map(|j| simplex[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64).collect();
            let along = |t: f64| -> Vec<f64> { (0..n).map(|j| centroid[j] + t * (simplex[n][j] - centroid[j])).collect() };
            let reflected = along(-1.0);
            let fr = eval(&reflected);
            evals += 1;
            if fr < values[0] {
                let expanded = along(-2.0);
                let fe = eval(&expanded);
                evals += 1;
                if fe < fr {
                    simplex[n] = expanded;
                    values[n] = fe;
                } else {
                    simplex[n] = reflected;
                    values[n] = fr;
                }
            } else if fr < values[n - 1] {
                simplex[n] = reflected;
                values[n] = fr;
            } else {
                let contracted = if fr < values[n] { along(-0.5) } else { along(0.5) };
                let fc = eval(&contracted);
                evals += 1;
                if fc < values[n].min(fr) {
                    simplex[n] = contracted;
                    values[n] = fc;
                } else {
                    for i in 1..=n {
                        simplex[i] = (0..n).map(|j| simplex[0][j] + 0.5 * (simplex[i][j] - simplex[0][j])).collect();
                        values[i] = eval(&simplex[i]);
                    }
                    evals += n;
                }
            }
        }
        let (i, &v) = values.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).expect("non-empty simplex");
        let improved = best_value - v > tolerance * (v.abs() + tolerance);
        if v < best_value {
            best = simplex[i].clone();
            best_value = v;
        }
        if !improved || evals >= max_evals {
            return (best, best_value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-14);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        // ln Γ(0.1) = 2.252712651734206 (Abramowitz and Stegun).
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-12);
        assert!((ln_gamma(100.0) - 359.134_205_369_575_4).abs() < 1e-9);
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // ₂F₁(1, 1; 2; z) = -ln(1 - z) / z.
        let z: f64 = 0.6;
        assert!((hyp2f1(1.0, 1.0, 2.0, z) - (-(1.0 - z).ln() / z)).abs() < 1e-12);
        // ₂F₁(a, b; b; z) = (1 - z)^-a.
        assert!((hyp2f1(2.5, 3.0, 3.0, 0.3) - 0.7f64.powf(-2.5)).abs() < 1e-12);
    }

    #[test]
    fn nelder_mead_finds_the_rosenbrock_minimum() {
        let rosen = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let (x, v) = nelder_mead(rosen, &[-1.2, 1.0], 0.5, 1e-14, 20_000);
        assert!(v < 1e-10, "{v}");
        assert!((x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4, "{x:?}");
    }
}
