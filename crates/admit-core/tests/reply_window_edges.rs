//! Section 10 at the edge of a free entry point window (R2.3): under a
//! restriction of business-initiated sends, a send inside the customer's
//! free entry point window is a reply, to its last millisecond, and not
//! from the window's end on. Found by `cargo mutants` on `rules.rs`
//! (docs/testing.md): no test put a restriction over a free entry point.

mod support;
use admit_core::*;
use support::*;

const N: &str = "2001";

#[test]
fn section_10_a_free_entry_point_is_a_reply_until_its_end() {
    let mut h = H::new();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            portfolio: Some(PortfolioId::parse("portfolio", "M").unwrap()),
            profile: Some("meta".into()),
            limit: Some(Limit::Capped(250)),
            ..Default::default()
        },
        T0,
    );
    let t = at(1, 9, 0);
    let out = h.event(
        PlatformEvent::FreeEntryPoint {
            number: num(N),
            customer: cust(1),
        },
        t,
    );
    assert!(
        matches!(out, Output::Event { applied: true, .. }),
        "{out:?}"
    );
    // business-initiated sends restricted well past the window's end
    h.event(
        PlatformEvent::AccountRestriction {
            target: Target::Number(num(N)),
            until: Some(Ts(t.0 + 100 * HOUR)),
            lifted: false,
            types: vec![RestrictionType::BizInitiated],
        },
        t,
    );
    let end = Ts(t.0 + 72 * HOUR);
    // 1 ms before the end: a reply, allowed in the free entry point window
    let d = h.admit(N, 1, mkt(), Ts(end.0 - 1));
    assert_eq!(
        (d.reason, d.allowed),
        (Reason::FreeEntryPoint, true),
        "{d:?}"
    );
    // at the end: business-initiated, so restricted
    let d = h.admit(N, 1, mkt(), end);
    assert_eq!(
        (d.reason, d.allowed),
        (Reason::NumberRestricted, false),
        "{d:?}"
    );
}
