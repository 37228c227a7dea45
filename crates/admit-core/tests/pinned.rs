//! Literal values of the stable hashes. Shards are placed by `ScopeKey::stable_hash`, and
//! stored state lives on the shard its scope hashed to: a hash that changes between
//! releases re-routes every scope away from its state (R3.4 across an upgrade). These
//! values were computed once; a change here is a change of the storage format.

use admit_core::hash::{hash_bytes, mix64};
use admit_core::{NumberId, PortfolioId, ScopeKey};

#[test]
fn stable_hashes_keep_their_values() {
    let n = |s: &str| NumberId::parse("number", s).unwrap();
    let p = |s: &str| PortfolioId::parse("portfolio", s).unwrap();
    let got = [
        mix64(1),
        mix64(u64::MAX),
        hash_bytes(b""),
        hash_bytes(b"waba1"),
        n("1001").stable_hash(),
        // leading zeros and length are part of a number's identity
        n("01001").stable_hash(),
        n("15550001234").stable_hash(),
        n(&"9".repeat(32)).stable_hash(),
        ScopeKey::Number(n("1001")).stable_hash(),
        ScopeKey::Portfolio(p("waba1")).stable_hash(),
        ScopeKey::Portfolio(p("123456789012345")).stable_hash(),
    ];
    let want: [u64; 11] = [
        0x5692_161d_100b_05e5,
        0xb4d0_55fc_f2cb_bd7b,
        0xf52a_15e9_a9b5_e89b,
        0x40fe_960f_d87e_87a0,
        0xf021_e837_4ab4_891d,
        0x5fef_e18c_82b9_a33c,
        0x745b_5cc4_2956_0fc6,
        0xce30_7d7f_f2ab_f71c,
        0xf021_e837_4ab4_891d,
        0x40fe_960f_d87e_87a0,
        0xe0b2_9a75_c870_94e8,
    ];
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(*g, w, "value {i}: {g:#018x}");
    }
}
