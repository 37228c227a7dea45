//! Fewer socket writes: the first write after a flush waits one turn of the
//! runtime's scheduler, so that what becomes ready to send meanwhile leaves
//! in the same write.
//!
//! Used by the listeners' connections (`listen::Conn`). A connection
//! writes when one answer is ready, and answers become ready in bursts: an
//! entry's commit answers all its writers at once, one read of the socket
//! brings many fast-path requests whose handlers finish one after the
//! other. Written one at a time, each costs a system call and, on loopback,
//! the receiving side's TCP work too (docs/benchmarks.md, "Answers gathered
//! into fewer socket writes": 0.79 writes a call became 0.15). Where nothing
//! joins (one call at a time) the turn only costs, so a hold whose retry
//! carries no more bytes than the held write stops holding for the next
//! [`GATHER_SKIP`] flushes. The dialing side of node-to-node connections
//! does not hold: tried, it slowed replicated writes (the same section).

use std::task::{Context, Poll};

/// Holding the first write after a flush back for one turn of the
/// scheduler, while that pays.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    /// Written since the last flush.
    wrote: bool,
    /// A flush of written bytes happened since the last write.
    armed: bool,
    /// The bytes the held-back write had; its retry compares.
    held: Option<usize>,
    /// Flushes left before the next try, after a hold gathered nothing.
    skip: u8,
}

/// Flushes of writes made at once after a hold that gathered nothing,
/// before the next hold tries again.
pub(crate) const GATHER_SKIP: u8 = 8;

impl Gather {
    /// Before a write of `len` bytes: whether to hold it back for a turn.
    fn hold(&mut self, len: usize) -> bool {
        if let Some(held) = self.held.take() {
            // the retry of a held write: did anything join it?
            if len <= held {
                self.skip = GATHER_SKIP;
            }
        } else if std::mem::take(&mut self.armed) && self.skip == 0 {
            self.held = Some(len);
            return true;
        }
        self.wrote = true;
        false
    }

    /// Before a write of `len` bytes: `Pending` (the task woken at once, to
    /// the back of the run queue) when the write is held back for a turn.
    pub(crate) fn poll_hold(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        if self.hold(len) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(())
    }

    /// After a completed flush.
    pub(crate) fn flushed(&mut self) {
        if std::mem::take(&mut self.wrote) {
            self.armed = true;
            self.skip = self.skip.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Gather, GATHER_SKIP};

    /// One write and the flush after it.
    fn write(g: &mut Gather, len: usize) -> bool {
        let held = g.hold(len);
        if !held {
            g.flushed();
        }
        held
    }

    #[test]
    fn the_first_write_after_a_flush_waits_a_turn_while_answers_join_it() {
        let mut g = Gather::default();
        // nothing written yet: nothing to gather behind
        assert!(!write(&mut g, 100));
        for _ in 0..3 {
            // held back; its retry carries more (answers joined it) and goes
            assert!(g.hold(100));
            assert!(!g.hold(300));
            g.flushed();
        }
        // a flush with nothing written leaves the hold as it was
        g.flushed();
        assert!(g.hold(100));
    }

    #[test]
    fn a_hold_that_gathers_nothing_stops_holding_for_the_next_flushes() {
        let mut g = Gather::default();
        assert!(!write(&mut g, 100));
        assert!(g.hold(100));
        // the retry carries what the held write had: nothing joined
        assert!(!g.hold(100));
        g.flushed();
        // the next GATHER_SKIP - 1 writes go at once (the retry's flush
        // counted as the first of the GATHER_SKIP)
        for _ in 1..GATHER_SKIP {
            assert!(!write(&mut g, 100));
        }
        // then holding tries again
        assert!(g.hold(100));
        assert!(!g.hold(200));
    }
}
