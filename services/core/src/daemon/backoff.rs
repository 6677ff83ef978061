//! The one backoff every daemon waits with between attempts at something that may come back.
//!
//! The publisher retries the Hub and the committer, the committer reconnects to the chain, the
//! trainer re-offers candidates to the publisher, the predictor asks the committer for the
//! metagraph and to announce its axon. Each used to double its own `Duration` with its own cap;
//! this is that rule written once, so the delays are the same everywhere they are meant to be and
//! a unit test can walk the schedule without sleeping (it is a plain value: [`Backoff::next_delay`]
//! only computes; [`Backoff::sleep`] waits on tokio's clock, which a test can pause and advance).
//!
//! Delays are `initial · 2ⁿ`, capped at `max`. With jitter ([`Backoff::with_jitter`]) each delay
//! is scaled by a random factor in [0.5, 1.0), so that many miners knocked off by the same outage
//! of a shared service (the Hub) do not come back in lockstep; without it the schedule is exact,
//! which is what local peers on the same bus need (nobody else competes for them).

use std::time::Duration;

/// Capped exponential backoff, optionally jittered. See the module documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The delay the next attempt waits before jitter.
    step: Duration,
    /// xorshift64 state when jittered: plenty for spreading retries, and no dependency.
    rng: Option<u64>,
}

impl Backoff {
    /// An exact schedule: `initial`, `2·initial`, … up to `max`. An `initial` above `max` is
    /// capped at once (no delay is ever longer than `max`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            step: initial.min(max),
            rng: None,
        }
    }

    /// The same schedule with each delay scaled into [0.5, 1.0) of its step, seeded from the
    /// wall clock so that two processes do not draw the same factors.
    pub fn with_jitter(self) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        self.with_seed(seed)
    }

    /// Jitter from a fixed seed: the same factors every run (for tests).
    pub fn with_seed(mut self, seed: u64) -> Backoff {
        // xorshift64 must not start at zero (it would stay there).
        self.rng = Some(seed | 1);
        self
    }

    /// The first delay of the schedule (what a success resets to).
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap: no delay is longer.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before the next attempt; each call moves one step along the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let delay = match &mut self.rng {
            None => self.step,
            Some(rng) => {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                // 53 random bits → [0, 1), then into [0.5, 1.0).
                let factor = 0.5 + (*rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
                self.step.mul_f64(factor)
            }
        };
        self.step = self.step.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.step = self.initial.min(self.max);
    }

    /// Waits [`Backoff::next_delay`] on tokio's clock and returns how long that was.
    pub async fn sleep(&mut self) -> Duration {
        let delay = self.next_delay();
        tokio::time::sleep(delay).await;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_exact_schedule_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_secs(2));
    }

    #[test]
    fn an_initial_above_the_cap_never_waits_longer_than_the_cap() {
        let mut b = Backoff::new(ms(500), ms(200));
        assert_eq!(b.next_delay(), ms(200));
        assert_eq!(b.next_delay(), ms(200));
        b.reset();
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn jittered_delays_stay_within_half_to_all_of_each_step() {
        let mut b = Backoff::new(ms(100), ms(1000)).with_jitter();
        let steps = [100u128, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (i, step) in steps.iter().enumerate() {
            let d = b.next_delay().as_micros();
            let step_us = step * 1000;
            assert!(
                d >= step_us / 2 && d < step_us,
                "delay {i} is {d} µs, step {step_us} µs"
            );
        }
        b.reset();
        assert!(b.next_delay() < ms(100));
    }

    #[test]
    fn jitter_spreads_delays_and_a_seed_repeats_them() {
        let draw = |seed| {
            let mut b = Backoff::new(ms(1000), ms(1000)).with_seed(seed);
            (0..16).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42), "a fixed seed draws the same factors");
        assert_ne!(a, draw(4242), "another seed draws others");
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 8, "jitter barely varies: {a:?}");
    }

    #[test]
    fn a_huge_cap_does_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        for _ in 0..4 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_the_delay_on_tokios_clock() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(3600));
        let start = tokio::time::Instant::now();
        assert_eq!(b.sleep().await, Duration::from_secs(30));
        assert_eq!(b.sleep().await, Duration::from_secs(60));
        // The paused clock auto-advances to each timer: 90 s pass without anyone waiting them.
        assert_eq!(start.elapsed(), Duration::from_secs(90));
    }
}
