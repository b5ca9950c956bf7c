//! Personalisation under `/api`: recommendations and audiences.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_core::time::format_millis;
use confidant_service::audiences::AudienceInput;
use confidant_service::store::audiences::{Applied, AudienceView};
use confidant_service::App;
use serde_json::{json, Value};

use crate::admin::{authorise, parse_id};
use crate::error::ApiError;

/// Recommendations for a profile: the shop's own systems (a marketer's key), admins, the DPO.
const RECS_ROLES: &[Role] = &[Role::Marketer, Role::Admin, Role::Dpo];
/// Training runs: admins and the DPO.
const TRAIN_ROLES: &[Role] = &[Role::Admin, Role::Dpo];

/// Audience definitions and sizes (no personal data): every reporting role.
const AUDIENCE_READ_ROLES: &[Role] = &[Role::Analyst, Role::Marketer, Role::Admin, Role::Dpo];
/// Creating, changing and deleting audiences: marketers and admins.
const AUDIENCE_EDIT_ROLES: &[Role] = &[Role::Marketer, Role::Admin];
/// Who is in an audience (pseudonymous ids), refreshes: marketers, admins, the DPO.
const AUDIENCE_MEMBER_ROLES: &[Role] = &[Role::Marketer, Role::Admin, Role::Dpo];

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/api/recommendations/train", post(train))
        .route("/api/audiences", get(audience_list).post(audience_create))
        .route("/api/audiences/preview", post(audience_preview))
        .route("/api/audiences/refresh", post(audience_refresh))
        .route("/api/audiences/{name}", get(audience_get).put(audience_update).delete(audience_delete))
        .route("/api/audiences/{name}/members", get(audience_members))
        .route("/api/audiences/{name}/history", get(audience_history))
}

fn audience_json(a: &AudienceView) -> Value {
    json!({"name": a.name, "purpose": a.purpose, "rule": a.rule, "description": a.description, "size": a.size,
           "created_at": format_millis(a.created_at), "created_by": a.created_by, "updated_at": format_millis(a.updated_at),
           "evaluated_at": a.evaluated_at.map(format_millis)})
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceBody {
    name: Option<String>,
    purpose: Option<String>,
    rule: Option<String>,
    description: Option<String>,
}

fn audience_body(body: &Bytes) -> Result<AudienceBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() { "the body has an unknown field or a field of the wrong type" } else { "the body is not valid JSON" };
        ApiError::BadRequest { code: "invalid_body", message: format!("{what}: expected {{\"name\", \"purpose\", \"rule\", \"description\"}}") }
    })
}

fn required(v: Option<String>, code: &'static str, what: &str) -> Result<String, ApiError> {
    v.filter(|x| !x.trim().is_empty()).ok_or_else(|| ApiError::Unprocessable { code, message: format!("{what} is required") })
}

fn created(a: &AudienceView, applied: &Applied) -> Value {
    let mut v = audience_json(a);
    v["joined"] = json!(applied.joined);
    v["left"] = json!(applied.left);
    v
}

async fn audience_list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, AUDIENCE_READ_ROLES)?;
    Ok(Json(json!({"audiences": app.audiences().await?.iter().map(audience_json).collect::<Vec<_>>()})))
}

async fn audience_create(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let who = authorise(&app, &headers, AUDIENCE_EDIT_ROLES)?;
    let b = audience_body(&body)?;
    let input = AudienceInput {
        name: required(b.name, "missing_name", "name")?,
        purpose: required(b.purpose, "missing_purpose", "purpose (the audience is bound to it)")?,
        rule: required(b.rule, "missing_rule", "rule")?,
        description: b.description,
    };
    let (a, applied) = app.create_audience(input, &who).await?;
    Ok((StatusCode::CREATED, Json(created(&a, &applied))).into_response())
}

async fn audience_preview(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, AUDIENCE_READ_ROLES)?;
    let b = audience_body(&body)?;
    let purpose = required(b.purpose, "missing_purpose", "purpose (the audience is bound to it)")?;
    let rule = required(b.rule, "missing_rule", "rule")?;
    Ok(Json(serde_json::to_value(app.preview_audience(&purpose, &rule).await?).unwrap_or(Value::Null)))
}

#[derive(serde::Deserialize)]
struct RefreshQuery {
    full: Option<bool>,
}

async fn audience_refresh(State(app): State<App>, headers: HeaderMap, Query(q): Query<RefreshQuery>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, AUDIENCE_MEMBER_ROLES)?;
    Ok(Json(serde_json::to_value(app.refresh_audiences(q.full.unwrap_or(false)).await?).unwrap_or(Value::Null)))
}

async fn audience_get(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, AUDIENCE_READ_ROLES)?;
    Ok(Json(audience_json(&app.audience(&name).await?)))
}

async fn audience_update(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, AUDIENCE_EDIT_ROLES)?;
    let b = audience_body(&body)?;
    if b.name.as_ref().is_some_and(|n| n != &name) {
        return Err(ApiError::Unprocessable { code: "invalid_name", message: "an audience cannot be renamed; create a new one".into() });
    }
    let current = app.audience(&name).await?;
    let input = AudienceInput {
        name: name.clone(),
        purpose: b.purpose.unwrap_or(current.purpose),
        rule: b.rule.unwrap_or(current.rule),
        description: b.description.or(current.description),
    };
    let (a, applied) = app.update_audience(&name, input, &who).await?;
    Ok(Json(created(&a, &applied)))
}

async fn audience_delete(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let who = authorise(&app, &headers, AUDIENCE_EDIT_ROLES)?;
    app.delete_audience(&name, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

fn limit(q: &PageQuery) -> Result<usize, ApiError> {
    match q.limit.as_deref() {
        None => Ok(100),
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or(ApiError::Unprocessable { code: "invalid_limit", message: "limit must be from 1 to 1000".into() }),
    }
}

async fn audience_members(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>, Query(q): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, AUDIENCE_MEMBER_ROLES)?;
    let limit = limit(&q)?;
    let after = q.after.as_deref().map(parse_id).transpose()?;
    let a = app.audience(&name).await?;
    let m = app.audience_members(&name, after, limit, &who).await?;
    let next = (m.len() == limit).then(|| m.last().map(|x| x.profile.to_string())).flatten();
    Ok(Json(json!({"audience": name, "purpose": a.purpose, "size": a.size,
                   "members": m.iter().map(|x| json!({"profile": x.profile.to_string(), "since": format_millis(x.since)})).collect::<Vec<_>>(),
                   "next_after": next})))
}

async fn audience_history(State(app): State<App>, headers: HeaderMap, Path(name): Path<String>, Query(q): Query<PageQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, AUDIENCE_MEMBER_ROLES)?;
    let limit = limit(&q)?;
    let before = match q.before.as_deref() {
        None => None,
        Some(b) => Some(b.parse::<i64>().map_err(|_| ApiError::Unprocessable { code: "invalid_before", message: "before is a history sequence number".into() })?),
    };
    app.audience(&name).await?;
    let h = app.audience_history(&name, before, limit, &who).await?;
    let next = (h.len() == limit).then(|| h.last().map(|x| x.seq)).flatten();
    Ok(Json(json!({"audience": name,
                   "entries": h.iter().map(|x| json!({"seq": x.seq, "profile": x.profile.to_string(), "at": format_millis(x.at), "change": x.change, "reason": x.reason})).collect::<Vec<_>>(),
                   "next_before": next})))
}

#[derive(serde::Deserialize)]
struct RecsQuery {
    profile: Option<String>,
    n: Option<String>,
    context: Option<String>,
}

async fn recommendations(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<RecsQuery>,
) -> Result<Json<Value>, ApiError> {
    authorise(&app, &headers, RECS_ROLES)?;
    let profile = q
        .profile
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(parse_id)
        .transpose()?;
    let n = match q.n.as_deref() {
        None => 10,
        Some(n) => n.parse::<usize>().map_err(|_| ApiError::Unprocessable {
            code: "invalid_n",
            message: "n must be a number from 1 to 100".into(),
        })?,
    };
    let context = match q.context.as_deref() {
        None | Some("") => None,
        Some(c) => match c.strip_prefix("product:").map(str::trim) {
            Some(id) if !id.is_empty() && id.len() <= 200 => Some(id.to_owned()),
            _ => {
                return Err(ApiError::Unprocessable {
                    code: "invalid_context",
                    message: "context must be product:<product id>".into(),
                })
            }
        },
    };
    let r = app.recommend(profile, context.as_deref(), n).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or(Value::Null)))
}

async fn train(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, TRAIN_ROLES)?;
    Ok(Json(
        serde_json::to_value(app.train_recommendations(&who).await?).unwrap_or(Value::Null),
    ))
}
