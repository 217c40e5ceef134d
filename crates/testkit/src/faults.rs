//! Failure injection shared by the test servers: what the next requests suffer.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;

/// Cloneable handle; every clone steers the same server.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    throttle_next: u32,
    throttle_retry_after_secs: u64,
    unavailable_next: u32,
    fail_ratio: f64,
    lose_answer_ratio: f64,
    down_until: Option<Instant>,
    delay: Duration,
    injected: u64,
}

/// What a handler should do before serving a request.
pub enum Verdict {
    Serve,
    /// Answer with this response instead (already shaped like the vendor's error).
    Fail(Response),
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` requests get `429 Too Many Requests` with `Retry-After: secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        let mut s = self.state();
        s.throttle_next = n;
        s.throttle_retry_after_secs = retry_after_secs;
    }

    /// The next `n` requests get `503 Service Unavailable`.
    pub fn unavailable_next(&self, n: u32) {
        self.state().unavailable_next = n;
    }

    /// Every request fails with 503 with this probability (0.0 – 1.0).
    pub fn fail_ratio(&self, ratio: f64) {
        self.state().fail_ratio = ratio.clamp(0.0, 1.0);
    }

    /// A write is carried out, but its answer is lost (503) with this probability: the case
    /// that tests a client's idempotency. Handlers ask [`Faults::answer_lost`] after writing.
    pub fn lose_answer_ratio(&self, ratio: f64) {
        self.state().lose_answer_ratio = ratio.clamp(0.0, 1.0);
    }

    /// After a write was applied: whether to drop its answer (and send 503 instead).
    pub fn answer_lost(&self) -> Option<Response> {
        let mut s = self.state();
        if s.lose_answer_ratio > 0.0 && rand::rng().random_bool(s.lose_answer_ratio) {
            s.injected += 1;
            return Some(unavailable());
        }
        None
    }

    /// Every request fails with 503 for `d` from now: an outage.
    pub fn down_for(&self, d: Duration) {
        self.state().down_until = Some(Instant::now() + d);
    }

    /// Every request is answered only after `d` (to trigger client timeouts).
    pub fn delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Back to normal service.
    pub fn clear(&self) {
        let mut s = self.state();
        *s = State { injected: s.injected, ..State::default() };
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// Decides the fate of one request; sleeps first if a delay is set.
    pub async fn check(&self) -> Verdict {
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.state();
        let verdict = if s.throttle_next > 0 {
            s.throttle_next -= 1;
            let mut r = (StatusCode::TOO_MANY_REQUESTS, "{\"error\":{\"code\":\"0x80072322\",\"message\":\"Number of requests exceeded the limit of 6000 over time window of 300 seconds.\"}}").into_response();
            if let Ok(v) = HeaderValue::from_str(&s.throttle_retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Verdict::Fail(r)
        } else if s.unavailable_next > 0 {
            s.unavailable_next -= 1;
            Verdict::Fail(unavailable())
        } else if s.down_until.is_some_and(|t| Instant::now() < t) || (s.fail_ratio > 0.0 && rand::rng().random_bool(s.fail_ratio)) {
            Verdict::Fail(unavailable())
        } else {
            Verdict::Serve
        };
        if matches!(verdict, Verdict::Fail(_)) {
            s.injected += 1;
        }
        verdict
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":{\"code\":\"0x80040216\",\"message\":\"The service is temporarily unavailable.\"}}").into_response()
}
