//! What only PostgreSQL has to show: the database going away while the server runs. Between
//! the app and the server sits a TCP proxy the test can cut: while it is cut, ingestion
//! answers 503 with Retry-After and acknowledges nothing; once it is back, the same server
//! carries on and every acknowledged event is there exactly once. Needs
//! `CONFIDANT_TEST_DATABASE_URL` (set by `.ci/run`); without it the test says so and passes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new ones refused)
/// and restored.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (d, l) = (down.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, down, live }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for t in self.live.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

fn batch(n: usize) -> Value {
    json!({"batch": (0..20).map(|i| json!({
        "type": "track", "event": "Product Viewed", "userId": format!("outage-{}", i % 4),
        "messageId": format!("b{n}-m{i}"), "timestamp": "2026-11-01T10:00:00Z"
    })).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_mid_run_gets_503_and_loses_nothing() {
    let Some(db) = confidant_store::postgres::TestDatabase::create().await else {
        eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped (.ci/run sets it)");
        return;
    };
    // The same database, reached through the proxy.
    let cfg: tokio_postgres::Config = db.url.parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let proxy = Proxy::start(format!("{host}:{}", cfg.get_ports().first().copied().unwrap_or(5432))).await;
    let url = format!("postgres://{}@127.0.0.1:{}/{}", cfg.get_user().unwrap_or("postgres"), proxy.port, cfg.get_dbname().unwrap());
    let t = spawn_app_on(&url).await;

    let mut acked = Vec::new();
    for n in 0..3 {
        let r = t.post("/v1/batch", batch(n)).await;
        assert_eq!(r.status(), 200);
        acked.push(n);
    }
    proxy.cut();
    for n in 3..6 {
        let r = t.post("/v1/batch", batch(n)).await;
        assert_eq!(r.status(), 503, "nothing is acknowledged while the database is away");
        assert_eq!(r.headers()["retry-after"], "5");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
    }
    let health = t.client.get(format!("{}/health", t.base)).send().await.unwrap();
    assert_eq!(health.status(), 503, "health says the database is away");
    proxy.restore();
    // The clients retry what was refused: everything arrives, once.
    for n in 3..6 {
        let r = t.post("/v1/batch", batch(n)).await;
        assert_eq!(r.status(), 200, "the same server carries on once the database is back");
        acked.push(n);
    }
    let r = t.post("/v1/batch", batch(0)).await;
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 20, "a resent batch is answered as accepted...");
    assert_eq!(t.events_stored().await, 6 * 20, "...and stored once: every acknowledged event, none twice");
    drop(db);
}
