//! The HTTP endpoints of a running node: `/metrics` (Prometheus text), `/healthz` (the main
//! loop turns), `/readyz` (the configuration is loaded and the last plan applied) and `/status`
//! (JSON: this node's announcements and the live members).
//!
//! The port is reachable by anything on the host network, so a client that opens connections
//! and never finishes a request must not cost the node its memory, nor keep a scraper out: each
//! connection has [`HEADER_TIMEOUT`] to send its request head, at most [`MAX_CONNECTIONS`] are
//! open at once, and when they are all taken the oldest one with no request in flight is closed
//! to make room (a slowloris loses its connections, a scraper gets in).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::standalone::{SharedMetrics, SharedStatus};

/// How long a connection may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// `/healthz` fails when the main loop has not turned for this long (it turns at least every
/// 250 ms when healthy). Changed with [`set_stall_limit`].
static STALL_LIMIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(10_000);

/// Sets how long the main loop may go without a turn before `/healthz` fails.
pub fn set_stall_limit(d: Duration) {
    STALL_LIMIT_MS.store(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

#[derive(Clone)]
struct Shared {
    status: SharedStatus,
    metrics: SharedMetrics,
}

fn router(status: SharedStatus, metrics: SharedMetrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { status, metrics })
}

/// One open connection: how many requests it has in flight, and how to close it.
struct Conn {
    busy: Arc<AtomicUsize>,
    task: tokio::task::AbortHandle,
}

/// Serves on `listener` (bound by the caller, so that a busy port fails at start-up) until
/// the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: SharedStatus,
    metrics: SharedMetrics,
) {
    let app = router(status, metrics);
    let mut open: VecDeque<Conn> = VecDeque::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            // Out of descriptors and the like: wait, do not spin.
            Err(e) => {
                tracing::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        open.retain(|c| !c.task.is_finished());
        if open.len() >= MAX_CONNECTIONS {
            match open
                .iter()
                .position(|c| c.busy.load(Ordering::Relaxed) == 0)
            {
                Some(i) => {
                    if let Some(c) = open.remove(i) {
                        c.task.abort();
                    }
                }
                // Every connection is answering a request: the newcomer is closed.
                None => continue,
            }
        }
        let busy = Arc::new(AtomicUsize::new(0));
        let app = app.clone();
        let count = busy.clone();
        let task = tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let (app, count) = (app.clone(), count.clone());
                count.fetch_add(1, Ordering::Relaxed);
                async move {
                    let r = app.oneshot(req).await;
                    count.fetch_sub(1, Ordering::Relaxed);
                    r
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        open.push_back(Conn {
            busy,
            task: task.abort_handle(),
        });
    }
}

/// Binds `addr` (a busy port fails here, at start-up) and serves on it in the background.
pub async fn spawn(
    addr: std::net::SocketAddr,
    status: SharedStatus,
    metrics: SharedMetrics,
) -> crate::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Bind {
            flag: "--http",
            addr,
            source,
        })?;
    tokio::spawn(serve(listener, status, metrics));
    Ok(())
}

/// Whether a loop last turned at `turned` is stalled at `now`.
pub fn stalled(turned: Option<Instant>, now: Instant) -> bool {
    let limit = Duration::from_millis(STALL_LIMIT_MS.load(Ordering::Relaxed));
    turned.is_some_and(|t| now.saturating_duration_since(t) > limit)
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let turned = s.status.lock().unwrap_or_else(|e| e.into_inner()).turned;
    if stalled(turned, Instant::now()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stalled: the main loop has not turned in time\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let ready = s.status.lock().unwrap_or_else(|e| e.into_inner()).ready;
    if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status_json(State(s): State<Shared>) -> impl IntoResponse {
    let st = s.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    axum::Json(st)
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    let text = s.metrics.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (
        [(header::CONTENT_TYPE, lb_core::metrics::CONTENT_TYPE)],
        text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_stalled_only_past_the_limit_and_never_before_its_first_turn() {
        let now = Instant::now();
        assert!(!stalled(None, now));
        assert!(!stalled(Some(now), now + Duration::from_secs(1)));
        assert!(stalled(Some(now), now + Duration::from_secs(11)));
    }
}
