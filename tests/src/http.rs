//! HTTP GETs on loopback, to the collector and to the peers the tests run.
use std::{sync::LazyLock, time::Duration};

use ureq::{Agent, http::header::CONTENT_TYPE};

/// Every status is an answer (`/health` says 503 when unhealthy), and every request has a
/// connection of its own, as each scrape of a scraper would.
static AGENT: LazyLock<Agent> = LazyLock::new(|| {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
});

/// The largest body read: an exposition of 100,000 series (the bench's) is about 9 MB, near
/// ureq's default limit of 10 MiB.
const MAX_BODY: u64 = 256 << 20;

/// A plain HTTP/1.1 GET on loopback: (status, body), or `None` if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_accept(addr, path, None).map(|(status, _, body)| (status, body))
}

/// A GET with an optional `Accept` header: (status, content type, body).
pub fn http_get_accept(addr: &str, path: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let mut request = AGENT.get(format!("http://{addr}{path}"));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let mut response = request.call().ok()?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .ok()?;
    Some((response.status().as_u16(), content_type, body))
}

/// A POST with an empty body: (status, body), or `None` if nothing answers.
pub fn http_post(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut response = AGENT.post(format!("http://{addr}{path}")).send_empty().ok()?;
    let body = response.body_mut().read_to_string().ok()?;
    Some((response.status().as_u16(), body))
}
