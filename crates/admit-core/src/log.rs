//! The exact record of counted conversations of one scope.
//!
//! Every conversation a scope opens is an event in a time-ordered deque. Windows are
//! cursors over that deque: the 24 h limit window (R3.1) and the longer upgrade window
//! (7 or 30 days, R5.2-R5.4). Each keeps its unique-customer count up to date as events
//! enter (at the back) and leave (at the front), so the limit check is O(1). An event
//! is released (R3.5) by clearing its `live` flag and taking it out of every window that
//! holds it. The deque keeps only what some window still covers.

use crate::time::{Dur, Ts};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Event {
    pub ts: Ts,
    pub customer: u64,
    /// The number's dense index (which pair entry holds the conversation).
    pub number: u32,
    pub live: bool,
    /// Reported DELIVERED or READ (R3.5): a later failure no longer releases it. Not in
    /// the V1 snapshot body: the snapshot writes it in its V3 section.
    #[serde(skip)]
    pub delivered: bool,
}

/// A trailing window over the log, with the number of unique customers in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Window {
    pub len: Dur,
    /// Absolute sequence number of the first event still inside.
    pub start: u64,
    /// Live events per customer. `None` when a customer can hold at most one live event
    /// in this window (a number's own 24 h window: R2.2 opens at most one conversation
    /// per customer at a time), which saves the map. Derived from the events, so it is
    /// not serialized (hash-map order would make snapshots differ): see
    /// [`EventLog::rebuild`]. Boxed: most scopes have none, and every scope has two
    /// windows.
    #[serde(skip)]
    #[allow(clippy::box_collection)] // 8 bytes in every window instead of 48
    pub per_customer: Option<Box<HashMap<u64, u32>>>,
    pub dedupe: bool,
    /// Unique customers with a live event inside.
    pub unique: u32,
}

impl Window {
    pub fn new(len: Dur, start: u64, dedupe: bool) -> Self {
        Window {
            len,
            start,
            per_customer: dedupe.then(Box::default),
            dedupe,
            unique: 0,
        }
    }

    fn add(&mut self, customer: u64) {
        match &mut self.per_customer {
            None => self.unique += 1,
            Some(m) => {
                let c = m.entry(customer).or_insert(0);
                *c += 1;
                if *c == 1 {
                    self.unique += 1;
                }
            }
        }
    }

    fn remove(&mut self, customer: u64) {
        match &mut self.per_customer {
            None => self.unique = self.unique.saturating_sub(1),
            Some(m) => {
                if let Some(c) = m.get_mut(&customer) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&customer);
                        self.unique = self.unique.saturating_sub(1);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EventLog {
    pub events: VecDeque<Event>,
    /// Absolute sequence number of `events[0]`; ever growing, so sequence numbers name
    /// events for good (admission ids use them).
    pub base: u64,
    pub day: Window,
    /// The upgrade window, when an upgrade rule applies.
    pub long: Option<Window>,
}

impl EventLog {
    pub fn new(day: Dur, dedupe_day: bool) -> Self {
        EventLog {
            events: VecDeque::new(),
            base: 0,
            day: Window::new(day, 0, dedupe_day),
            long: None,
        }
    }

    /// Whether a log read from a snapshot is one the engine could have written: each
    /// window starts within the kept events (a damaged snapshot is refused, not run).
    pub fn is_consistent(&self) -> bool {
        let Some(end) = self.base.checked_add(self.events.len() as u64) else {
            return false;
        };
        std::iter::once(&self.day)
            .chain(self.long.as_ref())
            .all(|w| (self.base..=end).contains(&w.start))
    }

    /// Recomputes the windows' derived counts from the events (after a restore).
    pub fn rebuild(&mut self) {
        let base = self.base;
        let events = &self.events;
        let recount = |w: &mut Window| {
            w.per_customer = w.dedupe.then(Box::default);
            w.unique = 0;
            for e in events.range((w.start - base) as usize..).filter(|e| e.live) {
                w.add(e.customer);
            }
        };
        recount(&mut self.day);
        if let Some(l) = &mut self.long {
            recount(l);
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    /// Moves every window's start past events that have ended by `now`, then drops what
    /// no window covers any more.
    pub fn advance(&mut self, now: Ts) {
        let base = self.base;
        let events = &self.events;
        let slide = |w: &mut Window| {
            while let Some(e) = events.get((w.start - base) as usize) {
                if e.ts.plus(w.len) > now {
                    break;
                }
                if e.live {
                    w.remove(e.customer);
                }
                w.start += 1;
            }
        };
        slide(&mut self.day);
        if let Some(l) = &mut self.long {
            slide(l);
        }
        let keep_from = self
            .long
            .as_ref()
            .map_or(self.day.start, |l| l.start.min(self.day.start));
        while self.base < keep_from {
            self.events.pop_front();
            self.base += 1;
        }
        if self.events.is_empty() && self.events.capacity() > 64 {
            self.events.shrink_to_fit();
        }
    }

    /// Records a conversation opened at `now` (after [`EventLog::advance`] to `now`).
    pub fn push(&mut self, now: Ts, customer: u64, number: u32) -> u64 {
        let seq = self.next_seq();
        self.events.push_back(Event {
            ts: now,
            customer,
            number,
            live: true,
            delivered: false,
        });
        self.day.add(customer);
        if let Some(l) = &mut self.long {
            l.add(customer);
        }
        seq
    }

    /// R3.5: records that event `seq` was delivered, if the log still holds it.
    pub fn mark_delivered(&mut self, seq: u64) {
        if let Some(e) = seq
            .checked_sub(self.base)
            .and_then(|i| self.events.get_mut(i as usize))
        {
            e.delivered = true;
        }
    }

    /// Whether event `seq` is known delivered.
    pub fn delivered(&self, seq: u64) -> bool {
        seq.checked_sub(self.base)
            .and_then(|i| self.events.get(i as usize))
            .is_some_and(|e| e.delivered)
    }

    /// The sequence numbers of the delivered events, ascending (for snapshots).
    pub fn delivered_seqs(&self) -> impl Iterator<Item = u64> + '_ {
        (self.base..)
            .zip(&self.events)
            .filter(|(_, e)| e.delivered)
            .map(|(seq, _)| seq)
    }

    /// Releases event `seq`; returns it if it was live and still inside the log.
    pub fn release(&mut self, seq: u64) -> Option<Event> {
        let i = seq.checked_sub(self.base)? as usize;
        let e = self.events.get_mut(i)?;
        if !e.live {
            return None;
        }
        e.live = false;
        let e = e.clone();
        if seq >= self.day.start {
            self.day.remove(e.customer);
        }
        if let Some(l) = &mut self.long {
            if seq >= l.start {
                l.remove(e.customer);
            }
        }
        Some(e)
    }

    /// Whether `customer` is counted in the 24 h window (portfolio scopes count a
    /// customer once, whichever number opened the conversation: R3.1).
    pub fn day_counts(&self, customer: u64) -> bool {
        match &self.day.per_customer {
            Some(m) => m.contains_key(&customer),
            None => false,
        }
    }

    fn live_in(&self, w: &Window) -> impl Iterator<Item = &Event> {
        self.events
            .range((w.start - self.base) as usize..)
            .filter(|e| e.live)
    }

    /// Unique customers in `w` as they will be at `t >= ` the last advance, without
    /// changing anything (status reads and delayed checks).
    fn unique_at(&self, w: &Window, t: Ts) -> u32 {
        let mut leaving: HashMap<u64, u32> = HashMap::new();
        let mut gone = 0u32;
        for e in self.live_in(w) {
            if e.ts.plus(w.len) > t {
                break;
            }
            match &w.per_customer {
                None => gone += 1,
                Some(m) => {
                    let c = leaving.entry(e.customer).or_insert(0);
                    *c += 1;
                    if m.get(&e.customer) == Some(c) {
                        gone += 1;
                    }
                }
            }
        }
        w.unique.saturating_sub(gone)
    }

    pub fn day_unique_at(&self, t: Ts) -> u32 {
        self.unique_at(&self.day, t)
    }

    pub fn long_unique_at(&self, t: Ts) -> Option<u32> {
        self.long.as_ref().map(|l| self.unique_at(l, t))
    }

    /// The earliest time after which the 24 h window holds one customer fewer: when the
    /// last live conversation of some counted customer ends (the retry hint of
    /// `LIMIT_REACHED`, R3.2).
    pub fn next_release(&self, now: Ts) -> Option<Ts> {
        self.nth_release(now, 1)
    }

    /// When the 24 h window will hold `n` customers fewer than at `now` (`n` >= 1): the
    /// `n`-th time, oldest first, that a counted customer's last live conversation ends
    /// (the end of Restricted when more than the limit are counted, R4.2).
    pub fn nth_release(&self, now: Ts, n: u32) -> Option<Ts> {
        let w = &self.day;
        let mut left = n.max(1);
        let mut seen: HashMap<u64, u32> = HashMap::new();
        for e in self.live_in(w) {
            let end = e.ts.plus(w.len);
            // the customer's last live conversation in the window (with one per
            // customer at most, every event is)
            let last = match &w.per_customer {
                None => true,
                Some(m) => {
                    let c = seen.entry(e.customer).or_insert(0);
                    *c += 1;
                    m.get(&e.customer) == Some(c)
                }
            };
            if last && end > now {
                left -= 1;
                if left == 0 {
                    return Some(end);
                }
            }
        }
        None
    }

    /// Sets the upgrade window (or removes it), recounting it from the events still kept.
    pub fn set_long(&mut self, len: Option<Dur>, now: Ts) {
        if self.long.as_ref().map(|l| l.len) == len {
            return;
        }
        self.long = len.map(|len| {
            let mut w = Window::new(len, self.base, true);
            for e in &self.events {
                if e.ts.plus(len) > now {
                    break;
                }
                w.start += 1;
            }
            let from = (w.start - self.base) as usize;
            for e in self.events.range(from..).filter(|e| e.live) {
                w.add(e.customer);
            }
            w
        });
        self.advance(now);
    }

    /// Exact unique customers over any trailing span, from the kept events (tests, and
    /// the plain reference the windows must agree with).
    pub fn unique_between(&self, from_exclusive: Ts, to: Ts) -> u32 {
        self.events
            .iter()
            .filter(|e| e.live && e.ts > from_exclusive && e.ts <= to)
            .map(|e| e.customer)
            .collect::<HashSet<_>>()
            .len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Dur = Dur::DAY;

    #[test]
    fn day_window_counts_until_exactly_24h() {
        let mut log = EventLog::new(DAY, false);
        log.push(Ts(1_000), 7, 0);
        log.advance(Ts(1_000 + DAY.0 - 1));
        assert_eq!(log.day.unique, 1);
        assert_eq!(log.day_unique_at(Ts(1_000 + DAY.0 - 1)), 1);
        assert_eq!(log.day_unique_at(Ts(1_000 + DAY.0)), 0);
        log.advance(Ts(1_000 + DAY.0));
        assert_eq!(log.day.unique, 0);
        assert!(log.events.is_empty());
    }

    #[test]
    fn portfolio_window_counts_a_customer_once() {
        let mut log = EventLog::new(DAY, true);
        log.push(Ts(1), 7, 0);
        log.push(Ts(5), 7, 1);
        log.push(Ts(6), 8, 1);
        assert_eq!(log.day.unique, 2);
        assert!(log.day_counts(7));
        // customer 7 stays counted until its latest conversation ends
        assert_eq!(log.next_release(Ts(6)), Some(Ts(5 + DAY.0)));
        assert_eq!(log.nth_release(Ts(6), 2), Some(Ts(6 + DAY.0)));
        assert_eq!(log.nth_release(Ts(6), 3), None);
        log.advance(Ts(1 + DAY.0));
        assert_eq!(log.day.unique, 2);
        log.advance(Ts(5 + DAY.0));
        assert_eq!(log.day.unique, 1);
    }

    #[test]
    fn release_takes_an_event_out_of_every_window() {
        let mut log = EventLog::new(DAY, false);
        log.set_long(Some(Dur::days(7)), Ts(0));
        let s = log.push(Ts(10), 7, 0);
        log.push(Ts(11), 8, 0);
        assert!(log.release(s).is_some());
        assert!(log.release(s).is_none(), "released once");
        assert_eq!(log.day.unique, 1);
        assert_eq!(log.long.as_ref().unwrap().unique, 1);
        // long window keeps events past the day window
        log.advance(Ts(11 + DAY.0));
        assert_eq!(log.day.unique, 0);
        assert_eq!(log.long.as_ref().unwrap().unique, 1);
        assert_eq!(log.long_unique_at(Ts(11 + Dur::days(7).0)), Some(0));
    }
}
