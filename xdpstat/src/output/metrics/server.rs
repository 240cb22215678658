//! `--metrics ADDR`: a small HTTP server (axum's router, served by hyper on
//! a tokio runtime of its own thread) that answers `/metrics` from the
//! latest exposition, so scrapes never read the maps and no client, slow or
//! many, can hold up counting or the display.
//!
//! The server is built to outlast hostile clients: at most
//! [`connection_limit`] connections at a time, and none accepted while
//! fewer than [`DESCRIPTOR_RESERVE`] file descriptors are left, because
//! reading the counters needs some (more clients wait in the kernel's
//! listen queue, holding no memory or descriptor of xdpstat's); request
//! headers bounded in size and in the time they may take; a connection
//! ended after [`CONNECTION_LIFETIME`]; and a failed accept waited out and
//! retried instead of ending the server.

use std::{
    net::{SocketAddr, TcpListener},
    pin::pin,
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
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::{Semaphore, oneshot};

use crate::{
    error::{Cause, XdpstatError},
    output::metrics::{Exposition, Published},
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a connection may buffer: request headers larger than this are
/// refused (431) and the connection closed.
const MAX_BUFFER: usize = 16 * 1024;
/// How long one connection may stay open (Prometheus reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long an accept that failed, or had to wait for descriptors, is
/// waited out before the next try.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// File descriptors left for counting: reading the counters opens a few
/// for a moment (aya reads the possible CPUs from /sys), and a read that
/// cannot is a lost report.
pub const DESCRIPTOR_RESERVE: usize = 16;
/// How often the server says, at most, that it is holding back.
const COMPLAINT_GAP: Duration = Duration::from_secs(60);

/// The soft limit on this process's open file descriptors.
fn descriptor_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

/// Connections served at once: 256, or a quarter of the file descriptors
/// this process may open when that is less.
pub fn connection_limit() -> usize {
    (descriptor_limit() / 4).clamp(1, 256)
}

/// Whether this process has [`DESCRIPTOR_RESERVE`] descriptors to spare
/// after one more connection (what it holds is counted in /proc/self/fd;
/// when there is no descriptor left to read it with, the answer is no;
/// when it cannot be read otherwise, yes, and accept is the judge).
fn descriptors_to_spare() -> bool {
    match std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor is among the entries.
        Ok(open) => open.count() + 1 + DESCRIPTOR_RESERVE <= descriptor_limit(),
        Err(error) => !matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)),
    }
}

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
        let failed = |source: Cause| XdpstatError::Metrics { address, source };
        let listener = TcpListener::bind(address).map_err(|e| failed(e.into()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| failed(e.into()))?;
        let bound = listener.local_addr().map_err(|e| failed(e.into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| failed(format!("starting the server's runtime: {e}").into()))?;
        let (shutdown, stopped) = oneshot::channel();
        let app = router(published);
        let thread = std::thread::Builder::new()
            .name("xdpstat-metrics".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, app, stopped).await,
                        Err(error) => eprintln!("xdpstat: metrics server on {bound}: {error}"),
                    }
                });
            })
            .map_err(|e| failed(format!("starting the server's thread: {e}").into()))?;
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

/// Accepts and serves connections until `stopped`, then waits up to
/// [`STOP_PATIENCE`] for requests in flight.
async fn serve(listener: tokio::net::TcpListener, app: Router, stopped: oneshot::Receiver<()>) {
    let limit = connection_limit();
    let slots = Arc::new(Semaphore::new(limit));
    let mut stopped = pin!(stopped);
    // Each reason to hold connections back is said at most once a gap.
    let mut complained: [Option<Instant>; 2] = [None; 2];
    let mut complain = |reason: usize, what: &dyn std::fmt::Display| {
        if complained[reason].is_none_or(|at| at.elapsed() >= COMPLAINT_GAP) {
            complained[reason] = Some(Instant::now());
            eprintln!("xdpstat: metrics: {what}; new connections wait until some close");
        }
    };
    loop {
        if slots.available_permits() == 0 {
            complain(0, &format_args!("all {limit} connections are in use"));
        }
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        while !descriptors_to_spare() {
            complain(
                1,
                &format_args!(
                    "fewer than {DESCRIPTOR_RESERVE} file descriptors would be left for counting"
                ),
            );
            tokio::select! {
                _ = &mut stopped => return finish(&slots, limit).await,
                _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
            }
        }
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                if is_resource_shortage(&error) {
                    complain(1, &format_args!("cannot accept a connection ({error})"));
                }
                // Whatever it was (a client that gave up, no descriptors),
                // counting goes on and the next accept may work.
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_BUFFER);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_TIMEOUT, connection).await;
                }
            }
        });
    }
    finish(&slots, limit).await;
}

/// Lets requests in flight finish, for a while: every slot back means none.
async fn finish(slots: &Semaphore, limit: usize) {
    let _ = tokio::time::timeout(STOP_PATIENCE, slots.acquire_many(limit as u32)).await;
}

/// Errors of accept(2) that say the process or the system ran short of
/// something, rather than that one client misbehaved.
fn is_resource_shortage(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
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
        // The server thread itself gives up on requests in flight after
        // STOP_PATIENCE; this is the bound should it be stuck elsewhere.
        let deadline = Instant::now() + STOP_PATIENCE + Duration::from_millis(500);
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
