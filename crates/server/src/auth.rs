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
        self.not_signed_out(&s).await.then_some(s)
    }

    /// Whether `s` was issued after its agent last signed out (on any node).
    pub async fn not_signed_out(&self, s: &Session) -> bool {
        match self.store.signed_out_at(&s.agent).await {
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

/// Whether two tokens are equal, in time that depends on neither: their SHA-256 digests
/// (always 32 bytes) are compared in constant time. Comparing the tokens themselves returned
/// at once on a length mismatch, which told a caller the configured token's length.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
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

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
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

/// `text` cut to at most `max_bytes` (at a char boundary, with `…` when cut), for log
/// fields whose value the client chose: a long name must not become a long log line.
pub fn clip_for_log(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return text.into();
    }
    let kept: String = text
        .chars()
        .scan(0, |used, c| {
            *used += c.len_utf8();
            (*used <= max_bytes).then_some(c)
        })
        .collect();
    format!("{kept}… ({} bytes)", text.len()).into()
}

pub fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A password a person reads off the screen and types: four groups of four from letters
/// and digits that cannot be mistaken for one another (no `0`/`o`, `1`/`l`/`i`), about 79
/// bits.
pub fn typeable_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let groups: Vec<String> =
        (0..4).map(|_| (0..4).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()).collect();
    groups.join("-")
}

/// Reads the token stored in `dir/name`, or creates one there (mode 0600).
pub fn stored_token(dir: &Path, name: &str) -> std::io::Result<String> {
    stored_secret(dir, name, random_token)
}

/// Reads the secret stored in `dir/name`, or stores a new one from `generate` (mode 0600).
pub fn stored_secret(dir: &Path, name: &str, generate: fn() -> String) -> std::io::Result<String> {
    let path = dir.join(name);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let token = generate();
    crate::files::write_private(&path, &format!("{token}\n"))?;
    tracing::info!(path = %path.display(), "generated a token; read it from this file");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        for (a, b, want) in [
            ("0123456789abcdef", "0123456789abcdef", true),
            ("0123456789abcdef", "0123456789abcdeF", false),
            ("0123456789abcdef", "0123456789abcde", false),
            ("0123456789abcdef", "0123456789abcdef0", false),
            ("0123456789abcdef", "", false),
            ("", "", true),
            ("tökén-ü-0123456789", "tökén-ü-0123456789", true),
        ] {
            assert_eq!(same(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn log_fields_are_clipped_at_a_char_boundary() {
        for (text, max, want) in [
            ("alice", 64, "alice"),
            ("abcdef", 3, "abc… (6 bytes)"),
            ("ééé", 3, "é… (6 bytes)"),
            ("\u{a0}x", 1, "… (3 bytes)"),
            ("日本語", 7, "日本… (9 bytes)"),
        ] {
            assert_eq!(clip_for_log(text, max), want, "{text:?} at {max}");
        }
        assert!(clip_for_log(&"x".repeat(2_000_000), 64).len() < 100);
    }
}
