//! Time as a value. The core never reads a clock: every operation takes `now`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A point in time: milliseconds since the Unix epoch, UTC (section 12, docs/rules.md).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Ts(pub u64);

/// A length of time in milliseconds.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Dur(pub u64);

impl Dur {
    pub const MS: Dur = Dur(1);
    pub const SECOND: Dur = Dur(1_000);
    pub const MINUTE: Dur = Dur(60_000);
    pub const HOUR: Dur = Dur(3_600_000);
    pub const DAY: Dur = Dur(86_400_000);

    pub const fn secs(s: u64) -> Dur {
        Dur(s * 1_000)
    }
    pub const fn hours(h: u64) -> Dur {
        Dur(h * 3_600_000)
    }
    pub const fn days(d: u64) -> Dur {
        Dur(d * 86_400_000)
    }
    pub const fn ms(self) -> u64 {
        self.0
    }
}

impl Ts {
    pub const ZERO: Ts = Ts(0);
    /// The end of a hold or restriction that has none: it lasts until lifted (an account
    /// restriction reported without an end, section 10).
    pub const UNTIL_LIFTED: Ts = Ts(u64::MAX);
    pub const fn ms(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating (a window that would end past the end of time never ends).
    pub const fn plus(self, d: Dur) -> Ts {
        Ts(self.0.saturating_add(d.0))
    }
    pub const fn minus(self, d: Dur) -> Ts {
        Ts(self.0.saturating_sub(d.0))
    }
    /// How long from `self` until `later` (zero if `later` is not later).
    pub const fn until(self, later: Ts) -> Dur {
        Dur(later.0.saturating_sub(self.0))
    }
}

/// A window that starts at `start` and lasts `len` is open for `start <= now < start + len`
/// (section 12, docs/rules.md): at exactly `start + len` it is over.
pub const fn window_open(start: Ts, len: Dur, now: Ts) -> bool {
    start.0 <= now.0 && now.0 < start.0.saturating_add(len.0)
}

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ts({})", self.0)
    }
}
impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
