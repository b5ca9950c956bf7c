//! The consent banner script at `/consent/banner.js`, for the shop's own pages: the purposes
//! based on consent (and those on legitimate interest, named for information), their texts
//! in French and English, the notice version, the privacy centre's address and the Google
//! Consent Mode v2 mapping, baked into `banner.js` as JSON. The script posts choices to
//! `/v1/consent` (CORS allowed there) with the write key it is given.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use confidant_core::privacy::LegalBasis;
use confidant_service::App;
use serde_json::{json, Value};

const SCRIPT: &str = include_str!("banner.js");

pub(crate) fn routes() -> Router<App> {
    Router::new().route("/consent/banner.js", get(banner))
}

fn config(app: &App) -> Value {
    let policy = app.policy();
    let purpose = |p: &confidant_core::privacy::Purpose| {
        json!({"id": p.id, "gpc": p.gpc, "name": {"fr": p.name.fr, "en": p.name.en}, "description": {"fr": p.description.fr, "en": p.description.en}})
    };
    let purposes: Vec<Value> = policy.purposes().iter().filter(|p| p.legal_basis == LegalBasis::Consent).map(purpose).collect();
    let legitimate: Vec<Value> = policy.purposes().iter().filter(|p| p.legal_basis == LegalBasis::LegitimateInterest).map(purpose).collect();
    let privacy_url = match app.config().server.public_url.as_deref() {
        Some(u) => format!("{}/privacy", u.trim_end_matches('/')),
        None => "/privacy".into(),
    };
    json!({
        "notice_version": policy.config().notice_version,
        "purposes": purposes,
        "legitimate": legitimate,
        "privacy_url": privacy_url,
        "google_consent_mode": app.config().consent_banner.google_consent_mode,
    })
}

async fn banner(State(app): State<App>) -> Response {
    // JSON is a JavaScript expression; `<` is escaped all the same.
    let config = config(&app).to_string().replace('<', "\\u003c");
    let body = SCRIPT.replacen("/*CONFIG*/null", &config, 1);
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    r
}
