//! Connection limits and timeouts: half-sent requests, idle kept-alive connections, bodies
//! that never arrive and floods of connections cannot take the hub down.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Reads until the server closes the connection; what it sent, or `None` if it is still open
/// after `wait`.
async fn read_until_closed(tcp: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(wait, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|()| String::from_utf8_lossy(&got).into_owned())
}

const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: cxbridge\r\nX-Slow: ";

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let t = spawn_with_server("header_timeout_secs = 1\n", "").await;
    let mut tcp = TcpStream::connect(t.addr).await.expect("connect");
    tcp.write_all(HALF_SENT).await.expect("write");
    let reply = read_until_closed(&mut tcp, Duration::from_secs(8)).await;
    assert_eq!(reply.as_deref(), Some(""), "the half-sent request must be closed, without an answer");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let t = spawn_with_server("header_timeout_secs = 1\n", "").await;
    let mut tcp = TcpStream::connect(t.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: cxbridge\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("answered").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // The connection is kept alive for a next request, but not forever.
    let rest = read_until_closed(&mut tcp, Duration::from_secs(8)).await;
    assert!(rest.is_some(), "an idle kept-alive connection must be closed");
}

#[tokio::test]
async fn many_half_sent_requests_are_refused_beyond_the_cap_and_healthz_keeps_answering() {
    let _ = cxbridge_server::http::listen::raise_open_files_limit();
    let t = spawn_with_server("max_connections = 100\nheader_timeout_secs = 2\n", "").await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut tcp = TcpStream::connect(t.addr).await.expect("connect");
        tcp.write_all(HALF_SENT).await.expect("write");
        slow.push(tcp);
    }
    // Beyond the cap a connection is answered 503 at once instead of being held open.
    let mut refused = 0;
    for tcp in &mut slow {
        if let Some(reply) = read_until_closed(tcp, Duration::from_millis(300)).await
            && reply.starts_with("HTTP/1.1 503")
        {
            assert!(reply.contains("application/problem+json") && reply.contains("max_connections"), "{reply}");
            refused += 1;
        }
    }
    assert!(refused >= 150, "only {refused} of 300 connections were refused with a cap of 100");
    // The held ones time out, so a fresh connection gets through while the slow ones are
    // still open on the client's side.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        match fresh.get(t.url("/healthz")).send().await {
            Ok(r) if r.status() == 200 => break 200,
            Ok(r) if tokio::time::Instant::now() > deadline => break r.status().as_u16(),
            Err(e) if tokio::time::Instant::now() > deadline => panic!("healthz did not answer: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(status, 200);
    drop(slow);
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_is_answered_408() {
    let t = spawn_with_server("request_timeout_secs = 1\n", "").await;
    let mut tcp = TcpStream::connect(t.addr).await.expect("connect");
    let head = format!("POST /api/v1/events HTTP/1.1\r\nHost: cxbridge\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"event\":");
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(8), tcp.read(&mut buf)).await.expect("the server must answer a stalled body").expect("read");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("application/problem+json") && reply.contains("request_timeout_secs"), "{reply}");
}

#[tokio::test]
async fn an_agent_stream_outlives_the_request_and_header_timeouts() {
    let t = spawn_with_server("request_timeout_secs = 1\nheader_timeout_secs = 1\n", "").await;
    let mut ws = t.agent("alice").await;
    next_of(&mut ws, "snapshot").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, _) = t.cti(new_call("limits-1", "+49 30 1234567", "alice")).await;
    assert_eq!(s, 200);
    let pop = next_of(&mut ws, "pop").await;
    assert_eq!(pop["conversation"]["external_id"], "limits-1");
    close(ws).await;
}
