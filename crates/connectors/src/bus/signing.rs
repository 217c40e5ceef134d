//! Authenticity: the headers every bus message carries and their HMAC-SHA256 under the
//! cluster's shared secret, checked with the message's age.

use std::time::Duration;

use async_nats::HeaderMap;

use crate::client::oauth::Secret;

/// Header naming the agent a frame is for.
pub const HEADER_AGENT: &str = "Cxbridge-Agent";
/// Header naming the node that published a frame (its own consumer skips it).
pub const HEADER_ORIGIN: &str = "Cxbridge-Origin";
/// Header with the publisher's clock (unix milliseconds) when it signed the message.
pub const HEADER_SENT: &str = "Cxbridge-Sent";
/// Header with the message's HMAC-SHA256 (lowercase hex) under the shared secret.
pub const HEADER_MAC: &str = "Cxbridge-Mac";
/// How far another node's clock may be ahead of ours before its messages count as forged.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// What a signed message is, so a MAC for one kind cannot pass for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Frame,
    Presence,
    Hello,
}

impl MessageKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            MessageKind::Frame => "frame",
            MessageKind::Presence => "presence",
            MessageKind::Hello => "hello",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Rejected {
    #[error("it has no {HEADER_MAC} or {HEADER_SENT} header (published by something that is not a cxbridge node of this cluster?)")]
    Unsigned,
    #[error("its MAC does not match: it was changed, or signed with another [bus] secret")]
    BadMac,
    #[error("it is too old or from the future (replayed, or the nodes' clocks differ by more than {} s)", CLOCK_SKEW.as_secs())]
    Stale,
}

/// HMAC-SHA256 signatures under the cluster's shared secret.
pub(super) struct Signer {
    key: Vec<u8>,
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Signer {
    pub(super) fn new(secret: &Secret) -> Self {
        Self { key: secret.expose().as_bytes().to_vec() }
    }

    fn mac(&self, kind: MessageKind, origin: &str, agent: &str, sent_ms: u64, body: &[u8]) -> HmacSha256 {
        use hmac::{KeyInit, Mac as _};
        // HMAC accepts keys of any length, so this never falls back.
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        // Origin and agent never hold control characters, so NUL separates the fields
        // unambiguously; the body comes last and is taken whole.
        for part in ["cxbridge-bus-1", kind.as_str(), origin, agent, &sent_ms.to_string()] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.update(body);
        mac
    }

    /// The `Cxbridge-Sent` and `Cxbridge-Mac` headers for a message.
    pub(super) fn sign(&self, headers: &mut HeaderMap, kind: MessageKind, origin: &str, agent: &str, body: &[u8]) {
        use hmac::Mac as _;
        let sent_ms = now_ms();
        let tag = self.mac(kind, origin, agent, sent_ms, body).finalize().into_bytes();
        headers.insert(HEADER_SENT, sent_ms.to_string().as_str());
        headers.insert(HEADER_MAC, hex(&tag).as_str());
    }

    /// Checks a message's MAC and that it was signed within `max_age` (plus clock skew).
    pub(super) fn verify(&self, headers: Option<&HeaderMap>, kind: MessageKind, origin: &str, agent: &str, body: &[u8], max_age: Duration) -> Result<(), Rejected> {
        use hmac::Mac as _;
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
        let (Some(sent), Some(tag)) = (header(HEADER_SENT), header(HEADER_MAC)) else { return Err(Rejected::Unsigned) };
        let sent_ms: u64 = sent.parse().map_err(|_| Rejected::Unsigned)?;
        let tag = unhex(&tag).ok_or(Rejected::BadMac)?;
        self.mac(kind, origin, agent, sent_ms, body).verify_slice(&tag).map_err(|_| Rejected::BadMac)?;
        let now = now_ms();
        let skew = u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        let oldest = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX).saturating_add(skew));
        if sent_ms < oldest || sent_ms > now.saturating_add(skew) {
            return Err(Rejected::Stale);
        }
        Ok(())
    }
}

/// The `Cxbridge-Sent` and `Cxbridge-Mac` headers a node adds to a message, for tools and
/// other implementations that speak the bus. Frames are signed with their origin and agent;
/// presence and hello messages with both empty.
pub fn sign_message(secret: &Secret, kind: MessageKind, origin: &str, agent: &str, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    Signer::new(secret).sign(&mut headers, kind, origin, agent, body);
    headers
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok())).collect()
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_signed_with_the_secret_lately_pass() {
        let signer = Signer::new(&Secret::new("the-cluster-secret-0123"));
        let other = Signer::new(&Secret::new("another-cluster-secret"));
        let age = Duration::from_secs(300);
        let mut headers = HeaderMap::new();
        signer.sign(&mut headers, MessageKind::Frame, "a", "alice", b"{}");
        assert_eq!(signer.verify(Some(&headers), MessageKind::Frame, "a", "alice", b"{}", age), Ok(()));
        for (origin, agent, body, kind) in [("b", "alice", &b"{}"[..], MessageKind::Frame), ("a", "bob", b"{}", MessageKind::Frame), ("a", "alice", b"{ }", MessageKind::Frame), ("a", "alice", b"{}", MessageKind::Presence)] {
            assert_eq!(signer.verify(Some(&headers), kind, origin, agent, body, age), Err(Rejected::BadMac), "{origin} {agent} {kind:?}");
        }
        assert_eq!(other.verify(Some(&headers), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::BadMac));
        assert_eq!(signer.verify(None, MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::Unsigned));
        let mut garbled = HeaderMap::new();
        garbled.insert(HEADER_SENT, "1");
        garbled.insert(HEADER_MAC, "zz");
        assert_eq!(signer.verify(Some(&garbled), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::BadMac));
        // A genuine message replayed long after it was signed.
        use hmac::Mac as _;
        let old = now_ms() - 3_600_000;
        let tag = signer.mac(MessageKind::Frame, "a", "alice", old, b"{}").finalize().into_bytes();
        let mut replay = HeaderMap::new();
        replay.insert(HEADER_SENT, old.to_string().as_str());
        replay.insert(HEADER_MAC, hex(&tag).as_str());
        assert_eq!(signer.verify(Some(&replay), MessageKind::Frame, "a", "alice", b"{}", age), Err(Rejected::Stale));
        assert_eq!(signer.verify(Some(&replay), MessageKind::Frame, "a", "alice", b"{}", Duration::from_secs(7200)), Ok(()));
    }
}
