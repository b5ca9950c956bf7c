//! The admin and data API under `/api`, with bearer API keys.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use confidant_core::config::Role;
use confidant_core::ids::{IdKind, ProfileId};
use confidant_core::time::format_millis;
use confidant_service::store::{ConflictView, EventCursor, MergeView, ProfileView, RawValue};
use confidant_service::{App, Principal};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Roles that may read and correct whole profiles.
const PROFILE_ROLES: &[Role] = &[Role::Admin, Role::Dpo];
/// Roles that may read a profile by its pseudonymous id; analysts get it pseudonymised.
const READ_ROLES: &[Role] = &[Role::Admin, Role::Dpo, Role::Analyst];


pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/api/profiles", get(find_profiles))
        .route("/api/profiles/{id}", get(get_profile))
        .route("/api/profiles/{id}/events", get(profile_events))
        .route("/api/profiles/{id}/merges", get(profile_merges))
        .route("/api/profiles/{id}/conflicts", get(profile_conflicts))
        .route("/api/profiles/{id}/unmerge", post(unmerge))
}

pub(crate) fn authorise(app: &App, headers: &HeaderMap, roles: &[Role]) -> Result<Principal, ApiError> {
    let key = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    if headers.contains_key(header::AUTHORIZATION) && key.is_none() {
        return Err(ApiError::Unauthorized("the Authorization header must be Bearer <API key>"));
    }
    Ok(app.authorise(key, roles)?)
}

pub(crate) fn parse_id(raw: &str) -> Result<ProfileId, ApiError> {
    ProfileId::parse(raw).map_err(|_| ApiError::BadRequest { code: "invalid_profile_id", message: "a profile id is 16 hexadecimal digits".into() })
}

fn profile_json(p: &ProfileView) -> Value {
    let identities: Vec<Value> = p
        .identities
        .iter()
        .map(|i| json!({"type": i.kind.as_str(), "value": i.value, "source": i.source, "first_seen": format_millis(i.created_at), "profile": i.profile.to_string()}))
        .collect();
    let traits: serde_json::Map<String, Value> = p.traits.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    let provenance: serde_json::Map<String, Value> = p
        .traits
        .iter()
        .map(|t| (t.key.clone(), json!({"source": t.source, "messageId": t.message_id, "timestamp": format_millis(t.timestamp)})))
        .collect();
    json!({
        "id": p.id.to_string(),
        "created_at": format_millis(p.created_at),
        "first_seen": p.first_seen.map(format_millis),
        "last_seen": p.last_seen.map(format_millis),
        "event_count": p.event_count,
        "identities": identities,
        "traits": traits,
        "trait_provenance": provenance,
        "trait_lineage": p.trait_values.iter().map(|t| json!({"key": t.key, "value": t.value, "source": t.source, "timestamp": format_millis(t.timestamp)})).collect::<Vec<_>>(),
        "merged_profiles": p.members.iter().skip(1).map(|m| m.to_string()).collect::<Vec<_>>(),
    })
}

fn merge_json(m: &MergeView) -> Value {
    json!({
        "id": m.id,
        "at": format_millis(m.at),
        "into": m.into.to_string(),
        "from": m.from.to_string(),
        "rule": m.rule,
        "evidence": m.evidence,
        "source": m.source,
        "messageId": m.message_id,
        "undone_at": m.undone_at.map(format_millis),
        "undone_by": m.undone_by,
    })
}

fn conflict_json(c: &ConflictView) -> Value {
    json!({
        "at": format_millis(c.at),
        "profile": c.profile.to_string(),
        "other": c.other.map(|o| o.to_string()),
        "identifier_kind": c.kind.as_str(),
        "reason": c.reason,
        "messageId": c.message_id,
    })
}

#[derive(serde::Deserialize)]
struct FindQuery {
    email: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    phone: Option<String>,
}

async fn find_profiles(State(app): State<App>, headers: HeaderMap, Query(q): Query<FindQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, PROFILE_ROLES)?;
    let given: Vec<(IdKind, String)> = [(IdKind::Email, q.email), (IdKind::UserId, q.user_id), (IdKind::AnonymousId, q.anonymous_id), (IdKind::Phone, q.phone)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let [(kind, value)] = given.as_slice() else {
        return Err(ApiError::BadRequest { code: "invalid_query", message: "give exactly one of email, user_id, anonymous_id, phone".into() });
    };
    let profiles = app.find_profiles(*kind, value).await?;
    for p in &profiles {
        app.audit(&who.actor(), "profile.search", Some(p.id), json!({"by": kind.as_str()})).await?;
    }
    tracing::info!(actor = %who.name, by = kind.as_str(), found = profiles.len(), "profile lookup");
    Ok(Json(json!({"profiles": profiles.iter().map(profile_json).collect::<Vec<_>>()})))
}

async fn get_profile(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, READ_ROLES)?;
    let p = app.profile(parse_id(&id)?).await?;
    let pseudonymised = who.role == Role::Analyst;
    app.audit(&who.actor(), "profile.read", Some(p.id), json!({"pseudonymised": pseudonymised})).await?;
    tracing::info!(actor = %who.name, profile = %p.id, "profile read");
    let mut body = if pseudonymised { app.pseudonymise(&p) } else { profile_json(&p) };
    // Computed traits hold no identifier: every reader sees them.
    let computed = app.computed_traits(p.id).await?;
    body["computed_traits"] = computed.iter().map(|c| (c.key.clone(), c.value.clone())).collect::<serde_json::Map<_, _>>().into();
    let audiences = app.audiences_of(p.id).await?;
    body["audiences"] = audiences.iter().map(|(name, purpose, since)| json!({"audience": name, "purpose": purpose, "since": format_millis(*since)})).collect::<Vec<_>>().into();
    Ok(Json(body))
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

fn parse_cursor(s: &str) -> Option<EventCursor> {
    let (ts, seq) = s.split_once('_')?;
    Some(EventCursor { timestamp: ts.parse().ok()?, seq: seq.parse().ok()? })
}

async fn profile_events(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<EventsQuery>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, READ_ROLES)?;
    let id = parse_id(&id)?;
    let limit = match q.limit.as_deref() {
        None => 50,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(ApiError::BadRequest { code: "invalid_limit", message: "limit must be a whole number from 1 to 1000".into() }),
        },
    };
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_cursor(c).ok_or(ApiError::BadRequest { code: "invalid_cursor", message: "cursor is not one this API gave".into() })?),
    };
    let page = app.profile_events(id, limit, cursor).await?;
    let pseudonymised = who.role == Role::Analyst;
    app.audit(&who.actor(), "profile.events.read", Some(id), json!({"events": page.events.len(), "pseudonymised": pseudonymised})).await?;
    tracing::info!(actor = %who.name, profile = %id, events = page.events.len(), "profile events read");
    let next = page.next.map(|c| format!("{}_{}", c.timestamp, c.seq));
    if pseudonymised {
        let events: Vec<Value> = page.events.iter().map(|e| app.pseudonymise_event(e.body.get())).collect();
        return Ok(Json(json!({"events": events, "next_cursor": next, "pseudonymised": true})));
    }
    let events: Vec<&RawValue> = page.events.iter().map(|e| e.body.as_ref()).collect();
    Ok(Json(json!({"events": events, "next_cursor": next})))
}

async fn profile_merges(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, PROFILE_ROLES)?;
    let id = parse_id(&id)?;
    let merges = app.merges(id).await?;
    app.audit(&who.actor(), "profile.merges.read", Some(id), json!({})).await?;
    Ok(Json(json!({"merges": merges.iter().map(merge_json).collect::<Vec<_>>()})))
}

async fn profile_conflicts(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, PROFILE_ROLES)?;
    let id = parse_id(&id)?;
    let conflicts = app.conflicts(id).await?;
    app.audit(&who.actor(), "profile.conflicts.read", Some(id), json!({})).await?;
    Ok(Json(json!({"conflicts": conflicts.iter().map(conflict_json).collect::<Vec<_>>()})))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UnmergeBody {
    merge_id: Option<i64>,
}

async fn unmerge(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let who = authorise(&app, &headers, PROFILE_ROLES)?;
    let id = parse_id(&id)?;
    let merge_id = if body.iter().all(|b| b.is_ascii_whitespace()) {
        None
    } else {
        serde_json::from_slice::<UnmergeBody>(&body)
            .map_err(|_| ApiError::BadRequest { code: "invalid_body", message: "the body must be empty or {\"merge_id\": <number>}".into() })?
            .merge_id
    };
    let undone = app.unmerge(id, merge_id, &who).await?;
    app.audit(&who.actor(), "profile.unmerge", Some(id), json!({"merge": undone.id})).await?;
    let into = app.profile(undone.into).await?;
    let from = app.profile(undone.from).await?;
    Ok(Json(json!({"unmerged": merge_json(&undone), "profiles": [profile_json(&into), profile_json(&from)]})))
}
