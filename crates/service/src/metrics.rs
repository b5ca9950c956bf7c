//! Prometheus metrics, in the text exposition format. Labels never carry personal data.

use std::sync::Arc;
use std::time::Duration;

use confidant_core::message::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    messages: Family<Outcome, Counter>,
    rejected: Family<Reason, Counter>,
    throttled: Counter,
    requests: Family<RouteStatus, Counter>,
    latency: HistogramFamily<Route>,
    commit: Histogram,
    queue_depth: Gauge,
    apply_failures: Gauge,
    queue: Arc<Semaphore>,
    capacity: usize,
}

impl Metrics {
    pub(crate) fn new(queue: Arc<Semaphore>, capacity: usize) -> Metrics {
        let mut registry = Registry::with_prefix("confidant");
        let messages = Family::<Outcome, Counter>::default();
        let rejected = Family::<Reason, Counter>::default();
        let throttled = Counter::default();
        let requests = Family::<RouteStatus, Counter>::default();
        let latency: HistogramFamily<Route> = Family::new_with_constructor(latency_histogram);
        let commit = latency_histogram();
        let queue_depth = Gauge::default();
        let apply_failures = Gauge::default();
        let queue_capacity = Gauge::<i64>::default();
        queue_capacity.set(capacity as i64);
        registry.register("ingest_messages", "Messages acknowledged, by outcome (accepted: stored; duplicate: already stored)", messages.clone());
        registry.register("ingest_rejected", "Messages refused, by reason", rejected.clone());
        registry.register("ingest_throttled", "Requests answered 429 because the queue was full", throttled.clone());
        registry.register("http_requests", "HTTP requests, by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer an HTTP request, by route", latency.clone());
        registry.register("ingest_commit_duration_seconds", "Time from queueing a batch to its durable commit", commit.clone());
        registry.register("ingest_queue_depth", "Messages accepted and not yet applied (arriving, or acknowledged and waiting for the writer)", queue_depth.clone());
        registry.register(
            "ingest_apply_failures",
            "Acknowledged batches the store could not apply since start (each logged as an error with its journal position; should stay 0)",
            apply_failures.clone(),
        );
        registry.register("ingest_queue_capacity", "Messages the queue holds before answering 429", queue_capacity);
        for outcome in ["accepted", "duplicate"] {
            let _ = messages.get_or_create(&Outcome { outcome: outcome.into() });
        }
        for r in RejectReason::ALL {
            let _ = rejected.get_or_create(&Reason { reason: r.code().into() });
        }
        Metrics { registry, messages, rejected, throttled, requests, latency, commit, queue_depth, apply_failures, queue, capacity }
    }

    pub(crate) fn rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&Reason { reason: reason.code().into() }).inc();
    }

    pub(crate) fn throttled(&self) {
        self.throttled.inc();
    }

    pub(crate) fn committed(&self, stored: usize, duplicates: usize, took: Duration) {
        self.messages.get_or_create(&Outcome { outcome: "accepted".into() }).inc_by(stored as u64);
        self.messages.get_or_create(&Outcome { outcome: "duplicate".into() }).inc_by(duplicates as u64);
        self.commit.observe(took.as_secs_f64());
    }

    /// Records one answered HTTP request. `route` is the route pattern, never the raw path.
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests.get_or_create(&RouteStatus { route: route.into(), status: status.to_string() }).inc();
        self.latency.get_or_create(&Route { route: route.into() }).observe(took.as_secs_f64());
    }

    /// Messages accepted and not yet applied.
    pub fn queue_depth(&self) -> usize {
        self.capacity.saturating_sub(self.queue.available_permits())
    }

    /// The text exposition format, with the store's count of batches it could not apply.
    pub fn encode(&self, apply_failures: u64) -> String {
        self.queue_depth.set(self.queue_depth() as i64);
        self.apply_failures.set(apply_failures as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
