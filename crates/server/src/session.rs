//! Panel sign-in: an agent's password (Argon2) or token, exchanged for a signed, HTTP-only
//! session cookie, plus the CSRF token its non-GET requests must echo.
//!
//! The cookie is stateless (HMAC-SHA256 over agent, expiry, nonce and a fingerprint of the
//! agent's credentials), so it survives a restart, works on every node that shares the
//! secret, and dies when the agent's password or token changes or the agent is removed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::auth::same;
use crate::config::{AgentConfig, PanelConfig};

pub const COOKIE: &str = "cxbridge_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Failed sign-ins allowed per agent within `FAILURE_WINDOW` before refusing for a while.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub agent: String,
    /// Unix milliseconds (a sign-out voids sessions issued before it, to the millisecond).
    pub issued: i64,
    /// Unix seconds.
    pub expires: i64,
    nonce: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignInError {
    #[error("unknown agent or wrong password")]
    BadCredentials,
    #[error("too many failed sign-ins for this agent; try again in {0} s")]
    TooManyAttempts(u64),
}

pub struct Sessions {
    secret: Vec<u8>,
    hours: u64,
    cookie_secure: String,
    embedded: bool,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// Checks that `hash` is a PHC string Argon2 can verify against.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| e.to_string())?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("algorithm `{}` is not argon2", parsed.algorithm));
    }
    Ok(())
}

/// An Argon2id PHC string for `password` (`cxbridge hash-password`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher;
    let hash: PasswordHash = argon2::Argon2::default().hash_password(password.as_bytes()).map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(hash.to_string())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Changes whenever the agent's password or token changes, so old cookies stop working.
fn credential_fingerprint(agent: &AgentConfig) -> String {
    let mut h = Sha256::new();
    h.update(agent.password_hash.as_deref().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(agent.token.as_deref().unwrap_or("").as_bytes());
    B64.encode(&h.finalize()[..9])
}

impl Sessions {
    pub fn new(secret: &str, panel: &PanelConfig) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            hours: panel.session_hours,
            cookie_secure: panel.cookie_secure.clone(),
            embedded: !panel.embed_origins.is_empty(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"\x1f");
        }
        mac
    }

    /// Checks the agent's password (or token) and returns a new session. Argon2 is slow on
    /// purpose: call this off the async threads.
    pub fn sign_in(&self, agent: Option<&AgentConfig>, agent_id: &str, password: &str, now_ms: i64) -> Result<Session, SignInError> {
        if let Some(wait) = self.locked_out(agent_id) {
            return Err(SignInError::TooManyAttempts(wait));
        }
        let ok = agent.is_some_and(|a| {
            let by_token = a.token.as_deref().is_some_and(|t| same(t, password));
            let by_password = a.password_hash.as_deref().is_some_and(|h| verify_password(h, password));
            by_token | by_password
        });
        if !ok {
            self.note_failure(agent_id);
            return Err(SignInError::BadCredentials);
        }
        if let Ok(mut f) = self.failures.lock() {
            f.remove(agent_id);
        }
        let nonce = crate::auth::random_token();
        Ok(Session { agent: agent_id.to_string(), issued: now_ms, expires: now_ms / 1000 + (self.hours * 3600) as i64, nonce })
    }

    fn locked_out(&self, agent: &str) -> Option<u64> {
        let mut f = self.failures.lock().ok()?;
        let list = f.get_mut(agent)?;
        list.retain(|t| t.elapsed() < FAILURE_WINDOW);
        if list.len() < MAX_FAILURES {
            return None;
        }
        let oldest = list.first()?;
        Some(FAILURE_WINDOW.saturating_sub(oldest.elapsed()).as_secs().max(1))
    }

    fn note_failure(&self, agent: &str) {
        if let Ok(mut f) = self.failures.lock() {
            // Bounded: an attacker cycling agent names must not grow this without end.
            if f.len() > 10_000 {
                f.retain(|_, l| l.last().is_some_and(|t| t.elapsed() < FAILURE_WINDOW));
            }
            f.entry(agent.to_string()).or_default().push(Instant::now());
        }
    }

    /// The cookie value: `agent.issued.expires.nonce.signature`, agent base64url-encoded.
    pub fn encode(&self, s: &Session, agent: &AgentConfig) -> String {
        let agent_b64 = B64.encode(s.agent.as_bytes());
        let (issued, expires) = (s.issued.to_string(), s.expires.to_string());
        let sig = self.mac(&["session", &agent_b64, &issued, &expires, &s.nonce, &credential_fingerprint(agent)]).finalize().into_bytes();
        format!("{agent_b64}.{issued}.{expires}.{}.{}", s.nonce, B64.encode(sig))
    }

    /// The session in `value`, if it is ours, unexpired, and its agent's credentials are
    /// unchanged. `agent_of` looks the agent up in the configuration.
    pub fn decode<'a>(&self, value: &str, now: i64, agent_of: impl Fn(&str) -> Option<&'a AgentConfig>) -> Option<Session> {
        let mut parts = value.split('.');
        let (agent_b64, issued, expires, nonce, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let agent_id = String::from_utf8(B64.decode(agent_b64).ok()?).ok()?;
        let agent = agent_of(&agent_id)?;
        let sig = B64.decode(sig).ok()?;
        self.mac(&["session", agent_b64, issued, expires, nonce, &credential_fingerprint(agent)]).verify_slice(&sig).ok()?;
        let (issued, expires): (i64, i64) = (issued.parse().ok()?, expires.parse().ok()?);
        (expires > now).then(|| Session { agent: agent_id, issued, expires, nonce: nonce.to_string() })
    }

    /// The token the panel sends in `X-CSRF-Token` with every non-GET request.
    pub fn csrf(&self, s: &Session) -> String {
        B64.encode(&self.mac(&["csrf", &s.nonce]).finalize().into_bytes()[..18])
    }

    /// A token that lets the agents of `conversation` link `entity/id` to it: given with the
    /// records found, created or popped for that conversation, checked when they are linked.
    pub fn grant(&self, conversation: &str, entity: &str, id: &str) -> String {
        B64.encode(&self.mac(&["grant", conversation, entity, id]).finalize().into_bytes()[..18])
    }

    pub fn grant_ok(&self, grant: &str, conversation: &str, entity: &str, id: &str) -> bool {
        same(grant, &self.grant(conversation, entity, id))
    }

    pub fn csrf_ok(&self, s: &Session, headers: &HeaderMap) -> bool {
        headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|t| same(t, &self.csrf(s)))
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        match self.cookie_secure.as_str() {
            "always" => true,
            "never" => false,
            _ => self.embedded || !plain_http_to_loopback(headers),
        }
    }

    fn attributes(&self, headers: &HeaderMap, max_age: i64) -> String {
        let mut a = format!("Path=/; HttpOnly; Max-Age={max_age}");
        if self.embedded {
            // Inside Dynamics the panel is a third-party iframe: only SameSite=None cookies
            // reach it, and Chromium keeps third-party cookies only when Partitioned.
            a.push_str("; SameSite=None; Secure; Partitioned");
        } else {
            a.push_str("; SameSite=Strict");
            if self.secure(headers) {
                a.push_str("; Secure");
            }
        }
        a
    }

    pub fn set_cookie(&self, value: &str, s: &Session, now: i64, headers: &HeaderMap) -> HeaderValue {
        let cookie = format!("{COOKIE}={value}; {}", self.attributes(headers, (s.expires - now).max(0)));
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("cxbridge_session=; Max-Age=0"))
    }

    pub fn clear_cookie(&self, headers: &HeaderMap) -> HeaderValue {
        let cookie = format!("{COOKIE}=; {}", self.attributes(headers, 0));
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("cxbridge_session=; Max-Age=0"))
    }
}

/// The session cookie's value in the request, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// A request that came over plain http (no TLS-terminating proxy said otherwise) to a
/// loopback host, where a browser may refuse a Secure cookie and there is no wire to protect.
fn plain_http_to_loopback(headers: &HeaderMap) -> bool {
    let forwarded_https = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if forwarded_https {
        return false;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a WebSocket or cookie request's `Origin` is this server (or absent, as from
/// non-browser clients, which carry no ambient cookie anyway).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, h)| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(password: Option<&str>, token: Option<&str>) -> AgentConfig {
        AgentConfig {
            id: "alice".into(),
            password_hash: password.map(|p| hash_password(p).expect("hash")),
            token: token.map(str::to_string),
            ..AgentConfig::default()
        }
    }

    fn sessions() -> Sessions {
        Sessions::new("test-secret", &PanelConfig::default())
    }

    #[test]
    fn password_or_token_signs_in_and_nothing_else_does() {
        let s = sessions();
        let a = agent(Some("correct horse"), Some("tok-123"));
        assert!(s.sign_in(Some(&a), "alice", "correct horse", 0).is_ok());
        assert!(s.sign_in(Some(&a), "alice", "tok-123", 0).is_ok());
        for (who, pw) in [(Some(&a), "wrong"), (Some(&a), ""), (None, "correct horse")] {
            assert_eq!(s.sign_in(who, "alice", pw, 0), Err(SignInError::BadCredentials), "{pw:?}");
        }
    }

    #[test]
    fn repeated_failures_lock_the_agent_out_for_a_while() {
        let s = sessions();
        let a = agent(Some("pw"), None);
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.sign_in(Some(&a), "alice", "guess", 0), Err(SignInError::BadCredentials));
        }
        assert!(matches!(s.sign_in(Some(&a), "alice", "pw", 0), Err(SignInError::TooManyAttempts(_))), "even the right password waits");
        assert!(s.sign_in(Some(&agent(Some("pw"), None)), "bob", "pw", 0).is_ok(), "other agents are not affected");
    }

    #[test]
    fn cookies_verify_until_expiry_and_only_with_unchanged_credentials() {
        let s = sessions();
        let a = agent(None, Some("tok"));
        let session = s.sign_in(Some(&a), "alice", "tok", 1_000_000).expect("signed in");
        let value = s.encode(&session, &a);
        assert_eq!(s.decode(&value, 1_001, |_| Some(&a)), Some(session.clone()));
        assert_eq!(s.decode(&value, session.expires, |_| Some(&a)), None, "expired");
        assert_eq!(s.decode(&value, 1_001, |_| None), None, "agent removed from the config");
        let changed = agent(None, Some("new-token"));
        assert_eq!(s.decode(&value, 1_001, |_| Some(&changed)), None, "token changed");
        let other = Sessions::new("other-secret", &PanelConfig::default());
        assert_eq!(other.decode(&value, 1_001, |_| Some(&a)), None, "another secret");
        let bob = B64.encode("bob");
        let forged = value.replacen(&B64.encode("alice"), &bob, 1);
        assert_eq!(s.decode(&forged, 1_001, |_| Some(&a)), None, "renamed agent");
        assert_eq!(s.decode("garbage", 1_001, |_| Some(&a)), None);
    }

    #[test]
    fn cookie_attributes_follow_the_transport() {
        let s = sessions();
        let h = |host: &str, proto: Option<&str>| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
            if let Some(p) = proto {
                m.insert("x-forwarded-proto", HeaderValue::from_str(p).expect("proto"));
            }
            m
        };
        let a = |headers: &HeaderMap| s.attributes(headers, 60);
        assert!(!a(&h("127.0.0.1:8080", None)).contains("Secure"), "plain http on loopback");
        assert!(a(&h("cx.example.com", None)).contains("; Secure"));
        assert!(a(&h("127.0.0.1:8080", Some("https"))).contains("; Secure"));
        assert!(a(&h("localhost:8080", None)).contains("HttpOnly"));
        let embedded = Sessions::new("k", &PanelConfig { embed_origins: vec!["https://x.crm.dynamics.com".into()], ..PanelConfig::default() });
        assert!(embedded.attributes(&h("127.0.0.1", None), 60).contains("SameSite=None; Secure; Partitioned"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut m = HeaderMap::new();
        m.append(header::COOKIE, HeaderValue::from_static("a=1; cxbridge_session=abc.def; b=2"));
        assert_eq!(cookie(&m), Some("abc.def"));
        let mut none = HeaderMap::new();
        none.append(header::COOKIE, HeaderValue::from_static("cxbridge_session="));
        assert_eq!(cookie(&none), None);
    }
}
