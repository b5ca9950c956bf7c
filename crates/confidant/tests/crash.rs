//! Durability: `kill -9` in the middle of a load, restart, and every acknowledged message is
//! there; resending an acknowledged batch stores nothing twice.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

const SENDERS: usize = 4;

async fn all_message_ids(client: &reqwest::Client, base: &str, user: &str) -> Vec<String> {
    let found: Value = client.get(format!("{base}/api/profiles?user_id={user}")).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let Some(id) = found["profiles"][0]["id"].as_str() else { return Vec::new() };
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = client
            .get(format!("{base}/api/profiles/{id}/events?limit=1000&cursor={cursor}"))
            .bearer_auth(common::ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(page["events"].as_array().unwrap().iter().map(|e| e["messageId"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

fn batch(sender: usize, n: usize) -> Value {
    json!({"batch": (0..100).map(|i| json!({
        "type": "track", "event": "Product Viewed", "userId": format!("crash-user-{sender}"),
        "messageId": format!("s{sender}-b{n}-m{i}"), "properties": {"product_id": format!("P{i}"), "price": 12.5}
    })).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let server = common::serve(&config);
    let base = server.base.clone();
    let acked: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..10_000 {
                let r = client.post(format!("{base}/v1/batch")).basic_auth(common::WRITE_KEY, Some("")).json(&batch(s, n)).send().await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().push((s, n)),
                    _ => return,
                }
            }
        }));
    }
    // Let the load run, then pull the plug mid-stream (PostgreSQL in a debug build takes longer
    // to get there).
    for _ in 0..3_000 {
        if acked.lock().unwrap().len() >= 120 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut server = server;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 120, "the load was running when the server was killed ({} batches)", acked.len());

    let restarted = common::serve(&config);
    let mut stored = HashSet::new();
    for s in 0..SENDERS {
        let ids = all_message_ids(&client, &restarted.base, &format!("crash-user-{s}")).await;
        let unique: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "no message is stored twice");
        stored.extend(unique);
    }
    let mut missing = 0;
    for (s, n) in &acked {
        for i in 0..100 {
            if !stored.contains(&format!("s{s}-b{n}-m{i}")) {
                missing += 1;
            }
        }
    }
    assert_eq!(missing, 0, "{missing} acknowledged messages were lost out of {}", acked.len() * 100);

    // A client that never got its answer resends: nothing is stored twice.
    let (s, n) = acked[0];
    let r: Value = client.post(format!("{}/v1/batch", restarted.base)).basic_auth(common::WRITE_KEY, Some("")).json(&batch(s, n)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["duplicates"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_cleanly_with_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let mut server = common::serve(&config);
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/v1/batch", server.base)).basic_auth(common::WRITE_KEY, Some("")).json(&batch(0, 0)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let status = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let code = server.child.wait().unwrap();
        drop(server);
        code
    })
    .await
    .unwrap();
    assert!(exit.success(), "a clean shutdown exits 0: {exit:?}");
    let wal = dir.path().join("data/confidant.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL was checkpointed into the database on shutdown");
    let restarted = common::serve(&config);
    assert_eq!(all_message_ids(&client, &restarted.base, "crash-user-0").await.len(), 100);
}
