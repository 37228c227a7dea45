//! Scope summaries for metrics (`ScopeBrief`, `Reader::scope_summaries`):
//! which scopes are nearest their limit, and figures that agree with status
//! (section 11) at the edges of the 24 h windows (R2.1, R3.1).

mod support;
use admit_core::*;
use support::*;

fn ids(h: &H, now: Ts) -> Vec<ScopeBrief> {
    let mut v = h.e.reader().scope_briefs(now);
    v.sort_by(ScopeBrief::nearest_limit_first);
    v
}

fn key(n: &str) -> ScopeKey {
    ScopeKey::Number(num(n))
}

#[test]
fn nearest_limit_first_then_summaries_agree_with_status() {
    let mut h = H::new();
    h.register("1", Some(Limit::Capped(10)), T0);
    h.register("2", Some(Limit::Capped(100)), T0);
    h.register("3", Some(Limit::Unlimited), T0);
    h.register("4", Some(Limit::Capped(100)), T0);
    h.open_many("1", 0, 8, T0);
    h.open_many("2", 100, 10, T0);
    h.open_many("4", 200, 10, T0);
    h.inbound("1", 500, None, T0);

    let b = ids(&h, T0);
    let order: Vec<ScopeKey> = b.iter().map(|s| s.scope.clone()).collect();
    // ratio 0.2, then 0.9 twice (ties by scope), unlimited last
    assert_eq!(order, vec![key("1"), key("2"), key("4"), key("3")]);
    assert_eq!(b[0].headroom_ratio(), Some(0.2));
    assert_eq!(b[3].headroom_ratio(), None);

    let s = h.e.reader().scope_summaries(&[b[0].id, b[3].id], T0);
    assert_eq!(s.len(), 2);
    let st = h.status("1", T0);
    assert_eq!((s[0].brief.used, s[0].brief.limit), (st.used, st.limit));
    assert_eq!(s[0].brief.headroom(), Some(2));
    assert_eq!(s[0].quality, st.quality);
    assert_eq!(s[0].brief.account_status, st.account_status);
    assert_eq!(s[0].unique_7d, st.unique_7d);
    assert_eq!(s[0].open_service_windows, 1);
    assert_eq!(s[0].numbers_by_status[0], (NumberStatus::Connected, 1));
    assert_eq!(s[1].brief.limit, Limit::Unlimited);
    assert_eq!(s[1].open_service_windows, 0);

    // the last millisecond of the 24 h windows, then their end
    let last = Ts(T0.0 + DAY - 1);
    let s = h.e.reader().scope_summaries(&[b[0].id], last);
    assert_eq!((s[0].brief.used, s[0].open_service_windows), (8, 1));
    let end = Ts(T0.0 + DAY);
    let s = h.e.reader().scope_summaries(&[b[0].id], end);
    assert_eq!((s[0].brief.used, s[0].open_service_windows), (0, 0));
    assert_eq!(s[0].brief.headroom_ratio(), Some(1.0));
}

#[test]
fn a_used_up_limit_is_restricted_with_no_room() {
    let mut h = H::new();
    h.register("1", Some(Limit::Capped(5)), T0);
    h.open_many("1", 0, 5, T0);
    let b = ids(&h, T0);
    assert_eq!(b[0].headroom(), Some(0));
    assert_eq!(b[0].headroom_ratio(), Some(0.0));
    assert_eq!(b[0].account_status, AccountStatus::Restricted);
}
