//! Sub-second limits (R8.1 throughput, R8.2 pair rate): leader-local, not replicated.
//!
//! Each key keeps one number, its theoretical arrival time (GCRA, the generic cell rate
//! algorithm): a send at `now` conforms if `now >= tat - tolerance`, and then moves `tat`
//! one emission interval on. That is a token bucket in 8 bytes per key. Time is in
//! microseconds inside so that 80 messages/s (12.5 ms apart) stays exact. R8.3: a leader
//! change starts these from full, which the docs state.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::OnceLock;

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
///
/// The pairs live inside their number's entry, keyed by the customer alone: a
/// send takes one lock and hashes 8 bytes for its pair, and a pair bucket in a
/// number's table is 16 bytes, not 40 (a campaign adds one for every new
/// customer, held for R8.2's interval, so these tables grow large and every
/// insert misses the cache). A number's first pair is kept in its entry, so a
/// portfolio of numbers with one recent customer each allocates no tables.
#[derive(Debug)]
pub struct RateLimiter {
    numbers: Map<NumberId, Buckets>,
}

/// One number's throughput bucket and its pairs' buckets. `tat == 0`: the
/// number's bucket is full (swept, or never taken), kept only for its pairs.
#[derive(Debug, Default)]
struct Buckets {
    tat: u64,
    first: Option<(WaId, u64)>,
    more: HashMap<WaId, u64, PairHasher>,
}

impl Buckets {
    fn pair_bucket(&mut self, customer: WaId) -> Option<&mut u64> {
        match &mut self.first {
            Some((c, tat)) if *c == customer => Some(tat),
            _ => self.more.get_mut(&customer),
        }
    }

    /// The pair's bucket, a full one added if it has none (never a second
    /// one for a pair already held).
    fn pair_or_new(&mut self, customer: WaId) -> &mut u64 {
        match self.first {
            Some((c, _)) if c == customer => {
                return &mut self.first.as_mut().expect("matched above").1;
            }
            None if !self.more.contains_key(&customer) => {
                return &mut self.first.insert((customer, 0)).1;
            }
            _ => {}
        }
        self.more.entry(customer).or_insert(0)
    }

    fn pairs(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    /// Forgets the buckets full again at `now_us`; true if any is left.
    fn sweep(&mut self, now_us: u64) -> bool {
        if self.tat <= now_us {
            self.tat = 0;
        }
        if self.first.is_some_and(|(_, tat)| tat <= now_us) {
            self.first = None;
        }
        self.more.retain(|_, tat| *tat > now_us);
        if self.more.capacity() > 64 && self.more.len() * 4 < self.more.capacity() {
            // a burst's table is given back once a quarter of it is used
            self.more.shrink_to_fit();
        }
        self.tat > 0 || self.pairs() > 0
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter { numbers: new_map() }
    }
}

/// The pair tables' hasher: one random key for the process (callers choose the
/// customers, so the key must not be guessable), kept in no table, so a number's
/// table holds no hasher state of its own.
#[derive(Clone, Copy, Default, Debug)]
struct PairHasher;

impl BuildHasher for PairHasher {
    type Hasher = ahash::AHasher;
    fn build_hasher(&self) -> ahash::AHasher {
        static KEY: OnceLock<ahash::RandomState> = OnceLock::new();
        KEY.get_or_init(ahash::RandomState::new).build_hasher()
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
        let mut entry = self.numbers.entry(number).or_default();
        let b = &mut *entry;
        let before = b.tat;
        take(&mut b.tat, number_rate, now_us).map_err(|at| RateDenial::Throughput {
            retry_at: ceil_ms(at),
        })?;
        if let Err(at) = take(b.pair_or_new(customer), pair_rate, now_us) {
            b.tat = before;
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
        if let Some(mut b) = self.numbers.get_mut(&t.number) {
            b.tat = b.tat.saturating_sub(t.number_rate.interval_us);
            if let Some(p) = b.pair_bucket(t.customer) {
                *p = p.saturating_sub(t.pair_rate.interval_us);
            }
        }
    }

    /// Forgets buckets that are full again at `now` (they behave as absent ones), and
    /// numbers left with none.
    pub fn sweep(&self, now: Ts) {
        let now_us = us(now);
        self.numbers.retain(|_, b| b.sweep(now_us));
        // the table a burst of numbers grew is given back too
        if self.numbers.len() * 4 < self.numbers.capacity() {
            self.numbers.shrink_to_fit();
        }
    }

    /// Buckets held: the numbers' that are not full, and the pairs'.
    pub fn len(&self) -> usize {
        self.numbers
            .iter()
            .map(|b| usize::from(b.tat > 0) + b.pairs())
            .sum()
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
    fn r8_2_a_pair_in_the_table_keeps_its_bucket_when_the_first_slot_frees() {
        // customer a takes the number's first slot, b goes to its table; a's
        // bucket is full again first and the sweep frees the slot: b's next
        // sends must still meet b's bucket, not a new full one in the slot
        let (n, a) = ids();
        let b = WaId::parse("c", "4915155555").unwrap();
        let rl = RateLimiter::default();
        let tp = Rate::per_second(1_000);
        let pr = Rate::every(Dur::secs(6), 2);
        rl.try_take(n, a, tp, pr, Ts(10_000)).unwrap();
        for _ in 0..2 {
            rl.try_take(n, b, tp, pr, Ts(12_000)).unwrap();
        }
        assert_eq!(rl.len(), 3);
        rl.sweep(Ts(16_000)); // a full again at 16,000; b at 24,000
        assert_eq!(rl.len(), 1);
        assert_eq!(
            rl.try_take(n, b, tp, pr, Ts(16_000)).unwrap_err(),
            RateDenial::Pair {
                retry_at: Ts(18_000)
            }
        );
        rl.try_take(n, b, tp, pr, Ts(18_000)).unwrap();
        assert_eq!(rl.len(), 2, "b held once, and the number's bucket");
        rl.sweep(Ts(29_999));
        assert_eq!(rl.len(), 1);
        rl.sweep(Ts(30_000));
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
