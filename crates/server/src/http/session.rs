//! Panel sign-in: an agent's password (Argon2) or token, exchanged for a signed, HTTP-only
//! session cookie, plus the CSRF token its non-GET requests must echo.
//!
//! The cookie is stateless (HMAC-SHA256 over agent, expiry, nonce and a fingerprint of the
//! agent's credentials), so it survives a restart, works on every node that shares the
//! secret, and dies when the agent's password or token changes or the agent is removed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::throttle::WindowCounts;
use crate::config::{AgentConfig, CookieSecure, PanelConfig};
use crate::secrets::same;

pub const COOKIE: &str = "cxbridge_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub use crate::config::MAX_AGENT_ID_BYTES;
/// The longest password or token a sign-in may send.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Unknown agent names are counted in this many buckets (by a keyed hash of the name): the
/// table stays small whatever names are tried, and an unknown name is locked out like a
/// known one, so the answers do not tell which agents exist.
const UNKNOWN_AGENT_BUCKETS: u16 = 256;
/// Known agents with recent failures the lockout table keeps, besides the unknown buckets.
const AGENT_CAPACITY: usize = 4096;
/// Client addresses the per-client throttle keeps.
const CLIENT_CAPACITY: usize = 4096;

/// Verified for agents that have no password hash (unknown, or signing in by token) so
/// that every sign-in costs one Argon2 check with the parameters `hash_password` uses and
/// the time taken does not tell known agents from unknown ones. Nobody knows its password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$pjV8DRTX86tug54E5xpG+w$7sYTKHE9bszspZdbPlMlcUztxkZ9japkh+8c1ZGazBk";

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
    #[error("too many failed sign-ins from your address; try again in {0} s")]
    TooManyFromClient(u64),
    #[error("the server is busy checking other sign-ins; try again in {0} s")]
    Busy(u64),
}

/// Whose failures a sign-in counts against: a configured agent, or the bucket of an
/// unknown name (never the raw name, which the client chooses).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AttemptKey {
    Agent(String),
    Unknown(u16),
}

struct Attempts {
    by_agent: WindowCounts<AttemptKey>,
    by_client: WindowCounts<IpAddr>,
}

/// A sign-in attempt, counted before its password is checked so that a parallel burst
/// cannot check more guesses than the limit. Dropped unchecked (the server was busy, the
/// client went away) it is taken back.
pub struct Attempt {
    attempts: Arc<Mutex<Attempts>>,
    key: AttemptKey,
    client: Option<IpAddr>,
    at: Instant,
    settled: bool,
}

impl Attempt {
    /// A success clears the agent's failures and gives the client's attempt back; a failure
    /// stays counted.
    fn settle(mut self, succeeded: bool) {
        self.settled = true;
        if !succeeded {
            return;
        }
        if let Ok(mut a) = self.attempts.lock() {
            a.by_agent.forget(&self.key);
            if let Some(c) = &self.client {
                a.by_client.take_back(c, self.at);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Ok(mut a) = self.attempts.lock() {
            a.by_agent.take_back(&self.key, self.at);
            if let Some(c) = &self.client {
                a.by_client.take_back(c, self.at);
            }
        }
    }
}

/// The throttle's key for a client: IPv6 clients by their /64 (one host usually has the
/// whole prefix), IPv4-mapped addresses as IPv4.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub struct Sessions {
    secret: Vec<u8>,
    hours: u64,
    cookie_secure: CookieSecure,
    embedded: bool,
    attempts: Arc<Mutex<Attempts>>,
    /// Argon2 holds ~19 MiB for each check: only this many run at once.
    checks: Arc<Semaphore>,
    check_wait: Duration,
    password_checks: AtomicU64,
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
        let window = Duration::from_secs(panel.sign_in_window_secs.max(1));
        Self {
            secret: secret.as_bytes().to_vec(),
            hours: panel.session_hours,
            cookie_secure: panel.cookie_secure,
            embedded: !panel.embed_origins.is_empty(),
            attempts: Arc::new(Mutex::new(Attempts {
                by_agent: WindowCounts::new(panel.sign_in_failures_per_agent, window, AGENT_CAPACITY + usize::from(UNKNOWN_AGENT_BUCKETS)),
                by_client: WindowCounts::new(panel.sign_in_failures_per_client, window, CLIENT_CAPACITY),
            })),
            checks: Arc::new(Semaphore::new(panel.password_checks.max(1))),
            check_wait: Duration::from_millis(panel.password_check_wait_ms),
            password_checks: AtomicU64::new(0),
        }
    }

    fn mac(&self, parts: &[&str]) -> HmacSha256 {
        crate::secrets::mac(&self.secret, parts)
    }

    /// Counts a sign-in attempt against the agent (an unknown name against its bucket) and
    /// the client, before anything is checked; refused when either is at its limit.
    pub fn begin(&self, agent: Option<&AgentConfig>, agent_id: &str, client: Option<IpAddr>, now: Instant) -> Result<Attempt, SignInError> {
        let key = match agent {
            Some(a) => AttemptKey::Agent(a.id.clone()),
            None => AttemptKey::Unknown(self.unknown_bucket(agent_id)),
        };
        let client = client.map(client_key);
        let mut a = self.attempts.lock().map_err(|_| SignInError::Busy(1))?;
        if let Some(wait) = a.by_agent.wait(&key, now) {
            return Err(SignInError::TooManyAttempts(whole_seconds(wait).max(1)));
        }
        if let Some(c) = &client
            && let Some(wait) = a.by_client.wait(c, now)
        {
            return Err(SignInError::TooManyFromClient(whole_seconds(wait).max(1)));
        }
        a.by_agent.add(key.clone(), now);
        if let Some(c) = client {
            a.by_client.add(c, now);
        }
        Ok(Attempt { attempts: self.attempts.clone(), key, client, at: now, settled: false })
    }

    /// A place among the password checks allowed at once; `Busy` when none frees up soon.
    pub async fn password_check_permit(&self) -> Result<OwnedSemaphorePermit, SignInError> {
        match tokio::time::timeout(self.check_wait, self.checks.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(SignInError::Busy(1)),
        }
    }

    /// Checks the counted `attempt`'s password (or token) and returns a new session. Every
    /// call runs one Argon2 verification, known agent or not, and Argon2 is slow on purpose:
    /// call this off the async threads, holding a [`password_check_permit`](Self::password_check_permit).
    pub fn check(&self, attempt: Attempt, agent: Option<&AgentConfig>, password: &str, now_ms: i64) -> Result<Session, SignInError> {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cxbridge_panel_password_checks_total").increment(1);
        let own_hash = agent.and_then(|a| a.password_hash.as_deref());
        let hash_matches = verify_password(own_hash.unwrap_or(DUMMY_HASH), password);
        let by_password = own_hash.is_some() && hash_matches;
        let by_token = agent.and_then(|a| a.token.as_deref()).is_some_and(|t| same(t, password));
        let signed_in = agent.filter(|_| by_password | by_token);
        attempt.settle(signed_in.is_some());
        let agent = signed_in.ok_or(SignInError::BadCredentials)?;
        let nonce = crate::secrets::random_token();
        Ok(Session { agent: agent.id.clone(), issued: now_ms, expires: now_ms / 1000 + (self.hours * 3600) as i64, nonce })
    }

    /// [`begin`](Self::begin) and [`check`](Self::check) in one go, without waiting for a
    /// permit: for callers already off the async threads (and tests).
    pub fn sign_in(&self, agent: Option<&AgentConfig>, agent_id: &str, password: &str, client: Option<IpAddr>, now_ms: i64) -> Result<Session, SignInError> {
        let attempt = self.begin(agent, agent_id, client, Instant::now())?;
        self.check(attempt, agent, password, now_ms)
    }

    /// How many password checks (Argon2 verifications) ran since start.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    /// How many agents, unknown-name buckets and clients the sign-in limits track now.
    pub fn tracked_sign_in_keys(&self) -> usize {
        self.attempts.lock().map_or(0, |a| a.by_agent.len() + a.by_client.len())
    }

    fn unknown_bucket(&self, agent_id: &str) -> u16 {
        let tag = self.mac(&["unknown-agent", agent_id]).finalize().into_bytes();
        u16::from_be_bytes([tag[0], tag[1]]) % UNKNOWN_AGENT_BUCKETS
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

    pub fn csrf_ok(&self, s: &Session, headers: &HeaderMap) -> bool {
        headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).is_some_and(|t| same(t, &self.csrf(s)))
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        match self.cookie_secure {
            CookieSecure::Always => true,
            CookieSecure::Never => false,
            CookieSecure::Auto => self.embedded || !plain_http_to_loopback(headers),
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
        named("alice", password, token)
    }

    fn named(id: &str, password: Option<&str>, token: Option<&str>) -> AgentConfig {
        AgentConfig {
            id: id.into(),
            password_hash: password.map(|p| hash_password(p).expect("hash")),
            token: token.map(str::to_string),
            ..AgentConfig::default()
        }
    }

    fn sessions() -> Sessions {
        Sessions::new("test-secret", &PanelConfig::default())
    }

    const LIMIT: usize = 5;

    #[test]
    fn password_or_token_signs_in_and_nothing_else_does() {
        let s = sessions();
        let a = agent(Some("correct horse"), Some("tok-123"));
        assert!(s.sign_in(Some(&a), "alice", "correct horse", None, 0).is_ok());
        assert!(s.sign_in(Some(&a), "alice", "tok-123", None, 0).is_ok());
        for (who, pw) in [(Some(&a), "wrong"), (Some(&a), ""), (None, "correct horse")] {
            assert_eq!(s.sign_in(who, "alice", pw, None, 0), Err(SignInError::BadCredentials), "{pw:?}");
        }
    }

    #[test]
    fn repeated_failures_lock_the_agent_out_for_a_while() {
        let s = sessions();
        let a = agent(Some("pw"), None);
        for _ in 0..LIMIT {
            assert_eq!(s.sign_in(Some(&a), "alice", "guess", None, 0), Err(SignInError::BadCredentials));
        }
        assert!(matches!(s.sign_in(Some(&a), "alice", "pw", None, 0), Err(SignInError::TooManyAttempts(_))), "even the right password waits");
        assert!(s.sign_in(Some(&named("bob", Some("pw"), None)), "bob", "pw", None, 0).is_ok(), "other agents are not affected");
    }

    #[test]
    fn attempts_are_counted_before_the_check_so_no_more_than_the_limit_are_ever_in_flight() {
        let s = sessions();
        let a = agent(Some("pw"), None);
        let now = Instant::now();
        let in_flight: Vec<Attempt> = (0..LIMIT).map(|i| s.begin(Some(&a), "alice", None, now).unwrap_or_else(|e| panic!("attempt {i}: {e}"))).collect();
        assert!(matches!(s.begin(Some(&a), "alice", None, now), Err(SignInError::TooManyAttempts(_))), "the sixth waits although none was checked yet");
        drop(in_flight);
        assert!(s.begin(Some(&a), "alice", None, now).is_ok(), "attempts dropped unchecked (server busy) are taken back");
    }

    #[test]
    fn unknown_names_are_counted_in_a_few_buckets_and_locked_out_like_known_agents() {
        let s = sessions();
        let now = Instant::now();
        for i in 0..5_000 {
            if let Ok(a) = s.begin(None, &format!("mallory-{i}"), None, now) {
                a.settle(false);
            }
        }
        assert!(s.tracked_sign_in_keys() <= usize::from(UNKNOWN_AGENT_BUCKETS), "{} keys for 5,000 names", s.tracked_sign_in_keys());
        let fresh = sessions();
        for _ in 0..LIMIT {
            fresh.begin(None, "mallory", None, now).expect("counted").settle(false);
        }
        assert!(matches!(fresh.begin(None, "mallory", None, now), Err(SignInError::TooManyAttempts(_))), "same answer as a known agent's lockout");
    }

    #[test]
    fn one_client_is_throttled_across_agents() {
        let s = Sessions::new("k", &PanelConfig { sign_in_failures_per_client: 3, ..PanelConfig::default() });
        let (here, there): (IpAddr, IpAddr) = ("192.0.2.7".parse().expect("ip"), "198.51.100.1".parse().expect("ip"));
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            s.begin(Some(&named(id, None, None)), id, Some(here), now).expect("counted").settle(false);
        }
        assert!(matches!(s.begin(Some(&named("d", None, None)), "d", Some(here), now), Err(SignInError::TooManyFromClient(_))));
        assert!(s.begin(Some(&named("d", None, None)), "d", Some(there), now).is_ok(), "another client is not affected");
        let v6 = |a: &str| client_key(a.parse().expect("ipv6"));
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::2"), "one /64 is one client");
        assert_eq!(v6("::ffff:192.0.2.7"), here);
    }

    #[test]
    fn every_check_verifies_one_hash_even_for_unknown_and_token_only_agents() {
        let s = sessions();
        let token_only = agent(None, Some("tok"));
        assert_eq!(s.sign_in(None, "nobody", "x", None, 0), Err(SignInError::BadCredentials));
        assert!(s.sign_in(Some(&token_only), "alice", "tok", None, 0).is_ok());
        assert_eq!(s.password_checks(), 2);
        let dummy = PasswordHash::new(DUMMY_HASH).expect("the dummy hash parses");
        let real = hash_password("x").expect("hash");
        let real = PasswordHash::new(&real).expect("parses");
        assert_eq!((dummy.algorithm, &dummy.params, dummy.version), (real.algorithm, &real.params, real.version), "the dummy costs what a real hash costs");
        assert!(!verify_password(DUMMY_HASH, ""), "nobody signs in against the dummy hash");
    }

    #[test]
    fn cookies_verify_until_expiry_and_only_with_unchanged_credentials() {
        let s = sessions();
        let a = agent(None, Some("tok"));
        let session = s.sign_in(Some(&a), "alice", "tok", None, 1_000_000).expect("signed in");
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
