//! Settings that take one of a few words. Each is an enum read from its text, and a word it
//! does not know is refused where the file says it, with the words it takes.

/// An enum of settings words: `$name` for `$setting` (named in the refusal), each variant
/// spelled `$word` in the file.
macro_rules! setting {
    ($(#[$meta:meta])* $name:ident, $setting:literal, { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every word the setting takes, in the order the docs give them.
            pub const WORDS: &[&str] = &[$($word),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(word: String) -> Result<Self, String> {
                match word.as_str() {
                    $($word => Ok(Self::$variant),)+
                    _ => Err(format!("{} must be one of {}, not `{word}`", $setting, Self::WORDS.join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

setting!(
    /// `[server] durability`: whether each commit waits for the disk.
    Durability, "[server] durability", {
        /// Every acknowledged event is on disk (fsync per commit).
        Full = "full",
        /// Commits reach the OS; a power cut may lose the last ones.
        Normal = "normal",
    }
);

setting!(
    /// `[server] log_format`.
    LogFormat, "[server] log_format", {
        Text = "text",
        Json = "json",
    }
);

setting!(
    /// `[panel] cookie_secure`: when the session cookie carries `Secure`.
    CookieSecure, "[panel] cookie_secure", {
        /// Except over plain http to a loopback host (where browsers may refuse it).
        Auto = "auto",
        Always = "always",
        Never = "never",
    }
);

setting!(
    /// `[[workflows]] action`.
    WorkflowAction, "[[workflows]] action", {
        Search = "search",
        Create = "create",
        Update = "update",
        Timeline = "timeline",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_and_unknown_ones_are_refused_with_the_choices() {
        for word in Durability::WORDS {
            assert_eq!(Durability::try_from(word.to_string()).map(Durability::as_str), Ok(*word));
        }
        for (result, want) in [
            (Durability::try_from("maybe".to_string()).err(), "[server] durability must be one of full, normal, not `maybe`"),
            (CookieSecure::try_from("Auto".to_string()).err(), "[panel] cookie_secure must be one of auto, always, never, not `Auto`"),
            (WorkflowAction::try_from("delete".to_string()).err(), "[[workflows]] action must be one of search, create, update, timeline, not `delete`"),
        ] {
            assert_eq!(result.as_deref(), Some(want));
        }
    }
}
