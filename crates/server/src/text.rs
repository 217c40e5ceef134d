//! Text a client chose, made fit for a log line or an error message.

/// `text` cut to at most `max_bytes` (at a char boundary, with `…` when cut), for log
/// fields whose value the client chose: a long name must not become a long log line.
pub fn clip_for_log(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return text.into();
    }
    let kept: String = text
        .chars()
        .scan(0, |used, c| {
            *used += c.len_utf8();
            (*used <= max_bytes).then_some(c)
        })
        .collect();
    format!("{kept}… ({} bytes)", text.len()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_are_clipped_at_a_char_boundary() {
        for (text, max, want) in [
            ("alice", 64, "alice"),
            ("abcdef", 3, "abc… (6 bytes)"),
            ("ééé", 3, "é… (6 bytes)"),
            ("\u{a0}x", 1, "… (3 bytes)"),
            ("日本語", 7, "日本… (9 bytes)"),
        ] {
            assert_eq!(clip_for_log(text, max), want, "{text:?} at {max}");
        }
        assert!(clip_for_log(&"x".repeat(2_000_000), 64).len() < 100);
    }
}
