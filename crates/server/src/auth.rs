//! Tokens: the admin/native API bearer tokens, the CTI path token, agent stream tokens.
//! Compared in constant time; generated into the data directory when not configured.

use std::collections::HashMap;
use std::path::Path;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct Tokens {
    pub admin: Vec<String>,
    pub cti: String,
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
