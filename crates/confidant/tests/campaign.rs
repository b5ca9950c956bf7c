//! `confidant campaign send` against the real binary and a real SMTP server process
//! (aiosmtpd, `tests/smtp/sink.py`), with the server running on the same data directory.

mod common;

use std::io::BufRead;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

struct Sink {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Sink {
    fn start(dir: &std::path::Path) -> Sink {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/smtp/sink.py");
        let mut child = Command::new("python3").arg(script).arg(dir).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the SMTP sink did not start (pip install -r tests/smtp/requirements.txt): {line:?}"));
        Sink { port, dir: dir.to_owned(), child }
    }
    fn count(&self) -> usize {
        std::fs::read_dir(&self.dir).unwrap().filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn campaign(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(["campaign", "send", "--audience"])
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CONFIDANT_CONFIG")
        .env("CONFIDANT_SERVER__PUBLIC_URL", "https://shop.example")
        .env("CONFIDANT_LOG", "warn")
        .output()
        .unwrap()
}

fn report(o: &Output) -> Value {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_sends_a_campaign_once_to_those_who_consented() {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    let sink = Sink::start(&mail);
    let smtp = format!("[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"news@boutique.example\"\n", sink.port);
    let config = common::write_config(dir.path(), &smtp);
    let server = common::serve(&config);
    let client = reqwest::Client::new();
    for (i, consents) in [true, true, true, false].into_iter().enumerate() {
        let user = format!("cli-{i}");
        let identify = json!({"userId": user, "traits": {"email": format!("{user}@example.fr"), "firstName": format!("N{i}")}});
        common::send(&client, &server.base, "/v1/identify", identify).await;
        if consents {
            common::send(&client, &server.base, "/v1/consent", json!({"userId": user, "purposes": {"marketing.communications.email": true}})).await;
        }
    }
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "Bonjour {{firstName}},\n\n{{recommendations}}\n\nSe désinscrire : {{unsubscribe_url}}\n").unwrap();
    let b = body.to_str().unwrap();

    let dry = report(&campaign(&config, &["everyone", "--subject", "Nouveautés", "--body-file", b, "--dry-run"]));
    assert_eq!(dry["would_send"].as_array().unwrap().len(), 3, "{dry}");
    assert_eq!(dry["suppressed"], json!({"no_consent": 1}));
    assert_eq!(sink.count(), 0);

    let out = campaign(&config, &["everyone", "--subject", "Nouveautés", "--body-file", b]);
    let sent = report(&out);
    assert_eq!((sent["sent"].as_u64(), sent["status"].as_str()), (Some(3), Some("sent")), "{sent}");
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("3 sent, 1 suppressed, 0 failed"), "{summary}");
    assert_eq!(sink.count(), 3, "returns once every message is handed over");
    // The same command again resumes the same campaign: nobody twice.
    let again = report(&campaign(&config, &["everyone", "--subject", "Nouveautés", "--body-file", b]));
    assert_eq!((again["sent"].as_u64(), again["already_sent"].as_u64()), (Some(0), Some(3)), "{again}");
    assert_eq!(sink.count(), 3);

    // Bad input: a clear message and status 2, nothing sent.
    std::fs::write(&body, "Bonjour,\n{{ prenom }}\n").unwrap();
    let bad = campaign(&config, &["everyone", "--subject", "S", "--body-file", b]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown variable `prenom` at line 2, column 4"), "{err}");
    std::fs::write(&body, "Bonjour {{firstName}}\n").unwrap();
    let none = campaign(&config, &["nobody", "--subject", "S", "--body-file", b]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("audience not found"));
    let missing = campaign(&config, &["everyone", "--subject", "S", "--body-file", "/nonexistent/body.txt"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read"));
    assert_eq!(sink.count(), 3);
    drop(server);
}
