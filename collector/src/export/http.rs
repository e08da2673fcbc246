//! The HTTP endpoints, on tokio (axum): `/metrics` and `/health`.
use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::{Sources, exposition, health::Health};

#[derive(Clone)]
struct Shared {
    sources: Arc<Sources>,
    registry: Arc<Registry>,
}

/// Serves until `shutdown` resolves, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    sources: Arc<Sources>,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Arc::new(registry);
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/health", get(get_health))
        .with_state(Shared { sources, registry });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn get_metrics(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let openmetrics = exposition::wants_openmetrics(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    // Reading the maps is a series of bpf() syscalls: keep them off the async workers.
    match tokio::task::spawn_blocking(move || exposition::encode(&shared.registry)).await {
        Ok(body) if openmetrics => ([(header::CONTENT_TYPE, exposition::OPENMETRICS)], body).into_response(),
        Ok(body) => (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            exposition::to_prometheus_text(&body),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("scrape failed: {e}")).into_response(),
    }
}

async fn get_health(State(shared): State<Shared>) -> Response {
    let health = Health::of(&shared.sources);
    let code = StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(health)).into_response()
}
