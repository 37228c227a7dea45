//! Shared helpers for the integration tests.
#![allow(dead_code)]

/// Distinct, deterministic, scrambled customer ids for trial `trial`: a
/// bijection of `(trial, i)`, so ids never repeat within or across trials.
pub fn customer(trial: u64, i: u64) -> u64 {
    let x = (trial << 40) | i;
    let x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 32)
}

/// Start of an arbitrary UTC day used as "day 0" in the tests (2025-01-01).
pub const T0: u64 = 1_735_689_600_000;
