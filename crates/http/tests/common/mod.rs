//! The test harness: the real router on a real socket (port 0), a fresh database each:
//! SQLite, or PostgreSQL for the test binaries whose name ends in `_pg` (each `X_pg.rs` runs
//! the tests of `X.rs` again on a database of its own on the server of
//! `CONFIDANT_TEST_DATABASE_URL`; without that variable they run on SQLite and say so).
#![allow(dead_code)]

use confidant_core::config::{self, Config};
use confidant_service::keys::MasterKey;
use confidant_service::App;
use confidant_store::{SqliteOptions, Store};
use serde_json::Value;

pub const WRITE_KEY: &str = "wk_test_0123456789abcdef";
pub const ADMIN_KEY: &str = "ak_test_0123456789abcdef";
pub const ANALYST_KEY: &str = "ak_analyst_0123456789abcdef";
pub const MARKETER_KEY: &str = "ak_marketer_0123456789abcdef";
pub const DPO_KEY: &str = "ak_dpo_0123456789abcdef";
pub const WRITE_ROLE_KEY: &str = "ak_write_0123456789abcdef";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub app: App,
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The PostgreSQL database of this test, if it runs on PostgreSQL.
    pub pg: Option<confidant_store::postgres::TestDatabase>,
}

type PgFuture<'c, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'c>>;

/// Runs `f` on a connection of its own to `url`, on a thread and runtime of its own (the
/// test's runtime may be the one blocked waiting for the answer).
pub fn on_pg<T: Send>(url: &str, f: impl for<'c> FnOnce(&'c tokio_postgres::Client) -> PgFuture<'c, T> + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                f(&client).await
            })
        })
        .join()
        .unwrap()
    })
}

/// Whether this test binary runs on PostgreSQL (its name ends in `_pg`).
pub fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_pg")
}

/// A fresh store of the backend this binary tests.
/// `pg_url`: a PostgreSQL database the caller owns, to use instead.
pub async fn open_store(dir: &std::path::Path, config: &Config, pg_url: Option<&str>) -> (Store, Option<confidant_store::postgres::TestDatabase>) {
    if let Some(url) = pg_url {
        let options =
            confidant_store::postgres::PostgresOptions { url: url.to_owned(), pool_size: 4, connect_attempts: 3, rules: config.identity_rules(), master_key: [7; 32] };
        return (Store::open_postgres(options).await.unwrap(), None);
    }
    if on_postgres() {
        match confidant_store::postgres::TestDatabase::create().await {
            Some(db) => {
                let store = Store::open_postgres(confidant_store::postgres::PostgresOptions {
                    url: db.url.clone(),
                    pool_size: 8,
                    connect_attempts: 3,
                    rules: config.identity_rules(),
                    master_key: [7; 32],
                })
                .await
                .unwrap();
                return (store, Some(db));
            }
            None => eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: this PostgreSQL run uses SQLite (.ci/run sets it)"),
        }
    }
    let store = Store::open_sqlite(
        &dir.join("confidant.db"),
        SqliteOptions { max_commit_messages: config.ingest.max_commit_messages, rules: config.identity_rules(), master_key: [7; 32] },
    )
    .unwrap();
    (store, None)
}

pub async fn spawn_app_with(extra: &str) -> TestApp {
    spawn_app_with_server("", extra).await
}

/// The same with more keys of `[server]` (`server` goes inside that table).
pub async fn spawn_app_with_server(server: &str, extra: &str) -> TestApp {
    spawn(server, extra, None).await
}

/// The app on the PostgreSQL database at `url` (which the caller owns).
pub async fn spawn_app_on(url: &str) -> TestApp {
    spawn("", "", Some(url)).await
}

async fn spawn(server: &str, extra: &str, pg_url: Option<&str>) -> TestApp {
    // CONFIDANT_TEST_LOG=warn shows the server's own log (what a 503 hides from the client).
    if let Ok(filter) = std::env::var("CONFIDANT_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
        data_dir = "{}"
        [server]
        listen = "127.0.0.1:0"
        public_url = "https://shop.example"
        {server}
        [[sources]]
        name = "web"
        write_key = "{WRITE_KEY}"
        [[api_keys]]
        name = "ops"
        key = "{ADMIN_KEY}"
        role = "admin"
        [[api_keys]]
        name = "analytics"
        key = "{ANALYST_KEY}"
        role = "analyst"
        [[api_keys]]
        name = "campaigns"
        key = "{MARKETER_KEY}"
        role = "marketer"
        [[api_keys]]
        name = "dpo"
        key = "{DPO_KEY}"
        role = "dpo"
        [[api_keys]]
        name = "pipeline"
        key = "{WRITE_ROLE_KEY}"
        role = "write"
        {extra}
        # Test events, declared like a shop declares its own.
        [privacy.plan.events.X]
        category = "user.behavior.browsing_history"
        [privacy.plan.events.Y]
        category = "user.behavior.browsing_history"
        [privacy.plan.events.E]
        category = "user.behavior.browsing_history"
        [privacy.plan.events.Clicked]
        category = "user.behavior.browsing_history"
        "#,
        dir.path().display()
    );
    let config: Config = config::load(&text, Vec::new()).unwrap().config;
    let (store, pg) = open_store(dir.path(), &config, pg_url).await;
    let app = App::new(config, store, MasterKey::from_bytes([7; 32])).await.unwrap();
    let server = confidant_http::Server::bind(app.clone()).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    TestApp { base, client: reqwest::Client::new(), app, dir, _stop: stop, pg }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

impl TestApp {
    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client.post(format!("{}{path}", self.base)).basic_auth(WRITE_KEY, Some("")).json(&body).send().await.unwrap()
    }
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut r = self.client.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send().await.unwrap()
    }
    pub async fn api(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).bearer_auth(ADMIN_KEY).send().await.unwrap()
    }
    pub async fn api_json(&self, path: &str) -> Value {
        let r = self.api(path).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
    pub async fn events_stored(&self) -> i64 {
        self.app.store().totals().await.unwrap().events
    }
    pub async fn profile_by(&self, q: &str) -> Value {
        let v = self.api_json(&format!("/api/profiles?{q}")).await;
        assert_eq!(v["profiles"].as_array().unwrap().len(), 1, "{q}: {v}");
        v["profiles"][0].clone()
    }
}

/// A real SMTP server process on loopback (aiosmtpd, `tests/smtp/sink.py`) that stores every
/// message it accepts as a file.
pub struct SmtpSink {
    pub port: u16,
    pub dir: std::path::PathBuf,
    child: std::process::Child,
}

impl SmtpSink {
    pub fn start(dir: &std::path::Path, args: &[&str]) -> SmtpSink {
        use std::io::BufRead;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/smtp/sink.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP sink");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the SMTP sink did not start (pip install -r tests/smtp/requirements.txt): {line:?}"));
        SmtpSink { port, dir: dir.to_owned(), child }
    }

    /// The messages received so far, as text, in order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect()).unwrap_or_default();
        files.sort();
        files.iter().map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned()).collect()
    }

    /// The envelope recipient of each message.
    pub fn recipients(&self) -> Vec<String> {
        self.messages().iter().map(|m| m.lines().next().unwrap_or("").trim_start_matches("X-Envelope-To: ").to_owned()).collect()
    }

    /// Waits for the `n`th message and returns the six-digit code of its subject (the privacy
    /// centre's sign-in emails).
    pub async fn code(&self, n: usize) -> String {
        for _ in 0..100 {
            let m = self.messages();
            if m.len() >= n {
                let subject = m[n - 1].lines().find(|l| l.starts_with("Subject:")).unwrap().to_owned();
                return subject.split(|c: char| !c.is_ascii_digit()).find(|w| w.len() == 6).expect("a code in the subject").to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no message number {n}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of a header in a raw message (unfolded).
pub fn header(message: &str, name: &str) -> Option<String> {
    let unfolded = message.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

impl TestApp {
    pub async fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> reqwest::Response {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => self.client.get(url),
            "PUT" => self.client.put(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }
    pub async fn dpo(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.as_key(DPO_KEY, method, path, body).await
    }
    pub async fn as_key(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.call(method, path, Some(key), body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
    pub async fn consent(&self, body: Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self.client.post(format!("{}/v1/consent", self.base)).basic_auth(WRITE_KEY, Some("")).json(&body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
    /// Every place the texts are found: the files of the data directory, and on PostgreSQL
    /// every row of every table (what `verify-erasure` checks there).
    pub fn scan(&self, texts: &[&str]) -> Vec<String> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let mut hits: Vec<String> =
            confidant_service::scan::scan(self.dir.path(), &texts).unwrap().hits.iter().map(|h| format!("{} in {} at {}", texts[h.needle], h.file.display(), h.offset)).collect();
        if let Some(db) = &self.pg {
            let url = db.url.clone();
            let found = on_pg(&url, |c| Box::pin(async move { confidant_store::postgres::scan_rows(c, &texts).await.map(|h| (h, texts)) })).unwrap();
            hits.extend(found.0.iter().map(|h| format!("{} in table {} ({}, {} rows)", found.1[h.needle], h.table, h.variant, h.rows)));
        }
        hits
    }

    /// Runs SQL (SQLite's dialect; translated on PostgreSQL) on the test's database, behind
    /// the app's back, and returns the first column of every row. For tests that tamper with
    /// or look into the store.
    pub fn sql(&self, sql: &str) -> Vec<confidant_store::sql::Owned> {
        match &self.pg {
            Some(db) => {
                let text = confidant_store::sql::pg_dialect(sql).into_owned();
                on_pg(&db.url, |c| {
                    Box::pin(async move {
                        let rows = c.query(text.as_str(), &[]).await.map_err(|e| e.to_string())?;
                        Ok::<_, String>(rows.iter().map(|r| r.get::<_, confidant_store::sql::Owned>(0)).collect())
                    })
                })
                .unwrap()
            }
            None => {
                let conn = rusqlite::Connection::open(self.dir.path().join("confidant.db")).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                if stmt.column_count() == 0 {
                    stmt.execute([]).unwrap();
                    return Vec::new();
                }
                let rows = stmt
                    .query_map([], |r| {
                        Ok(match r.get_ref(0)? {
                            rusqlite::types::ValueRef::Null => confidant_store::sql::Owned::Null,
                            rusqlite::types::ValueRef::Integer(i) => confidant_store::sql::Owned::Int(i),
                            rusqlite::types::ValueRef::Real(f) => confidant_store::sql::Owned::Real(f),
                            rusqlite::types::ValueRef::Text(t) => confidant_store::sql::Owned::Text(String::from_utf8_lossy(t).into_owned()),
                            rusqlite::types::ValueRef::Blob(b) => confidant_store::sql::Owned::Blob(b.to_vec()),
                        })
                    })
                    .unwrap();
                rows.map(Result::unwrap).collect()
            }
        }
    }

    /// The one integer a query answers.
    pub fn sql_i64(&self, sql: &str) -> i64 {
        match self.sql(sql).first() {
            Some(confidant_store::sql::Owned::Int(i)) => *i,
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// The one text a query answers.
    pub fn sql_text(&self, sql: &str) -> String {
        match self.sql(sql).first() {
            Some(confidant_store::sql::Owned::Text(t)) => t.clone(),
            other => panic!("{sql}: {other:?}"),
        }
    }
    pub async fn receipts_total(&self) -> i64 {
        self.app.store().privacy_version().await.unwrap().0
    }
}

/// A browser without JavaScript: keeps cookies (Secure ones too: the test talks plain HTTP to
/// a server whose public URL is https) and does not follow redirects.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
    pub cookies: std::collections::HashMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Page {
    /// The value of the form token on the page.
    pub fn csrf(&self) -> String {
        let at = self.text.find("name=\"csrf\" value=\"").expect("a form with its token") + 19;
        self.text[at..].split('"').next().unwrap().to_owned()
    }
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Browser {
    pub fn new(t: &TestApp) -> Browser {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { base: t.base.clone(), client, cookies: std::collections::HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn take(&mut self, r: reqwest::Response) -> Page {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            assert!(v.contains("HttpOnly") && v.contains("SameSite") && v.contains("Secure") && (v.contains("Path=/privacy") || v.contains("Path=/console")), "{v}");
            let (kv, _) = v.split_once(';').unwrap();
            let (k, val) = kv.split_once('=').unwrap();
            if val.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), val.to_owned());
            }
        }
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Page { status, headers, text: r.text().await.unwrap() }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self.client.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).header("accept-language", "fr-FR,fr;q=0.9,en;q=0.5").send().await.unwrap();
        self.take(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.take(r).await
    }
}
