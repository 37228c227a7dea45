//! Approximate distinct counting of customers over sliding time windows.
//!
//! One [`WindowedSketch`] per limit scope answers "how many unique customers
//! in the last 7 (or 30) days?" for status and metrics. The answers are
//! **estimates** (labelled by [`Estimate::exact`]); enforcement of the
//! messaging limit is exact and lives elsewhere, never here.
//!
//! ```
//! use admit_sketch::{SketchConfig, WindowedSketch, DAY_MS};
//!
//! let sketch = WindowedSketch::new(SketchConfig::default());
//! let now = 1_700_000_000_000; // ms since the Unix epoch, UTC
//! sketch.insert(42, now);
//! sketch.insert(42, now + 1);
//! sketch.insert(7, now - 3 * DAY_MS);
//! let e = sketch.estimate(7 * DAY_MS, now + 1);
//! assert_eq!((e.value, e.exact), (2, true));
//! ```
//!
//! # Time
//!
//! Time is always an argument: `now_ms` is milliseconds since the Unix epoch
//! (UTC) from the caller's (service's, or a test's controllable) clock. The
//! crate never reads a clock.
//!
//! # Design
//!
//! ## A ring of time buckets
//!
//! Time is cut into buckets of [`SketchConfig::bucket_ms`] (default one day,
//! aligned to the Unix epoch, so days are UTC days). Bucket number
//! `e = t / bucket_ms` (its *epoch*) lives in slot `e % buckets` of a ring of
//! [`SketchConfig::buckets`] slots (default 31). A slot remembers which epoch
//! it holds; an insert for a newer epoch wipes it and takes it over
//! ("rotation").
//!
//! A query over the last `window_ms` at `now_ms` covers the times
//! `now_ms - window_ms < t <= now_ms` (the spec's half-open window) and
//! unions every bucket that **overlaps** it: epochs
//! `(now_ms - window_ms + 1) / bucket_ms ..= now_ms / bucket_ms`.
//!
//! **Expiry granularity.** An insert at time `t` lands in bucket
//! `b = t / bucket_ms` and is treated as if it happened at the last
//! millisecond of that bucket, `end = (b + 1) * bucket_ms - 1`. A window query
//! counts it while `now_ms < end + window_ms`, and no longer from
//! `now_ms = end + window_ms = (b + 1) * bucket_ms + window_ms - 1` on. So
//! an insert stays counted between 0 and `bucket_ms - 1` ms *longer* than the
//! exact window would count it, never shorter. (With one-day buckets: a
//! customer seen at any time on day D leaves the 7-day count at 23:59:59.999
//! on day D + 7, UTC.) At the other end, a query counts all of its current
//! bucket, including inserts stamped later than `now_ms` in that bucket.
//!
//! A window overlapping `k` buckets needs `k` slots, and a window of
//! `k * bucket_ms` overlaps `k + 1` buckets unless `now_ms` is at the last
//! millisecond of a bucket. So the longest window the ring answers fully is
//! [`SketchConfig::max_window_ms`] `= (buckets - 1) * bucket_ms + 1`, and the
//! default ring has **31** one-day buckets so that a 30-day window fits. Longer
//! windows are clamped to that length.
//!
//! Queries "in the past" (a `now_ms` older than slots that were already
//! reused) simply miss the reused buckets. An insert stamped with an epoch
//! older than the one its slot already holds is dropped: it is at least
//! `buckets` buckets older than the newest data, so outside every window a
//! query at the newest time can ask for.
//!
//! ## Per bucket: exact sparse set, then dense registers
//!
//! Customer ids are hashed with a fixed-seed 64-bit mixer (the splitmix64
//! finalizer), which is a *bijection* on `u64`: distinct customers have
//! distinct hashes (except for one pair of ids, because the hash value 0 is
//! reserved as "empty" and replaced by a fixed stand-in). Results are
//! deterministic across runs and machines.
//!
//! A bucket starts *sparse*: an open-addressing (linear probing) set of raw
//! hashes, grown in tiers of 16, 64, 256, 1024 and 1024 slots, each filled to
//! 3/4 and allocated only when the previous one is full. That holds 1,788
//! distinct customers exactly in at most 19 KiB, and a bucket with a handful of
//! customers costs a few hundred bytes. When the tiers are full the bucket
//! switches to *dense* HyperLogLog registers: `2^precision` one-byte registers
//! (default precision 15: 32 KiB), index = top bits of the hash, rank = 1 +
//! trailing zeros. The sparse tiers stay allocated (the crate cannot free
//! memory other threads might still be reading without `unsafe` or locks), and
//! keep counting toward estimates.
//!
//! A window estimate whose buckets are all sparse is the exact size of the
//! union of their hash sets ([`Estimate::exact`] is `true`). Since a bucket
//! goes dense only above 1,788 distinct customers, **any window with fewer
//! distinct customers than that is counted exactly**. Otherwise the sparse
//! hashes and dense registers of the buckets are max-merged into one register
//! array and estimated with the LogLog-Beta estimator of `hyperloglockless`
//! (standard error about `1.04 / sqrt(2^precision)`: 0.57 % at precision 15;
//! precision 14 would be 0.81 %, too close to the 2 % p99 budget).
//!
//! [`WindowedSketch::union_estimate`] merges the windows of several sketches
//! (a portfolio of numbers) the same way. Sketches of different precisions can
//! be merged: finer registers fold into the coarser ones.
//!
//! ## Concurrency without locks
//!
//! [`WindowedSketch::insert`] takes `&self` and uses atomics only; there is no
//! lock anywhere and no `unsafe` in the crate. Lazily allocated parts (the
//! ring, its slots, sparse tiers, dense registers) are published with
//! `once_cell::race::OnceBox`, a compare-and-swap on a pointer: if two threads
//! race to allocate, one allocation wins and the other is dropped; nobody
//! waits.
//!
//! Each bucket has one state word: `tag << 2 | DENSE | CLEARING`, with
//! `tag = epoch + 1`. The tag only ever grows.
//!
//! * Insert: read the state. Same tag: add the hash (dense: an atomic max on
//!   one register, skipped when the register is already large enough; sparse:
//!   a CAS into an empty slot of the probe sequence). Older tag: try to
//!   *rotate*. Newer tag: drop the insert (see above).
//! * Rotation: one CAS from the old state to `new tag | CLEARING` elects a
//!   single thread, which zeroes the tiers and registers in place (memory is
//!   reused) and then CASes the state to `new tag` (ready). A CAS rather than a
//!   store, so that it can never roll back a still newer epoch.
//! * Promotion: a thread that finds the sparse tiers full allocates (or
//!   reuses) the registers, CASes `DENSE` into the state it saw, and writes its
//!   hash to the registers; later inserts see `DENSE` and go straight to the
//!   registers. Inserts that raced it into the sparse tiers stay there; readers
//!   always union sparse and dense, so nothing needs copying and nothing is
//!   lost.
//! * Readers check the state before and after reading a bucket (a seqlock
//!   read with an acquire fence, paired with a release fence in the rotating
//!   thread) and ignore a bucket whose epoch changed or that was being wiped.
//!
//! **Accepted races at a bucket boundary** (never UB, never a panic; every
//! loop is bounded):
//! * Inserts for the new epoch that arrive while the rotating thread is
//!   wiping the bucket (a few microseconds at the first insert of a bucket)
//!   wait for the wipe to finish, spinning and then yielding so that a
//!   preempted wiping thread can run. Only if the wipe takes longer than that
//!   bounded wait (`MAX_WIPE_WAIT` rounds) does an insert go ahead and risk
//!   being wiped with the old contents.
//! * A thread that read the state of epoch `e`, then stalls until another
//!   thread has rotated the slot to epoch `e + buckets` or later, writes its
//!   hash into the newer epoch: at most one insert per stalled thread is
//!   counted in the wrong (later) bucket. With callers on a real clock this
//!   needs a stall of about `(buckets - 1) * bucket_ms`.
//! * Two threads inserting the same new customer while a sparse tier fills up
//!   can store it in two tiers; readers deduplicate, so only capacity is
//!   wasted.
//!
//! ## Why not `hyperloglockless::AtomicHyperLogLog` per bucket
//!
//! `hyperloglockless` 0.5 was evaluated and is used for what fits: its
//! LogLog-Beta estimator (via `HyperLogLog::from_parts`) computes every dense
//! estimate. Its `AtomicHyperLogLog` is not used as the bucket storage:
//! * Memory: it is dense from the first insert (`2^p` bytes per bucket:
//!   32 KiB at p = 15, about 1 MiB per 31-bucket scope). Its sparse
//!   `HyperLogLogPlus` needs `&mut self`. For ~100K mostly small scopes the
//!   exact sparse front is what keeps memory low.
//! * Rotation: it has no reset, and replacing a whole object under concurrent
//!   readers and writers needs a lock or `unsafe` pointer reclamation.
//! * Contention: every register change also updates shared `zeros` and
//!   floating-point `sum` atomics (a CAS loop), one hot cache line per sketch
//!   for all threads.
//! * Snapshots: its serde form contains that floating-point running sum, whose
//!   bits depend on the order of the inserts, so the same inserts would not
//!   give the same bytes; it also serializes hasher state.
//!
//! # Snapshots
//!
//! `Serialize`/`Deserialize` write a canonical form: the config and, per
//! bucket in epoch order, either the sorted set of hashes (sparse) or the
//! register array with the sparse hashes folded in (dense). The same inserts
//! give the same bytes whatever the order or the threads that made them.
//! Deserializing validates everything and fails rather than panics.
//! [`Clone`] goes through the same form, so a clone is also compacted (a dense
//! bucket no longer keeps its sparse tiers).

mod bucket;
mod estimate;

use std::fmt;

use once_cell::race::OnceBox;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use bucket::{Added, Bucket, BucketView, MAX_EPOCH, SPARSE_CAPACITY, TAG_SHIFT};
use estimate::Part;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Distinct customers a bucket counts exactly before switching to registers.
pub const EXACT_CAPACITY_PER_BUCKET: usize = SPARSE_CAPACITY;

/// Smallest and largest supported register precision.
pub const PRECISION_RANGE: std::ops::RangeInclusive<u8> = 10..=18;

/// Largest supported number of buckets in a ring.
pub const MAX_BUCKETS: u32 = 4096;

/// Shape of a [`WindowedSketch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SketchConfig {
    /// Width of one time bucket in ms (the expiry granularity). Buckets are
    /// aligned to the Unix epoch. Default: one day.
    pub bucket_ms: u64,
    /// Number of buckets in the ring. The longest window answered is
    /// `(buckets - 1) * bucket_ms + 1` ms. Default: 31 (a 30-day window).
    pub buckets: u32,
    /// Dense registers per bucket = `2^precision` bytes. Standard error about
    /// `1.04 / sqrt(2^precision)`. Default: 15 (32 KiB, 0.57 %).
    pub precision: u8,
}

impl Default for SketchConfig {
    fn default() -> Self {
        Self {
            bucket_ms: DAY_MS,
            buckets: 31,
            precision: 15,
        }
    }
}

/// Why a [`SketchConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `bucket_ms` was 0.
    ZeroBucketWidth,
    /// `buckets` was 0 or above [`MAX_BUCKETS`].
    BucketCount(u32),
    /// `precision` outside [`PRECISION_RANGE`].
    Precision(u8),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroBucketWidth => write!(f, "bucket_ms must be at least 1"),
            Self::BucketCount(n) => write!(f, "buckets must be in 1..={MAX_BUCKETS}, got {n}"),
            Self::Precision(p) => write!(
                f,
                "precision must be in {}..={}, got {p}",
                PRECISION_RANGE.start(),
                PRECISION_RANGE.end()
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl SketchConfig {
    /// Checks the config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket_ms == 0 {
            return Err(ConfigError::ZeroBucketWidth);
        }
        if self.buckets == 0 || self.buckets > MAX_BUCKETS {
            return Err(ConfigError::BucketCount(self.buckets));
        }
        if !PRECISION_RANGE.contains(&self.precision) {
            return Err(ConfigError::Precision(self.precision));
        }
        Ok(())
    }

    /// Longest window answered in full: `(buckets - 1) * bucket_ms + 1`.
    /// Longer windows are clamped to it.
    pub fn max_window_ms(&self) -> u64 {
        u64::from(self.buckets.saturating_sub(1))
            .saturating_mul(self.bucket_ms)
            .saturating_add(1)
    }

    /// Inclusive range of epochs a query overlaps, or `None` for an empty
    /// window.
    fn window_epochs(&self, window_ms: u64, now_ms: u64) -> Option<(u64, u64)> {
        let w = window_ms.min(self.max_window_ms());
        if w == 0 {
            return None;
        }
        let first_ms = if now_ms >= w { now_ms - w + 1 } else { 0 };
        let lo = first_ms / self.bucket_ms;
        let hi = (now_ms / self.bucket_ms).min(MAX_EPOCH);
        (lo <= hi).then_some((lo, hi))
    }
}

/// A distinct count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Estimate {
    /// Estimated number of distinct customers.
    pub value: u64,
    /// `true` when `value` is an exact count (every bucket involved was still
    /// in its sparse form), `false` for a HyperLogLog estimate.
    pub exact: bool,
}

/// Fixed seed of the customer hash (changing it changes snapshots).
const HASH_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
/// Stands in for the one customer whose hash is 0 (0 marks empty slots).
const ZERO_HASH_STANDIN: u64 = 0x6A09_E667_F3BC_C908;

/// Hashes a customer id: the splitmix64 finalizer over `id + seed`, a
/// bijection on `u64` with good avalanche.
#[inline(always)]
fn hash_customer(customer: u64) -> u64 {
    let mut z = customer.wrapping_add(HASH_SEED);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 {
        ZERO_HASH_STANDIN
    } else {
        z
    }
}

/// Distinct customers over sliding windows, for one limit scope. See the crate
/// docs for the design.
pub struct WindowedSketch {
    cfg: SketchConfig,
    /// Allocated on the first insert: most scopes of a large deployment may
    /// never be counted here, and the ring alone is 8 bytes a bucket.
    ring: OnceBox<Box<[OnceBox<Bucket>]>>,
}

/// Bounded retries for an insert whose bucket changes state under it.
const MAX_ATTEMPTS: usize = 8;
/// Rounds an insert waits for a wipe of its bucket to finish (spins, then
/// yields to let a preempted wiping thread run). Past it the insert goes ahead
/// and may be wiped (see the crate docs).
const MAX_WIPE_WAIT: u32 = 100_000;

/// Waits until the bucket's state is no longer `clearing` (bounded).
#[cold]
fn wait_cleared(bucket: &Bucket, clearing: u64) {
    for round in 0..MAX_WIPE_WAIT {
        if bucket.state() != clearing {
            return;
        }
        if round < 128 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

impl WindowedSketch {
    /// Creates an empty sketch.
    ///
    /// # Panics
    /// If `cfg` is invalid (see [`SketchConfig::validate`]); use
    /// [`WindowedSketch::try_new`] to get an error instead.
    pub fn new(cfg: SketchConfig) -> Self {
        match Self::try_new(cfg) {
            Ok(s) => s,
            Err(e) => panic!("invalid SketchConfig {cfg:?}: {e}"),
        }
    }

    /// Creates an empty sketch, or says why `cfg` is invalid.
    pub fn try_new(cfg: SketchConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self::empty(cfg))
    }

    fn empty(cfg: SketchConfig) -> Self {
        Self {
            cfg,
            ring: OnceBox::new(),
        }
    }

    /// The ring's slots; none before the first insert.
    fn slots(&self) -> &[OnceBox<Bucket>] {
        self.ring.get().map_or(&[], |r| r)
    }

    /// The ring's slots, allocated if they were not yet.
    fn slots_or_init(&self) -> &[OnceBox<Bucket>] {
        self.ring
            .get_or_init(|| Box::new((0..self.cfg.buckets).map(|_| OnceBox::new()).collect()))
    }

    /// The sketch's config.
    pub fn config(&self) -> &SketchConfig {
        &self.cfg
    }

    /// Records that `customer` was seen at `now_ms` (ms since the Unix epoch,
    /// UTC). Lock-free; callable from many threads at once. Inserts stamped
    /// older than the data already in their slot are dropped (see the crate
    /// docs).
    #[inline]
    pub fn insert(&self, customer: u64, now_ms: u64) {
        let epoch = now_ms / self.cfg.bucket_ms;
        if epoch > MAX_EPOCH {
            return;
        }
        let hash = hash_customer(customer);
        let tag = epoch + 1;
        let slot = (epoch % u64::from(self.cfg.buckets)) as usize;
        let Some(cell) = self.slots_or_init().get(slot) else {
            return;
        };
        let bucket = match cell.get() {
            Some(b) => b,
            None => cell.get_or_init(|| Box::new(Bucket::new())),
        };
        for _ in 0..MAX_ATTEMPTS {
            let s = bucket.state();
            let current = s >> TAG_SHIFT;
            if current == tag {
                if s & bucket::CLEARING != 0 {
                    // the rotating thread is still wiping this bucket for our
                    // epoch: an insert now could be wiped with it
                    wait_cleared(bucket, s);
                    continue;
                }
                match bucket.add(hash, s, self.cfg.precision) {
                    Added::Done => return,
                    Added::Retry => continue,
                }
            } else if current > tag {
                return;
            } else {
                bucket.rotate(s, tag);
            }
        }
    }

    /// Estimated distinct customers inserted in the last `window_ms` before
    /// `now_ms` (times `now_ms - window_ms < t <= now_ms`, at bucket
    /// granularity: see the crate docs). `window_ms` above
    /// [`SketchConfig::max_window_ms`] is clamped to it.
    pub fn estimate(&self, window_ms: u64, now_ms: u64) -> Estimate {
        let mut parts = Vec::new();
        self.collect(window_ms, now_ms, &mut parts);
        estimate::estimate(parts, self.cfg.precision)
    }

    /// Estimated distinct customers over the union of `sketches` (a customer
    /// seen by several counts once), each over its last `window_ms` before
    /// `now_ms`. Sketches may differ in config; the coarsest precision is
    /// used. An empty slice gives an exact 0.
    pub fn union_estimate(sketches: &[&WindowedSketch], window_ms: u64, now_ms: u64) -> Estimate {
        let precision = sketches
            .iter()
            .map(|s| s.cfg.precision)
            .min()
            .unwrap_or(*PRECISION_RANGE.start());
        let mut parts = Vec::new();
        for s in sketches {
            s.collect(window_ms, now_ms, &mut parts);
        }
        estimate::estimate(parts, precision)
    }

    fn collect(&self, window_ms: u64, now_ms: u64, parts: &mut Vec<Part>) {
        let Some((lo, hi)) = self.cfg.window_epochs(window_ms, now_ms) else {
            return;
        };
        for epoch in lo..=hi {
            let slot = (epoch % u64::from(self.cfg.buckets)) as usize;
            if let Some(view) = self
                .slots()
                .get(slot)
                .and_then(OnceBox::get)
                .and_then(|b| b.view(epoch + 1))
            {
                parts.push(Part {
                    view,
                    precision: self.cfg.precision,
                });
            }
        }
    }

    /// Approximate heap and inline bytes held by this sketch: the ring, the
    /// buckets in use, their sparse tiers and dense registers (allocator
    /// overhead not included).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.slots();
        std::mem::size_of::<Self>()
            + self
                .ring
                .get()
                .map_or(0, |_| std::mem::size_of::<Box<[()]>>())
            + std::mem::size_of_val(slots)
            + slots
                .iter()
                .filter_map(OnceBox::get)
                .map(Bucket::heap_bytes)
                .sum::<usize>()
    }

    /// Number of ring slots holding some epoch's data.
    fn buckets_in_use(&self) -> usize {
        self.slots()
            .iter()
            .filter_map(OnceBox::get)
            .filter(|b| b.state() >> TAG_SHIFT != 0)
            .count()
    }

    fn to_repr(&self) -> SketchRepr {
        let mut buckets = Vec::new();
        for bucket in self.slots().iter().filter_map(OnceBox::get) {
            let mut found = None;
            for _ in 0..MAX_ATTEMPTS {
                let tag = bucket.state() >> TAG_SHIFT;
                if tag == 0 {
                    break;
                }
                // `view` is `None` while the bucket is being wiped or if it
                // changed epoch during the read; try again a few times.
                if let Some(view) = bucket.view(tag) {
                    found = Some((tag, view));
                    break;
                }
            }
            if let Some((tag, view)) = found {
                buckets.push(BucketRepr {
                    epoch: tag - 1,
                    contents: Contents::from_view(view, self.cfg.precision),
                });
            }
        }
        buckets.sort_by_key(|b| b.epoch);
        SketchRepr {
            config: self.cfg,
            buckets,
        }
    }

    /// Builds a sketch from a repr that passed [`SketchRepr::validate`] (or
    /// came from [`WindowedSketch::to_repr`]).
    fn from_valid_repr(repr: &SketchRepr) -> Self {
        let sketch = Self::empty(repr.config);
        let n = u64::from(repr.config.buckets);
        for b in &repr.buckets {
            let slot = (b.epoch % n) as usize;
            let (hashes, dense) = match &b.contents {
                Contents::Sparse(h) => (h.as_slice(), None),
                Contents::Dense(r) => (&[][..], Some(r.as_slice())),
            };
            if let Some(cell) = sketch.slots_or_init().get(slot) {
                let _ = cell.set(Box::new(Bucket::restore(
                    b.epoch + 1,
                    hashes,
                    dense,
                    repr.config.precision,
                )));
            }
        }
        sketch
    }
}

impl Default for WindowedSketch {
    fn default() -> Self {
        Self::empty(SketchConfig::default())
    }
}

impl Clone for WindowedSketch {
    /// A snapshot copy (compacted: see the crate docs).
    fn clone(&self) -> Self {
        Self::from_valid_repr(&self.to_repr())
    }
}

impl fmt::Debug for WindowedSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowedSketch")
            .field("config", &self.cfg)
            .field("buckets_in_use", &self.buckets_in_use())
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

/// The canonical serialized form.
#[derive(Serialize, Deserialize)]
struct SketchRepr {
    config: SketchConfig,
    /// In increasing epoch order, at most one per ring slot.
    buckets: Vec<BucketRepr>,
}

#[derive(Serialize, Deserialize)]
struct BucketRepr {
    epoch: u64,
    contents: Contents,
}

#[derive(Serialize, Deserialize)]
enum Contents {
    /// Sorted, distinct, non-zero hashes.
    Sparse(Vec<u64>),
    /// `2^precision` registers, sparse hashes folded in.
    Dense(Vec<u8>),
}

impl Contents {
    fn from_view(view: BucketView, precision: u8) -> Self {
        match view.dense {
            Some(mut regs) => {
                for h in view.sparse {
                    let (i, r) = bucket::index_rank(h, precision);
                    if let Some(reg) = regs.get_mut(i) {
                        *reg = (*reg).max(r);
                    }
                }
                Contents::Dense(regs)
            }
            None => {
                let mut hashes = view.sparse;
                hashes.sort_unstable();
                hashes.dedup();
                Contents::Sparse(hashes)
            }
        }
    }
}

impl SketchRepr {
    fn validate(&self) -> Result<(), String> {
        self.config.validate().map_err(|e| e.to_string())?;
        let n = u64::from(self.config.buckets);
        let mut used = vec![false; self.config.buckets as usize];
        let mut last_epoch = None;
        for b in &self.buckets {
            if b.epoch > MAX_EPOCH {
                return Err(format!("bucket epoch {} out of range", b.epoch));
            }
            if last_epoch.is_some_and(|e| e >= b.epoch) {
                return Err("bucket epochs not strictly increasing".into());
            }
            last_epoch = Some(b.epoch);
            let slot = (b.epoch % n) as usize;
            if std::mem::replace(&mut used[slot], true) {
                return Err(format!("two buckets for ring slot {slot}"));
            }
            match &b.contents {
                Contents::Sparse(h) => {
                    if h.windows(2).any(|w| w[0] >= w[1]) || h.first() == Some(&0) {
                        return Err("sparse hashes not sorted, distinct and non-zero".into());
                    }
                }
                Contents::Dense(r) => {
                    if r.len() != 1usize << self.config.precision {
                        return Err(format!("dense bucket with {} registers", r.len()));
                    }
                    if r.iter().any(|&x| x > 64) {
                        return Err("register value above 64".into());
                    }
                }
            }
        }
        Ok(())
    }
}

impl Serialize for WindowedSketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_repr().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for WindowedSketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = SketchRepr::deserialize(deserializer)?;
        repr.validate().map_err(serde::de::Error::custom)?;
        Ok(Self::from_valid_repr(&repr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_deterministic_and_nonzero() {
        // literal values: a changed hash changes every stored snapshot
        assert_eq!(hash_customer(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(hash_customer(1), 0x910a_2dec_8902_5cc1);
        assert_eq!(hash_customer(2), 0x9758_35de_1c97_56ce);
        assert_eq!(hash_customer(42), 0xbdd7_3226_2feb_6e95);
        for id in 0..10_000 {
            assert_ne!(hash_customer(id), 0);
        }
    }

    #[test]
    fn window_epochs_cover_overlapping_buckets() {
        let cfg = SketchConfig {
            bucket_ms: 10,
            buckets: 4,
            precision: 12,
        };
        assert_eq!(cfg.max_window_ms(), 31);
        // now = 25: window 10 covers 16..=25: buckets 1 and 2.
        assert_eq!(cfg.window_epochs(10, 25), Some((1, 2)));
        assert_eq!(cfg.window_epochs(6, 25), Some((2, 2)));
        assert_eq!(cfg.window_epochs(0, 25), None);
        // Clamped to 31 ms: 30..=60 -> buckets 3..=6 (4 slots).
        assert_eq!(cfg.window_epochs(1_000, 60), Some((3, 6)));
        assert_eq!(cfg.window_epochs(1_000, 5), Some((0, 0)));
        assert_eq!(cfg.window_epochs(5, u64::MAX).map(|(a, b)| b - a), Some(0));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let ok = SketchConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            SketchConfig { bucket_ms: 0, ..ok },
            SketchConfig { buckets: 0, ..ok },
            SketchConfig {
                buckets: MAX_BUCKETS + 1,
                ..ok
            },
            SketchConfig { precision: 9, ..ok },
            SketchConfig {
                precision: 19,
                ..ok
            },
        ] {
            assert!(WindowedSketch::try_new(bad).is_err(), "{bad:?}");
        }
    }
}
