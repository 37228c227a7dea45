//! One time bucket of a [`crate::WindowedSketch`]: an epoch-tagged state word,
//! a lazily grown exact sparse set of hashes, and lazily allocated dense
//! HyperLogLog registers. Everything here is atomics only (no locks, no
//! `unsafe`); see the crate docs for the protocol and its edge cases.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicU8, Ordering};

use once_cell::race::OnceBox;

/// Low state bit: the bucket is being wiped for the epoch in the tag.
pub(crate) const CLEARING: u64 = 1;
/// Second state bit: the bucket switched to dense registers for this epoch.
pub(crate) const DENSE: u64 = 2;
/// The tag (epoch + 1; 0 = never used) lives above the two flag bits.
pub(crate) const TAG_SHIFT: u32 = 2;
/// Largest epoch whose tag fits in the state word.
pub(crate) const MAX_EPOCH: u64 = (u64::MAX >> TAG_SHIFT) - 1;

/// Capacities (slots) of the sparse tiers, allocated one after the other as
/// the previous ones fill up. Powers of two so a mask picks the home slot.
pub(crate) const TIER_CAPS: [usize; 5] = [16, 64, 256, 1024, 1024];

/// A tier accepts new hashes while it holds fewer than `cap * 3 / 4`.
const fn tier_limit(cap: usize) -> usize {
    cap * 3 / 4
}

/// How many distinct hashes the sparse tiers hold before the bucket goes dense
/// (when inserts run one at a time; concurrent inserts can shift it slightly).
pub(crate) const SPARSE_CAPACITY: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < TIER_CAPS.len() {
        total += tier_limit(TIER_CAPS[i]);
        i += 1;
    }
    total
};

/// Register index and rank of a hash for `2^precision` registers: the index
/// is the top `precision` bits, the rank is one plus the number of trailing
/// zero bits (the same convention as `hyperloglockless`, whose estimator the
/// crate uses). `hash` is never 0, so the rank is at most 64.
#[inline(always)]
pub(crate) fn index_rank(hash: u64, precision: u8) -> (usize, u8) {
    let index = (hash >> (64 - u32::from(precision))) as usize;
    let rank = 1 + hash.trailing_zeros() as u8;
    (index, rank)
}

/// One open-addressing table of 64-bit hashes (0 marks an empty slot).
struct Tier {
    len: AtomicU32,
    slots: Box<[AtomicU64]>,
}

enum Probe {
    Found,
    Inserted,
    Absent,
}

impl Tier {
    fn new(cap: usize) -> Self {
        Self {
            len: AtomicU32::new(0),
            slots: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Looks `hash` up by linear probing; claims an empty slot with a CAS when
    /// `may_insert`. Slots only go from 0 to a hash within an epoch, and every
    /// thread probes the same sequence for the same hash, so two threads
    /// inserting the same hash into one tier end up with one copy. The probe is
    /// bounded by the table size, so an over-full table cannot loop.
    #[inline]
    fn find_or_insert(&self, hash: u64, may_insert: bool) -> Probe {
        let mask = self.slots.len() - 1;
        let mut i = (hash as usize) & mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            let v = slot.load(Ordering::Acquire);
            if v == hash {
                return Probe::Found;
            }
            if v == 0 {
                if !may_insert {
                    return Probe::Absent;
                }
                match slot.compare_exchange(0, hash, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.len.fetch_add(1, Ordering::Relaxed);
                        return Probe::Inserted;
                    }
                    Err(other) if other == hash => return Probe::Found,
                    Err(_) => {}
                }
            }
            i = (i + 1) & mask;
        }
        Probe::Absent
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.slots.len() * std::mem::size_of::<AtomicU64>()
    }
}

/// Dense HyperLogLog registers, one byte each.
struct Registers {
    regs: Box<[AtomicU8]>,
}

impl Registers {
    fn new(precision: u8) -> Self {
        Self {
            regs: (0..1usize << precision).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    #[inline(always)]
    fn update(&self, hash: u64, precision: u8) {
        let (index, rank) = index_rank(hash, precision);
        if let Some(reg) = self.regs.get(index) {
            // Read first: once a register is large, inserts do not write, so
            // threads do not fight over cache lines.
            if reg.load(Ordering::Relaxed) < rank {
                reg.fetch_max(rank, Ordering::Relaxed);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.regs.len()
    }
}

/// What a reader saw of one bucket for one epoch.
#[derive(Debug, Default)]
pub(crate) struct BucketView {
    /// Hashes from the sparse tiers (may hold a duplicate after a race).
    pub(crate) sparse: Vec<u64>,
    /// Dense registers, when the bucket went dense.
    pub(crate) dense: Option<Vec<u8>>,
}

/// Outcome of [`Bucket::add`].
pub(crate) enum Added {
    Done,
    /// The state moved under us (rotation or promotion): read it again.
    Retry,
}

pub(crate) struct Bucket {
    /// `tag << TAG_SHIFT | DENSE? | CLEARING?`, tag = epoch + 1, 0 = unused.
    /// The tag only grows (every transition is a CAS to a larger tag or a
    /// flag change at the same tag), which the readers' validation relies on.
    state: AtomicU64,
    tiers: [OnceBox<Tier>; TIER_CAPS.len()],
    dense: OnceBox<Registers>,
}

impl Bucket {
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            tiers: Default::default(),
            dense: OnceBox::new(),
        }
    }

    #[inline(always)]
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    /// Adds `hash` for the epoch of the observed state `s` (whose tag the
    /// caller checked).
    #[inline]
    pub(crate) fn add(&self, hash: u64, s: u64, precision: u8) -> Added {
        if s & DENSE != 0 {
            if let Some(d) = self.dense.get() {
                d.update(hash, precision);
            }
            return Added::Done;
        }
        if self.sparse_insert(hash) {
            return Added::Done;
        }
        // The sparse tiers are full: switch this epoch to dense registers.
        if s & CLEARING != 0 {
            // Another thread is still wiping the bucket; try again.
            return Added::Retry;
        }
        let dense = self
            .dense
            .get_or_init(|| Box::new(Registers::new(precision)));
        match self
            .state
            .compare_exchange(s, s | DENSE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                dense.update(hash, precision);
                Added::Done
            }
            Err(now) if now == s | DENSE => {
                dense.update(hash, precision);
                Added::Done
            }
            Err(_) => Added::Retry,
        }
    }

    /// Inserts into the sparse tiers; false when they are all full and the
    /// hash is in none of them.
    #[inline]
    fn sparse_insert(&self, hash: u64) -> bool {
        for (cell, &cap) in self.tiers.iter().zip(TIER_CAPS.iter()) {
            let tier = match cell.get() {
                Some(t) => t,
                None => cell.get_or_init(|| Box::new(Tier::new(cap))),
            };
            let may_insert = (tier.len.load(Ordering::Relaxed) as usize) < tier_limit(cap);
            match tier.find_or_insert(hash, may_insert) {
                Probe::Found | Probe::Inserted => return true,
                Probe::Absent => {}
            }
        }
        false
    }

    /// Tries to take the bucket over for a newer tag. Only one thread wins the
    /// CAS for a given old state; it wipes the contents and publishes the new
    /// tag as ready. Returns after the attempt either way.
    pub(crate) fn rotate(&self, seen: u64, tag: u64) {
        let clearing = (tag << TAG_SHIFT) | CLEARING;
        if self
            .state
            .compare_exchange(seen, clearing, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // Pairs with the reader's acquire fence: a reader that sees any of
        // the zeroes below also sees the new state and drops what it read.
        fence(Ordering::Release);
        for tier in self.tiers.iter().filter_map(OnceBox::get) {
            for slot in tier.slots.iter() {
                slot.store(0, Ordering::Relaxed);
            }
            tier.len.store(0, Ordering::Relaxed);
        }
        if let Some(d) = self.dense.get() {
            for reg in d.regs.iter() {
                reg.store(0, Ordering::Relaxed);
            }
        }
        // A CAS, not a store: if an even newer epoch took the bucket over while
        // we were wiping, its state must not be replaced by ours.
        let _ = self.state.compare_exchange(
            clearing,
            tag << TAG_SHIFT,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Reads the bucket's contents for `tag`, or `None` when the bucket holds
    /// another epoch or changed epoch during the read (seqlock-style check).
    pub(crate) fn view(&self, tag: u64) -> Option<BucketView> {
        let s1 = self.state.load(Ordering::Acquire);
        if s1 >> TAG_SHIFT != tag || s1 & CLEARING != 0 {
            return None;
        }
        let mut sparse = Vec::new();
        for tier in self.tiers.iter().filter_map(OnceBox::get) {
            sparse.extend(
                tier.slots
                    .iter()
                    .map(|s| s.load(Ordering::Relaxed))
                    .filter(|&h| h != 0),
            );
        }
        let dense = self
            .dense
            .get()
            .map(|d| d.regs.iter().map(|r| r.load(Ordering::Relaxed)).collect());
        fence(Ordering::Acquire);
        let s2 = self.state.load(Ordering::Relaxed);
        if s2 >> TAG_SHIFT != tag || s2 & CLEARING != 0 {
            return None;
        }
        Some(BucketView {
            sparse,
            dense: if s2 & DENSE != 0 { dense } else { None },
        })
    }

    /// Builds a bucket holding `tag` with the given contents (snapshot
    /// restore and clone). `hashes` must be non-zero.
    pub(crate) fn restore(tag: u64, hashes: &[u64], dense: Option<&[u8]>, precision: u8) -> Self {
        let b = Self::new();
        let mut state = tag << TAG_SHIFT;
        for &h in hashes {
            if !b.sparse_insert(h) {
                // More than the sparse tiers hold: fall back to registers.
                let d = b.dense.get_or_init(|| Box::new(Registers::new(precision)));
                d.update(h, precision);
                state |= DENSE;
            }
        }
        if let Some(regs) = dense {
            let d = b.dense.get_or_init(|| Box::new(Registers::new(precision)));
            for (dst, &src) in d.regs.iter().zip(regs) {
                dst.fetch_max(src, Ordering::Relaxed);
            }
            state |= DENSE;
        }
        b.state.store(state, Ordering::Release);
        b
    }

    /// Heap bytes held by this bucket (its own allocation included).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .tiers
                .iter()
                .filter_map(OnceBox::get)
                .map(Tier::heap_bytes)
                .sum::<usize>()
            + self.dense.get().map_or(0, Registers::heap_bytes)
    }
}
