//! Consent (`POST /v1/consent`, `/.well-known/gpc.json`), and the privacy API under `/api`:
//! minimisation report, purposes, consent receipts, rights requests, audit log, register,
//! retention.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_core::ids::{IdKind, Identifier};
use confidant_core::time::format_millis;
use confidant_service::analytics::Interval;
use confidant_service::privacy::{ConsentRequest, DsrAction, DsrRequest, Evidence};
use confidant_service::ropa::RopaFormat;
use confidant_service::store::privacy::AuditFilter;
use confidant_service::App;
use serde_json::{json, Value};

use crate::admin::{authorise, parse_id};
use crate::error::ApiError;
use crate::ingest::{authenticate, basic_write_key, gpc, json_error, now_millis, read_body};

/// Rights requests, receipts, the register and retention: the DPO and admins.
const DPO_ROLES: &[Role] = &[Role::Dpo, Role::Admin];
/// Reports without personal data.
const REPORT_ROLES: &[Role] = &[Role::Dpo, Role::Admin, Role::Analyst, Role::Marketer];

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/.well-known/gpc.json", get(gpc_json))
        .route("/api/privacy/purposes", get(purposes))
        .route("/api/privacy/minimisation", get(minimisation))
        .route("/api/quality", get(quality))
        .route("/api/identity/match", post(identity_match))
        .route("/api/analytics/run", post(analytics_run))
        .route("/api/forecast", get(forecast))
        .route("/api/stock", post(stock_post))
        .route("/api/stock/cover", get(stock_cover))
        .route("/api/identity/reviews", get(identity_reviews))
        .route("/api/identity/reviews/{id}", post(identity_decide))
        .route("/api/profiles/{id}/consent", get(profile_consent))
        .route("/api/profiles/{id}/lawful", get(profile_lawful))
        .route("/api/dsr", get(dsr_list).post(dsr_create))
        .route("/api/dsr/{id}", get(dsr_get))
        .route("/api/audit", get(audit_list))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/ropa", get(ropa))
        .route("/api/retention/run", post(retention_run))
}

async fn gpc_json() -> Json<Value> {
    Json(json!({"gpc": true, "lastUpdate": "2026-11-22"}))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentBody {
    #[serde(rename = "userId")]
    user_id: Option<Value>,
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<Value>,
    email: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    purposes: BTreeMap<String, bool>,
    #[serde(default)]
    advertising_categories: BTreeMap<String, bool>,
    method: Option<String>,
    notice_version: Option<String>,
    #[serde(rename = "tcString", alias = "tc_string")]
    tc_string: Option<String>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
}

fn id_value(v: &Value, field: &str) -> Result<String, ApiError> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(ApiError::BadRequest { code: "invalid_field", message: format!("{field} must be a string or a number") }),
    };
    if s.trim().is_empty() || s.len() > 1024 {
        return Err(ApiError::BadRequest { code: "invalid_field", message: format!("{field} must be 1 to 1024 characters") });
    }
    Ok(s)
}

/// `POST /v1/consent`: the shop's banner (write key) records a subject's decisions.
pub(crate) async fn consent(State(app): State<App>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let peer = crate::web::peer(&app, &parts.extensions, &headers);
    let header_key = basic_write_key(&headers)?;
    let bytes = read_body(&headers, body, app.config().ingest.max_message_bytes).await?;
    let body: ConsentBody = serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::BadRequest { code: "invalid_body", message: format!("the consent body is not as documented: {}", strip_value(&e.to_string())) }
        }
        _ => json_error(e),
    })?;
    let source = authenticate(&app, header_key, body.write_key.as_deref())?;
    let region = &app.config().ingest.default_region;
    let mut identifiers = Vec::new();
    if let Some(u) = &body.user_id {
        identifiers.push(Identifier::new(IdKind::UserId, id_value(u, "userId")?));
    }
    if let Some(e) = &body.email {
        identifiers.push(Identifier::parse_tagged(&format!("email:{e}"), region).map_err(|_| ApiError::BadRequest { code: "invalid_email", message: "email is not a valid email address".into() })?);
    }
    if let Some(p) = &body.phone {
        identifiers.push(Identifier::parse_tagged(&format!("phone:{p}"), region).map_err(|_| ApiError::BadRequest { code: "invalid_phone", message: "phone is not a valid phone number".into() })?);
    }
    if let Some(a) = &body.anonymous_id {
        identifiers.push(Identifier::new(IdKind::AnonymousId, id_value(a, "anonymousId")?));
    }
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request = ConsentRequest {
        identifiers,
        purposes: body.purposes,
        advertising_categories: body.advertising_categories,
        method: body.method.unwrap_or_else(|| "banner".into()),
        notice_version: body.notice_version,
        tc_string: body.tc_string,
        gpc: gpc(&headers),
        evidence: Evidence { ip: peer, user_agent },
        at: now_millis(),
    };
    let answer = app.record_consent(Some(source), request, &format!("source:{}", source.name)).await?;
    Ok(Json(json!({"success": true, "subject": answer.subject, "receipts": answer.receipts})).into_response())
}

/// serde's messages quote the offending value; keep only the shape of the problem.
fn strip_value(msg: &str) -> String {
    match msg.find(['`', '"']) {
        Some(i) if msg.contains("unknown field") => {
            let rest = &msg[i..];
            rest.split_once(", expected").map_or(msg.to_owned(), |(f, _)| format!("unknown field {f}"))
        }
        _ => msg.split(" at line").next().unwrap_or(msg).to_owned(),
    }
}

async fn purposes(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, REPORT_ROLES)?;
    let c = app.policy().config();
    Ok(Json(json!({"notice_version": c.notice_version, "notice_sha256": app.policy().notice_sha256(), "purposes": c.purposes,
                   "categories": c.categories, "advertising_categories": c.advertising_categories})))
}

async fn minimisation(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, &[Role::Dpo, Role::Admin, Role::Analyst])?;
    let rows = app.minimisation().await?;
    let total: i64 = rows.iter().map(|r| r.count).sum();
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| json!({"source": r.source, "event": r.event, "field": r.field, "reason": r.reason, "count": r.count,
                        "first_at": format_millis(r.first_at), "last_at": format_millis(r.last_at)}))
        .collect();
    Ok(Json(json!({"dropped_total": total, "fields": rows})))
}

async fn quality(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, &[Role::Dpo, Role::Admin, Role::Analyst])?;
    Ok(Json(json!({"sources": app.quality().await?})))
}

async fn identity_match(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    Ok(Json(serde_json::to_value(app.match_profiles(&who).await?).unwrap_or(Value::Null)))
}

async fn analytics_run(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    Ok(Json(serde_json::to_value(app.run_customer_analytics(&who).await?).unwrap_or(Value::Null)))
}

#[derive(serde::Deserialize)]
struct ForecastQuery {
    product: Option<String>,
    horizon: Option<String>,
    interval: Option<String>,
}

/// Demand forecasts are aggregates over products: every reporting role may read them.
async fn forecast(State(app): State<App>, headers: HeaderMap, Query(q): Query<ForecastQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, REPORT_ROLES)?;
    let product = q.product.filter(|p| !p.trim().is_empty()).ok_or_else(|| ApiError::Unprocessable { code: "missing_product", message: "product is required: /api/forecast?product=ID&horizon=DAYS".into() })?;
    let interval = match q.interval.as_deref() {
        None | Some("day") => Interval::Day,
        Some("week") => Interval::Week,
        Some(_) => return Err(ApiError::Unprocessable { code: "invalid_interval", message: "interval must be day or week".into() }),
    };
    let horizon = match q.horizon.as_deref() {
        None if interval == Interval::Week => 8,
        None => 14,
        Some(h) => h.parse::<usize>().map_err(|_| ApiError::Unprocessable { code: "invalid_horizon", message: "horizon must be a whole number of periods".into() })?,
    };
    Ok(Json(serde_json::to_value(app.forecast_product(product.trim(), horizon, interval).await?).unwrap_or(Value::Null)))
}

#[derive(serde::Deserialize)]
struct CoverQuery {
    horizon: Option<String>,
}

/// Days of cover per product (no personal data): every reporting role.
async fn stock_cover(State(app): State<App>, headers: HeaderMap, Query(q): Query<CoverQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, REPORT_ROLES)?;
    let horizon = match q.horizon.as_deref() {
        None => 60,
        Some(h) => h.parse::<usize>().map_err(|_| ApiError::Unprocessable { code: "invalid_horizon", message: "horizon must be a number of days from 1 to 365".into() })?,
    };
    Ok(Json(json!({"horizon_days": horizon, "products": app.stock_cover(horizon).await?})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    levels: Vec<StockLevel>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StockLevel {
    product: String,
    quantity: f64,
    at: Option<String>,
}

/// Stock readings from the shop's inventory system: admins and marketers.
async fn stock_post(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, &[Role::Admin, Role::Marketer])?;
    let b: StockBody = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest {
        code: "invalid_body",
        message: "the body must be {\"levels\": [{\"product\": \"SKU\", \"quantity\": 12, \"at\": \"2026-11-22T08:00:00Z\"}]}".into(),
    })?;
    let mut levels = Vec::with_capacity(b.levels.len());
    for (i, l) in b.levels.into_iter().enumerate() {
        let at = match l.at.as_deref() {
            None => None,
            Some(t) => Some(confidant_core::time::parse_timestamp(t).ok_or(ApiError::Unprocessable { code: "invalid_time", message: format!("level {i}: at must be an ISO 8601 time") })?),
        };
        levels.push((l.product, l.quantity, at));
    }
    Ok(Json(json!({"recorded": app.record_stock(levels, &who).await?})))
}

#[derive(serde::Deserialize)]
struct ReviewsQuery {
    status: Option<String>,
}

async fn identity_reviews(State(app): State<App>, headers: HeaderMap, Query(q): Query<ReviewsQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    if let Some(s) = &q.status {
        if !["open", "merged", "rejected"].contains(&s.as_str()) {
            return Err(ApiError::BadRequest { code: "invalid_status", message: "status must be open, merged or rejected".into() });
        }
    }
    Ok(Json(json!({"reviews": app.reviews(q.status).await?})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: String,
}

async fn identity_decide(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest { code: "invalid_review_id", message: "a review id is a number".into() })?;
    let b: DecisionBody = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest { code: "invalid_body", message: "the body must be {\"decision\": \"merge\" | \"reject\"}".into() })?;
    let merge = match b.decision.as_str() {
        "merge" => true,
        "reject" => false,
        _ => return Err(ApiError::Unprocessable { code: "invalid_decision", message: "decision must be merge or reject".into() }),
    };
    Ok(Json(serde_json::to_value(app.decide_review(id, merge, &who).await?).unwrap_or(Value::Null)))
}

async fn profile_consent(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    let id = parse_id(&id)?;
    let state = app.subject_state(id).await?;
    let receipts = app.store().receipts(id).await.map_err(confidant_service::ServiceError::from)?;
    app.audit(&who.actor(), "consent.read", Some(id), json!({})).await?;
    let current: Vec<Value> = state.decisions.iter().map(|((p, s), d)| json!({"purpose": p, "scope": s, "granted": d.granted, "at": format_millis(d.at)})).collect();
    let lawful: BTreeMap<&str, bool> = app
        .policy()
        .purposes()
        .iter()
        .map(|p| (p.id.as_str(), app.policy().is_lawful(&p.id, &state, confidant_core::privacy::Use::Process)))
        .collect();
    Ok(Json(json!({"subject": id.to_string(), "restricted": state.restricted, "current": current, "lawful": lawful, "receipts": receipts})))
}

#[derive(serde::Deserialize)]
struct LawfulQuery {
    purpose: Option<String>,
}

/// "Is purpose P lawful for subject S now?", for marketers and integrations.
async fn profile_lawful(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<LawfulQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, &[Role::Dpo, Role::Admin, Role::Marketer])?;
    let id = parse_id(&id)?;
    let purpose = q.purpose.ok_or(ApiError::BadRequest { code: "invalid_query", message: "purpose is required".into() })?;
    if app.policy().purpose(&purpose).is_none() {
        return Err(ApiError::Unprocessable { code: "unknown_purpose", message: format!("{purpose} is not a declared purpose") });
    }
    let lawful = app.is_lawful(id, &purpose).await?;
    app.audit(&who.actor(), "consent.check", Some(id), json!({"purpose": purpose, "lawful": lawful})).await?;
    Ok(Json(json!({"subject": id.to_string(), "purpose": purpose, "lawful": lawful})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DsrBody {
    kind: String,
    identifier: String,
    #[serde(default)]
    suppress: bool,
    #[serde(default)]
    traits: BTreeMap<String, Value>,
    #[serde(default)]
    lift: bool,
    #[serde(default)]
    purposes: Vec<String>,
    #[serde(default)]
    advertising_categories: Vec<String>,
}

async fn dsr_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    let b: DsrBody = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::BadRequest { code: "invalid_body", message: format!("the request is not as documented: {}", strip_value(&e.to_string())) },
        _ => json_error(e),
    })?;
    let identifier = Identifier::parse_tagged(&b.identifier, &app.config().ingest.default_region)
        .map_err(|e| ApiError::Unprocessable { code: "invalid_identifier", message: e.to_string() })?;
    let action = match b.kind.as_str() {
        "access" | "export" => DsrAction::Export,
        "erasure" | "erase" => DsrAction::Erase { suppress: b.suppress },
        "rectification" | "rectify" => DsrAction::Rectify { changes: b.traits.into_iter().map(|(k, v)| (k, (!v.is_null()).then_some(v))).collect() },
        "restriction" | "restrict" => DsrAction::Restrict { lift: b.lift },
        "objection" | "object" => DsrAction::Object { purposes: b.purposes, advertising_categories: b.advertising_categories },
        _ => {
            return Err(ApiError::Unprocessable {
                code: "unknown_kind",
                message: "kind must be access, erasure, rectification, restriction or objection".into(),
            })
        }
    };
    let outcome = app.dsr(DsrRequest { identifier, channel: "api".into(), action }, &who).await?;
    Ok(Json(serde_json::to_value(&outcome).unwrap_or(Value::Null)).into_response())
}

#[derive(serde::Deserialize)]
struct DsrListQuery {
    open: Option<bool>,
    limit: Option<usize>,
}

async fn dsr_list(State(app): State<App>, headers: HeaderMap, Query(q): Query<DsrListQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    let list = app.dsr_list(q.open.unwrap_or(false), q.limit.unwrap_or(100)).await?;
    Ok(Json(json!({"requests": list})))
}

async fn dsr_get(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    let id: i64 = id.parse().map_err(|_| ApiError::BadRequest { code: "invalid_request_id", message: "a request id is a number".into() })?;
    Ok(Json(serde_json::to_value(app.dsr_get(id).await?).unwrap_or(Value::Null)))
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    subject: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<i64>,
    limit: Option<usize>,
}

async fn audit_list(State(app): State<App>, headers: HeaderMap, Query(q): Query<AuditQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    let time = |s: &Option<String>, name: &str| -> Result<Option<i64>, ApiError> {
        s.as_deref()
            .map(|t| confidant_core::time::parse_timestamp(t).ok_or(ApiError::BadRequest { code: "invalid_timestamp", message: format!("{name} is not an ISO 8601 date") }))
            .transpose()
    };
    let subject = q.subject.as_deref().map(parse_id).transpose()?;
    let f = AuditFilter { actor: q.actor, action: q.action, subject, since: time(&q.since, "since")?, until: time(&q.until, "until")?, before: q.before, limit: q.limit.unwrap_or(100) };
    let entries = app.audit_list(f).await?;
    let next = entries.last().map(|e| e.seq);
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

async fn audit_verify(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    let (audit, receipts) = app.verify_chains().await?;
    let ok = audit.broken.is_none() && receipts.broken.is_none();
    let body = json!({"intact": ok,
        "audit_log": {"entries": audit.entries, "head": audit.head, "broken": audit.broken},
        "consent_ledger": {"entries": receipts.entries, "head": receipts.head, "broken": receipts.broken}});
    let status = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::CONFLICT };
    Ok((status, Json(body)).into_response())
}

#[derive(serde::Deserialize)]
struct RopaQuery {
    format: Option<String>,
}

async fn ropa(State(app): State<App>, headers: HeaderMap, Query(q): Query<RopaQuery>) -> Result<Response, ApiError> {
    authorise(&app, &headers, DPO_ROLES)?;
    let name = q.format.unwrap_or_else(|| "json".into());
    let format = RopaFormat::from_name(&name).ok_or(ApiError::BadRequest { code: "invalid_format", message: "format must be json, md or html".into() })?;
    let text = app.ropa_rendered(format).await?;
    let ct = match format {
        RopaFormat::Json => "application/json",
        RopaFormat::Markdown => "text/markdown; charset=utf-8",
        RopaFormat::Html => "text/html; charset=utf-8",
    };
    let mut r = text.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    Ok(r)
}

#[derive(serde::Deserialize)]
struct RetentionQuery {
    dry_run: Option<bool>,
}

async fn retention_run(State(app): State<App>, headers: HeaderMap, Query(q): Query<RetentionQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, DPO_ROLES)?;
    let report = app.retention_run(q.dry_run.unwrap_or(false), &who.actor()).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}
