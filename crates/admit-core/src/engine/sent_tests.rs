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

/// An engine with number 1001, and one template send to the customer admitted and
/// reported SENT with its message id, all at `T0`.
fn sent() -> (Engine, AdmissionId) {
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
    let req = AdmitRequest {
        number: number("1001"),
        customer: customer(),
        kind: SendKind::Template {
            id: TemplateId::parse("template", "welcome").unwrap(),
            category: Category::Utility,
        },
        idempotency_key: None,
    };
    let Ok(Output::Decision(d)) = e.apply(Command::Admit(req), T0) else {
        panic!("a decision")
    };
    let a = d.admission.expect("a counted send");
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

fn report(n: &str, a: Option<&AdmissionId>, status: DeliveryStatus) -> Command {
    Command::Outcome(Outcome {
        number: number(n),
        customer: customer(),
        admission: a.cloned(),
        status,
        error_code: (status == DeliveryStatus::Failed).then_some(131_026),
        template: None,
        event_key: None,
        message_id: Some("wamid.HBgLMTU1NTAwMDEyMzQVAgARGBI".into()),
    })
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
