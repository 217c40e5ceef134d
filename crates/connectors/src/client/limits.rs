//! Client-side limits per CRM connection, so the hub stays inside the CRM's published
//! service-protection limits instead of learning them from 429s: a sliding window of
//! requests (Dataverse: 6,000 per 5 minutes per user), a ceiling on requests in flight
//! (Dataverse: 52), and a pause for everyone when the CRM asks for one (`Retry-After`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub requests_per_window: u32,
    pub window: Duration,
    pub max_in_flight: u32,
}

pub struct RateLimiter {
    limits: Limits,
    in_flight: Arc<Semaphore>,
    state: Mutex<Window>,
}

struct Window {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

/// Held while a request is in flight.
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

impl RateLimiter {
    pub fn new(limits: Limits) -> Self {
        let limits = Limits {
            requests_per_window: limits.requests_per_window.max(1),
            max_in_flight: limits.max_in_flight.max(1),
            window: limits.window,
        };
        Self {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight as usize)),
            state: Mutex::new(Window { sent: VecDeque::new(), paused_until: None }),
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Waits until `cost` more requests fit in the window (a `$batch` of 100 costs 100)
    /// and a slot in flight is free.
    pub async fn acquire(&self, cost: u32) -> Permit {
        let cost = cost.clamp(1, self.limits.requests_per_window);
        loop {
            let wait = {
                let mut w = self.state.lock().await;
                let now = Instant::now();
                while w.sent.front().is_some_and(|t| now.duration_since(*t) >= self.limits.window) {
                    w.sent.pop_front();
                }
                match w.paused_until {
                    Some(until) if until > now => until - now,
                    _ if w.sent.len() + cost as usize <= self.limits.requests_per_window as usize => {
                        w.sent.extend(std::iter::repeat_n(now, cost as usize));
                        break;
                    }
                    // Wait until enough of the oldest requests leave the window.
                    _ => {
                        let need = (w.sent.len() + cost as usize).saturating_sub(self.limits.requests_per_window as usize);
                        let oldest = w.sent.get(need.saturating_sub(1)).copied().unwrap_or(now);
                        (oldest + self.limits.window).saturating_duration_since(now).max(Duration::from_millis(1))
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
        let slot = self.in_flight.clone().acquire_owned().await.unwrap_or_else(|_| unreachable_closed());
        Permit { _slot: slot }
    }

    /// The CRM said "not before `after`": nobody on this connection sends until then.
    pub async fn pause(&self, after: Duration) {
        let until = Instant::now() + after;
        let mut w = self.state.lock().await;
        if w.paused_until.is_none_or(|t| t < until) {
            w.paused_until = Some(until);
        }
    }

    /// Requests sent within the current window (for the status page).
    pub async fn used(&self) -> usize {
        let mut w = self.state.lock().await;
        let now = Instant::now();
        while w.sent.front().is_some_and(|t| now.duration_since(*t) >= self.limits.window) {
            w.sent.pop_front();
        }
        w.sent.len()
    }
}

/// The semaphore is owned by the limiter and never closed.
fn unreachable_closed() -> OwnedSemaphorePermit {
    panic!("the rate limiter's semaphore is never closed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_window: u32, window_ms: u64, in_flight: u32) -> RateLimiter {
        RateLimiter::new(Limits { requests_per_window: per_window, window: Duration::from_millis(window_ms), max_in_flight: in_flight })
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_makes_the_next_request_wait_for_the_oldest_to_leave() {
        let l = limiter(3, 1000, 10);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            drop(l.acquire(1).await);
        }
        assert!(start.elapsed() < Duration::from_millis(10));
        drop(l.acquire(1).await);
        assert!(start.elapsed() >= Duration::from_millis(1000), "waited {:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_costs_its_size() {
        let l = limiter(10, 1000, 10);
        drop(l.acquire(8).await);
        let start = tokio::time::Instant::now();
        drop(l.acquire(5).await);
        assert!(start.elapsed() >= Duration::from_millis(999));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_everyone() {
        let l = limiter(100, 1000, 10);
        l.pause(Duration::from_secs(7)).await;
        let start = tokio::time::Instant::now();
        drop(l.acquire(1).await);
        assert!(start.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_requests_are_capped() {
        let l = limiter(100, 1000, 2);
        let a = l.acquire(1).await;
        let _b = l.acquire(1).await;
        let third = tokio::time::timeout(Duration::from_millis(50), l.acquire(1)).await;
        assert!(third.is_err(), "a third request must wait for a free slot");
        drop(a);
        assert!(tokio::time::timeout(Duration::from_millis(50), l.acquire(1)).await.is_ok());
    }
}
