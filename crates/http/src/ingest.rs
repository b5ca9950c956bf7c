//! The Segment-compatible Tracking API: `/v1/{track,identify,page,screen,group,alias,batch}`,
//! the short paths of Segment's browser SDK (`/v1/t`, `/v1/i`...), and `/v1/import`.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use confidant_core::message::MessageType;
use confidant_core::time::parse_timestamp;
use confidant_service::ingest::{IngestOutcome, IngestRequest};
use confidant_service::{App, Source};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::value::RawValue;
use tower_http::cors::{Any, CorsLayer};

use crate::error::ApiError;

pub(crate) fn routes() -> Router<App> {
    let mut r = Router::new();
    for t in MessageType::ALL {
        let short = &t.as_str()[..1];
        let handler = move |state: State<App>, headers: HeaderMap, body: Body| single(state, headers, body, t);
        r = r.route(&format!("/v1/{}", t.as_str()), post(handler)).route(&format!("/v1/{short}"), post(handler));
    }
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::CONTENT_ENCODING, header::HeaderName::from_static("sec-gpc")])
        .max_age(std::time::Duration::from_secs(86_400));
    r.route("/v1/batch", post(batch))
        .route("/v1/b", post(batch))
        .route("/v1/import", post(batch))
        .route("/v1/consent", post(crate::privacy::consent))
        .layer(cors)
}

/// `Sec-GPC: 1`: Global Privacy Control, an objection to sale, sharing and targeted ads.
pub(crate) fn gpc(headers: &HeaderMap) -> bool {
    headers.get("sec-gpc").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "1")
}

pub(crate) use confidant_service::now_millis;

/// Reads the body, at most `limit` bytes once decompressed.
pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"));
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()) {
        if len > limit {
            return Err(too_large());
        }
    }
    let raw = match Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(_) => return Err(ApiError::Malformed("the body could not be read".into())),
    };
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            // Decompress at most limit + 1 bytes: a gzip bomb stops at the limit.
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::MultiGzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| ApiError::Malformed("the body is not valid gzip".into()))?;
            if out.len() > limit {
                return Err(too_large());
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::UnsupportedEncoding(format!("Content-Encoding {other} is not supported; use gzip or none"))),
    }
}

/// The write key from HTTP Basic auth (the key as user name, empty password).
pub(crate) fn basic_write_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || ApiError::Unauthorized("the Authorization header must be Basic with the write key as user name");
    let value = value.to_str().map_err(|_| bad())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    Ok(Some(user.to_owned()))
}

pub(crate) fn authenticate<'a>(app: &'a App, header_key: Option<String>, body_key: Option<&str>) -> Result<&'a Source, ApiError> {
    let key = header_key.as_deref().or(body_key).filter(|k| !k.is_empty());
    let key = key.ok_or(ApiError::Unauthorized("a write key is required: HTTP Basic user, or writeKey in the body"))?;
    app.source_for_write_key(key).ok_or(ApiError::Unauthorized("the write key is not valid"))
}

pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    let text = e.to_string();
    if text.contains("recursion limit") {
        ApiError::Malformed("the JSON is nested too deeply".into())
    } else {
        ApiError::Malformed(format!("the body is not valid JSON (line {}, column {})", e.line(), e.column()))
    }
}

fn outcome_json(o: &IngestOutcome) -> serde_json::Value {
    let rejected: Vec<_> = o
        .rejected
        .iter()
        .map(|r| serde_json::json!({"index": r.index, "messageId": r.message_id, "reason": r.reason.code(), "message": r.detail}))
        .collect();
    serde_json::json!({"success": true, "accepted": o.accepted, "duplicates": o.duplicates, "rejected": rejected})
}

#[derive(serde::Deserialize)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(rename = "sentAt")]
    sent_at: Option<serde_json::Value>,
}

async fn batch(State(app): State<App>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let received_at = now_millis();
    let started = std::time::Instant::now();
    let header_key = basic_write_key(&headers)?;
    let limits = &app.config().ingest;
    let bytes = read_body(&headers, body, limits.max_batch_bytes).await?;
    if started.elapsed() > std::time::Duration::from_millis(20) {
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "slow body read");
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::Malformed("the body is not UTF-8".into()))?;
    let envelope: BatchEnvelope<'_> = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ApiError::BadRequest { code: "invalid_batch", message: "the body must be an object with a batch array of messages".into() })
        }
        Err(e) => return Err(json_error(e)),
    };
    let source = authenticate(&app, header_key, envelope.write_key.as_deref())?;
    let messages = envelope.batch.ok_or_else(|| ApiError::BadRequest { code: "invalid_batch", message: "batch is missing".into() })?;
    if messages.len() > limits.max_batch_messages {
        return Err(ApiError::PayloadTooLarge(format!("the batch has {} messages, the limit is {}", messages.len(), limits.max_batch_messages)));
    }
    let batch_sent_at = match envelope.sent_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(parse_timestamp(&s).ok_or_else(|| ApiError::BadRequest {
            code: "invalid_timestamp",
            message: "sentAt is not an ISO 8601 date".into(),
        })?),
        Some(_) => return Err(ApiError::BadRequest { code: "invalid_timestamp", message: "sentAt must be an ISO 8601 string".into() }),
    };
    let outcome = app
        .ingest(IngestRequest {
            source,
            messages: messages.iter().map(|m| m.get()).collect(),
            batch_sent_at,
            endpoint_type: None,
            received_at,
            gpc: gpc(&headers),
        })
        .await?;
    Ok(Json(outcome_json(&outcome)).into_response())
}

#[derive(serde::Deserialize)]
struct KeyPeek {
    #[serde(rename = "writeKey")]
    write_key: Option<serde_json::Value>,
}

async fn single(State(app): State<App>, headers: HeaderMap, body: Body, kind: MessageType) -> Result<Response, ApiError> {
    let received_at = now_millis();
    let header_key = basic_write_key(&headers)?;
    let bytes = read_body(&headers, body, app.config().ingest.max_message_bytes).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::Malformed("the body is not UTF-8".into()))?;
    let peek: KeyPeek = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(ApiError::BadRequest { code: "not_an_object", message: "the body must be a JSON object".into() })
        }
        Err(e) => return Err(json_error(e)),
    };
    let body_key = match &peek.write_key {
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        _ => None,
    };
    let source = authenticate(&app, header_key, body_key)?;
    let outcome = app
        .ingest(IngestRequest { source, messages: vec![text], batch_sent_at: None, endpoint_type: Some(kind), received_at, gpc: gpc(&headers) })
        .await?;
    if let Some(r) = outcome.rejected.first() {
        return Err(ApiError::BadRequest { code: r.reason.code(), message: r.detail.clone() });
    }
    Ok(Json(outcome_json(&outcome)).into_response())
}
