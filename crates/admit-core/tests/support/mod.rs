//! A small harness: an engine, a test clock, and a cross-check that every decision the
//! concurrent fast path makes equals the one the writer makes for the same send.
#![allow(dead_code)]

use admit_core::*;

/// 2026-01-05 00:00:00 UTC, a Monday ("day 1" in the seed examples).
pub const T0: Ts = Ts(1_767_571_200_000);
pub const MIN: u64 = 60_000;
pub const HOUR: u64 = 3_600_000;
pub const DAY: u64 = 86_400_000;

pub fn num(s: &str) -> NumberId {
    NumberId::parse("number", s).unwrap()
}
pub fn cust(i: u64) -> WaId {
    WaId::parse("customer", &(491_500_000_000 + i).to_string()).unwrap()
}
pub fn tpl(id: &str, c: Category) -> SendKind {
    SendKind::Template {
        id: TemplateId::parse("template", id).unwrap(),
        category: c,
    }
}
pub fn mkt() -> SendKind {
    tpl("promo", Category::Marketing)
}
pub fn util() -> SendKind {
    tpl("receipt", Category::Utility)
}
pub fn at(day: u64, hour: u64, minute: u64) -> Ts {
    Ts(T0.0 + (day - 1) * DAY + hour * HOUR + minute * MIN)
}

pub struct H {
    pub e: Engine,
    pub fast_hits: u64,
    /// Every command applied, with its time: a log to replay.
    pub log: Vec<(Command, Ts)>,
}

impl H {
    pub fn new() -> Self {
        H {
            e: Engine::new(),
            fast_hits: 0,
            log: Vec::new(),
        }
    }

    pub fn apply(&mut self, c: Command, now: Ts) -> Result<Output, CoreError> {
        self.log.push((c.clone(), now));
        self.e.apply(c, now)
    }

    pub fn register(&mut self, n: &str, limit: Option<Limit>, now: Ts) {
        self.register_with(
            NumberRegistration {
                number: Some(num(n)),
                limit,
                ..Default::default()
            },
            now,
        );
    }

    pub fn register_with(&mut self, r: NumberRegistration, now: Ts) {
        assert_eq!(
            self.apply(Command::RegisterNumber(r), now),
            Ok(Output::Registered)
        );
    }

    pub fn admit_req(&mut self, req: AdmitRequest, now: Ts) -> Result<Decision, CoreError> {
        // the writer never goes back in time; a leader's clock does not either
        let fast = self.e.reader().try_fast(&req, now.max(self.e.now()));
        let out = self.apply(Command::Admit(req), now)?;
        let Output::Decision(d) = out else {
            panic!("admit gives a decision")
        };
        if let Some(f) = fast {
            self.fast_hits += 1;
            assert_eq!(f, d, "fast path and writer disagree");
        }
        Ok(d)
    }

    pub fn admit(&mut self, n: &str, c: u64, kind: SendKind, now: Ts) -> Decision {
        self.admit_req(
            AdmitRequest {
                number: num(n),
                customer: cust(c),
                kind,
                idempotency_key: None,
            },
            now,
        )
        .unwrap()
    }

    pub fn inbound(&mut self, n: &str, c: u64, text: Option<&str>, now: Ts) -> Output {
        self.apply(
            Command::Inbound(Inbound {
                number: num(n),
                customer: cust(c),
                kind: InboundKind::Message,
                text: text.map(str::to_owned),
                event_key: None,
            }),
            now,
        )
        .unwrap()
    }

    pub fn event(&mut self, ev: PlatformEvent, now: Ts) -> Output {
        self.apply(
            Command::Platform {
                event: ev,
                event_key: None,
            },
            now,
        )
        .unwrap()
    }

    pub fn outcome(&mut self, n: &str, c: u64, code: Option<u32>, now: Ts) -> Output {
        self.apply(
            Command::Outcome(Outcome {
                number: num(n),
                customer: cust(c),
                admission: None,
                status: DeliveryStatus::Failed,
                error_code: code,
                template: None,
                event_key: None,
                message_id: None,
            }),
            now,
        )
        .unwrap()
    }

    pub fn status(&self, n: &str, now: Ts) -> ScopeStatus {
        self.e.reader().number_status(&num(n), now).unwrap()
    }

    /// Opens `count` new conversations with customers `first..first+count` at `now`.
    pub fn open_many(&mut self, n: &str, first: u64, count: u64, now: Ts) {
        for c in first..first + count {
            let d = self.admit(n, c, util(), now);
            assert_eq!(d.reason, Reason::NewConversation, "customer {c}");
        }
    }
}
