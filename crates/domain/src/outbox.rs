//! The outbox retry schedule: when to try a failed delivery again, and when to give up.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in milliseconds.
    pub initial_delay_ms: u64,
    /// Longest delay between two attempts, in seconds.
    pub max_delay_secs: u64,
    /// After this many failed attempts the item is dead (visible, replayable).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial_delay_ms: 1_000, max_delay_secs: 600, max_attempts: 12 }
    }
}

/// What to do with an item after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    Dead,
}

impl RetryPolicy {
    /// `attempts` counts the attempts made so far, including the one that just failed.
    /// `hint` is the CRM's own `Retry-After`, which wins when it asks for longer.
    /// `jitter` in `0.0..1.0` spreads retries of many items (pass a random number).
    pub fn after_failure(&self, attempts: u32, hint: Option<Duration>, jitter: f64) -> Next {
        if attempts >= self.max_attempts {
            return Next::Dead;
        }
        let exp = attempts.saturating_sub(1).min(30);
        let base = Duration::from_millis(self.initial_delay_ms).saturating_mul(1u32 << exp);
        let capped = base.min(Duration::from_secs(self.max_delay_secs));
        // Up to +25 % so that items failing together do not retry together.
        let spread = capped.mul_f64(1.0 + 0.25 * jitter.clamp(0.0, 1.0));
        Next::RetryIn(match hint {
            Some(h) if h > spread => h,
            _ => spread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempts: u32, hint: Option<u64>, expected: Option<u64>) {
        let p = RetryPolicy { initial_delay_ms: 1_000, max_delay_secs: 60, max_attempts: 5 };
        let got = match p.after_failure(attempts, hint.map(Duration::from_secs), 0.0) {
            Next::RetryIn(d) => Some(d.as_secs()),
            Next::Dead => None,
        };
        assert_eq!(got, expected, "attempts {attempts}, hint {hint:?}");
    }

    #[test]
    fn schedule() {
        check(1, None, Some(1));
        check(2, None, Some(2));
        check(3, None, Some(4));
        check(4, None, Some(8));
        check(5, None, None);
        check(9, None, None);
        check(1, Some(30), Some(30));
        check(3, Some(1), Some(4));
    }

    #[test]
    fn delay_is_capped_and_jitter_only_adds() {
        let p = RetryPolicy { initial_delay_ms: 1_000, max_delay_secs: 60, max_attempts: 100 };
        for attempts in 1..40 {
            let Next::RetryIn(d) = p.after_failure(attempts, None, 1.0) else { panic!("dead too early") };
            assert!(d <= Duration::from_secs(75), "{attempts}: {d:?}");
            let Next::RetryIn(low) = p.after_failure(attempts, None, 0.0) else { panic!("dead too early") };
            assert!(low <= d);
        }
    }
}
