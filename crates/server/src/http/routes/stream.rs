//! `GET /api/v1/agents/{agent}/stream`: the agent's WebSocket. On connect the agent gets a
//! snapshot of its open conversations, then pops, updates and ends as they happen.
//! Frames are queued per stream up to `[panel] stream_queue_frames`; a client that falls
//! behind that far is disconnected (it reconnects for a fresh snapshot).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use cxbridge_proto as proto;

use crate::app::hub::{StreamEnd, Subscription};
use crate::app::notify::frame;
use crate::http::Edge;
use crate::http::caller::bearer;
use crate::http::error::{ApiError, ApiPath, ApiQuery};
use crate::http::session::{self, Session};

/// The largest message a client may send on the stream. The panel sends none (only control
/// frames), so anything bigger ends the stream (close code 1009) instead of being buffered.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;
/// A message the client does not take within this long ends the stream.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the stream pings, and re-checks that a panel session was not signed out on
/// another node.
const PING_EVERY: Duration = Duration::from_secs(25);

/// Agent stream (WebSocket). The panel's session cookie signs it in; integrations send the
/// agent's (or an admin) token as `Authorization: Bearer …` or `?access_token=…`.
///
/// A stream opened with a session ends when the session expires or the agent signs out. An
/// agent has at most `[panel] streams_per_agent` streams on a node; more are refused (429).
#[utoipa::path(get, path = "/api/v1/agents/{agent}/stream",
    responses((status = 101, description = "WebSocket of AgentMessage JSON frames"), (status = 401, body = proto::Problem), (status = 429, body = proto::Problem)))]
pub async fn stream(
    State(edge): State<Arc<Edge>>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).map(str::to_string).or_else(|| q.get("access_token").cloned());
    let session = if token.is_none() { edge.session(&headers).await } else { None };
    let session = match (token, session) {
        (Some(t), _) if edge.tokens.may_stream(&agent, &t) => None,
        (Some(_), _) => return Err(ApiError::unauthorized("the token is not this agent's token nor an admin token")),
        // A cookie rides along on any page's WebSocket: only our own page may use it.
        (None, Some(_)) if !session::same_origin(&headers) => return Err(ApiError::forbidden("the panel's stream opens only from the panel's own page")),
        (None, Some(s)) if s.agent == agent => Some(s),
        (None, Some(s)) => return Err(ApiError::forbidden(format!("signed in as `{}`: you can open only your own stream", s.agent))),
        (None, None) => {
            return Err(ApiError::unauthorized("sign in to the panel at /agent, or send the agent's token or an admin token (Bearer header or ?access_token=)"));
        }
    };
    // The place is taken before the upgrade, so a burst of upgrades cannot exceed the limit;
    // an upgrade that never completes drops it again.
    let panel = &edge.app.config.panel;
    let sub = edge
        .app
        .hub
        .subscribe(&agent, session.as_ref().map(|s| s.issued), panel.streams_per_agent, panel.stream_queue_frames)
        .map_err(|e| ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()))?;
    Ok(ws.max_message_size(MAX_CLIENT_MESSAGE_BYTES).max_frame_size(MAX_CLIENT_MESSAGE_BYTES).on_upgrade(move |socket| run(edge, sub, session, socket)))
}

/// Ends the stream with a close frame saying why (the client may be gone already).
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    if send(socket, Message::Close(Some(frame))).await {
        // Wait a little for the client's reply, so the frame is not lost to a reset when the
        // socket closes with unread data.
        let replied = async {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), replied).await;
    }
}

/// Sends `message`; false when the client is gone or does not take it in time.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())))
}

const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
/// The session the stream was opened with ended: the panel shows its sign-in (as for 401)
/// instead of reconnecting.
const SESSION_ENDED: u16 = 4401;

async fn run(edge: Arc<Edge>, mut sub: Subscription, session: Option<Session>, mut socket: WebSocket) {
    let app = &edge.app;
    // Subscribed before the snapshot so nothing that happens in between is lost; the panel
    // drops messages older than the revision it has.
    app.announce_presence();
    let agent = sub.agent.clone();
    let snapshot = match app.snapshot(&agent).await {
        Ok(conversations) => proto::AgentMessage::Snapshot { agent: agent.clone(), conversations },
        Err(e) => {
            tracing::warn!(agent, error = %e, "snapshot failed");
            proto::AgentMessage::Snapshot { agent: agent.clone(), conversations: vec![] }
        }
    };
    if !send(&mut socket, Message::Text(frame(&snapshot).to_string().into())).await {
        app.stream_closed(sub);
        return;
    }
    let expiry = async {
        match &session {
            Some(s) => {
                let left = u64::try_from(s.expires - jiff::Timestamp::now().as_second()).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(left)).await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(expiry);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            f = sub.frames.recv() => {
                let Some(f) = f else { break };
                if !send(&mut socket, Message::Text(f.to_string().into())).await { break; }
            }
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    // Mostly a message over the limit; other errors leave a dead socket anyway.
                    tracing::debug!(agent, error = %e, "agent stream read failed");
                    close(&mut socket, TOO_BIG, "message too big or malformed").await;
                    break;
                }
                Some(Ok(_)) => {}
            },
            ended = sub.end.changed() => {
                let reason = if ended.is_ok() { *sub.end.borrow() } else { None };
                let code = if reason == Some(StreamEnd::SignedOut) { SESSION_ENDED } else { POLICY };
                close(&mut socket, code, reason.map_or("closed", StreamEnd::reason)).await;
                break;
            }
            () = &mut expiry => {
                close(&mut socket, SESSION_ENDED, "the session expired; sign in again").await;
                break;
            }
            _ = ping.tick() => {
                if let Some(s) = &session && !edge.not_signed_out(s).await {
                    close(&mut socket, SESSION_ENDED, StreamEnd::SignedOut.reason()).await;
                    break;
                }
                if !send(&mut socket, Message::Ping(Vec::new().into())).await { break; }
            }
        }
    }
    app.stream_closed(sub);
}
