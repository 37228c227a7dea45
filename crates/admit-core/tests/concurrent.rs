//! Readers decide open-window sends while the writer applies commands: no deadlock, and
//! a reader never sees a window close while it is open (windows only open or move on
//! while time stands still).

mod support;
use admit_core::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use support::*;

#[test]
fn readers_run_alongside_the_writer() {
    let mut e = Engine::new();
    for n in 0..8 {
        e.apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(num(&(100 + n).to_string())),
                limit: Some(Limit::Unlimited),
                ..Default::default()
            }),
            T0,
        )
        .unwrap();
    }
    let reader = e.reader();
    let done = Arc::new(AtomicBool::new(false));
    // the highest customer id whose window the writer has opened, per reader's view
    let opened = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (r, done, opened) = (reader.clone(), done.clone(), opened.clone());
            std::thread::spawn(move || {
                let mut checked = 0u64;
                loop {
                    // one last pass after the writer is done, whatever the scheduling:
                    // then every window it opened is open
                    let last = done.load(Ordering::Acquire);
                    let upto = opened.load(Ordering::Acquire);
                    for c in upto.saturating_sub(50)..upto {
                        let req = AdmitRequest {
                            number: num(&(100 + c % 8).to_string()),
                            customer: cust(c),
                            kind: SendKind::FreeForm,
                            idempotency_key: None,
                        };
                        let d = r.try_fast(&req, T0).expect("an open window decides fast");
                        assert_eq!(d.reason, Reason::ServiceWindow);
                        checked += 1;
                    }
                    let _ = r.number_status(&num("100"), T0);
                    if last {
                        break;
                    }
                }
                checked
            })
        })
        .collect();
    for c in 0..20_000u64 {
        e.apply(
            Command::Inbound(Inbound {
                number: num(&(100 + c % 8).to_string()),
                customer: cust(c),
                kind: InboundKind::Message,
                text: None,
                event_key: None,
            }),
            T0,
        )
        .unwrap();
        e.apply(
            Command::Admit(AdmitRequest {
                number: num(&(100 + c % 8).to_string()),
                customer: cust(1_000_000 + c),
                kind: util(),
                idempotency_key: None,
            }),
            T0,
        )
        .unwrap();
        opened.store(c + 1, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    // each reader's last pass checked the 50 newest windows; how many more it checked
    // while the writer ran depends on the scheduling
    for t in readers {
        assert!(t.join().unwrap() >= 50, "a reader's last pass checked 50");
    }
    assert_eq!(
        e.reader().number_status(&num("100"), T0).unwrap().used,
        2_500
    );
}

/// The engine's time reaches readers (issue 11, item 2): the latest command time
/// applied, never going back, and kept across a snapshot restore.
#[test]
fn readers_see_the_engines_time() {
    let mut e = Engine::new();
    let reader = e.reader();
    assert_eq!(reader.engine_now(), Ts(0));
    e.apply(Command::Tick, T0.plus(Dur(5 * HOUR))).unwrap();
    assert_eq!(reader.engine_now(), T0.plus(Dur(5 * HOUR)));
    // an earlier stamp is taken as the engine's time
    e.apply(Command::Tick, T0).unwrap();
    assert_eq!(reader.engine_now(), T0.plus(Dur(5 * HOUR)));
    let bytes = e.snapshot();
    let mut other = Engine::new();
    let r2 = other.reader();
    other.load_snapshot(&bytes).unwrap();
    assert_eq!(r2.engine_now(), T0.plus(Dur(5 * HOUR)));
    assert_eq!(
        Engine::restore(&bytes).unwrap().reader().engine_now(),
        T0.plus(Dur(5 * HOUR))
    );
}
