//! Turning bucket views into an [`Estimate`].

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

use crate::bucket::{index_rank, BucketView};
use crate::Estimate;

/// A view together with the register precision of the sketch it came from.
pub(crate) struct Part {
    pub(crate) view: BucketView,
    pub(crate) precision: u8,
}

/// Estimates the number of distinct hashes in the union of `parts`, using
/// `2^precision` registers when any part is dense (`precision` must not
/// exceed any part's precision).
pub(crate) fn estimate(parts: Vec<Part>, precision: u8) -> Estimate {
    if parts.iter().all(|p| p.view.dense.is_none()) {
        // Every part is an exact set of (bijective) hashes: count exactly.
        let mut all: Vec<u64> = parts.into_iter().flat_map(|p| p.view.sparse).collect();
        all.sort_unstable();
        all.dedup();
        return Estimate {
            value: all.len() as u64,
            exact: true,
        };
    }
    let m = 1usize << precision;
    let mut regs = vec![0u8; m];
    for part in &parts {
        for &h in &part.view.sparse {
            let (i, r) = index_rank(h, precision);
            regs[i] = regs[i].max(r);
        }
        if let Some(dense) = &part.view.dense {
            // A register of a finer sketch folds into the coarser register
            // that shares its top bits; ranks do not depend on the index.
            let shift = part.precision.saturating_sub(precision);
            for (i, &r) in dense.iter().enumerate() {
                let j = i >> shift;
                if let Some(dst) = regs.get_mut(j) {
                    *dst = (*dst).max(r);
                }
            }
        }
    }
    Estimate {
        value: hll_estimate(regs),
        exact: false,
    }
}

/// The LogLog-Beta estimate of `hyperloglockless` for a register array whose
/// length is a power of two in 2^4..=2^18 (the config guarantees it).
fn hll_estimate(regs: Vec<u8>) -> u64 {
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    // Summed in register order so the result does not depend on threads.
    let sum: f64 = regs.iter().map(|&r| (-f64::from(r)).exp2()).sum();
    let hll = hyperloglockless::HyperLogLog::from_parts(
        regs.into_boxed_slice(),
        BuildHasherDefault::<DefaultHasher>::default(),
        zeros,
        sum,
    );
    let raw = hll.raw_count();
    if raw.is_finite() && raw > 0.0 {
        raw.round() as u64
    } else {
        0
    }
}
