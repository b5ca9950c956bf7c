//! Confidant's HTTP interface. The only crate that knows axum; handlers translate between
//! HTTP and the service layer and hold no business rules.
//!
//! - [`error`]: every failure mapped to a status and a JSON body, in one place.
//! - `ingest`: the Segment-compatible Tracking API under `/v1`.
//! - `admin`: the admin and data API under `/api` (profiles).
//! - `personalisation`: recommendations and audiences.
//! - `activation`: campaigns, unsubscribe links (`/u/{token}`), destinations, audience exports.
//! - `privacy`: consent (`/v1/consent`, GPC), the rights desk, audit, register, retention.
//! - `portal`: the privacy centre's pages (`/privacy`); `console`: the team's pages
//!   (`/console`) and accounts; `banner`: the consent banner script; `web`: what pages share.

mod activation;
mod admin;
mod banner;
mod console;
pub mod error;
mod ingest;
mod personalisation;
mod portal;
mod web;
mod privacy;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use confidant_service::App;
use tokio::net::TcpListener;

/// The whole router.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(ingest::routes())
        .merge(admin::routes())
        .merge(privacy::routes())
        .merge(personalisation::routes())
        .merge(activation::routes())
        .merge(portal::routes())
        .merge(console::routes())
        .merge(banner::routes())
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|| async { error::ApiError::NotFound("no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn health(State(app): State<App>) -> Response {
    match app.health().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok", "queue_depth": app.metrics().queue_depth()})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable"}))).into_response()
        }
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let mut r = app.metrics().encode(app.store().apply_failures()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    r
}

/// Counts and times every request by its route pattern (never the raw path, which may hold ids).
async fn observe(State(app): State<App>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    app.metrics().request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// A bound server, not yet serving: tests read its address before running it.
pub struct Server {
    app: App,
    listener: TcpListener,
}

impl Server {
    pub async fn bind(app: App) -> std::io::Result<Server> {
        let listener = TcpListener::bind(app.config().server.listen).await?;
        Ok(Server { app, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, lets requests in flight finish, then has the store
    /// commit everything queued and close.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let service = router(self.app.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
        if let Err(e) = self.app.store().close().await {
            tracing::error!(error = %e, "closing the store failed");
        }
        result
    }
}
