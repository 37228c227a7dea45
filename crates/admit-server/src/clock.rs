//! The service clock (section 12, docs/rules.md): UTC milliseconds from the system, or a
//! controllable test clock when the server was started in test mode.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use admit_core::Ts;

/// Why the test clock refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("the clock is not controllable: the server was not started in test mode")]
    NotTestMode,
    #[error("now_unix_ms {requested} is before the current clock {current}: time never goes back")]
    Backwards { requested: u64, current: u64 },
    #[error("advancing {current} by {by_ms} ms goes past the largest time the API carries")]
    TooFar { by_ms: u64, current: u64 },
}

/// Where the test clock may run (issue 12): only on a single node without
/// TLS. A clock anyone may set is a test tool; a multi-node or TLS
/// deployment is a real one. admitd calls this on its settings; the TLS
/// side passes `tls = true` when the API port speaks TLS. The error names
/// the flag.
pub fn test_clock_allowed(test_clock: bool, clustered: bool, tls: bool) -> Result<(), String> {
    if test_clock && clustered {
        return Err(
            "invalid test_clock: not allowed in a multi-node cluster (peers or join)".into(),
        );
    }
    if test_clock && tls {
        return Err("invalid test_clock: not allowed together with TLS".into());
    }
    Ok(())
}

/// The latest test time: the API carries times as `int64` milliseconds.
const MAX_TEST_MS: u64 = i64::MAX as u64;

/// The clock every rule runs on. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's UTC clock, made monotonic (a step back of the system clock
    /// reads as the latest value seen).
    System(Arc<AtomicU64>),
    /// A clock that moves only when told to (test mode).
    Test(Arc<AtomicU64>),
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System(Arc::new(AtomicU64::new(system_ms())))
    }

    /// A test clock starting at `start` (or at the system time).
    pub fn test(start: Option<Ts>) -> Clock {
        Clock::Test(Arc::new(AtomicU64::new(
            start.map_or_else(system_ms, |t| t.ms()),
        )))
    }

    pub fn is_test(&self) -> bool {
        matches!(self, Clock::Test(_))
    }

    pub fn now(&self) -> Ts {
        match self {
            Clock::System(last) => {
                let s = system_ms();
                Ts(last.fetch_max(s, Ordering::AcqRel).max(s))
            }
            Clock::Test(t) => Ts(t.load(Ordering::Acquire)),
        }
    }

    /// Sets the test clock; never backwards.
    pub fn set(&self, to: Ts) -> Result<Ts, ClockError> {
        let Clock::Test(t) = self else {
            return Err(ClockError::NotTestMode);
        };
        let prev = t.fetch_max(to.ms(), Ordering::AcqRel);
        if prev > to.ms() {
            return Err(ClockError::Backwards {
                requested: to.ms(),
                current: prev,
            });
        }
        Ok(to)
    }

    /// Moves the test clock forward by `by_ms`.
    pub fn advance(&self, by_ms: u64) -> Result<Ts, ClockError> {
        let Clock::Test(t) = self else {
            return Err(ClockError::NotTestMode);
        };
        // never wraps: a step past the end of time is refused, and changes nothing
        let prev = t
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(by_ms).filter(|t| *t <= MAX_TEST_MS)
            })
            .map_err(|current| ClockError::TooFar { by_ms, current })?;
        Ok(Ts(prev + by_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_never_goes_back() {
        let c = Clock::test(Some(Ts(1_000)));
        assert_eq!(c.now(), Ts(1_000));
        assert_eq!(c.advance(500).unwrap(), Ts(1_500));
        assert!(matches!(
            c.set(Ts(1_499)),
            Err(ClockError::Backwards { .. })
        ));
        assert_eq!(c.now(), Ts(1_500));
        assert_eq!(c.set(Ts(2_000)).unwrap(), Ts(2_000));
        assert_eq!(c.now(), Ts(2_000));
        assert_eq!(Clock::system().set(Ts(1)), Err(ClockError::NotTestMode));
    }

    #[test]
    fn advancing_past_the_end_of_time_is_refused_and_changes_nothing() {
        let c = Clock::test(Some(Ts(1_000)));
        let step = MAX_TEST_MS - 1_000;
        assert_eq!(c.advance(step).unwrap(), Ts(MAX_TEST_MS));
        assert!(matches!(c.advance(1), Err(ClockError::TooFar { .. })));
        assert!(matches!(
            c.advance(u64::MAX),
            Err(ClockError::TooFar { .. })
        ));
        assert_eq!(c.now(), Ts(MAX_TEST_MS));
    }

    #[test]
    fn the_test_clock_runs_only_on_a_single_plain_node() {
        assert!(test_clock_allowed(true, false, false).is_ok());
        assert!(test_clock_allowed(false, true, true).is_ok());
        for (clustered, tls) in [(true, false), (false, true), (true, true)] {
            let e = test_clock_allowed(true, clustered, tls).unwrap_err();
            assert!(e.contains("test_clock"), "{e}");
        }
    }
}
