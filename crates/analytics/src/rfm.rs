//! RFM: recency, frequency and monetary quintile scores, and named segments.
//!
//! Scores go from 1 to 5 by percent rank among the customers scored together: a customer's
//! score is 1 + ⌊5 × (share of customers strictly worse)⌋, so ties share a score (many
//! one-time buyers all get F = 1 rather than being split at random). Recency scores higher
//! the more recent the last order.
//!
//! Segments read R and F (monetary value is in the score, not in the segment), on this grid:
//!
//! | R \ F | 1 | 2 | 3 | 4 | 5 |
//! |---|---|---|---|---|---|
//! | 5 | New | Potential loyalists | Potential loyalists | Champions | Champions |
//! | 4 | New | Potential loyalists | Potential loyalists | Loyal | Loyal |
//! | 3 | Hibernating | Hibernating | Potential loyalists | Loyal | Loyal |
//! | 2 | Hibernating | Hibernating | At risk | At risk | Can't lose them |
//! | 1 | Lost | Lost | At risk | At risk | Can't lose them |

use serde::Serialize;

/// What RFM needs of one customer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activity {
    /// Days since the last order.
    pub days_since_last: f64,
    /// Number of orders.
    pub orders: u32,
    /// Total spent, in the shop's currency (minor units converted by the caller).
    pub monetary: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Segment {
    Champions,
    Loyal,
    PotentialLoyalists,
    New,
    AtRisk,
    CantLoseThem,
    Hibernating,
    Lost,
}

impl Segment {
    pub fn name(self) -> &'static str {
        match self {
            Segment::Champions => "Champions",
            Segment::Loyal => "Loyal",
            Segment::PotentialLoyalists => "Potential loyalists",
            Segment::New => "New",
            Segment::AtRisk => "At risk",
            Segment::CantLoseThem => "Can't lose them",
            Segment::Hibernating => "Hibernating",
            Segment::Lost => "Lost",
        }
    }

    /// The grid in the module documentation.
    pub fn of(r: u8, f: u8) -> Segment {
        match (r, f) {
            (5, 4..) => Segment::Champions,
            (3..=4, 4..) => Segment::Loyal,
            (4.., 1) => Segment::New,
            (4.., 2..=3) | (3, 3) => Segment::PotentialLoyalists,
            (2..=3, ..=2) => Segment::Hibernating,
            (..=1, ..=2) => Segment::Lost,
            (..=2, 3..=4) => Segment::AtRisk,
            (..=2, 5..) => Segment::CantLoseThem,
            _ => unreachable!("the grid covers every pair of scores 1-5"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scores {
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: Segment,
}

/// Percent-rank quintiles: 1 + ⌊5 × (share strictly below)⌋.
fn quintiles(values: &[f64]) -> Vec<u8> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = values.len() as f64;
    values
        .iter()
        .map(|v| {
            let below = sorted.partition_point(|x| x < v) as f64;
            (1.0 + (5.0 * below / n).floor()).min(5.0) as u8
        })
        .collect()
}

/// Scores every customer against the others.
pub fn score(customers: &[Activity]) -> Vec<Scores> {
    let r = quintiles(&customers.iter().map(|c| -c.days_since_last).collect::<Vec<_>>());
    let f = quintiles(&customers.iter().map(|c| c.orders as f64).collect::<Vec<_>>());
    let m = quintiles(&customers.iter().map(|c| c.monetary).collect::<Vec<_>>());
    (0..customers.len()).map(|i| Scores { r: r[i], f: f[i], m: m[i], segment: Segment::of(r[i], f[i]) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_covers_every_cell_as_documented() {
        let row = |r: u8| (1..=5).map(|f| Segment::of(r, f).name()).collect::<Vec<_>>().join(" | ");
        assert_eq!(row(5), "New | Potential loyalists | Potential loyalists | Champions | Champions");
        assert_eq!(row(4), "New | Potential loyalists | Potential loyalists | Loyal | Loyal");
        assert_eq!(row(3), "Hibernating | Hibernating | Potential loyalists | Loyal | Loyal");
        assert_eq!(row(2), "Hibernating | Hibernating | At risk | At risk | Can't lose them");
        assert_eq!(row(1), "Lost | Lost | At risk | At risk | Can't lose them");
    }

    #[test]
    fn quintiles_by_percent_rank_with_shared_ties() {
        // Ten distinct values: two per quintile.
        assert_eq!(quintiles(&(0..10).map(f64::from).collect::<Vec<_>>()), vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // Six of ten at one order: all score 1; then 2 orders (60 % below) score 4, 3 orders score 5.
        assert_eq!(quintiles(&[1., 1., 1., 1., 1., 1., 2., 2., 3., 3.]), vec![1, 1, 1, 1, 1, 1, 4, 4, 5, 5]);
    }

    #[test]
    fn recent_frequent_big_spenders_are_champions() {
        let mut c: Vec<Activity> = (0..20).map(|i| Activity { days_since_last: 10.0 * i as f64, orders: 1 + (i % 3), monetary: 20.0 }).collect();
        c.push(Activity { days_since_last: 0.0, orders: 30, monetary: 5000.0 });
        c.push(Activity { days_since_last: 900.0, orders: 1, monetary: 5.0 });
        let s = score(&c);
        assert_eq!(s[20], Scores { r: 5, f: 5, m: 5, segment: Segment::Champions });
        assert_eq!(s[21].segment, Segment::Lost);
        assert_eq!((s[21].r, s[21].f, s[21].m), (1, 1, 1));
    }
}
