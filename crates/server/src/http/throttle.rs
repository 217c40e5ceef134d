//! Attempts counted in a sliding window per key, in a table of fixed capacity: the sign-in
//! lockout (per agent) and the per-client sign-in throttle. Whoever sends the requests
//! chooses the keys, so the table never grows past `capacity` (the key whose last attempt
//! is the oldest makes room) and each key holds at most `limit` instants.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct WindowCounts<K> {
    limit: usize,
    window: Duration,
    capacity: usize,
    attempts: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq + Clone> WindowCounts<K> {
    /// `limit` attempts per key within `window`; at most `capacity` keys (both at least 1).
    pub fn new(limit: usize, window: Duration, capacity: usize) -> Self {
        Self { limit: limit.max(1), window, capacity: capacity.max(1), attempts: HashMap::new() }
    }

    /// How long `key` must wait before another attempt, or `None` if it may try now.
    pub fn wait(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let window = self.window;
        let list = self.attempts.get_mut(key)?;
        while list.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
            list.pop_front();
        }
        if list.is_empty() {
            self.attempts.remove(key);
            return None;
        }
        if list.len() < self.limit {
            return None;
        }
        let oldest = list.front()?;
        Some(window.saturating_sub(now.saturating_duration_since(*oldest)))
    }

    /// Counts an attempt of `key` at `now`. Call [`wait`](Self::wait) first: a key at its
    /// limit does not grow further (its oldest attempt gives way).
    pub fn add(&mut self, key: K, now: Instant) {
        if !self.attempts.contains_key(&key) && self.attempts.len() >= self.capacity {
            self.make_room(now);
        }
        let list = self.attempts.entry(key).or_default();
        if list.len() >= self.limit {
            list.pop_front();
        }
        list.push_back(now);
    }

    /// Takes back the attempt counted at `at` (it was never checked, or it succeeded).
    pub fn take_back(&mut self, key: &K, at: Instant) {
        if let Some(list) = self.attempts.get_mut(key) {
            if let Some(i) = list.iter().rposition(|t| *t == at) {
                list.remove(i);
            }
            if list.is_empty() {
                self.attempts.remove(key);
            }
        }
    }

    /// Forgets every attempt of `key`.
    pub fn forget(&mut self, key: &K) {
        self.attempts.remove(key);
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.attempts.retain(|_, l| l.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
        if self.attempts.len() < self.capacity {
            return;
        }
        let stalest = self.attempts.iter().min_by_key(|(_, l)| l.back().copied()).map(|(k, _)| k.clone());
        if let Some(k) = stalest {
            self.attempts.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_key_waits_once_it_reached_its_limit_until_its_oldest_attempt_leaves_the_window() {
        let t0 = Instant::now();
        let mut w = WindowCounts::new(3, MIN, 10);
        for i in 0..3 {
            assert_eq!(w.wait(&"a", t0), None, "attempt {i}");
            w.add("a", t0 + Duration::from_secs(i));
        }
        assert_eq!(w.wait(&"a", t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(w.wait(&"b", t0), None, "other keys are not affected");
        assert_eq!(w.wait(&"a", t0 + MIN), None, "the oldest attempt left the window");
    }

    #[test]
    fn taken_back_and_forgotten_attempts_no_longer_count() {
        let t0 = Instant::now();
        let mut w = WindowCounts::new(2, MIN, 10);
        w.add("a", t0);
        let second = t0 + Duration::from_millis(1);
        w.add("a", second);
        assert!(w.wait(&"a", second).is_some());
        w.take_back(&"a", second);
        assert_eq!(w.wait(&"a", second), None);
        w.forget(&"a");
        assert!(w.is_empty());
    }

    #[test]
    fn the_table_never_holds_more_than_its_capacity_and_the_stalest_key_makes_room() {
        let t0 = Instant::now();
        let mut w = WindowCounts::new(5, MIN, 100);
        for i in 0..10_000u64 {
            w.add(i, t0 + Duration::from_millis(i));
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.wait(&9_999, t0 + Duration::from_secs(10)), None, "the newest key is kept");
        w.add(9_999, t0 + Duration::from_secs(10));
        assert!(w.attempts.contains_key(&9_999) && !w.attempts.contains_key(&0), "the stalest keys went first");
        let mut one = WindowCounts::new(2, MIN, 10);
        for _ in 0..1_000 {
            one.add("a", t0);
        }
        assert_eq!(one.attempts.get("a").map(VecDeque::len), Some(2), "a key holds at most `limit` instants");
    }
}
