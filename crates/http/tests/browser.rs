//! The privacy centre in a real browser: Debian's headless Chromium driven through
//! ChromeDriver (WebDriver, fantoccini), against the real server and a real SMTP server
//! process that receives the sign-in code. Screenshots of each step are kept in
//! `target/screenshots/` as test artefacts. `.ci/run` installs Chromium and ChromeDriver.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const MARKETING: &str = "marketing.communications.email";

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (.ci/run installs Debian's chromium and chromium-driver)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Driver { child, port };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver, downloads: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600", "--lang=fr-FR"],
            "prefs": {"download.default_directory": downloads.to_str().unwrap(), "download.prompt_for_download": false, "intl.accept_languages": "fr-FR,fr"}
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}


async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Clicks what submits a form or follows a link, and waits for the next document to load
/// (a click does not wait for the navigation it starts).
async fn submit(c: &Client, css: &str) {
    c.execute("document.documentElement.dataset.stale = '1'", vec![]).await.unwrap();
    click(c, css).await;
    for _ in 0..400 {
        let fresh = c.execute("return document.readyState === 'complete' && !document.documentElement.dataset.stale", vec![]).await;
        if matches!(fresh, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{css}: no new page");
}

async fn text(c: &Client) -> String {
    c.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_signs_in_withdraws_consent_downloads_and_erases_in_chromium() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&format!("[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"La Boutique <bonjour@boutique.example>\"\n", sink.port)).await;
    let r = t.post("/v1/identify", json!({"userId": "ines", "traits": {"email": "ines.dupont@example.fr", "firstName": "Inès", "lastName": "Dupont"}})).await;
    assert_eq!(r.status(), 200);
    let (s, _) = t.consent(json!({"userId": "ines", "purposes": {MARKETING: true}, "method": "banner"}), &[]).await;
    assert_eq!(s, 200);

    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;
    c.goto(&format!("{}/privacy", t.base)).await.unwrap();
    shot(&c, "privacy-1-sign-in").await;
    assert!(text(&c).await.contains("Recevoir un code"), "French by default");
    c.find(Locator::Css("#email")).await.unwrap().send_keys("ines.dupont@example.fr").await.unwrap();
    submit(&c, "form[action='/privacy/code'] button").await;
    let code = sink.code(1).await;
    assert!(c.current_url().await.unwrap().path().ends_with("/privacy/verify"));
    c.find(Locator::Css("#code")).await.unwrap().send_keys(&code).await.unwrap();
    shot(&c, "privacy-2-code").await;
    submit(&c, "form[action='/privacy/verify'] button").await;
    let page = text(&c).await;
    assert!(page.contains("ines.dupont@example.fr") && page.contains("Dupont"), "{page}");
    shot(&c, "privacy-3-my-data").await;

    // Withdraw marketing consent with the switch.
    let switch = c.find(Locator::Css(&format!("input[type=checkbox][value='{MARKETING}']"))).await.unwrap();
    assert_eq!(switch.prop("checked").await.unwrap().as_deref(), Some("true"));
    switch.click().await.unwrap();
    submit(&c, "form[action='/privacy/consent'] button[type=submit]").await;
    let switch = c.find(Locator::Css(&format!("input[type=checkbox][value='{MARKETING}']"))).await.unwrap();
    assert_eq!(switch.prop("checked").await.unwrap().as_deref(), Some("false"), "the page shows the new choice");
    let id = t.api_json("/api/profiles?email=ines.dupont@example.fr").await["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, consent) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    assert_eq!(consent["lawful"][MARKETING], false, "{consent}");

    // Download the export.
    click(&c, "form[action='/privacy/export'] button").await;
    let file = downloads.path().join("my-data.json");
    for _ in 0..100 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let export = std::fs::read_to_string(&file).expect("the export was downloaded");
    assert!(export.contains("ines.dupont@example.fr"));

    // Erase the account, with the confirmation.
    c.goto(&format!("{}/privacy/erase", t.base)).await.unwrap();
    click(&c, "#confirm").await;
    shot(&c, "privacy-4-erase").await;
    submit(&c, "form[action='/privacy/erase'] button").await;
    assert!(text(&c).await.contains("Vos données ont été supprimées"));
    shot(&c, "privacy-5-erased").await;
    assert_eq!(t.api_json("/api/profiles?email=ines.dupont@example.fr").await["profiles"], json!([]));
    let hits = t.scan(&["ines.dupont@example.fr", "Inès"]);
    assert!(hits.is_empty(), "left behind: {hits:#?}");
    // Back to the start: the session is gone.
    c.goto(&format!("{}/privacy", t.base)).await.unwrap();
    assert!(text(&c).await.contains("Recevoir un code"));
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_signs_in_finds_a_customer_opens_the_360_view_and_saves_an_audience_in_chromium() {
    let t = spawn_app().await;
    let (s, v) = t
        .as_key(ADMIN_KEY, "POST", "/api/console/users", Some(json!({"email": "ana@boutique.example", "name": "Ana", "role": "admin", "password": "correct horse battery staple"})))
        .await;
    assert_eq!(s, 201, "{v}");
    let r = t.post("/v1/identify", json!({"userId": "marc", "traits": {"email": "marc.petit@example.fr", "firstName": "Marc", "city": "Nantes"}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.post("/v1/track", json!({"userId": "marc", "event": "Order Completed", "properties": {"order_id": "m1", "revenue": 80}})).await.status(), 200);

    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;
    c.goto(&format!("{}/console", t.base)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/login"), "signed out: the sign-in page");
    c.find(Locator::Css("#email")).await.unwrap().send_keys("ana@boutique.example").await.unwrap();
    c.find(Locator::Css("#password")).await.unwrap().send_keys("correct horse battery staple").await.unwrap();
    shot(&c, "console-1-sign-in").await;
    submit(&c, "form[action='/console/login'] button").await;
    assert!(text(&c).await.contains("Tableau de bord"));
    shot(&c, "console-2-dashboard").await;

    // Find the customer and open the 360 view.
    submit(&c, "nav a[href='/console/customers']").await;
    c.find(Locator::Css("#q")).await.unwrap().send_keys("marc.petit@example.fr").await.unwrap();
    submit(&c, "form[action='/console/customers'] button").await;
    submit(&c, "ul.results a").await;
    let view = text(&c).await;
    assert!(view.contains("marc.petit@example.fr") && view.contains("Nantes") && view.contains("Order Completed"), "{view}");
    shot(&c, "console-3-customer-360").await;

    // Save an audience after a preview.
    submit(&c, "nav a[href='/console/audiences']").await;
    c.find(Locator::Css("#name")).await.unwrap().send_keys("nantais").await.unwrap();
    c.find(Locator::Css("select#purpose option[value='analytics']")).await.unwrap().click().await.unwrap();
    c.find(Locator::Css("#rule")).await.unwrap().send_keys("trait.city = \"Nantes\"").await.unwrap();
    // The size appears as the rule is typed (the console's one script), then the button.
    let mut live = String::new();
    for _ in 0..100 {
        live = c.find(Locator::Css("#live-preview")).await.unwrap().text().await.unwrap();
        if live.contains("correspondent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(live.starts_with("1 personnes (1 correspondent"), "live preview: {live:?}");
    submit(&c, "button[value='preview']").await;
    assert!(text(&c).await.contains("correspondent"), "the size preview");
    shot(&c, "console-4-audience-preview").await;
    submit(&c, "button[value='save']").await;
    let list = text(&c).await;
    assert!(list.contains("nantais"), "{list}");
    let (_, audiences) = t.as_key(ADMIN_KEY, "GET", "/api/audiences/nantais", None).await;
    assert_eq!(audiences["name"], "nantais", "{audiences}");
    let (_, audit) = t.dpo("GET", "/api/audit?action=console.profile_viewed", None).await;
    assert_eq!(audit["entries"][0]["actor"], "admin:Ana", "{audit}");
    c.close().await.unwrap();
}

/// The shop's own pages, on another origin than Confidant: one plain, one whose browser
/// sends Global Privacy Control (Chromium has no switch for it, so the page defines it).
async fn shop_site(confidant: &str) -> String {
    use axum::response::Html;
    let banner = format!("{confidant}/consent/banner.js");
    let page = |gpc: bool| {
        let signal = if gpc { "<script>Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: function () { return true; }});</script>" } else { "" };
        format!("<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Boutique</title></head><body><h1>Boutique</h1>{signal}<script src=\"{banner}\" data-write-key=\"{WRITE_KEY}\"></script></body></html>")
    };
    let (plain, with_gpc) = (page(false), page(true));
    let router = axum::Router::new()
        .route("/", axum::routing::get(move || async move { Html(plain) }))
        .route("/gpc", axum::routing::get(move || async move { Html(with_gpc) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn data_layer(c: &Client) -> Vec<serde_json::Value> {
    let v = c.execute("return JSON.stringify(window.dataLayer.map(function (a) { return Array.prototype.slice.call(a); }))", vec![]).await.unwrap();
    serde_json::from_str(v.as_str().unwrap()).unwrap()
}

async fn posted(c: &Client) -> u64 {
    let v = c.execute_async("var done = arguments[arguments.length - 1]; window.Confidant.lastPost.then(done);", vec![]).await.unwrap();
    v.as_u64().unwrap_or(0)
}

async fn wait_for(c: &Client, css: &str) {
    for _ in 0..200 {
        if !c.find_all(Locator::Css(css)).await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{css} never appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consent_banner_records_choices_honours_gpc_and_sets_google_consent_mode_in_chromium() {
    let t = spawn_app().await;
    let shop = shop_site(&t.base).await;
    let driver = start_driver();
    let downloads = tempfile::tempdir().unwrap();
    let c = browser(&driver, downloads.path()).await;

    // First visit: the banner, every Consent Mode signal denied by default.
    c.goto(&format!("{shop}/")).await.unwrap();
    wait_for(&c, "#confidant-banner").await;
    shot(&c, "banner-1-first-visit").await;
    let layer = data_layer(&c).await;
    assert_eq!((layer[0][0].as_str(), layer[0][1].as_str()), (Some("consent"), Some("default")), "{layer:?}");
    for s in ["ad_storage", "ad_user_data", "ad_personalization", "analytics_storage", "personalization_storage"] {
        assert_eq!(layer[0][2][s], "denied", "{s}: {layer:?}");
    }
    let banner = text(&c).await;
    assert!(banner.contains("Tout accepter") && banner.contains("Tout refuser"), "accept and refuse side by side: {banner}");

    // Refuse all: one receipt per consent purpose, recorded from the shop's origin (CORS).
    click(&c, "#confidant-refuse").await;
    assert_eq!(posted(&c).await, 200);
    assert!(c.find_all(Locator::Css("#confidant-banner")).await.unwrap().is_empty(), "the banner closes");
    let anon = c.execute("return window.Confidant.anonymousId()", vec![]).await.unwrap().as_str().unwrap().to_owned();
    let id = t.api_json(&format!("/api/profiles?anonymous_id={anon}")).await["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, consent) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    let receipts = consent["receipts"].as_array().unwrap();
    assert!(receipts.iter().all(|r| r["method"] == "banner" && r["granted"] == false && r["notice_version"].is_string()), "{consent}");
    for p in [MARKETING, "marketing.communications.sms", "advertising.targeted", "personalisation.recommendations"] {
        assert!(receipts.iter().any(|r| r["purpose"] == p), "{p}: {consent}");
    }
    let last = data_layer(&c).await.last().cloned().unwrap();
    assert_eq!((last[1].as_str(), last[2]["ad_storage"].as_str(), last[2]["analytics_storage"].as_str()), (Some("update"), Some("denied"), Some("granted")), "{last}");

    // The next page: no banner, the stored choice applied at once.
    c.goto(&format!("{shop}/")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.find_all(Locator::Css("#confidant-banner")).await.unwrap().is_empty());
    let layer = data_layer(&c).await;
    assert_eq!(layer.last().unwrap()[1], "update", "{layer:?}");

    // A browser that sends GPC: "accept all" still refuses what GPC covers.
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{shop}/gpc")).await.unwrap();
    wait_for(&c, "#confidant-banner").await;
    click(&c, "#confidant-customise").await;
    let ads = c.find(Locator::Css("input[value='advertising.targeted']")).await.unwrap();
    assert_eq!(ads.prop("disabled").await.unwrap().as_deref(), Some("true"), "GPC: the switch cannot be turned on");
    shot(&c, "banner-2-gpc-customise").await;
    click(&c, "#confidant-accept").await;
    assert_eq!(posted(&c).await, 200);
    let anon = c.execute("return window.Confidant.anonymousId()", vec![]).await.unwrap().as_str().unwrap().to_owned();
    let id = t.api_json(&format!("/api/profiles?anonymous_id={anon}")).await["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, consent) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    assert_eq!(consent["lawful"]["advertising.targeted"], false, "{consent}");
    assert_eq!(consent["lawful"][MARKETING], true, "{consent}");
    let last = data_layer(&c).await.last().cloned().unwrap();
    assert_eq!((last[2]["ad_storage"].as_str(), last[2]["personalization_storage"].as_str()), (Some("denied"), Some("granted")), "{last}");
    c.close().await.unwrap();
}
