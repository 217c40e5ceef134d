//! The hub's secrets (tokens, the session secret, the bus secret): read from the environment
//! or the configuration, else generated once into the data directory (mode 0600); compared in
//! constant time.

use std::path::Path;

use anyhow::Context as _;
use subtle::ConstantTimeEq;

use crate::config;

/// HMAC-SHA256 under `secret` over `parts`, each closed by a unit separator so that
/// `("ab", "c")` and `("a", "bc")` sign differently.
pub fn mac(secret: &[u8], parts: &[&str]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <hmac::Hmac<sha2::Sha256>>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(b"\x1f");
    }
    mac
}

/// Whether two tokens are equal, in time that depends on neither: their SHA-256 digests
/// (always 32 bytes) are compared in constant time. Comparing the tokens themselves returned
/// at once on a length mismatch, which told a caller the configured token's length.
pub fn same(a: &str, b: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
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

/// A secret from the environment, else the configuration, else [`generated`].
pub fn secret(env: &str, configured: Option<&String>, setting: &str, data: &Path, file: &str, clustered: bool) -> anyhow::Result<String> {
    match std::env::var(env) {
        Ok(t) if !t.is_empty() => {
            config::check_secret(env, &t).map_err(anyhow::Error::msg)?;
            Ok(t)
        }
        _ => match configured {
            Some(t) => Ok(t.clone()),
            None => generated(env, setting, data, file, clustered),
        },
    }
}

/// A secret generated once into `data/file` (mode 0600). Nodes of a cluster must agree on
/// every secret, so there a generated one (which would differ per node) is refused with what
/// to set instead.
pub fn generated(env: &str, setting: &str, data: &Path, file: &str, clustered: bool) -> anyhow::Result<String> {
    if clustered {
        anyhow::bail!("several nodes ([bus] url is set) must share their secrets: set {env} (or {setting}) to the same value on every node");
    }
    stored_token(data, file).with_context(|| format!("cannot store the generated {file} in {}", data.display()))
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
}
