//! Where and as whom a node joins the bus (server, node id, names, secret, NATS credentials
//! and TLS), how that is checked, and why the bus can fail.

use std::time::Duration;

use crate::client::oauth::Secret;

/// The JetStream stream's default name.
pub const DEFAULT_STREAM: &str = "CXBRIDGE_AGENTS";
/// The default first token(s) of every subject the bus uses.
pub const DEFAULT_SUBJECT_PREFIX: &str = "cxbridge";

/// The shortest shared secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// Limits on the TTL other nodes announce, so a broken peer cannot stay forever or flap.
pub(super) const MIN_PEER_TTL: Duration = Duration::from_millis(100);
pub(super) const MAX_PEER_TTL: Duration = Duration::from_secs(3600);

/// Where and as whom a node joins the bus.
#[derive(Debug, Clone)]
pub struct NatsBusConfig {
    /// `nats://host:port`; several servers of one cluster separated by commas.
    pub url: String,
    /// Unique per node: letters, digits, `_` and `-`. Names this node's consumer.
    pub node_id: String,
    /// JetStream stream name (default [`DEFAULT_STREAM`]).
    pub stream: String,
    /// First token(s) of the subjects (default [`DEFAULT_SUBJECT_PREFIX`]).
    pub subject_prefix: String,
    /// How long frames stay in the stream (default 5 min): what a node that lost its
    /// connection can still catch up on.
    pub max_age: Duration,
    /// A node not heard for this long has no agents (default 15 s).
    pub presence_ttl: Duration,
    /// The secret every node of the cluster shares: messages are signed with it and
    /// anything not signed with it is dropped. At least [`MIN_SECRET_CHARS`] characters.
    pub secret: Secret,
    /// How this node proves itself to the NATS server.
    pub auth: NatsAuth,
    /// TLS to the NATS server.
    pub tls: NatsTls,
}

/// Credentials for the NATS server (its `authorization` block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// The server lets anyone in: only on a network nobody else reaches.
    #[default]
    None,
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// TLS settings for the connection to NATS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse to talk to a server that does not offer TLS (also implied by `tls://` URLs).
    pub required: bool,
    /// PEM file of the CA that signed the server's certificate (else the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM certificate and key this node presents when the server verifies clients.
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsBusConfig {
    /// The defaults for everything but the server and the node id.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: node_id.into(),
            stream: DEFAULT_STREAM.to_string(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_string(),
            max_age: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(15),
            secret: Secret::default(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
        }
    }

    pub(super) fn validate(&self) -> Result<Vec<String>, BusError> {
        let urls: Vec<String> = self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
        if urls.is_empty() {
            return Err(BusError::Config("url is empty: give nats://host:port".into()));
        }
        check_name("node_id", &self.node_id)?;
        check_name("stream", &self.stream)?;
        if self.subject_prefix.split('.').any(|token| !is_name(token)) {
            return Err(BusError::Config(format!(
                "subject_prefix `{}` must be dot-separated tokens of letters, digits, `_` and `-`",
                self.subject_prefix
            )));
        }
        if self.max_age < Duration::from_secs(1) {
            return Err(BusError::Config("max_age must be at least 1 s".into()));
        }
        if self.presence_ttl < MIN_PEER_TTL {
            return Err(BusError::Config(format!("presence_ttl must be at least {} ms", MIN_PEER_TTL.as_millis())));
        }
        if self.secret.expose().trim().chars().count() < MIN_SECRET_CHARS {
            return Err(BusError::Config(format!(
                "secret must be at least {MIN_SECRET_CHARS} characters, the same on every node ([bus] secret or CXBRIDGE_BUS_SECRET)"
            )));
        }
        Ok(urls)
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_name(field: &str, value: &str) -> Result<(), BusError> {
    if is_name(value) {
        Ok(())
    } else {
        Err(BusError::Config(format!("{field} `{value}` must be 1 to 64 letters, digits, `_` or `-`")))
    }
}

/// Why the bus could not start or take a frame.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid bus configuration: {0}")]
    Config(String),
    #[error("cannot reach NATS at {url}: {detail}. Is nats-server running (with -js) and reachable from this node?")]
    Unreachable { url: String, detail: String },
    #[error("JetStream is not enabled on the NATS server at {url}: start nats-server with -js (or a `jetstream {{}}` block in its config)")]
    JetStreamDisabled { url: String },
    #[error(
        "cannot create or update the JetStream stream `{stream}` on {url}: {detail}. If another stream already takes subject `{subject}`, choose another subject_prefix"
    )]
    Stream { stream: String, subject: String, url: String, detail: String },
    #[error("cannot create consumer `{consumer}` on JetStream stream `{stream}`: {detail}")]
    Consumer { stream: String, consumer: String, detail: String },
    #[error("cannot subscribe to `{subject}` on NATS: {detail}")]
    Subscribe { subject: String, detail: String },
    #[error("agent id {0:?} cannot be sent over the bus: it must be non-empty, at most 1024 bytes, without control characters")]
    InvalidAgent(String),
    #[error("the bus's publish queue is full ({0} frames waiting for NATS): the frame was dropped; is NATS reachable?")]
    Backlog(usize),
    #[error("the bus is closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked() {
        let ok = NatsBusConfig { secret: Secret::new("0123456789abcdef"), ..NatsBusConfig::new("nats://a:4222, nats://b:4222", "node-1") };
        assert_eq!(ok.validate().expect("valid"), vec!["nats://a:4222".to_string(), "nats://b:4222".to_string()]);
        for (change, word) in [
            (Box::new(|c: &mut NatsBusConfig| c.node_id = "a.b".into()) as Box<dyn Fn(&mut NatsBusConfig)>, "node_id"),
            (Box::new(|c: &mut NatsBusConfig| c.node_id = String::new()), "node_id"),
            (Box::new(|c: &mut NatsBusConfig| c.stream = "S*".into()), "stream"),
            (Box::new(|c: &mut NatsBusConfig| c.subject_prefix = "a..b".into()), "subject_prefix"),
            (Box::new(|c: &mut NatsBusConfig| c.subject_prefix = "a.>".into()), "subject_prefix"),
            (Box::new(|c: &mut NatsBusConfig| c.url = " , ".into()), "url"),
            (Box::new(|c: &mut NatsBusConfig| c.presence_ttl = Duration::from_millis(10)), "presence_ttl"),
        ] {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().expect_err("invalid");
            assert!(e.to_string().contains(word), "{e}");
        }
        assert!(NatsBusConfig { subject_prefix: "acme.cx".into(), ..ok.clone() }.validate().is_ok());
        let e = NatsBusConfig { secret: Secret::new("short"), ..ok }.validate().expect_err("short secret");
        assert!(e.to_string().contains("CXBRIDGE_BUS_SECRET"), "{e}");
    }
}
