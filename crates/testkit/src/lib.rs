//! Test servers for the CRMs we cannot reach from here. Each follows its vendor's documented
//! wire format closely enough that an adapter which passes against it sends what the real
//! service accepts, and each can be told to fail the way the real one does (429 with
//! `Retry-After`, 401 for an expired token, 503 bursts, slow answers, an outage).
//!
//! They hold their data in memory and record every request, so a test can assert the exact
//! requests an adapter sent. Used by the connectors' contract tests, the server's
//! integration tests and the benchmark; never by the product.

pub mod dataverse;
pub mod faults;
pub mod oauth;
pub mod salesforce;
pub mod scaleout;
pub mod tryton;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

pub use faults::Faults;
pub use oauth::TokenServer;

/// A request as the test server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    /// Path and query, percent-encoded as received.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Serves `router` on a free loopback port until the process ends; returns its base URL.
pub async fn serve(router: Router) -> std::io::Result<String> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}
