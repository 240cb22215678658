//! `--metrics ADDR`: a small HTTP server (axum on a tokio runtime of its
//! own thread) that answers `/metrics` from the latest exposition, so
//! scrapes never read the maps and no client, slow or many, can hold up
//! counting or the display.

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::sync::oneshot;

use crate::{
    error::XdpstatError,
    metrics::{Exposition, Published},
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics server; dropping it stops it.
pub struct MetricsServer {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` now (so a taken port is an error at start) and
    /// serves from `published` on a thread of its own.
    pub fn start(address: SocketAddr, published: Published) -> Result<Self, XdpstatError> {
        let failed = |reason: String| XdpstatError::Metrics { address, reason };
        let listener = TcpListener::bind(address).map_err(|e| failed(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| failed(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| failed(format!("starting the server's runtime: {e}")))?;
        let (shutdown, stopped) = oneshot::channel();
        let app = router(published);
        let thread = std::thread::Builder::new()
            .name("xdpstat-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    if let Err(error) = serve.await {
                        eprintln!("xdpstat: metrics server on {bound}: {error}");
                    }
                });
            })
            .map_err(|e| failed(format!("starting the server's thread: {e}")))?;
        Ok(Self {
            address: bound,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port chosen if 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// How long stopping waits for requests in flight; a client that keeps a
/// request open longer is left to the process's exit.
const STOP_PATIENCE: Duration = Duration::from_secs(2);

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_PATIENCE;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

/// `/metrics`, `/`, and 404 for anything else; GET and HEAD only (405
/// for other methods on those two paths).
pub fn router(published: Published) -> Router {
    let metrics = move |headers: HeaderMap| {
        let published = Arc::clone(&published);
        async move { metrics(&headers, &published) }
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found; try /metrics\n") })
}

fn metrics(headers: &HeaderMap, published: &Published) -> Response {
    let exposition: Option<Arc<Exposition>> = published
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Some(exposition) = exposition else {
        // Between binding the address and attaching: an empty 200 would
        // look like a host with no traffic.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "xdpstat is not attached yet; no counts to export\n",
        )
            .into_response();
    };
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    let (content_type, body) = if wants_openmetrics {
        (OPENMETRICS, exposition.openmetrics.clone())
    } else {
        (TEXT, exposition.text.clone())
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Html<&'static str> {
    Html(
        "<!doctype html><html><head><title>xdpstat</title></head><body>\
         <h1>xdpstat</h1><p>Per-source packet and byte counts at the XDP hook: \
         <a href=\"/metrics\">/metrics</a>.</p></body></html>\n",
    )
}
