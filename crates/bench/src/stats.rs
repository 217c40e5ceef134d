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
