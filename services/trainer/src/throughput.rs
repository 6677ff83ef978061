//! The trainer's speed over the run, for the tokens/s panel of `minerctl plot`.
//!
//! A run can take millions of steps and the history travels over D-Bus on each plot, so it is
//! bounded: one point every `stride` steps, and when it fills, every second point is dropped and
//! the stride doubles. The whole run stays covered, evenly, in at most [`CAPACITY`] points. It is
//! not kept across restarts (the loss history is, in the checkpoint index; a speed is only
//! meaningful for the process that measured it).

/// The most points kept.
pub const CAPACITY: usize = 1024;

/// (step, tokens/s) points, oldest first, every `stride` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    points: Vec<(u64, f64)>,
    stride: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Throughput {
            points: Vec::new(),
            stride: 1,
        }
    }
}

impl Throughput {
    /// Records the speed measured at `step` (kept if `step` falls on the stride).
    pub fn record(&mut self, step: u64, tokens_per_second: f64) {
        if !tokens_per_second.is_finite() || !step.is_multiple_of(self.stride) {
            return;
        }
        self.points.push((step, tokens_per_second));
        if self.points.len() > CAPACITY {
            self.stride *= 2;
            let stride = self.stride;
            self.points.retain(|(s, _)| s.is_multiple_of(stride));
        }
    }

    pub fn points(&self) -> &[(u64, f64)] {
        &self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_stays_bounded_and_covered_evenly() {
        let mut t = Throughput::default();
        for step in 1..=100_000u64 {
            t.record(step, step as f64);
        }
        let p = t.points();
        assert!(p.len() <= CAPACITY && p.len() > CAPACITY / 2, "{}", p.len());
        let gap = p[1].0 - p[0].0;
        assert!(
            p.windows(2).all(|w| w[1].0 - w[0].0 == gap),
            "evenly spaced"
        );
        assert!(p[0].0 <= gap, "the start of the run is kept");
        assert!(100_000 - p[p.len() - 1].0 < gap, "and its end");
        assert!(
            p.iter().all(|&(s, v)| v == s as f64),
            "values stay with their step"
        );
    }

    #[test]
    fn a_speed_that_is_not_a_number_is_not_recorded() {
        let mut t = Throughput::default();
        t.record(1, f64::NAN);
        t.record(2, 10.0);
        assert_eq!(t.points(), &[(2, 10.0)]);
    }
}
