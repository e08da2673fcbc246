//! The HTTP endpoints, on tokio (axum): `/metrics`, `/health`, `/events` (`events.rs`), and
//! `POST /-/reload` when `--web.enable-reload` turns it on (403 otherwise, as Prometheus
//! answers); over TLS and behind basic auth as `--web.config.file` says (`web_config.rs`).
use std::sync::Arc;

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use prometheus_client::registry::Registry;

use crate::shutdown::Shutdown;

use super::{
    Sources,
    events::{self, EventStreams},
    exposition,
    health::Health,
    web_config::{Users, WebConfig},
};

/// Reloads the config file: what changed, or why it was rejected.
pub type Reload = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    sources: Arc<Sources>,
    registry: Arc<Registry>,
    reload: Option<Reload>,
    events: Arc<EventStreams>,
}

/// Serves until `shutdown` is triggered, then lets open requests finish (an `/events`
/// stream ends there).
pub async fn serve(
    listener: std::net::TcpListener,
    web: WebConfig,
    sources: Arc<Sources>,
    registry: Arc<Registry>,
    reload: Option<Reload>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let events = Arc::new(EventStreams::new(sources.telemetry.clone(), shutdown.clone()));
    let mut app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/health", get(get_health))
        .route("/events", get(get_events))
        .route("/-/reload", post(post_reload))
        .with_state(Shared {
            sources,
            registry,
            reload,
            events,
        });
    if let Some(users) = web.users {
        let gate = Gate {
            users,
            checks: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_CHECKS)),
        };
        app = app.layer(middleware::from_fn_with_state(gate, authenticate));
    }
    let Some(tls) = web.tls else {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        return axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.stopped().await })
            .await;
    };
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        shutdown.stopped().await;
        stop.graceful_shutdown(None);
    });
    axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))?
        .handle(handle)
        .serve(app.into_make_service())
        .await
}

/// The users, and how many bcrypt checks may run at once: each costs tens of ms of CPU on
/// purpose, so a flood of wrong passwords queues here rather than taking every CPU from
/// the ring-buffer reader and the scrapes.
#[derive(Clone)]
struct Gate {
    users: Arc<Users>,
    checks: Arc<tokio::sync::Semaphore>,
}

/// bcrypt checks at once (one per CPU of these 2-CPU machines at most).
const CONCURRENT_CHECKS: usize = 2;

/// Basic auth on every request: 401 with a challenge unless the credentials are right.
async fn authenticate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    let allowed = match Users::credentials(authorization) {
        // No user named: nothing to check, and nothing learnt about users by its speed.
        None => false,
        Some((user, password)) => {
            let Ok(_permit) = gate.checks.acquire().await else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            let users = gate.users.clone();
            // bcrypt is slow on purpose: off the async workers.
            tokio::task::spawn_blocking(move || users.allow(&user, &password))
                .await
                .unwrap_or(false)
        }
    };
    if allowed {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="collector""#)],
            "unauthorized\n",
        )
            .into_response()
    }
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

async fn post_reload(State(shared): State<Shared>) -> Response {
    let Some(reload) = shared.reload else {
        let why = "reload over HTTP is off; start the collector with --web.enable-reload\n";
        return (StatusCode::FORBIDDEN, why).into_response();
    };
    match tokio::task::spawn_blocking(move || reload()).await {
        Ok(Ok(summary)) => (StatusCode::OK, summary + "\n").into_response(),
        Ok(Err(problems)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config:\n{problems}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reload failed: {e}\n")).into_response(),
    }
}

async fn get_events(State(shared): State<Shared>, Query(query): Query<Vec<(String, String)>>) -> Response {
    events::stream(&shared.events, &query)
}
