//! When the next reconnection attempt is due: exponential backoff with jitter.
//!
//! The core has no clock and no OS randomness, so the jitter comes from a small PRNG seeded
//! by the caller (adapters pass a random seed; tests pass a fixed one and get exact
//! deadlines).

use std::time::Duration;

/// How long to wait before each reconnection attempt.
///
/// Attempt `n` (from 1) waits `min(max, initial × multiplierⁿ⁻¹)`, less a random part of up
/// to `jitter` of it, so that many clients cut off at once do not all come back in step.
///
/// ```
/// use amqp_proto::recovery::Backoff;
/// use std::time::Duration;
///
/// let backoff = Backoff { jitter: 0.0, ..Backoff::default() };
/// assert_eq!(backoff.base_delay(1), Duration::from_millis(500));
/// assert_eq!(backoff.base_delay(2), Duration::from_secs(1));
/// assert_eq!(backoff.base_delay(20), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first attempt.
    pub initial: Duration,
    /// Longest wait between attempts.
    pub max: Duration,
    /// Growth of the wait from one attempt to the next (1.0: constant).
    pub multiplier: f64,
    /// Fraction of each wait (0.0 to 1.0) that may be taken off at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (from 1) without jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exponent);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The wait before attempt `attempt`, jitter drawn from `rng`.
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 - jitter * rng.unit())
    }
}

/// A small deterministic PRNG (SplitMix64) for jitter and endpoint shuffling. Not for
/// anything secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_the_multiplier_up_to_max() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 3.0,
            jitter: 0.0,
        };
        let delays: Vec<_> = (1..=5).map(|n| b.base_delay(n)).collect();
        assert_eq!(
            delays,
            [100, 300, 900, 1000, 1000].map(Duration::from_millis)
        );
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens_and_is_fixed_by_the_seed() {
        let b = Backoff {
            jitter: 0.5,
            ..Backoff::default()
        };
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (1..=8).map(|n| b.delay(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        for (n, d) in (1..=8).zip(run(7)) {
            assert!(
                d <= b.base_delay(n) && d >= b.base_delay(n) / 2,
                "{n}: {d:?}"
            );
        }
    }

    #[test]
    fn rng_is_spread_over_its_range() {
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[rng.below(4)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
