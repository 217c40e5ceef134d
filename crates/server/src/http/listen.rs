//! The accept loop: each TCP connection is served by hyper with a header-read timeout, at
//! most `max_connections` at once, and every request under a time limit. `axum::serve` has
//! none of these, so 20,000 half-sent requests once exhausted the file descriptors.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::error::ApiError;

/// File descriptors kept free for the database, the CRM clients, NATS and log files when the
/// connection cap is fitted under the open-file limit.
const RESERVED_FDS: u64 = 256;

/// Refused connections whose request is drained for a moment (so closing does not reset the
/// 503 away before the client read it); beyond this many they are closed at once.
const LINGERING: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl Limits {
    pub fn from_config(server: &crate::config::ServerConfig) -> Self {
        Self {
            max_connections: server.max_connections,
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            request_timeout: Duration::from_secs(server.request_timeout_secs),
        }
    }
}

/// Raises this process's soft limit of open files to its hard limit (no privilege needed)
/// and returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The connection cap: the configured one, lowered to fit under the open-file limit.
pub fn connection_cap(configured: usize) -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => {
            let fit = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
            configured.min(fit)
        }
        Err(_) => configured,
    }
}

/// Answers 408 when a request (reading its body included) takes longer than `limit`. A
/// WebSocket upgrade is answered at once, so an agent stream is never cut by it.
pub async fn request_timeout(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            format!("the request was not complete or not answered within {} s ([server] request_timeout_secs); nothing was changed if it had not arrived whole", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for the requests in
/// progress (upgraded agent streams end on their own).
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: impl std::future::Future<Output = ()>) {
    let cap = connection_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(configured = limits.max_connections, cap, "[server] max_connections lowered to fit under the open-file limit");
    }
    let permits = Arc::new(Semaphore::new(cap));
    let lingering = Arc::new(Semaphore::new(LINGERING));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a clone; `closed()` resolves when the last one has ended.
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: the next accept would fail at once too.
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Agent frames are small writes: without TCP_NODELAY, Nagle holds one back until the
        // panel's delayed ACK of the previous (up to 40 ms on Linux).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("cxbridge_http_connections_refused_total").increment(1);
            refuse(tcp, &lingering);
            continue;
        };
        let io = TokioIo::new(Counted { tcp, _permit: permit });
        // Connect info: the sign-in throttle counts failures per client address.
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(router.clone(), axum::extract::ConnectInfo(peer)));
        let conn = http.serve_connection(io, service).with_upgrades();
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                }
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// Over the cap: a short 503 and close, so the client learns to come back rather than hang.
fn refuse(tcp: TcpStream, lingering: &Arc<Semaphore>) {
    let body = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many open connections ([server] max_connections); try again"}"#;
    let busy = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // A fresh socket's send buffer has room for these few bytes; never wait on it.
    let _ = tcp.try_write(busy.as_bytes());
    let Ok(permit) = lingering.clone().try_acquire_owned() else { return };
    tokio::spawn(async move {
        let mut tcp = tcp;
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(n) = tcp.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        drop(permit);
    });
}

/// A served connection that holds its place under the cap as long as the socket lives — also
/// after a WebSocket upgrade, when hyper has handed the socket to the agent stream.
struct Counted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
