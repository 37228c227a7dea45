//! Scope summaries for metrics (`ScopeBrief`, `ScopeRollup`, `Reader::scope_summaries`):
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

/// The rollup a scrape uses (one pass, bounded selection) keeps exactly the first
/// `top` of the full sort, in that order, and counts every scope in the aggregates.
#[test]
fn rollup_keeps_the_top_of_the_full_sort_and_counts_every_scope() {
    let mut h = H::new();
    // 30 scopes with distinct usage; ties in ratio broken by headroom, then scope
    for i in 0..30u64 {
        let n = format!("{}", 100 + i);
        let cap = if i % 3 == 0 { 100 } else { 50 };
        h.register(&n, Some(Limit::Capped(cap)), T0);
        h.open_many(&n, i * 1_000, i % 17, T0);
    }
    h.register("999", Some(Limit::Unlimited), T0);
    h.open_many("999", 50_000, 5, T0);
    let all = ids(&h, T0);
    for top in [0, 1, 7, 30, 31, 40] {
        let mut r = ScopeRollup::new(top);
        h.e.reader().roll_up(3, T0, &mut r);
        assert_eq!(r.scopes, 31);
        let n: u64 = r.groups.values().sum();
        assert_eq!(n, 31);
        let kept = r.into_top();
        let want: Vec<&ScopeBrief> = all.iter().take(top).collect();
        let got: Vec<&ScopeBrief> = kept.iter().map(|(_, b)| b).collect();
        assert_eq!(got, want, "top {top}");
        assert!(kept.iter().all(|(tag, _)| *tag == 3));
    }
    // the histogram: capped scopes only, cumulative at each bound
    let mut r = ScopeRollup::new(5);
    h.e.reader().roll_up(0, T0, &mut r);
    let hist = &r.ratios[0];
    assert_eq!(hist.count, 30);
    for (i, b) in HEADROOM_RATIO_BOUNDS.iter().enumerate() {
        let n = all
            .iter()
            .filter(|s| s.headroom_ratio().is_some_and(|x| x <= *b))
            .count() as u64;
        assert_eq!(hist.le[i], n, "bucket le={b}");
    }
    assert_eq!(r.ratios[1].count, 0);
    let unlimited = ScopeGroup {
        portfolio: false,
        account_status: AccountStatus::Healthy,
        limit: Limit::Unlimited,
    };
    assert_eq!(r.groups.get(&unlimited), Some(&1));
}

/// Per-scope templates: a pause counts until the scope's profile's pause length
/// ends (R6.2, R6.3), a disabled template until APPROVED.
#[test]
fn summaries_count_the_templates_that_deny_the_scope_now() {
    let mut h = H::new();
    h.register("1", Some(Limit::Capped(250)), T0);
    let b = ids(&h, T0);
    let tpl = |name: &str, event: TemplateEvent| PlatformEvent::TemplateStatus {
        template: TemplateId::parse("template", name).unwrap(),
        event,
    };
    let t = at(1, 12, 0);
    h.event(
        tpl(
            "promo",
            TemplateEvent::Paused {
                title: Some("FIRST_PAUSE".into()),
                until: None,
            },
        ),
        t,
    );
    h.event(tpl("old", TemplateEvent::Disabled), t);
    h.event(tpl("fine", TemplateEvent::Approved), t);
    let r = h.e.reader();
    let counts = |now: Ts| r.scope_summaries(&[b[0].id], now)[0].templates;
    let last = Ts(t.0 + 3 * HOUR - 1);
    assert_eq!(
        counts(last),
        TemplateCounts {
            paused: 1,
            disabled: 1
        }
    );
    // the send is denied exactly while the metric counts the pause
    h.inbound("1", 1, None, t);
    assert_eq!(h.admit("1", 1, mkt(), last).reason, Reason::TemplatePaused);
    let end = Ts(t.0 + 3 * HOUR);
    assert_eq!(
        counts(end),
        TemplateCounts {
            paused: 0,
            disabled: 1
        }
    );
    h.event(tpl("old", TemplateEvent::Approved), end);
    assert_eq!(counts(end), TemplateCounts::default());
}

/// What a metrics scrape costs in admit-core with 100,000 scopes: the rollup
/// over all of them (aggregates and the top 100) and the full summaries of the
/// top 100. A measurement, not a check (docs/benchmarks.md, "Metrics scrape"):
/// `cargo test --release -p admit-core --test summary -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement: run in a release build, see docs/benchmarks.md"]
fn rollup_of_100k_scopes() {
    const SCOPES: u64 = 100_000;
    const BUSY: u64 = 2_000;
    let mut h = H::new();
    for i in 0..SCOPES {
        h.register(&format!("49180{i:06}"), Some(Limit::Capped(1_000)), T0);
    }
    for i in 0..BUSY {
        h.open_many(&format!("49180{i:06}"), i * 100, 1 + i % 20, T0);
    }
    let r = h.e.reader();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut roll = ScopeRollup::new(100);
        r.roll_up(0, T0, &mut roll);
        assert_eq!(roll.scopes, SCOPES);
        let ids: Vec<u32> = roll.into_top().iter().map(|(_, b)| b.id).collect();
        assert_eq!(r.scope_summaries(&ids, T0).len(), 100);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "rollup + 100 summaries of {SCOPES} scopes: median {:?}, min {:?}, max {:?} (5 runs)",
        times[2], times[0], times[4]
    );
    // the way before the rollup, for comparison: every brief, a full sort
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut all = r.scope_briefs(T0);
        all.sort_by(ScopeBrief::nearest_limit_first);
        let ids: Vec<u32> = all.iter().take(100).map(|b| b.id).collect();
        assert_eq!(r.scope_summaries(&ids, T0).len(), 100);
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "briefs + sort + 100 summaries (before): median {:?}, min {:?}, max {:?} (5 runs)",
        times[2], times[0], times[4]
    );
}
