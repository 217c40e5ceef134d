//! Record grants: a token that lets the agents of one conversation link one record to it —
//! handed out with the records a workflow found or created, or a pop opened, for that
//! conversation, and checked when the panel links them. HMAC-SHA256 under the session secret,
//! so a grant holds on every node that shares it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::Mac as _;

pub struct Grants {
    secret: Vec<u8>,
}

impl Grants {
    pub fn new(secret: &str) -> Self {
        Self { secret: secret.as_bytes().to_vec() }
    }

    /// The grant for `entity/id` in `conversation`.
    pub fn grant(&self, conversation: &str, entity: &str, id: &str) -> String {
        let mac = crate::secrets::mac(&self.secret, &["grant", conversation, entity, id]);
        B64.encode(&mac.finalize().into_bytes()[..18])
    }

    pub fn ok(&self, grant: &str, conversation: &str, entity: &str, id: &str) -> bool {
        crate::secrets::same(grant, &self.grant(conversation, entity, id))
    }
}
