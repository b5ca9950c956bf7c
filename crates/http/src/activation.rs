//! Activation: campaigns and triggered messages (`/api/campaigns`), the unsubscribe links of
//! emails (`/u/{token}`, RFC 8058 one-click), destinations (`/api/destinations`), the receipts
//! of forwarded rights requests, and audience exports.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_core::time::format_millis;
use confidant_service::campaigns::{CampaignInput, TokenProblem, UnsubscribeTarget};
use confidant_service::destinations::DestinationInput;
use confidant_service::store::activation::{CampaignView, DestinationView};
use confidant_service::App;
use serde_json::{json, Value};

use crate::admin::authorise;
use crate::error::ApiError;

/// Campaigns: marketers and admins run them; the DPO reads them.
const CAMPAIGN_EDIT_ROLES: &[Role] = &[Role::Marketer, Role::Admin];
const CAMPAIGN_READ_ROLES: &[Role] = &[Role::Marketer, Role::Admin, Role::Dpo];
/// Destinations receive personal data: admins set them up; the DPO reads them.
const DESTINATION_EDIT_ROLES: &[Role] = &[Role::Admin];
const DESTINATION_READ_ROLES: &[Role] = &[Role::Admin, Role::Dpo];
/// Exports of identifiers: marketers and admins.
const EXPORT_ROLES: &[Role] = &[Role::Marketer, Role::Admin];

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/campaigns", get(campaign_list).post(campaign_create))
        .route("/api/campaigns/{name}", get(campaign_get).delete(campaign_delete))
        .route("/api/campaigns/{name}/send", post(campaign_send))
        .route("/api/campaigns/{name}/pause", post(campaign_pause))
        .route("/api/campaigns/{name}/resume", post(campaign_resume))
        .route("/api/campaigns/{name}/deliveries", get(campaign_deliveries))
        .route("/u/{token}", get(unsubscribe_page).post(unsubscribe_post))
        .route("/api/destinations", get(destination_list).post(destination_create))
        .route("/api/destinations/deliver", post(destination_deliver))
        .route("/api/destinations/{name}", get(destination_get).delete(destination_delete))
        .route("/api/destinations/{name}/enable", post(destination_enable))
        .route("/api/destinations/{name}/disable", post(destination_disable))
        .route("/api/destinations/{name}/dead", get(destination_dead))
        .route("/api/destinations/{name}/replay", post(destination_replay))
        .route("/api/destinations/{name}/rights", get(destination_rights))
        .route("/api/dsr/{id}/forwards", get(dsr_forwards))
        .route("/api/audiences/{name}/export", get(audience_export))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_data() { "the body has a missing field, an unknown field or a field of the wrong type" } else { "the body is not valid JSON" };
        ApiError::BadRequest { code: "invalid_body", message: format!("{what}: expected {expected}") }
    })
}

fn campaign_json(c: &CampaignView) -> Value {
    json!({"name": c.name, "audience": c.audience, "purpose": c.purpose, "content": c.content, "trigger": c.trigger, "status": c.status,
           "scheduled_at": c.scheduled_at.map(format_millis), "created_at": format_millis(c.created_at), "created_by": c.created_by,
           "started_at": c.started_at.map(format_millis), "finished_at": c.finished_at.map(format_millis)})
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignBody {
    name: Option<String>,
    audience: String,
    purpose: Option<String>,
    subject: confidant_service::campaigns::Localised,
    body: confidant_service::campaigns::Localised,
    recommendations: Option<usize>,
    scheduled_at: Option<String>,
    trigger: Option<confidant_service::campaigns::TriggerInput>,
}

async fn campaign_create(State(app): State<App>, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_EDIT_ROLES)?;
    let b: CampaignBody = body(&bytes, "{\"audience\", \"subject\", \"body\", optional \"name\", \"purpose\", \"recommendations\", \"scheduled_at\", \"trigger\"}")?;
    if b.name.is_none() && b.trigger.is_some() {
        return Err(ApiError::Unprocessable { code: "missing_name", message: "a triggered message needs a name".into() });
    }
    let scheduled_at = match b.scheduled_at {
        None => None,
        Some(s) => Some(confidant_core::time::parse_timestamp(&s).ok_or(ApiError::Unprocessable { code: "invalid_time", message: "scheduled_at is an RFC 3339 time such as 2026-12-01T09:00:00Z".into() })?),
    };
    let input = CampaignInput { name: b.name, audience: b.audience, purpose: b.purpose, subject: b.subject, body: b.body, recommendations: b.recommendations, scheduled_at, trigger: b.trigger };
    let c = app.create_campaign(input, &by).await?;
    Ok((StatusCode::CREATED, Json(campaign_json(&c))).into_response())
}

async fn campaign_list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, CAMPAIGN_READ_ROLES)?;
    Ok(Json(json!({"campaigns": app.campaigns().await?.iter().map(campaign_json).collect::<Vec<_>>()})))
}

async fn campaign_get(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, CAMPAIGN_READ_ROLES)?;
    Ok(Json(campaign_json(&app.campaign(&name).await?)))
}

async fn campaign_delete(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_EDIT_ROLES)?;
    app.delete_campaign(&name, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct SendQuery {
    dry_run: Option<bool>,
}

async fn campaign_send(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>, q: Result<Query<SendQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_EDIT_ROLES)?;
    let Query(q) = q.map_err(|_| ApiError::BadRequest { code: "invalid_query", message: "dry_run is true or false".into() })?;
    let report = app.send_campaign(&name, q.dry_run.unwrap_or(false), &by).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

async fn campaign_pause(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_EDIT_ROLES)?;
    Ok(Json(campaign_json(&app.set_trigger_active(&name, false, &by).await?)))
}

async fn campaign_resume(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_EDIT_ROLES)?;
    Ok(Json(campaign_json(&app.set_trigger_active(&name, true, &by).await?)))
}

#[derive(serde::Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

async fn campaign_deliveries(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, CAMPAIGN_READ_ROLES)?;
    let Query(q) = q.map_err(|_| ApiError::BadRequest { code: "invalid_query", message: "status is a text, after and limit are numbers".into() })?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest { code: "invalid_limit", message: "limit is from 1 to 1000".into() });
    }
    if q.status.as_deref().is_some_and(|s| !["sending", "sent", "failed", "suppressed"].contains(&s)) {
        return Err(ApiError::BadRequest { code: "invalid_status", message: "status is sending, sent, failed or suppressed".into() });
    }
    let (rows, summary) = app.campaign_deliveries(&name, q.status, q.after.unwrap_or(0), limit, &by).await?;
    Ok(Json(json!({"summary": summary, "deliveries": rows})))
}

// ---------------------------------------------------------------------- unsubscribe

fn english(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    // The first language named decides; French unless it is English.
    accept.split(',').next().is_some_and(|l| l.trim().to_ascii_lowercase().starts_with("en"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(status: StatusCode, en: bool, title: &str, text: &str, form: Option<&str>) -> Response {
    let lang = if en { "en" } else { "fr" };
    let form = form.map_or(String::new(), |label| format!("<form method=\"post\"><button type=\"submit\">{}</button></form>", escape(label)));
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}}\
         button{{font-size:1rem;padding:.6rem 1.2rem;border:2px solid #1a1a1a;background:#fff;cursor:pointer}}button:focus{{outline:3px solid #005fcc}}</style></head>\
         <body><main><h1>{t}</h1><p>{x}</p>{form}</main></body></html>",
        t = escape(title),
        x = escape(text),
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

fn problem_page(p: TokenProblem, en: bool) -> Response {
    match (p, en) {
        (TokenProblem::Forged, false) => page(StatusCode::BAD_REQUEST, en, "Lien invalide", "Ce lien de désinscription n'est pas valide. Rien n'a été modifié.", None),
        (TokenProblem::Forged, true) => page(StatusCode::BAD_REQUEST, en, "Invalid link", "This unsubscribe link is not valid. Nothing was changed.", None),
        (TokenProblem::Gone, false) => page(StatusCode::GONE, en, "Lien expiré", "Aucune donnée n'est plus associée à ce lien. Rien n'a été modifié.", None),
        (TokenProblem::Gone, true) => page(StatusCode::GONE, en, "Link expired", "No data is held for this link any more. Nothing was changed.", None),
        (TokenProblem::Used, false) => page(StatusCode::CONFLICT, en, "Lien déjà utilisé", "Ce lien a déjà servi : votre désinscription est enregistrée.", None),
        (TokenProblem::Used, true) => page(StatusCode::CONFLICT, en, "Link already used", "This link was used already: your unsubscription is recorded.", None),
    }
}

fn purpose_name(t: &UnsubscribeTarget, en: bool) -> &str {
    if en {
        &t.purpose_name_en
    } else {
        &t.purpose_name_fr
    }
}

/// The link as clicked: a confirmation page. A GET never unsubscribes (mail scanners follow
/// links); the button, or the mailbox provider's one-click POST, does.
async fn unsubscribe_page(State(app): State<App>, headers: HeaderMap, Path(token): Path<String>) -> Result<Response, ApiError> {
    let en = english(&headers);
    Ok(match app.unsubscribe_target(&token).await? {
        Err(p) => problem_page(p, en),
        Ok(t) if t.used => problem_page(TokenProblem::Used, en),
        Ok(t) if en => page(StatusCode::OK, en, "Unsubscribe", &format!("Stop receiving: {}?", purpose_name(&t, en)), Some("Unsubscribe")),
        Ok(t) => page(StatusCode::OK, en, "Se désinscrire", &format!("Ne plus recevoir : {} ?", purpose_name(&t, en)), Some("Me désinscrire")),
    })
}

/// RFC 8058: `List-Unsubscribe=One-Click` in a form body, or the confirmation page's button.
async fn unsubscribe_post(State(app): State<App>, headers: HeaderMap, Path(token): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let en = english(&headers);
    if body.len() > 1024 {
        return Err(ApiError::PayloadTooLarge("an unsubscribe request has at most 1 KB of body".into()));
    }
    let one_click = body.as_ref() == b"List-Unsubscribe=One-Click";
    Ok(match app.unsubscribe(&token, one_click).await? {
        Err(p) => problem_page(p, en),
        Ok(t) if en => page(StatusCode::OK, en, "Unsubscribed", &format!("Done: you will no longer receive {}. It is recorded.", purpose_name(&t, en)), None),
        Ok(t) => page(StatusCode::OK, en, "Désinscription enregistrée", &format!("C'est fait : vous ne recevrez plus « {} ».", purpose_name(&t, en)), None),
    })
}

// ---------------------------------------------------------------------- destinations

fn destination_json(d: &DestinationView) -> Value {
    json!({"name": d.name, "url": d.url, "purposes": d.purposes, "events": d.events, "audiences": d.audiences, "rate_per_second": d.rate_per_second,
           "timeout_ms": d.timeout_ms, "max_attempts": d.max_attempts, "retry_base_ms": d.retry_base_ms, "enabled": d.enabled,
           "created_at": format_millis(d.created_at), "created_by": d.created_by})
}

async fn destination_create(State(app): State<App>, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    let by = authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    let input: DestinationInput = body(&bytes, "{\"name\", \"url\", \"purposes\", optional \"secret\", \"events\", \"audiences\", \"rate_per_second\", \"timeout_ms\", \"max_attempts\", \"retry_base_ms\", \"from_now\"}")?;
    let (d, secret) = app.create_destination(input, &by).await?;
    let mut v = destination_json(&d);
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn destination_list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_READ_ROLES)?;
    Ok(Json(json!({"destinations": app.destinations().await?.iter().map(destination_json).collect::<Vec<_>>()})))
}

async fn destination_get(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_READ_ROLES)?;
    Ok(Json(destination_json(&app.destination(&name).await?)))
}

async fn destination_delete(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let by = authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    app.delete_destination(&name, &by).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn destination_enable(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    Ok(Json(destination_json(&app.enable_destination(&name, true, &by).await?)))
}

async fn destination_disable(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    Ok(Json(destination_json(&app.enable_destination(&name, false, &by).await?)))
}

async fn destination_deliver(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    Ok(Json(serde_json::to_value(app.deliver_destinations().await?).unwrap_or(Value::Null)))
}

async fn destination_dead(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_READ_ROLES)?;
    Ok(Json(json!({"dead_letters": app.dead_letters(&name, 1000).await?})))
}

async fn destination_replay(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let by = authorise(&app, &headers, DESTINATION_EDIT_ROLES)?;
    Ok(Json(app.replay_dead(&name, &by).await?))
}

async fn destination_rights(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_READ_ROLES)?;
    app.destination(&name).await?;
    Ok(Json(json!({"forwards": app.rights_forwards(None, Some(name), 1000).await?})))
}

async fn dsr_forwards(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DESTINATION_READ_ROLES)?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest { code: "invalid_id", message: "a request id is a number".into() })?;
    app.dsr_get(id).await?;
    Ok(Json(json!({"forwards": app.rights_forwards(Some(id), None, 1000).await?})))
}

#[derive(serde::Deserialize)]
struct ExportQuery {
    format: Option<String>,
    hashed: Option<bool>,
}

async fn audience_export(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let by = authorise(&app, &headers, EXPORT_ROLES)?;
    let Query(q) = q.map_err(|_| ApiError::BadRequest { code: "invalid_query", message: "format is csv or jsonl; hashed is true or false".into() })?;
    let jsonl = match q.format.as_deref().unwrap_or("csv") {
        "csv" => false,
        "jsonl" => true,
        _ => return Err(ApiError::BadRequest { code: "invalid_format", message: "format is csv or jsonl".into() }),
    };
    let text = app.export_audience(&name, jsonl, q.hashed.unwrap_or(false), &by).await?;
    let mut r = text.into_response();
    let ct = if jsonl { "application/x-ndjson; charset=utf-8" } else { "text/csv; charset=utf-8" };
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
