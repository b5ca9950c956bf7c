//! Every failure of the HTTP interface, mapped to a status and a JSON body in this one place.
//! Bodies are `{"success": false, "error": <code>, "message": <text>}`; messages never quote
//! the request, so personal data does not travel back through errors or into logs.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use confidant_service::{AuthFailure, ServiceError};

#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON, or not UTF-8, or not valid gzip.
    Malformed(String),
    /// Well-formed but wrong: a missing parameter, a bad id, an invalid message.
    BadRequest { code: &'static str, message: String },
    Unauthorized(&'static str),
    Forbidden(&'static str),
    NotFound(String),
    Conflict(String),
    /// Well-formed, but names something unknown or is not acceptable (422).
    Unprocessable { code: &'static str, message: String },
    /// The subject's processing is restricted (Art. 18).
    Restricted(String),
    /// An audience rule that does not parse: 422 with the position.
    InvalidRule(confidant_core::audience::RuleError),
    /// A message template that does not parse: 422 with the field and the position.
    InvalidTemplate { field: String, error: confidant_core::template::TemplateError },
    PayloadTooLarge(String),
    UnsupportedEncoding(String),
    TooManyRequests { retry_after_seconds: u64 },
    Unavailable,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Overloaded { retry_after_seconds } => ApiError::TooManyRequests { retry_after_seconds },
            ServiceError::Unavailable(inner) => {
                tracing::error!(error = %inner, "storage unavailable");
                ApiError::Unavailable
            }
            ServiceError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Invalid { code, message } => ApiError::Unprocessable { code, message },
            ServiceError::Restricted(m) => ApiError::Restricted(m),
            ServiceError::InvalidRule(e) => ApiError::InvalidRule(e),
            ServiceError::InvalidTemplate { field, error } => ApiError::InvalidTemplate { field, error },
        }
    }
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        match f {
            AuthFailure::Missing => ApiError::Unauthorized("an API key is required: Authorization: Bearer <key>"),
            AuthFailure::Invalid => ApiError::Unauthorized("the API key is not valid"),
            AuthFailure::WriteKeyOnAdminApi => ApiError::Forbidden("a write key can only send events; use an API key for /api"),
            AuthFailure::Forbidden => ApiError::Forbidden("this API key's role may not do this"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::Malformed(m) => (StatusCode::BAD_REQUEST, "malformed", m),
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.to_owned()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.to_owned()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Unprocessable { code, message } => (StatusCode::UNPROCESSABLE_ENTITY, code, message),
            ApiError::Restricted(m) => (StatusCode::CONFLICT, "restricted", m),
            ApiError::InvalidRule(e) => {
                // The message names a position and the token found, never the whole rule.
                let body = serde_json::json!({"success": false, "error": "invalid_rule", "message": format!("the rule does not parse: {e}"),
                    "position": {"offset": e.offset, "line": e.line, "column": e.column}});
                return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
            }
            ApiError::InvalidTemplate { field, error } => {
                let body = serde_json::json!({"success": false, "error": "invalid_template", "message": format!("{field}: {error}"),
                    "field": field, "position": {"offset": error.offset, "line": error.line, "column": error.column}});
                return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
            }
            ApiError::PayloadTooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", m),
            ApiError::UnsupportedEncoding(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding", m),
            ApiError::TooManyRequests { retry_after_seconds } => {
                let body = serde_json::json!({"success": false, "error": "too_many_requests",
                    "message": format!("the ingestion queue is full; retry after {retry_after_seconds} s"),
                    "retry_after": retry_after_seconds});
                let mut r = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
                return r;
            }
            ApiError::Unavailable => {
                let body = serde_json::json!({"success": false, "error": "unavailable", "message": "storage is unavailable; retry later"});
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5));
                return r;
            }
        };
        let mut r = (status, axum::Json(serde_json::json!({"success": false, "error": code, "message": message}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
