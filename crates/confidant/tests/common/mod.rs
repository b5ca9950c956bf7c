//! Runs the real `confidant` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub const WRITE_KEY: &str = "wk_process_0123456789abcdef";
pub const ADMIN_KEY: &str = "ak_process_0123456789abcdef";

pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("confidant.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[[sources]]\nname = \"web\"\nwrite_key = \"{WRITE_KEY}\"\n[[api_keys]]\nname = \"ops\"\nkey = \"{ADMIN_KEY}\"\nrole = \"admin\"\n{extra}\n",
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
