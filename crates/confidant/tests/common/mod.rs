//! Runs the real `confidant` binary as a child process: on SQLite in the test's directory,
//! or, for the test binaries whose name ends in `_pg` (each `X_pg.rs` runs `X.rs` again), on
//! a PostgreSQL database of its own on the server of `CONFIDANT_TEST_DATABASE_URL` (without
//! that variable they run on SQLite and say so).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const WRITE_KEY: &str = "wk_process_0123456789abcdef";
pub const ADMIN_KEY: &str = "ak_process_0123456789abcdef";

/// Whether this test binary runs on PostgreSQL.
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_pg")
}

thread_local! {
    /// The databases of the running test (dropped with the test's thread).
    static DATABASES: std::cell::RefCell<Vec<(PathBuf, confidant_store::postgres::TestDatabase)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The `database_url` line for the PostgreSQL database of a test directory (created on first
/// use), when this binary runs on PostgreSQL.
pub fn database_line(dir: &Path) -> String {
    if !on_postgres() {
        return String::new();
    }
    if let Some(url) = DATABASES.with(|d| d.borrow().iter().find(|(p, _)| p == dir).map(|(_, db)| db.url.clone())) {
        return format!("database_url = \"{url}\"\n");
    }
    match confidant_store::postgres::TestDatabase::create_blocking() {
        Some(db) => {
            let line = format!("database_url = \"{}\"\n", db.url);
            DATABASES.with(|d| d.borrow_mut().push((dir.to_owned(), db)));
            line
        }
        None => {
            eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: this PostgreSQL run uses SQLite (.ci/run sets it)");
            String::new()
        }
    }
}

/// The URL of the PostgreSQL database of the latest config written by this test, if any.
pub fn database_url() -> Option<String> {
    DATABASES.with(|d| d.borrow().last().map(|(_, db)| db.url.clone()))
}

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("confidant.toml");
    std::fs::write(
        &path,
        format!(
            "{}data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n[[api_keys]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n{extra}\n",
            database_line(dir),
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

pub struct Running {
    pub child: Child,
    pub base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `confidant serve` and waits for its listening line. Standard error keeps being
/// drained by a thread so the child never blocks on a full pipe.
pub fn serve(config: &Path) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["serve", "--config"])
        .arg(config)
        .env("CONFIDANT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("confidant listening on ") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addr.trim().to_owned());
                }
            } else {
                eprintln!("[server] {line}");
            }
        }
    });
    let base = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the server says where it listens");
    Running { child, base }
}

/// Posts a message to the tracking API with the write key; it must be accepted.
pub async fn send(client: &reqwest::Client, base: &str, path: &str, body: serde_json::Value) {
    let r = client.post(format!("{base}{path}")).basic_auth(WRITE_KEY, Some("")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path} {body}");
}
