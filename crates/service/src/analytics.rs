//! Customer analytics on the shop's own data: orders derived from E-commerce v2 events, then
//! RFM, BG/NBD + Gamma-Gamma lifetime value and churn risk, written as computed traits.
//!
//! Only subjects for whom the `analytics` purpose is lawful at the time of the run enter the
//! data (their orders fit the models) and receive traits; a run replaces every computed trait
//! it owns, so a subject who objected since loses them, and an objection recorded between runs
//! deletes them at once (`App::record_consent`).

use std::collections::{BTreeMap, HashMap};

use confidant_analytics::{clv, rfm};
use confidant_core::ids::ProfileId;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{App, Principal, ServiceError};

/// The purpose computed traits serve.
pub const PURPOSE: &str = "analytics";
/// The keys a run owns (and replaces).
pub const KEYS: &[&str] = &[
    "orders_count", "total_spent", "last_order_at", "rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_score", "rfm_segment", "p_alive",
    "churn_risk", "expected_orders_90d", "clv_12m",
];
const DAY_MS: i64 = 86_400_000;

/// An amount of money in minor units (cents) of a currency: never a float.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub minor: i64,
}

impl Money {
    /// From a JSON number or numeric string with at most two decimals ("29.9", 29.99, "30").
    /// More decimals, exponents or anything else are refused, never rounded silently.
    pub fn parse(v: &Value) -> Option<Money> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => return None,
        };
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 2 {
            return None;
        }
        let minor = whole.parse::<i64>().ok()?.checked_mul(100)?.checked_add(format!("{frac:0<2}").parse::<i64>().ok()?)?;
        Some(Money { minor: if neg { -minor } else { minor } })
    }

    pub fn to_decimal_string(self) -> String {
        let sign = if self.minor < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", self.minor.abs() / 100, self.minor.abs() % 100)
    }
}

/// An order as the events describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub subject: ProfileId,
    pub order_id: String,
    pub at: i64,
    pub currency: Option<String>,
    pub total: Option<Money>,
    pub status: OrderStatus,
    /// Line items: product id (or SKU) and quantity.
    pub lines: Vec<(String, i64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Completed,
    Refunded,
    Cancelled,
}

/// A non-empty string, or a number as text (ids arrive as either).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Orders from `Order Completed`, `Order Refunded` and `Order Cancelled` events, in time
/// order: one per `order_id` (a resent event counts once); a refund of the whole amount (or
/// without one) or a cancellation takes the order out of the revenue; a partial refund
/// lowers its total. Events without an order id are counted, not guessed.
pub fn orders_from_events(events: &[confidant_store::privacy::NamedEvent]) -> (Vec<Order>, usize) {
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let mut without_id = 0;
    for e in events {
        let props = &e.body["properties"];
        let Some(order_id) = text(&props["order_id"]) else {
            without_id += 1;
            continue;
        };
        let amount = ["total", "revenue", "value"].iter().find_map(|k| Money::parse(&props[*k]));
        match e.event.as_str() {
            "Order Completed" => {
                orders.entry(order_id.clone()).or_insert(Order {
                    subject: e.profile,
                    order_id,
                    at: e.timestamp,
                    currency: text(&props["currency"]).map(|c| c.to_uppercase()),
                    total: amount,
                    status: OrderStatus::Completed,
                    lines: props["products"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|l| {
                            let id = text(&l["product_id"]).or_else(|| text(&l["sku"]))?;
                            let qty = l["quantity"].as_i64().filter(|q| *q > 0).unwrap_or(1);
                            Some((id, qty))
                        })
                        .collect(),
                });
            }
            "Order Cancelled" => {
                if let Some(o) = orders.get_mut(&order_id) {
                    o.status = OrderStatus::Cancelled;
                }
            }
            "Order Refunded" => {
                if let Some(o) = orders.get_mut(&order_id) {
                    match (amount, o.total) {
                        (Some(r), Some(t)) if r.minor < t.minor => o.total = Some(Money { minor: t.minor - r.minor }),
                        _ => o.status = OrderStatus::Refunded,
                    }
                }
            }
            _ => {}
        }
    }
    let mut v: Vec<Order> = orders.into_values().collect();
    v.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.order_id.cmp(&b.order_id)));
    (v, without_id)
}

/// Days or weeks (Monday to Sunday).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Day,
    Week,
}

/// A product's demand forecast.
#[derive(Clone, Debug, Serialize)]
pub struct ProductForecast {
    pub product: String,
    pub interval: Interval,
    /// Periods of history the model saw (from the shop's first order to the last complete
    /// period); named `history_days` for compatibility, in weeks for weekly forecasts.
    pub history_days: usize,
    pub units_sold: f64,
    /// The first day of each forecast period (YYYY-MM-DD), the next period first.
    pub days: Vec<String>,
    pub forecast: confidant_analytics::forecast::Forecast,
}

/// One product's stock cover.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StockCover {
    pub product: String,
    pub stock: f64,
    /// When the stock was read.
    pub as_of: String,
    pub model: Option<String>,
    /// Mean forecast units per day over the horizon.
    pub daily_demand: Option<f64>,
    /// Days until the forecast demand from the reading on exceeds the stock; `None` when it
    /// does not within the horizon, or without sales to forecast from.
    pub days_of_cover: Option<f64>,
    /// The same against the upper 80 % bound of demand.
    pub days_of_cover_prudent: Option<f64>,
    pub stockout_on: Option<String>,
}

/// A product's unit sales in consecutive periods from `first` (a day number, or the day
/// number of the first week's Monday).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub first: i64,
    pub values: Vec<f64>,
}

/// Daily unit sales per product from the shop's first order to today.
pub struct DailySales {
    first_day: Option<i64>,
    today: i64,
    units: HashMap<String, BTreeMap<i64, f64>>,
}

impl DailySales {
    pub fn from_orders(orders: &[Order], now: confidant_core::time::Millis) -> DailySales {
        let mut units: HashMap<String, BTreeMap<i64, f64>> = HashMap::new();
        for o in orders {
            for (id, q) in &o.lines {
                *units.entry(id.clone()).or_default().entry(o.at.div_euclid(DAY_MS)).or_default() += *q as f64;
            }
        }
        DailySales { first_day: orders.iter().map(|o| o.at.div_euclid(DAY_MS)).min(), today: now.div_euclid(DAY_MS), units }
    }

    /// The product's series by day (to today) or by complete week (Monday to Sunday, to the
    /// last complete week); `None` when it never sold (or no complete week holds a sale).
    pub fn series(&self, product: &str, interval: Interval) -> Option<Series> {
        let (first, units) = (self.first_day?, self.units.get(product)?);
        match interval {
            Interval::Day => Some(Series { first, values: (first..=self.today).map(|d| units.get(&d).copied().unwrap_or(0.0)).collect() }),
            Interval::Week => {
                // Day 0 (1970-01-01) was a Thursday: Monday-based weeks start at day 4 + 7k.
                let monday = |d: i64| d - (d - 4).rem_euclid(7);
                let (start, end) = (monday(first), monday(self.today));
                let values: Vec<f64> = (0..(end - start) / 7).map(|w| (0..7).map(|k| units.get(&(start + 7 * w + k)).copied().unwrap_or(0.0)).sum()).collect();
                values.iter().any(|v| *v > 0.0).then_some(Series { first: start, values })
            }
        }
    }
}

fn day_string(day: i64) -> String {
    confidant_core::time::format_millis(day * DAY_MS)[..10].to_owned()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AnalyticsReport {
    pub orders: usize,
    pub order_events_without_id: usize,
    pub customers: usize,
    pub customers_not_lawful: usize,
    /// The currency monetary values are in (the most frequent one); orders in others count
    /// for frequency and recency only.
    pub currency: Option<String>,
    pub segments: BTreeMap<String, usize>,
    pub bgnbd: Option<clv::BgNbd>,
    pub gamma_gamma: Option<clv::GammaGamma>,
    /// Why a model was not fitted (too little data), in plain words.
    pub not_fitted: Vec<String>,
    pub traits_written: u64,
}

impl App {
    /// Orders of the subjects for whom the analytics purpose is lawful now (completed ones
    /// only), the events without an order id, and how many subjects were left out.
    async fn lawful_orders(&self) -> Result<(Vec<Order>, usize, usize), ServiceError> {
        let names = ["Order Completed", "Order Refunded", "Order Cancelled"].map(String::from).to_vec();
        let events = self.store().events_named(names).await?;
        let (orders, without_id) = orders_from_events(&events);
        let subjects: Vec<ProfileId> = orders.iter().map(|o| o.subject).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let lawful = self.lawful_among(subjects.clone(), PURPOSE).await?;
        let left_out = subjects.len() - lawful.len();
        let orders = orders.into_iter().filter(|o| lawful.contains(&o.subject) && o.status == OrderStatus::Completed).collect();
        Ok((orders, without_id, left_out))
    }

    /// Forecasts unit sales of a product for `horizon` days (or weeks): the model chosen by a
    /// rolling-origin backtest on the product's own history (zero-sale periods included from
    /// the shop's first order), with 80 % and 95 % intervals.
    pub async fn forecast_product(&self, product: &str, horizon: usize, interval: Interval) -> Result<ProductForecast, ServiceError> {
        let (max, unit) = match interval {
            Interval::Day => (365, "days"),
            Interval::Week => (104, "weeks"),
        };
        if !(1..=max).contains(&horizon) {
            return Err(ServiceError::Invalid { code: "invalid_horizon", message: format!("horizon must be a number of {unit} from 1 to {max}") });
        }
        let (orders, _, _) = self.lawful_orders().await?;
        let sales = DailySales::from_orders(&orders, crate::now_millis());
        let Some(history) = sales.series(product, interval) else {
            return Err(ServiceError::NotFound("product (no sale of it is recorded)"));
        };
        let season = if interval == Interval::Day { 7 } else { 52 };
        let (series, first) = (history.values.clone(), history.first);
        let f = tokio::task::spawn_blocking(move || confidant_analytics::forecast::auto(&series, season, horizon, 3))
            .await
            .map_err(|e| ServiceError::Conflict(format!("the forecast task failed: {e}")))?
            .ok_or(ServiceError::NotFound("product history"))?;
        let step = if interval == Interval::Day { 1 } else { 7 };
        let next = first + history.values.len() as i64 * step;
        let days: Vec<String> = (0..horizon as i64).map(|k| day_string(next + k * step)).collect();
        Ok(ProductForecast { product: product.to_owned(), interval, history_days: history.values.len(), units_sold: history.values.iter().sum(), days, forecast: f })
    }

    /// Records stock readings (not personal data): product, quantity, time (now if absent).
    pub async fn record_stock(&self, levels: Vec<(String, f64, Option<confidant_core::time::Millis>)>, by: &Principal) -> Result<u64, ServiceError> {
        let now = crate::now_millis();
        if levels.is_empty() {
            return Err(ServiceError::Invalid { code: "no_levels", message: "give at least one stock level".into() });
        }
        if levels.len() > 10_000 {
            return Err(ServiceError::Invalid { code: "too_many_levels", message: "at most 10,000 stock levels per call".into() });
        }
        let mut rows = Vec::with_capacity(levels.len());
        for (i, (product, quantity, at)) in levels.into_iter().enumerate() {
            let product = product.trim().to_owned();
            if product.is_empty() || product.chars().count() > 200 {
                return Err(ServiceError::Invalid { code: "invalid_product", message: format!("level {i}: a product id is 1 to 200 characters") });
            }
            if !quantity.is_finite() || quantity < 0.0 {
                return Err(ServiceError::Invalid { code: "invalid_quantity", message: format!("level {i}: a quantity is a number ≥ 0") });
            }
            let at = at.unwrap_or(now);
            if at > now + DAY_MS {
                return Err(ServiceError::Invalid { code: "invalid_time", message: format!("level {i}: a stock reading cannot be in the future") });
            }
            rows.push((product, quantity, at));
        }
        let n = self.store().stock_put(rows, by.actor()).await?;
        self.audit(&by.actor(), "stock.recorded", None, json!({"levels": n})).await?;
        Ok(n)
    }

    /// Days of cover per product: the latest stock reading against the daily forecast from the
    /// reading on, with a prudent figure from the upper 80 % bound of demand. Shortest first.
    pub async fn stock_cover(&self, horizon: usize) -> Result<Vec<StockCover>, ServiceError> {
        if !(1..=365).contains(&horizon) {
            return Err(ServiceError::Invalid { code: "invalid_horizon", message: "horizon must be a number of days from 1 to 365".into() });
        }
        let stock = self.store().stock_current().await?;
        let (orders, _, _) = self.lawful_orders().await?;
        let sales = DailySales::from_orders(&orders, crate::now_millis());
        let work: Vec<(String, f64, i64, Option<Series>)> = stock.into_iter().map(|(p, q, at)| {
            let s = sales.series(&p, Interval::Day);
            (p, q, at, s)
        }).collect();
        let mut out = tokio::task::spawn_blocking(move || {
            work.into_iter()
                .map(|(product, stock, at, series)| {
                    let mut c = StockCover { product, stock, as_of: confidant_core::time::format_millis(at), model: None, daily_demand: None, days_of_cover: None, days_of_cover_prudent: None, stockout_on: None };
                    let Some(series) = series else { return c };
                    // Demand counted from the day after the reading.
                    let from = at.div_euclid(DAY_MS) + 1;
                    let ahead = (from - (series.first + series.values.len() as i64)).max(0) as usize;
                    let Some(f) = confidant_analytics::forecast::auto(&series.values, 7, horizon + ahead, 3) else { return c };
                    let point = &f.point[ahead.min(f.point.len())..];
                    let upper = &f.upper_80[ahead.min(f.upper_80.len())..];
                    let cover = |demand: &[f64]| -> Option<f64> {
                        let mut left = stock;
                        for (k, d) in demand.iter().enumerate() {
                            if *d >= left && *d > 0.0 {
                                return Some(k as f64 + left / d);
                            }
                            left -= d;
                        }
                        None
                    };
                    c.daily_demand = Some(round2(point.iter().sum::<f64>() / point.len().max(1) as f64));
                    c.days_of_cover = cover(point).map(round2);
                    c.days_of_cover_prudent = cover(upper).map(round2);
                    c.stockout_on = c.days_of_cover.map(|d| day_string(from + d.floor() as i64));
                    c.model = Some(f.model.name().to_owned());
                    c
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| ServiceError::Conflict(format!("the forecast task failed: {e}")))?;
        out.sort_by(|a, b| a.days_of_cover.unwrap_or(f64::INFINITY).total_cmp(&b.days_of_cover.unwrap_or(f64::INFINITY)).then(a.product.cmp(&b.product)));
        Ok(out)
    }

    /// Recomputes RFM, lifetime value and churn for every subject with orders for whom the
    /// analytics purpose is lawful; replaces the computed traits.
    pub async fn run_customer_analytics(&self, by: &Principal) -> Result<AnalyticsReport, ServiceError> {
        let now = crate::now_millis();
        let (orders, without_id, left_out) = self.lawful_orders().await?;
        let mut report = AnalyticsReport { order_events_without_id: without_id, customers_not_lawful: left_out, ..Default::default() };
        report.orders = orders.len();
        let mut by_currency: BTreeMap<&str, usize> = BTreeMap::new();
        for o in &orders {
            if let Some(c) = &o.currency {
                *by_currency.entry(c.as_str()).or_default() += 1;
            }
        }
        let currency = by_currency.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(c, _)| (*c).to_owned());
        report.currency = currency.clone();
        let value_of = |o: &Order| -> i64 {
            match (&o.currency, &currency, o.total) {
                (Some(c), Some(main), Some(t)) if c == main => t.minor,
                _ => 0,
            }
        };
        // Per subject: orders, spend, last order.
        let mut subjects: BTreeMap<ProfileId, (u32, i64, i64)> = BTreeMap::new();
        for o in &orders {
            let s = subjects.entry(o.subject).or_insert((0, 0, i64::MIN));
            s.0 += 1;
            s.1 += value_of(o);
            s.2 = s.2.max(o.at);
        }
        report.customers = subjects.len();
        let ids: Vec<ProfileId> = subjects.keys().copied().collect();
        let activity: Vec<rfm::Activity> = subjects
            .values()
            .map(|&(n, spent, last)| rfm::Activity { days_since_last: (now - last) as f64 / DAY_MS as f64, orders: n, monetary: spent as f64 / 100.0 })
            .collect();
        let scores = rfm::score(&activity);
        // Lifetime value: weeks, calibration up to today.
        let purchases: Vec<clv::Purchase<i64>> = orders.iter().map(|o| clv::Purchase { customer: o.subject.0, day: o.at.div_euclid(DAY_MS), value: value_of(o) as f64 / 100.0 }).collect();
        let summaries: HashMap<i64, clv::Summary> =
            if purchases.is_empty() { HashMap::new() } else { clv::summarise(&purchases, now.div_euclid(DAY_MS), 7.0).map(|v| v.into_iter().collect()).unwrap_or_default() };
        let data: Vec<clv::Summary> = summaries.values().copied().collect();
        let (bg, gg) = tokio::task::spawn_blocking(move || (clv::BgNbd::fit(&data), clv::GammaGamma::fit(&data)))
            .await
            .map_err(|e| ServiceError::Conflict(format!("the analytics task failed: {e}")))?;
        let bg = bg.map_err(|e| report.not_fitted.push(format!("BG/NBD: {e}"))).ok();
        let gg = gg.map_err(|e| report.not_fitted.push(format!("Gamma-Gamma: {e}"))).ok();
        report.bgnbd = bg;
        report.gamma_gamma = gg;
        let money = |minor: f64| currency.as_ref().map(|c| json!({"amount": Money { minor: minor.round() as i64 }.to_decimal_string(), "currency": c}));
        let mut rows: Vec<(ProfileId, String, Value)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let (n, spent, last) = subjects[id];
            let s = scores[i];
            *report.segments.entry(s.segment.name().to_owned()).or_default() += 1;
            let mut put = |k: &str, v: Value| rows.push((*id, k.to_owned(), v));
            put("orders_count", json!(n));
            if let Some(m) = money(spent as f64) {
                put("total_spent", m);
            }
            put("last_order_at", json!(confidant_core::time::format_millis(last)));
            put("rfm_recency", json!(s.r));
            put("rfm_frequency", json!(s.f));
            put("rfm_monetary", json!(s.m));
            put("rfm_score", json!(format!("{}{}{}", s.r, s.f, s.m)));
            put("rfm_segment", json!(s.segment.name()));
            if let (Some(bg), Some(summary)) = (&bg, summaries.get(&id.0)) {
                let alive = bg.p_alive(summary);
                put("p_alive", json!(round4(alive)));
                put("churn_risk", json!(round4(1.0 - alive)));
                put("expected_orders_90d", json!(round4(bg.expected_purchases(summary, 90.0 / 7.0))));
                if let Some(gg) = &gg {
                    let value = clv::lifetime_value(bg, gg, summary, 7.0, 12, 0.01);
                    if let Some(m) = value.is_finite().then(|| money(value * 100.0)).flatten() {
                        put("clv_12m", m);
                    }
                }
            }
        }
        report.traits_written = self.store().replace_computed(KEYS.iter().map(|k| k.to_string()).collect(), rows).await?;
        self.refresh_computed_audiences().await?;
        self.audit(&by.actor(), "analytics.computed", None, json!({"customers": report.customers, "orders": report.orders, "traits": report.traits_written}))
            .await?;
        Ok(report)
    }

    /// A subject's computed traits (RFM, lifetime value, churn).
    pub async fn computed_traits(&self, subject: ProfileId) -> Result<Vec<confidant_store::privacy::ComputedTrait>, ServiceError> {
        Ok(self.store().computed_traits(subject).await?)
    }

    /// Deletes the subject's computed traits when their purpose is no longer lawful for them
    /// (called after every consent change, so that an objection takes effect at once).
    pub async fn forget_computed_if_unlawful(&self, subject: ProfileId) -> Result<(), ServiceError> {
        if !self.is_lawful(subject, PURPOSE).await? {
            self.store().clear_computed(subject).await?;
        }
        Ok(())
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekly_series_hold_complete_monday_weeks() {
        let day = |d: i64| d * DAY_MS;
        // Day 4 (1970-01-05) is a Monday. Sales on days 5, 11 and 12; today is day 20 (a Wednesday).
        let orders: Vec<Order> = [(5, 2), (11, 1), (12, 3), (19, 7)]
            .iter()
            .map(|&(d, q)| Order { subject: ProfileId(1), order_id: format!("o{d}"), at: day(d), currency: None, total: None, status: OrderStatus::Completed, lines: vec![("P".into(), q)] })
            .collect();
        let s = DailySales::from_orders(&orders, day(20));
        assert_eq!(s.series("P", Interval::Week), Some(Series { first: 4, values: vec![2.0, 4.0] }), "the week of today is not complete");
        let d = s.series("P", Interval::Day).unwrap();
        assert_eq!((d.first, d.values.len(), d.values[0], d.values[7]), (5, 16, 2.0, 3.0));
        assert_eq!(s.series("Q", Interval::Day), None);
        assert_eq!(day_string(4), "1970-01-05");
    }

    #[test]
    fn money_is_exact_and_refuses_what_it_cannot_hold() {
        assert_eq!(Money::parse(&json!(29.33)), Some(Money { minor: 2933 }));
        assert_eq!(Money::parse(&json!("29.9")), Some(Money { minor: 2990 }));
        assert_eq!(Money::parse(&json!(30)), Some(Money { minor: 3000 }));
        assert_eq!(Money::parse(&json!("-4.05")), Some(Money { minor: -405 }));
        // 0.1 + 0.2 as a float would not be 0.30; as cents it is.
        assert_eq!(Money::parse(&json!(0.1)).unwrap().minor + Money::parse(&json!(0.2)).unwrap().minor, 30);
        for bad in [json!("12.345"), json!("1e3"), json!("12,50"), json!(true), json!(""), json!("abc")] {
            assert_eq!(Money::parse(&bad), None, "{bad}");
        }
        assert_eq!(Money { minor: -405 }.to_decimal_string(), "-4.05");
    }

    fn ev(profile: i64, ts: i64, event: &str, props: Value) -> confidant_store::privacy::NamedEvent {
        confidant_store::privacy::NamedEvent { profile: ProfileId(profile), timestamp: ts, event: event.into(), body: json!({"properties": props}) }
    }

    #[test]
    fn orders_are_derived_once_and_refunds_and_cancellations_apply() {
        let events = vec![
            ev(1, 10, "Order Completed", json!({"order_id": "A", "total": 50, "currency": "eur"})),
            ev(1, 11, "Order Completed", json!({"order_id": "A", "total": 50, "currency": "EUR"})),
            ev(1, 20, "Order Completed", json!({"order_id": "B", "revenue": "20.50", "currency": "EUR"})),
            ev(2, 30, "Order Completed", json!({"order_id": 7, "total": 10, "currency": "EUR"})),
            ev(1, 40, "Order Refunded", json!({"order_id": "B", "total": "5.50"})),
            ev(2, 41, "Order Cancelled", json!({"order_id": 7})),
            ev(2, 42, "Order Completed", json!({"total": 99})),
        ];
        let (orders, without) = orders_from_events(&events);
        assert_eq!(without, 1);
        assert_eq!(orders.len(), 3, "A once, B, 7");
        assert_eq!(orders[0].currency.as_deref(), Some("EUR"));
        assert_eq!(orders[1].total, Some(Money { minor: 1500 }), "partial refund");
        assert_eq!(orders[2].status, OrderStatus::Cancelled);
        let lines = orders_from_events(&[ev(3, 1, "Order Completed", json!({"order_id": "L", "products": [{"product_id": "P1", "quantity": 2}, {"sku": "S9"}, {"name": "no id"}]}))]).0;
        assert_eq!(lines[0].lines, vec![("P1".to_owned(), 2), ("S9".to_owned(), 1)]);
    }
}
