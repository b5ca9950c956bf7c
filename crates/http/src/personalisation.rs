//! Personalisation under `/api`: recommendations and audiences.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_service::App;
use serde_json::Value;

use crate::admin::{authorise, parse_id};
use crate::error::ApiError;

/// Recommendations for a profile: the shop's own systems (a marketer's key), admins, the DPO.
const RECS_ROLES: &[Role] = &[Role::Marketer, Role::Admin, Role::Dpo];
/// Training runs: admins and the DPO.
const TRAIN_ROLES: &[Role] = &[Role::Admin, Role::Dpo];

pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/recommendations", get(recommendations))
        .route("/api/recommendations/train", post(train))
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
