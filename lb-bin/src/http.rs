//! The HTTP endpoints of a running node: `/metrics` (Prometheus text), `/healthz` (the process
//! serves), `/readyz` (the configuration is loaded and the announcers run) and `/status`
//! (JSON: this node's announcements and the live members).

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::standalone::{SharedMetrics, SharedStatus};

#[derive(Clone)]
struct Shared {
    status: SharedStatus,
    metrics: SharedMetrics,
}

/// Serves on `listener` (bound by the caller, so that a busy port fails at start-up) until
/// the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: SharedStatus,
    metrics: SharedMetrics,
) -> Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { status, metrics });
    axum::serve(listener, app).await.context("HTTP server")
}

/// Binds `addr` (a busy port fails here, at start-up) and serves on it in the background.
pub async fn spawn(
    addr: std::net::SocketAddr,
    status: SharedStatus,
    metrics: SharedMetrics,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--http {addr}"))?;
    tokio::spawn(async move {
        if let Err(e) = serve(listener, status, metrics).await {
            tracing::error!("{e:#}");
        }
    });
    Ok(())
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
