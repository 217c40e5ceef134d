//! Who is calling: the admin/native API bearer tokens, the CTI path token, agent stream
//! tokens, and signed-in agents (session cookie, see `session.rs`). [`Caller`] (an agent or
//! an admin, any route that agents may use) and [`Admin`] (admin-only routes) are extractors.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::{Edge, Shared};
use super::error::ApiError;
use super::session::{self, Session};
use crate::secrets::same;

pub use crate::app::Caller;

const SIGN_IN: &str = "sign in to the panel at /agent, or send `Authorization: Bearer <admin token>` (see [auth] admin_tokens or CXBRIDGE_ADMIN_TOKEN)";

impl Edge {
    /// The signed-in agent's session from the cookie, if valid and issued after the agent
    /// last signed out.
    pub async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let value = session::cookie(headers)?;
        let s = self.sessions.decode(value, jiff::Timestamp::now().as_second(), |id| self.credentials(id))?;
        self.not_signed_out(&s).await.then_some(s)
    }

    /// How agent `id` signs in (password hash, token): the configuration file's `[[agents]]`.
    pub fn credentials(&self, id: &str) -> Option<&crate::config::AgentConfig> {
        self.app.config.agents.iter().find(|a| a.id == id)
    }

    /// Whether `s` was issued after its agent last signed out (on any node).
    pub async fn not_signed_out(&self, s: &Session) -> bool {
        match self.app.store.signed_out_at(&s.agent).await {
            Ok(Some(at)) => s.issued >= at.as_millisecond(),
            Ok(None) => true,
            Err(e) => {
                // Without the database nothing else works either; refuse rather than guess.
                tracing::warn!(error = %e, "cannot check the agent's sign-outs");
                false
            }
        }
    }

    /// Who is calling: a bearer token must be an admin token; otherwise the session cookie
    /// must be valid, and any request that changes something must echo its CSRF token.
    pub async fn caller(&self, headers: &HeaderMap, method: &Method) -> Result<Caller, ApiError> {
        if let Some(token) = bearer(headers) {
            return if self.tokens.is_admin(token) {
                Ok(Caller::Admin)
            } else {
                Err(ApiError::unauthorized(format!("the bearer token is not valid; {SIGN_IN}")))
            };
        }
        let s = self.session(headers).await.ok_or_else(|| ApiError::unauthorized(format!("not signed in or the session expired; {SIGN_IN}")))?;
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let vouched = self.sessions.csrf_ok(&s, headers) && session::same_origin(headers);
        if !(safe || vouched) {
            return Err(ApiError::forbidden("missing or wrong X-CSRF-Token header: send the csrf_token from GET /api/v1/session"));
        }
        let supervisor = self.app.directory.agent(&s.agent).is_some_and(|a| a.supervisor);
        Ok(Caller::Agent { id: s.agent, supervisor })
    }

    /// Admin-only routes: a signed-in agent is told it is not allowed (403), anyone else
    /// how to authenticate (401).
    pub async fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if bearer(headers).is_none() && self.session(headers).await.is_some() {
            return Err(ApiError::forbidden("this needs an admin token; agents cannot do it from the panel"));
        }
        self.tokens.require_admin(headers)
    }
}

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        shared.0.caller(&parts.headers, &parts.method).await
    }
}

/// The caller of an admin-only route: an admin token (a signed-in agent is refused 403).
pub struct Admin;

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Self, ApiError> {
        shared.0.require_admin(&parts.headers).await.map(|()| Admin)
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub admin: Vec<String>,
    pub cti: String,
    /// The IVR's token (`/api/v1/ivr/*`).
    pub ivr: String,
    /// agent id → stream token
    pub agents: HashMap<String, String>,
}

impl Tokens {
    pub fn is_admin(&self, token: &str) -> bool {
        // Check every token so the time taken does not tell which one nearly matched.
        self.admin.iter().fold(false, |ok, t| same(t, token) | ok)
    }

    pub fn is_ivr(&self, token: &str) -> bool {
        same(&self.ivr, token)
    }

    pub fn is_cti(&self, token: &str) -> bool {
        same(&self.cti, token)
    }

    pub fn may_stream(&self, agent: &str, token: &str) -> bool {
        let own = self.agents.get(agent).is_some_and(|t| same(t, token));
        own | self.is_admin(token)
    }

    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match bearer(headers) {
            Some(t) if self.is_admin(t) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("the bearer token is not valid; use an admin token from [auth] admin_tokens or CXBRIDGE_ADMIN_TOKEN")),
            None => Err(ApiError::unauthorized("send `Authorization: Bearer <admin token>`; see [auth] admin_tokens or CXBRIDGE_ADMIN_TOKEN")),
        }
    }
}

/// The address the connection came from (`None` when the server was not started with
/// connect info, as in a router built without [`crate::run`]).
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())))
    }
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The user name and password of an `Authorization: Basic …` header (jambonz's only
/// webhook authentication). `None` when absent or not valid base64 of `user:password`.
pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// When the request reached its handler, before anyone was authenticated: the start of the
/// pop latency. Put it first among a handler's arguments.
pub struct Received(pub std::time::Instant);

impl<S: Send + Sync> FromRequestParts<S> for Received {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Received(std::time::Instant::now()))
    }
}
