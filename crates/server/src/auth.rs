//! Who is calling: the admin/native API bearer tokens, the CTI path token, agent stream
//! tokens, and signed-in agents (session cookie, see `session.rs`). Tokens are compared in
//! constant time and generated into the data directory when not configured.

use std::collections::HashMap;
use std::path::Path;

use axum::http::{HeaderMap, Method};
use cxbridge_domain::conversation::Conversation;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::service::App;
use crate::session::{self, Session};

/// The authenticated caller of an API route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer admin token: integrations and operators.
    Admin,
    /// An agent signed in to the panel.
    Agent { id: String, supervisor: bool },
}

impl Caller {
    /// Whether the caller may see and act on `c`: admins always; supervisors when it was
    /// offered to them or they took it; other agents while it rings for them, and once
    /// answered only who answered and the agents it was transferred to since.
    pub fn may_see(&self, c: &Conversation) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Agent { id, supervisor: true } => c.agent.as_deref() == Some(id) || c.offered_to.iter().any(|a| a == id),
            Caller::Agent { id, supervisor: false } => c.may_act(id),
        }
    }

    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Agent { id, .. } => Some(id),
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Agent { .. } => Err(ApiError::forbidden("this needs an admin token; agents cannot do it from the panel")),
        }
    }
}

const SIGN_IN: &str = "sign in to the panel at /agent, or send `Authorization: Bearer <admin token>` (see [auth] admin_tokens or CXBRIDGE_ADMIN_TOKEN)";

impl App {
    /// The signed-in agent's session from the cookie, if valid and issued after the agent
    /// last signed out.
    pub async fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let value = session::cookie(headers)?;
        let s = self.sessions.decode(value, jiff::Timestamp::now().as_second(), |id| self.agent_config(id))?;
        match self.store.signed_out_at(&s.agent).await {
            Ok(Some(at)) if s.issued < at.as_millisecond() => None,
            Ok(_) => Some(s),
            Err(e) => {
                // Without the database nothing else works either; refuse rather than guess.
                tracing::warn!(error = %e, "cannot check the agent's sign-outs");
                None
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
        let supervisor = self.agent_config(&s.agent).is_some_and(|a| a.supervisor);
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

    pub fn agent_config(&self, id: &str) -> Option<&crate::config::AgentConfig> {
        self.config.agents.iter().find(|a| a.id == id)
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

pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
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

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the token stored in `dir/name`, or creates one there (mode 0600).
pub fn stored_token(dir: &Path, name: &str) -> std::io::Result<String> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token = random_token();
    std::fs::write(&path, format!("{token}\n"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    tracing::info!(path = %path.display(), "generated a token; read it from this file");
    Ok(token)
}
