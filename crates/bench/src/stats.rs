//! Latency samples and their percentiles.

use std::time::Duration;

/// Latencies in microseconds, sorted on demand.
#[derive(Default, Clone)]
pub struct Samples {
    us: Vec<f64>,
    sorted: bool,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples { us: Vec::with_capacity(n), sorted: true }
    }

    pub fn push(&mut self, d: Duration) {
        self.us.push(d.as_secs_f64() * 1e6);
        self.sorted = false;
    }

    pub fn merge(&mut self, other: Samples) {
        self.us.extend(other.us);
        self.sorted = false;
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_by(f64::total_cmp);
            self.sorted = true;
        }
    }

    /// Nearest-rank percentile in milliseconds (`p` in 0..=100), `None` without samples.
    pub fn percentile_ms(&mut self, p: f64) -> Option<f64> {
        if self.us.is_empty() {
            return None;
        }
        self.sort();
        let rank = ((p / 100.0) * self.us.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.us.len()) - 1;
        Some(self.us[i] / 1000.0)
    }

    pub fn max_ms(&mut self) -> Option<f64> {
        self.percentile_ms(100.0)
    }

    /// `p50 / p99 ms` for a table cell.
    pub fn p50_p99(&mut self) -> String {
        match (self.percentile_ms(50.0), self.percentile_ms(99.0)) {
            (Some(a), Some(b)) => format!("{} / {} ms", ms(a), ms(b)),
            _ => "no samples".into(),
        }
    }
}

/// A millisecond figure with sensible precision.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.3}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// What a thread hand-off costs on this machine: two threads passing a token back and forth
/// over channels, each round trip (two wake-ups) timed. Where waking a thread on another CPU
/// is expensive (shared, virtualised hosts) everything that hands work between threads (the
/// SQLite driver, the runtime) is slow too, so the figure says what kind of machine ran the
/// benchmark. Returns (p50, p99) in microseconds.
pub fn handoff_round_trip_us(rounds: usize) -> (f64, f64) {
    use std::sync::mpsc;
    let (to_echo, echo_in) = mpsc::channel::<u64>();
    let (to_main, main_in) = mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        while let Ok(v) = echo_in.recv() {
            if to_main.send(v).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::with_capacity(rounds);
    for i in 0..rounds as u64 {
        let t = std::time::Instant::now();
        if to_echo.send(i).is_err() || main_in.recv().is_err() {
            break;
        }
        samples.push(t.elapsed());
    }
    drop(to_echo);
    let _ = echo.join();
    let mut us = |p| samples.percentile_ms(p).map_or(f64::NAN, |ms| ms * 1000.0);
    (us(50.0), us(99.0))
}

/// The `/healthz` p99 of this run, once measured: latencies are also given as its multiple,
/// so runs on machines of different speed compare.
static FLOOR_P99_MS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

pub fn set_floor_p99(ms: f64) {
    let _ = FLOOR_P99_MS.set(ms);
}

/// ` (p99 ×9.7 floor)`, or nothing before the floor was measured.
pub fn vs_floor(p99_ms: Option<f64>) -> String {
    match (p99_ms, FLOOR_P99_MS.get()) {
        (Some(p), Some(f)) if *f > 0.0 => format!(" (p99 ×{:.1} floor)", p / f),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push(Duration::from_millis(i));
        }
        assert_eq!(s.percentile_ms(50.0), Some(50.0));
        assert_eq!(s.percentile_ms(99.0), Some(99.0));
        assert_eq!(s.max_ms(), Some(100.0));
        assert_eq!(Samples::default().percentile_ms(50.0), None);
    }
}
