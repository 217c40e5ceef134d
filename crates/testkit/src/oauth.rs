//! An OAuth 2.0 token endpoint for the client-credentials grant (RFC 6749 §4.4), answering
//! either like Microsoft Entra ID (`expires_in`) or like Salesforce (`instance_url`,
//! `issued_at`, no lifetime).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use serde_json::json;

/// How the endpoint shapes its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `{"token_type":"Bearer","expires_in":…,"ext_expires_in":…,"access_token":…}`
    Entra,
    /// `{"access_token":…,"instance_url":…,"id":…,"token_type":"Bearer","issued_at":…,"signature":…}`
    Salesforce,
}

#[derive(Clone)]
pub struct TokenServer {
    inner: Arc<Mutex<Tokens>>,
}

struct Tokens {
    flavor: Flavor,
    client_id: String,
    client_secret: String,
    /// The scope Entra requires, e.g. `https://org.crm.dynamics.com/.default`.
    scope: Option<String>,
    /// Where API calls go (Salesforce's `instance_url`); set once the API server is up.
    instance_url: String,
    lifetime_secs: u64,
    valid: HashSet<String>,
    issued: u64,
    refused: u64,
    /// Answer every token request with `307 Temporary Redirect` to this URL.
    redirect_to: Option<String>,
}

impl TokenServer {
    pub fn new(flavor: Flavor, client_id: &str, client_secret: &str, scope: Option<&str>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tokens {
                flavor,
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                scope: scope.map(str::to_string),
                instance_url: String::new(),
                lifetime_secs: 3599,
                valid: HashSet::new(),
                issued: 0,
                refused: 0,
                redirect_to: None,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, Tokens> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_instance_url(&self, url: &str) {
        self.state().instance_url = url.to_string();
    }

    /// Lifetime of tokens issued from now on (`expires_in`).
    pub fn set_lifetime(&self, secs: u64) {
        self.state().lifetime_secs = secs;
    }

    /// Every token issued so far stops working: the API answers 401 until a new one is fetched.
    pub fn expire_all(&self) {
        self.state().valid.clear();
    }

    /// From now on every token request is answered `307` to `url` (which a client that
    /// follows it reaches with the same form, client secret included).
    pub fn redirect_to(&self, url: &str) {
        self.state().redirect_to = Some(url.to_string());
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u64 {
        self.state().issued
    }

    /// Token requests refused (bad client, secret or scope).
    pub fn refused(&self) -> u64 {
        self.state().refused
    }

    /// Whether the request carries `Authorization: Bearer <a token this server issued>`.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
            return false;
        };
        self.state().valid.contains(token)
    }

    /// The router with `POST {path}`.
    pub fn router(&self, path: &str) -> Router {
        Router::new().route(path, post(issue)).with_state(self.clone())
    }
}

async fn issue(State(server): State<TokenServer>, Form(form): Form<BTreeMap<String, String>>) -> Response {
    let mut s = server.state();
    if let Some(to) = s.redirect_to.clone() {
        return (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, to)]).into_response();
    }
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials") {
        s.refused += 1;
        return oauth_error("unsupported_grant_type", "The grant type must be client_credentials.");
    }
    if get("client_id") != Some(s.client_id.as_str()) || get("client_secret") != Some(s.client_secret.as_str()) {
        s.refused += 1;
        return oauth_error("invalid_client", "Invalid client secret provided.");
    }
    if let Some(want) = s.scope.clone()
        && get("scope") != Some(want.as_str()) {
            s.refused += 1;
            return oauth_error("invalid_scope", &format!("The provided value for scope is not valid; expected {want}."));
        }
    let token = format!("tk-{}", uuid::Uuid::new_v4().simple());
    s.valid.insert(token.clone());
    s.issued += 1;
    let body = match s.flavor {
        Flavor::Entra => json!({
            "token_type": "Bearer",
            "expires_in": s.lifetime_secs,
            "ext_expires_in": s.lifetime_secs,
            "access_token": token,
        }),
        Flavor::Salesforce => json!({
            "access_token": token,
            "instance_url": s.instance_url,
            "id": format!("{}/id/00Dxx0000000001/005xx0000000001", s.instance_url),
            "token_type": "Bearer",
            "issued_at": jiff::Timestamp::now().as_millisecond().to_string(),
            "signature": "c2lnbmF0dXJl",
        }),
    };
    Json(body).into_response()
}

fn oauth_error(code: &str, description: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code, "error_description": description}))).into_response()
}
