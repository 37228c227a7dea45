//! The admissions remembered by Meta's message id (R3.5 for statuses that name only
//! the message) and the display-number index, at their edges. Inside the crate: the
//! memory bound is checked on the writer's own map.

use super::*;
use crate::ids::{TemplateId, WaId};
use crate::policy::Category;

const T0: Ts = Ts(1_795_000_000_000);

fn number(s: &str) -> NumberId {
    NumberId::parse("number", s).unwrap()
}

fn customer() -> WaId {
    WaId::parse("customer", "4915000000001").unwrap()
}

/// An engine with numbers 1001 and 1002, and one template send of 1001 to the
/// customer admitted and reported SENT with its message id, all at `T0`.
fn sent() -> (Engine, AdmissionId) {
    let mut e = registered();
    let a = admit(&mut e, T0);
    let out = e
        .apply(report("1001", Some(&a), DeliveryStatus::Sent), T0)
        .unwrap();
    assert!(matches!(
        out,
        Output::Outcome {
            released: false,
            ..
        }
    ));
    (e, a)
}

fn registered() -> Engine {
    let mut e = Engine::new();
    for n in ["1001", "1002"] {
        e.apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(number(n)),
                ..Default::default()
            }),
            T0,
        )
        .unwrap();
    }
    e
}

/// One template send of 1001 to the customer, admitted at `at`.
fn admit(e: &mut Engine, at: Ts) -> AdmissionId {
    let req = AdmitRequest {
        number: number("1001"),
        customer: customer(),
        kind: SendKind::Template {
            id: TemplateId::parse("template", "welcome").unwrap(),
            category: Category::Utility,
        },
        idempotency_key: None,
    };
    let Ok(Output::Decision(d)) = e.apply(Command::Admit(req), at) else {
        panic!("a decision")
    };
    d.admission.expect("a counted send")
}

const WAMID: &str = "wamid.HBgLMTU1NTAwMDEyMzQVAgARGBI";

fn report(n: &str, a: Option<&AdmissionId>, status: DeliveryStatus) -> Command {
    report_of(WAMID, n, a, status)
}

fn report_of(message: &str, n: &str, a: Option<&AdmissionId>, status: DeliveryStatus) -> Command {
    Command::Outcome(Outcome {
        number: number(n),
        customer: customer(),
        admission: a.cloned(),
        status,
        error_code: (status == DeliveryStatus::Failed).then_some(131_026),
        template: None,
        event_key: None,
        message_id: Some(message.into()),
    })
}

/// Whether applying `cmd` at `at` released an admission.
fn releases(e: &mut Engine, cmd: Command, at: Ts) -> bool {
    match e.apply(cmd, at) {
        Ok(Output::Outcome { released, .. }) => released,
        other => panic!("{other:?}"),
    }
}

fn released(e: &mut Engine, n: &str, at: Ts) -> bool {
    match e.apply(report(n, None, DeliveryStatus::Failed), at) {
        Ok(Output::Outcome { released, .. }) => released,
        other => panic!("{other:?}"),
    }
}

fn used(e: &Engine, at: Ts) -> u32 {
    e.reader().number_status(&number("1001"), at).unwrap().used
}

#[test]
fn a_failed_status_naming_only_the_message_releases_until_its_window_ends() {
    let window = Policy::seeds().conversation_window;
    let last = T0.plus(Dur(window.ms() - 1));
    // the last moment of the window, also after a snapshot and restore
    let (e, _) = sent();
    let mut e = Engine::restore(&e.snapshot()).unwrap();
    assert_eq!(used(&e, last), 1);
    assert!(released(&mut e, "1001", last));
    assert_eq!(used(&e, last), 0);
    // the window's end: the message is no longer known, and nothing is released
    let (mut e, _) = sent();
    assert!(!released(&mut e, "1001", T0.plus(window)));
}

#[test]
fn a_failed_status_of_another_number_or_after_delivery_releases_nothing() {
    let (mut e, _) = sent();
    assert!(!released(&mut e, "1002", T0.plus(Dur(1))));
    assert_eq!(used(&e, T0.plus(Dur(1))), 1);
    // a DELIVERED status naming only the message marks its admission delivered
    let out = e
        .apply(
            report("1001", None, DeliveryStatus::Delivered),
            T0.plus(Dur(2)),
        )
        .unwrap();
    assert!(matches!(
        out,
        Output::Outcome {
            released: false,
            ..
        }
    ));
    assert!(!released(&mut e, "1001", T0.plus(Dur(3))));
    assert_eq!(used(&e, T0.plus(Dur(3))), 1);
}

#[test]
fn the_tick_forgets_a_message_when_its_window_ends() {
    let window = Policy::seeds().conversation_window;
    let (mut e, _) = sent();
    e.apply(Command::Tick, T0.plus(Dur(window.ms() - 1)))
        .unwrap();
    assert_eq!((e.w.sent.len(), e.w.sent_expiry.len()), (1, 1));
    e.apply(Command::Tick, T0.plus(window)).unwrap();
    assert_eq!((e.w.sent.len(), e.w.sent_expiry.len()), (0, 0));
}

#[test]
fn display_digits_find_the_latest_number_registered_with_them() {
    let mut e = Engine::new();
    let reg = |n: &str, d: &str| {
        Command::RegisterNumber(NumberRegistration {
            number: Some(number(n)),
            display_phone_number: Some(d.into()),
            ..Default::default()
        })
    };
    e.apply(reg("1001", "15550001234"), T0).unwrap();
    assert_eq!(
        e.reader().number_by_display("15550001234"),
        Some((number("1001"), T0))
    );
    // moved to another number; the first number's new digits replace its old ones
    e.apply(reg("1002", "15550001234"), T0.plus(Dur(1)))
        .unwrap();
    e.apply(reg("1001", "15550009999"), T0.plus(Dur(2)))
        .unwrap();
    let e = Engine::restore(&e.snapshot()).unwrap();
    let r = e.reader();
    assert_eq!(
        r.number_by_display("15550001234"),
        Some((number("1002"), T0.plus(Dur(1))))
    );
    assert_eq!(
        r.number_by_display("15550009999"),
        Some((number("1001"), T0.plus(Dur(2))))
    );
    assert_eq!(e.shared.displays.len(), 2);
    // not digits: refused by name, nothing changes
    let mut e = e;
    let err = e.apply(reg("1003", "+1 555"), T0.plus(Dur(3))).unwrap_err();
    assert!(err.to_string().contains("display_phone_number"), "{err}");
    assert!(e.reader().scope_of(&number("1003")).is_none());
}

/// Meta's FAILED status (naming only the message) came before the sender's SENT report
/// with that message id: the report releases then, while the failure is remembered (the
/// conversation window from the failure). The send is admitted a minute after the
/// failure here only so that the failure's memory ends before the admission's own
/// window: the last edge then tests the former.
#[test]
fn a_failure_reported_before_the_send_releases_when_the_send_is_reported() {
    let window = Policy::seeds().conversation_window;
    let failed_then_admitted = || {
        let mut e = registered();
        assert!(!released(&mut e, "1001", T0));
        let a = admit(&mut e, T0.plus(Dur::secs(60)));
        (e, a)
    };
    let last = T0.plus(Dur(window.ms() - 1));
    // the failure's last millisecond, also across a snapshot restore
    let (e, a) = failed_then_admitted();
    let mut e = Engine::restore(&e.snapshot()).unwrap();
    assert_eq!(used(&e, last), 1);
    let sent = report("1001", Some(&a), DeliveryStatus::Sent);
    assert!(releases(&mut e, sent.clone(), last));
    assert_eq!(used(&e, last), 0);
    // taken: the same report again releases nothing
    assert!(!releases(&mut e, sent.clone(), last));
    // the end of its window: forgotten
    let (mut e, _) = failed_then_admitted();
    assert!(!releases(&mut e, sent.clone(), T0.plus(window)));
    assert_eq!(used(&e, T0.plus(window)), 1);
    // another number's report of the same message id takes nothing
    let (mut e, a) = failed_then_admitted();
    let other = report("1002", Some(&a), DeliveryStatus::Sent);
    assert!(!releases(&mut e, other, T0.plus(Dur(1))));
    assert!(releases(&mut e, sent, T0.plus(Dur(2))));
}

/// FAILED, then DELIVERED, both naming only the message, then the send's report: the
/// message reached the customer, so nothing is released (R3.5), and the admission is
/// known delivered afterwards.
#[test]
fn a_delivery_between_the_early_failure_and_the_report_keeps_the_admission() {
    let mut e = registered();
    let a = admit(&mut e, T0);
    assert!(!released(&mut e, "1001", T0));
    let delivered = report("1001", None, DeliveryStatus::Delivered);
    assert!(!releases(&mut e, delivered, T0.plus(Dur(1))));
    let sent = report("1001", Some(&a), DeliveryStatus::Sent);
    assert!(!releases(&mut e, sent, T0.plus(Dur(2))));
    assert_eq!(used(&e, T0.plus(Dur(2))), 1);
    assert!(!released(&mut e, "1001", T0.plus(Dur(3))));
    assert_eq!(used(&e, T0.plus(Dur(3))), 1);
}

/// Early failures leave memory when their window ends (the tick), and a scope holds at
/// most `EARLY_FAILURES_PER_SCOPE`, forgetting the oldest first.
#[test]
fn early_failures_are_swept_by_the_tick_and_bounded_per_scope() {
    let window = Policy::seeds().conversation_window;
    let mut e = registered();
    assert!(!released(&mut e, "1001", T0));
    let held = |e: &Engine| {
        let queued: usize = e.w.early_expiry.values().map(|q| q.len()).sum();
        (e.w.early_failures.len(), queued)
    };
    e.apply(Command::Tick, T0.plus(Dur(window.ms() - 1)))
        .unwrap();
    assert_eq!(held(&e), (1, 1));
    e.apply(Command::Tick, T0.plus(window)).unwrap();
    assert_eq!(held(&e), (0, 0));
    assert!(e.w.early_expiry.is_empty());

    let mut e = registered();
    let failed = |i: usize| report_of(&format!("wamid.{i}"), "1001", None, DeliveryStatus::Failed);
    for i in 0..=EARLY_FAILURES_PER_SCOPE {
        assert!(!releases(&mut e, failed(i), T0.plus(Dur(i as u64))));
    }
    assert_eq!(
        held(&e),
        (EARLY_FAILURES_PER_SCOPE, EARLY_FAILURES_PER_SCOPE)
    );
    let now = T0.plus(Dur(EARLY_FAILURES_PER_SCOPE as u64 + 1));
    let a = admit(&mut e, now);
    let first = report_of("wamid.0", "1001", Some(&a), DeliveryStatus::Sent);
    assert!(!releases(&mut e, first, now));
    let second = report_of("wamid.1", "1001", Some(&a), DeliveryStatus::Sent);
    assert!(releases(&mut e, second, now));
}
