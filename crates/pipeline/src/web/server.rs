//! The web tier's accept loop (hyper-util): HTTP/1.1 and HTTP/2, a cap on
//! open connections, a deadline for request headers, idle connections
//! closed, graceful shutdown.
//!
//! `axum::serve` has no header-read timeout; a client that connects and
//! sends nothing (or half a header) would hold its connection forever.
//! hyper's own `header_read_timeout` only starts once a connection is known
//! to be HTTP/1, so a client that sends nothing, a single byte, or the
//! HTTP/2 preface and then nothing is closed here by [`Activity`]: a
//! connection with no request in flight may stay silent for the header
//! timeout, no longer.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection-level limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time a client has to send complete request headers; also how long a
    /// connection with no request in flight may go without a byte in
    /// either direction before it is closed.
    pub header_timeout: Duration,
    /// Connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

/// Longest wait for open connections to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` fires, then lets open
/// requests finish (at most [`DRAIN`]).
pub async fn run(listener: tokio::net::TcpListener, app: Router, limits: ConnLimits, shutdown: CancellationToken) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A client may shut its sending side once its request is out (as
        // `nc -N` does) and still read the answer.
        .half_close(true)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => s.expect("the connection semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a connection reset before
                    // accept: wait a little and go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let activity = Arc::new(Activity::new());
        let seen = activity.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let in_flight = seen.request_started();
            async move {
                let response = app.oneshot(req.map(axum::body::Body::new)).await.unwrap_or_else(|e| match e {});
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        });
        let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
        let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
        let conn = graceful.watch(conn);
        let idle_limit = limits.header_timeout;
        tokio::spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = activity.idle_for(idle_limit) => tracing::debug!(%peer, "closing an idle connection"),
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections were still open {}s after shutdown; closing them", DRAIN.as_secs());
    }
    Ok(())
}

/// What one connection is doing: requests in flight, and when a byte last
/// moved (times in milliseconds since the connection was accepted).
struct Activity {
    start: Instant,
    last_io_ms: AtomicU64,
    in_flight: AtomicUsize,
    any_request: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_io_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0), any_request: AtomicBool::new(false) }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts a request as in flight until the guard is dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.any_request.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves once the connection has been idle for `limit`: no request
    /// in flight and, since the last byte moved, `limit` gone by. Before
    /// any request the limit counts from the accept, whatever bytes came:
    /// the first request's headers must be complete by then.
    async fn idle_for(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        loop {
            let since = if self.any_request.load(Ordering::Relaxed) { self.last_io_ms.load(Ordering::Relaxed) } else { 0 };
            let due = since + limit_ms;
            let now = self.now_ms();
            if now >= due && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            // Checked again at the deadline, or a limit later while a
            // request is in flight.
            let wait = if now >= due { limit_ms } else { due - now };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// A request in flight on a connection (see [`Activity`]).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time starts when the answer is ready.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that records in its [`Activity`] when bytes move.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
