//! `GET /api/v1/agents/{agent}/stream`: the agent's WebSocket. On connect the agent gets a
//! snapshot of its open conversations, then pops, updates and ends as they happen.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use cxbridge_proto as proto;

use crate::auth::bearer;
use crate::error::{ApiError, ApiPath, ApiQuery};
use crate::service::{App, frame};

/// Agent stream (WebSocket). The panel's session cookie signs it in; integrations send the
/// agent's (or an admin) token as `Authorization: Bearer …` or `?access_token=…`.
#[utoipa::path(get, path = "/api/v1/agents/{agent}/stream",
    responses((status = 101, description = "WebSocket of AgentMessage JSON frames"), (status = 401, body = proto::Problem)))]
pub async fn stream(
    State(app): State<Arc<App>>,
    ApiPath(agent): ApiPath<String>,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).map(str::to_string).or_else(|| q.get("access_token").cloned());
    let session = if token.is_none() { app.session(&headers).await } else { None };
    match (token, session) {
        (Some(t), _) if app.tokens.may_stream(&agent, &t) => {}
        (Some(_), _) => return Err(ApiError::unauthorized("the token is not this agent's token nor an admin token")),
        // A cookie rides along on any page's WebSocket: only our own page may use it.
        (None, Some(_)) if !crate::session::same_origin(&headers) => return Err(ApiError::forbidden("the panel's stream opens only from the panel's own page")),
        (None, Some(s)) if s.agent == agent => {}
        (None, Some(s)) => return Err(ApiError::forbidden(format!("signed in as `{}`: you can open only your own stream", s.agent))),
        (None, None) => {
            return Err(ApiError::unauthorized("sign in to the panel at /agent, or send the agent's token or an admin token (Bearer header or ?access_token=)"));
        }
    }
    Ok(ws.on_upgrade(move |socket| run(app, agent, socket)))
}

async fn run(app: Arc<App>, agent: String, mut socket: WebSocket) {
    // Subscribe before the snapshot so nothing that happens in between is lost; the panel
    // drops messages older than the revision it has.
    let mut sub = app.hub.subscribe(&agent);
    app.announce_presence();
    let snapshot = match app.snapshot(&agent).await {
        Ok(conversations) => proto::AgentMessage::Snapshot { agent: agent.clone(), conversations },
        Err(e) => {
            tracing::warn!(agent, error = e.detail, "snapshot failed");
            proto::AgentMessage::Snapshot { agent: agent.clone(), conversations: vec![] }
        }
    };
    if socket.send(Message::Text(frame(&snapshot).to_string().into())).await.is_err() {
        app.stream_closed(&agent, sub.id);
        return;
    }
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    loop {
        tokio::select! {
            f = sub.frames.recv() => {
                let Some(f) = f else { break };
                if socket.send(Message::Text(f.to_string().into())).await.is_err() { break; }
            }
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
            }
        }
    }
    app.stream_closed(&agent, sub.id);
}
