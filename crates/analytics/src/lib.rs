//! Customer analytics for Confidant. This crate does no IO and knows nothing of profiles,
//! purposes or storage: it takes numbers keyed by opaque ids and returns models. Deciding
//! whose data may enter (the lawfulness of the purpose) is the service's job, done before.

pub mod clv;
pub mod forecast;
pub mod recs;
pub mod rfm;
pub mod special;

/// What can go wrong in a model, by meaning.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AnalyticsError {
    #[error("not enough data to fit: {have} {what}, at least {need} needed")]
    NotEnoughData { what: &'static str, need: usize, have: usize },
    #[error("the calibration end (day {calibration_end}) is before the first purchase (day {first_purchase})")]
    CalibrationBeforeFirstPurchase { calibration_end: i64, first_purchase: i64 },
    #[error("{model} could not be fitted: {reason}")]
    NoFit { model: &'static str, reason: String },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

/// A small deterministic generator (SplitMix64): models are reproducible from their seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
