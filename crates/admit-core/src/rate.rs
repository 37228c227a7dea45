//! Sub-second limits (R8.1 throughput, R8.2 pair rate): leader-local, not replicated.
//!
//! Each key keeps one number, its theoretical arrival time (GCRA, the generic cell rate
//! algorithm): a send at `now` conforms if `now >= tat - tolerance`, and then moves `tat`
//! one emission interval on. That is a token bucket in 8 bytes per key. Time is in
//! microseconds inside so that 80 messages/s (12.5 ms apart) stays exact. R8.3: a leader
//! change starts these from full, which the docs state.

use crate::ids::{NumberId, WaId};
use crate::state::{new_map, Map};
use crate::time::{Dur, Ts};

/// A rate: one event per `interval_us` sustained, bursts of `burst`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    pub interval_us: u64,
    pub burst: u32,
}

impl Rate {
    /// `mps` messages per second, bursting one second's worth. At least 1 us apart: a
    /// zero interval would let every send through.
    pub fn per_second(mps: u32) -> Rate {
        let mps = mps.max(1);
        Rate {
            interval_us: (1_000_000 / mps as u64).max(1),
            burst: mps,
        }
    }
    pub fn every(interval: Dur, burst: u32) -> Rate {
        Rate {
            interval_us: interval.ms().saturating_mul(1_000).max(1),
            burst: burst.max(1),
        }
    }
    // Saturating throughout: whatever a profile holds, the arithmetic must not overflow
    // (a saturated bucket denies until the end of time, it never wraps into allowing).
    fn tolerance(&self) -> u64 {
        self.interval_us
            .saturating_mul(u64::from(self.burst.max(1)) - 1)
    }
}

/// Takes one cell at `now_us` if it conforms; else the time (us) at which it would.
fn take(tat: &mut u64, rate: Rate, now_us: u64) -> Result<(), u64> {
    let allowed_at = tat.saturating_sub(rate.tolerance());
    if now_us < allowed_at {
        return Err(allowed_at);
    }
    *tat = (*tat).max(now_us).saturating_add(rate.interval_us);
    Ok(())
}

/// Which sub-second limit refused a send, and when it would conform.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RateDenial {
    Throughput { retry_at: Ts },
    Pair { retry_at: Ts },
}

/// A taken pair of cells, to give back when the send is then denied for another reason.
#[derive(Copy, Clone, Debug)]
pub struct Taken {
    number: NumberId,
    customer: WaId,
    number_rate: Rate,
    pair_rate: Rate,
}

/// The leader's token buckets for every number and (number, customer) pair.
#[derive(Debug)]
pub struct RateLimiter {
    numbers: Map<NumberId, u64>,
    pairs: Map<(NumberId, WaId), u64>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            numbers: new_map(),
            pairs: new_map(),
        }
    }
}

fn us(t: Ts) -> u64 {
    t.ms().saturating_mul(1_000)
}

fn ceil_ms(us: u64) -> Ts {
    Ts(us.div_ceil(1_000))
}

impl RateLimiter {
    /// Takes one cell of the number's throughput and one of the pair's rate, or neither.
    pub fn try_take(
        &self,
        number: NumberId,
        customer: WaId,
        number_rate: Rate,
        pair_rate: Rate,
        now: Ts,
    ) -> Result<Taken, RateDenial> {
        let now_us = us(now);
        let mut n = self.numbers.entry(number).or_insert(0);
        let before = *n;
        take(&mut n, number_rate, now_us).map_err(|at| RateDenial::Throughput {
            retry_at: ceil_ms(at),
        })?;
        let mut p = self.pairs.entry((number, customer)).or_insert(0);
        if let Err(at) = take(&mut p, pair_rate, now_us) {
            *n = before;
            return Err(RateDenial::Pair {
                retry_at: ceil_ms(at),
            });
        }
        Ok(Taken {
            number,
            customer,
            number_rate,
            pair_rate,
        })
    }

    /// Gives back cells taken for a send that was then denied (R3.6: a denied send uses
    /// up nothing).
    pub fn give_back(&self, t: Taken) {
        if let Some(mut n) = self.numbers.get_mut(&t.number) {
            *n = n.saturating_sub(t.number_rate.interval_us);
        }
        if let Some(mut p) = self.pairs.get_mut(&(t.number, t.customer)) {
            *p = p.saturating_sub(t.pair_rate.interval_us);
        }
    }

    /// Forgets keys whose bucket is full again at `now` (they behave as absent ones).
    pub fn sweep(&self, now: Ts) {
        let now_us = us(now);
        self.numbers.retain(|_, tat| *tat > now_us);
        self.pairs.retain(|_, tat| *tat > now_us);
    }

    pub fn len(&self) -> usize {
        self.numbers.len() + self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (NumberId, WaId) {
        (
            NumberId::parse("n", "1").unwrap(),
            WaId::parse("c", "4915112345").unwrap(),
        )
    }

    #[test]
    fn r8_1_throughput_allows_a_burst_then_one_per_interval() {
        let (n, c) = ids();
        let rl = RateLimiter::default();
        let tp = Rate::per_second(80);
        let wide = Rate::per_second(1_000_000);
        // distinct customers so only throughput binds
        for i in 0..80u64 {
            let c = WaId::parse("c", &(4915100000 + i).to_string()).unwrap();
            rl.try_take(n, c, tp, wide, Ts(1_000)).unwrap();
        }
        let d = rl.try_take(n, c, tp, wide, Ts(1_000)).unwrap_err();
        // the 81st conforms 12.5 ms later, rounded up to the next millisecond
        assert_eq!(
            d,
            RateDenial::Throughput {
                retry_at: Ts(1_013)
            }
        );
        assert!(rl.try_take(n, c, tp, wide, Ts(1_012)).is_err());
        assert!(rl.try_take(n, c, tp, wide, Ts(1_013)).is_ok());
    }

    #[test]
    fn r8_2_pair_rate_bursts_45_then_one_per_6s() {
        let (n, c) = ids();
        let rl = RateLimiter::default();
        let tp = Rate::per_second(1_000);
        let pr = Rate::every(Dur::secs(6), 45);
        for _ in 0..45 {
            rl.try_take(n, c, tp, pr, Ts(10_000)).unwrap();
        }
        let d = rl.try_take(n, c, tp, pr, Ts(10_000)).unwrap_err();
        assert_eq!(
            d,
            RateDenial::Pair {
                retry_at: Ts(16_000)
            }
        );
        assert!(rl.try_take(n, c, tp, pr, Ts(15_999)).is_err());
        let t = rl.try_take(n, c, tp, pr, Ts(16_000)).unwrap();
        // a denied send gives its cell back
        rl.give_back(t);
        assert!(rl.try_take(n, c, tp, pr, Ts(16_000)).is_ok());
        rl.sweep(Ts(10_000_000));
        assert!(rl.is_empty());
    }

    #[test]
    fn r8_extreme_rates_neither_overflow_nor_wrap_open() {
        let (n, c) = ids();
        let rl = RateLimiter::default();
        let tp = Rate::per_second(u32::MAX);
        assert_eq!(tp.interval_us, 1, "never zero: that would be no limit");
        // a day-long interval with the largest burst, and an absurd interval
        for pr in [
            Rate::every(Dur::days(1), u32::MAX),
            Rate::every(Dur(u64::MAX / 2), 2),
        ] {
            let c2 = WaId::parse("c", "4915199999").unwrap();
            let now = Ts(u64::MAX / 2_000);
            assert!(rl.try_take(n, c, tp, pr, now).is_ok());
            assert!(rl.try_take(n, c2, tp, pr, now).is_ok());
            rl.sweep(Ts(0));
        }
        // saturated: the pair is held (at the end of time), not let through
        let pr = Rate::every(Dur(u64::MAX / 2), 1);
        let now = Ts(1_000);
        let (n2, c3) = (NumberId::parse("n", "2").unwrap(), c);
        rl.try_take(n2, c3, tp, pr, now).unwrap();
        assert!(matches!(
            rl.try_take(n2, c3, tp, pr, Ts(2_000)),
            Err(RateDenial::Pair { .. })
        ));
    }
}
