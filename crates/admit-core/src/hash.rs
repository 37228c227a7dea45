//! A fixed, platform-independent mixer: shard routing and sketches must hash the same on
//! every node and across restarts, which `std`'s randomized hasher does not.

/// SplitMix64's finalizer: a cheap bijective mix with good avalanche.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: for string keys (portfolio ids) in shard routing.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= c as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}
