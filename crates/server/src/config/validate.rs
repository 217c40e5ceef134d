//! What the configuration file must satisfy beyond its types: names unique, references
//! resolved, secrets long enough, origins well formed, several nodes configured alike.

use cxbridge_connectors::sinks::crm::Provider;

use super::*;

/// The longest agent id a sign-in may name (and the configuration may declare). Longer
/// names are refused before anything is counted, hashed or logged.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Checks that `hash` is a PHC string Argon2 can verify against.
pub fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| e.to_string())?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!("algorithm `{}` is not argon2", parsed.algorithm));
    }
    Ok(())
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), String> {
        self.memorialization.validate().map_err(|e| format!("[memorialization] {e}"))?;
        for t in &self.auth.admin_tokens {
            check_secret("[auth] admin_tokens: a token", t)?;
        }
        for (setting, value) in [("[auth] cti_token", &self.auth.cti_token), ("[ivr] token", &self.ivr.token), ("[panel] session_secret", &self.panel.session_secret)] {
            if let Some(v) = value {
                check_secret(setting, v)?;
            }
        }
        let sv = &self.server;
        if sv.max_connections == 0 || sv.header_timeout_secs == 0 || sv.request_timeout_secs == 0 {
            return Err("[server] max_connections, header_timeout_secs and request_timeout_secs must be at least 1".into());
        }
        let section = match self.crm.provider {
            Provider::Dataverse => Some(self.crm.dataverse.is_some()),
            Provider::Salesforce => Some(self.crm.salesforce.is_some()),
            Provider::Tryton => Some(self.crm.tryton.is_some()),
            Provider::Builtin => None,
        };
        if section == Some(false) {
            let p = &self.crm.provider;
            return Err(format!("[crm] provider = \"{p}\" needs a [crm.{p}] section; see docs/crm/{p}.md"));
        }
        let entities = self.entities();
        self.crm.unmatched_policy(&entities)?;
        let mut names = std::collections::HashSet::new();
        for w in &self.workflows {
            if !names.insert(&w.name) {
                return Err(format!("[[workflows]]: workflow `{}` is declared twice", w.name));
            }
            if !entities.iter().any(|e| e.name == w.entity) {
                return Err(format!("[[workflows]] `{}`: entity `{}` is not a CRM entity", w.name, w.entity));
            }
        }
        for (i, rule) in self.pop_rules.iter().enumerate() {
            if let Some(rel) = &rule.related
                && !entities.iter().any(|e| e.relation(rel).is_some()) {
                    return Err(format!("[[pop_rules]] #{}: no entity has a relation named `{rel}`", i + 1));
                }
            if !entities.iter().any(|e| e.name == rule.create_entity) {
                return Err(format!("[[pop_rules]] #{}: create_entity `{}` is not a CRM entity", i + 1, rule.create_entity));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.agents {
            if a.id.trim().is_empty() {
                return Err("[[agents]]: every agent needs an `id`".into());
            }
            if a.id.len() > MAX_AGENT_ID_BYTES || a.id.chars().any(char::is_control) || a.id.trim() != a.id {
                return Err(format!(
                    "[[agents]]: agent id `{}` must be at most {} bytes, without control characters or surrounding spaces",
                    crate::text::clip_for_log(&a.id, 64),
                    MAX_AGENT_ID_BYTES
                ));
            }
            if !seen.insert(&a.id) {
                return Err(format!("[[agents]]: agent `{}` is declared twice", a.id));
            }
            if let Some(h) = &a.password_hash {
                check_password_hash(h)
                    .map_err(|e| format!("[[agents]] `{}`: password_hash is not an Argon2 PHC string ({e}); make one with `cxbridge hash-password`", a.id))?;
            }
        }
        self.validate_panel()?;
        self.validate_scale_out()?;
        let v = &self.ivr.verify;
        if v.max_attempts_per_number == 0 || v.max_attempts_per_record == 0 || v.max_attempts_per_minute == 0 || v.window_secs == 0 {
            return Err("[ivr.verify] max_attempts_per_number, max_attempts_per_record, max_attempts_per_minute and window_secs must be at least 1".into());
        }
        if let Some(e) = &self.ivr.create_unknown
            && !entities.iter().any(|x| &x.name == e)
        {
            return Err(format!("[ivr] create_unknown: `{e}` is not a CRM entity"));
        }
        let mut rule_names = std::collections::HashSet::new();
        for r in &self.ivr.rules {
            r.validate().map_err(|e| format!("[[ivr.rules]] {e}"))?;
            if !rule_names.insert(&r.name) {
                return Err(format!("[[ivr.rules]]: rule `{}` is declared twice", r.name));
            }
        }
        let mut codes = std::collections::HashSet::new();
        for c in &self.wrapup_codes {
            if c.code.trim().is_empty() {
                return Err("[[wrapup_codes]]: every code needs a non-empty `code`".into());
            }
            if !codes.insert(&c.code) {
                return Err(format!("[[wrapup_codes]]: code `{}` is declared twice", c.code));
            }
        }
        for e in &entities {
            for r in &e.relations {
                if !entities.iter().any(|x| x.name == r.entity) {
                    return Err(format!("[[crm.entities]] `{}`: relation `{}` names unknown entity `{}`", e.name, r.name, r.entity));
                }
            }
        }
        Ok(())
    }

    /// The database URL, node id and bus settings; `build` runs it again after the command
    /// line and environment have overridden the file.
    pub fn validate_scale_out(&self) -> Result<(), String> {
        if let Some(url) = &self.server.database_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err("[server] database_url must start with postgres://, postgresql:// or sqlite: (leave it unset for DATA_DIR/cxbridge.sqlite)".into());
        }
        if self.server.database_pool == 0 {
            return Err("[server] database_pool must be at least 1".into());
        }
        if let Some(id) = &self.server.node_id
            && (id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!("[server] node_id `{id}`: use 1 to 64 letters, digits, `-` or `_`"));
        }
        let b = &self.bus;
        if b.url().is_some() {
            if self.server.database_kind() != DatabaseKind::Postgres {
                return Err("[bus] joins nodes that share one PostgreSQL database: set [server] database_url = \"postgres://…\" (or CXBRIDGE_DATABASE_URL) on every node".into());
            }
            let name_ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok(&b.stream) {
                return Err(format!("[bus] stream `{}`: use letters, digits, `-` or `_`", b.stream));
            }
            if !name_ok(&b.subject_prefix) {
                return Err(format!("[bus] subject_prefix `{}`: use letters, digits, `-` or `_`", b.subject_prefix));
            }
            if b.presence_ttl_secs == 0 || b.max_age_secs == 0 {
                return Err("[bus] presence_ttl_secs and max_age_secs must be at least 1".into());
            }
            if let Some(secret) = &b.secret {
                check_secret("[bus] secret", secret)?;
            }
            if b.user.is_some() && b.token.is_some() {
                return Err("[bus] user and token: give one way to sign in to NATS, not both".into());
            }
            if b.password.is_some() && b.user.is_none() {
                return Err("[bus] password needs a user".into());
            }
            if b.tls_cert_file.is_some() != b.tls_key_file.is_some() {
                return Err("[bus] tls_cert_file and tls_key_file go together".into());
            }
        }
        Ok(())
    }

    fn validate_panel(&self) -> Result<(), String> {
        let p = &self.panel;
        if !(1..=168).contains(&p.session_hours) {
            return Err(format!("[panel] session_hours must be 1 to 168, not {}", p.session_hours));
        }
        if p.recent_after_secs > 86_400 {
            return Err(format!("[panel] recent_after_secs must be 0 (never by itself) to 86400 (a day), not {}", p.recent_after_secs));
        }
        for (key, value) in [
            ("sign_in_failures_per_agent", p.sign_in_failures_per_agent),
            ("sign_in_failures_per_client", p.sign_in_failures_per_client),
            ("sign_in_window_secs", usize::try_from(p.sign_in_window_secs).unwrap_or(usize::MAX)),
            ("password_checks", p.password_checks),
            ("streams_per_agent", p.streams_per_agent),
            ("stream_queue_frames", p.stream_queue_frames),
        ] {
            if value == 0 {
                return Err(format!("[panel] {key} must be at least 1"));
            }
        }
        for o in &p.embed_origins {
            if !is_origin(o) {
                return Err(format!("[panel] embed_origins: `{o}` is not an origin like `https://contoso.crm4.dynamics.com` (scheme and host, no path)"));
            }
        }
        if let Some(d) = &p.dynamics {
            for (key, url) in [("cif_library_url", &d.cif_library_url), ("crm_url", &d.crm_url)] {
                if origin_of(url).is_none() {
                    return Err(format!("[panel.dynamics] {key} must be an http(s) URL, not `{url}`"));
                }
            }
            if csp_source(&d.cif_library_url).is_none() {
                return Err(format!("[panel.dynamics] cif_library_url `{}` holds a space, `;`, `,` or `'`: give the library's plain URL", d.cif_library_url));
            }
            if d.cif_version.is_some_and(|v| !(1..=2).contains(&v)) {
                return Err("[panel.dynamics] cif_version must be 1 or 2".into());
            }
        }
        Ok(())
    }
}

/// The shortest token or secret accepted. The CTI and IVR tokens travel in URLs and the
/// admin tokens are bearer tokens: none of them has a lockout, so they must not be guessable.
pub const MIN_SECRET_CHARS: usize = 16;

/// Refuses an empty or short token/secret, naming the setting.
pub fn check_secret(setting: &str, value: &str) -> Result<(), String> {
    let chars = value.trim().chars().count();
    if chars < MIN_SECRET_CHARS {
        return Err(format!(
            "{setting} is {chars} characters long; use at least {MIN_SECRET_CHARS} (e.g. the output of `openssl rand -hex 24`), or leave it unset to have one generated"
        ));
    }
    Ok(())
}

/// `scheme://host[:port]` of an http(s) URL.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && !host.contains(['@', ' '])).then(|| format!("{scheme}://{host}"))
}

/// A CSP source expression for exactly the file at `url` (scheme, host and path; a query or
/// fragment is not part of a source expression). `None` when the URL holds characters that
/// would end the expression or the directive.
pub fn csp_source(url: &str) -> Option<String> {
    origin_of(url)?;
    let file = url.split(['?', '#']).next()?;
    (!file.contains(|c: char| c.is_whitespace() || c == ';' || c == ',' || c == '\'' || c.is_control())).then(|| file.to_string())
}

fn is_origin(s: &str) -> bool {
    origin_of(s).is_some_and(|o| o == s.trim_end_matches('/'))
}
