//! Sends: a `Send` as the core's `AdmitRequest`, and template categories.

use admit_core::{AdmitRequest, Category, NumberId, SendKind, TemplateId};
use admit_proto::v1 as pb;

use super::ids::{customer, idempotency_key, number, template};
use super::scalar::under;
use crate::error::ApiError;

pub(crate) fn category(v: i32) -> Result<Category, ApiError> {
    match pb::TemplateCategory::try_from(v) {
        Ok(pb::TemplateCategory::Marketing) => Ok(Category::Marketing),
        Ok(pb::TemplateCategory::Utility) => Ok(Category::Utility),
        Ok(pb::TemplateCategory::Authentication) => Ok(Category::Authentication),
        _ => Err(ApiError::invalid(
            "template.category",
            "is required: MARKETING, UTILITY or AUTHENTICATION",
        )),
    }
}

pub(crate) fn category_out(c: Category) -> i32 {
    match c {
        Category::Marketing => pb::TemplateCategory::Marketing as i32,
        Category::Utility => pb::TemplateCategory::Utility as i32,
        Category::Authentication => pb::TemplateCategory::Authentication as i32,
    }
}

/// A batch's sends, validated one by one; errors name the field within the
/// Send (a batch item's `ItemError.field`). A campaign's batch names one number
/// and one template in every item, so each is parsed once and reused while
/// the next item repeats the previous item's text.
pub(crate) fn sends(items: &[pb::Send]) -> Vec<Result<AdmitRequest, ApiError>> {
    let mut seen = Seen::default();
    items.iter().map(|s| send_fields(s, &mut seen)).collect()
}

/// The last number and template parsed, with the text they came from.
#[derive(Default)]
struct Seen<'a> {
    number: Option<(&'a str, NumberId)>,
    template: Option<(&'a str, TemplateId)>,
}

/// One send found at `path` in its request (`"send."` for Admit): errors name the
/// field as its path in the request.
pub(crate) fn send_at(path: &str, s: Option<&pb::Send>) -> Result<AdmitRequest, ApiError> {
    let s = s.ok_or_else(|| {
        let at = path.trim_end_matches('.');
        ApiError::invalid(if at.is_empty() { "send" } else { at }, "is required")
    })?;
    send_fields(s, &mut Seen::default()).map_err(|e| under(path, e))
}

fn send_fields<'a>(s: &'a pb::Send, seen: &mut Seen<'a>) -> Result<AdmitRequest, ApiError> {
    let number = match seen.number {
        Some((text, n)) if text == s.number_id => n,
        _ => {
            let n = number("number_id", &s.number_id)?;
            seen.number = Some((&s.number_id, n));
            n
        }
    };
    let customer = customer("customer_id", &s.customer_id)?;
    let kind = match &s.kind {
        Some(pb::send::Kind::Template(t)) => SendKind::Template {
            id: match &seen.template {
                Some((text, id)) if *text == t.template_id => id.clone(),
                _ => {
                    let id = template("template.template_id", &t.template_id)?;
                    seen.template = Some((&t.template_id, id.clone()));
                    id
                }
            },
            category: category(t.category)?,
        },
        Some(pb::send::Kind::FreeForm(_)) => SendKind::FreeForm,
        None => {
            return Err(ApiError::invalid(
                "kind",
                "is required: a template or free_form",
            ))
        }
    };
    Ok(AdmitRequest {
        number,
        customer,
        kind,
        idempotency_key: idempotency_key(number, &s.idempotency_key)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::ids::target;

    fn one(s: &pb::Send) -> Result<AdmitRequest, ApiError> {
        sends(std::slice::from_ref(s)).remove(0)
    }

    fn template_send(number: &str, customer: &str, template: &str) -> pb::Send {
        pb::Send {
            number_id: number.into(),
            customer_id: customer.into(),
            kind: Some(pb::send::Kind::Template(pb::Template {
                template_id: template.into(),
                category: pb::TemplateCategory::Marketing as i32,
                ..Default::default()
            })),
            idempotency_key: String::new(),
        }
    }

    /// A batch reuses the previous item's parsed number and template only when
    /// the text is the same: each item's answer is the one it gets alone.
    #[test]
    fn a_batch_parses_each_item_as_if_alone() {
        let items = [
            template_send("123", "4915112345", "t1"),
            template_send("123", "4915112346", "t1"),
            // the same value, other text: another number ("0123" is not "123")
            template_send("0123", "4915112346", "t1"),
            template_send("x", "4915112346", "t1"),
            template_send("123", "4915112346", "bad template"),
            template_send("123", "4915112347", "t2"),
            template_send("123", "4915112347", "t1"),
        ];
        let batch = sends(&items);
        assert_eq!(batch.len(), items.len());
        for (item, got) in items.iter().zip(&batch) {
            let alone = send_at("", Some(item));
            match (got, &alone) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.field(), b.field()),
                _ => panic!("{item:?}: {got:?} in a batch, {alone:?} alone"),
            }
        }
        let number = |i: usize| batch[i].as_ref().unwrap().number;
        assert_ne!(number(1), number(2));
        assert_eq!(batch[3].as_ref().unwrap_err().field(), Some("number_id"));
        assert_eq!(
            batch[4].as_ref().unwrap_err().field(),
            Some("template.template_id")
        );
        let template = |i: usize| match &batch[i].as_ref().unwrap().kind {
            SendKind::Template { id, .. } => id.clone(),
            SendKind::FreeForm => unreachable!("templates only"),
        };
        assert_ne!(template(5), template(6));
        assert_eq!(template(0), template(6));
    }

    #[test]
    fn targets_and_single_sends_name_the_field_by_its_path() {
        let t = pb::Target {
            target: Some(pb::target::Target::NumberId("x".into())),
        };
        let e = target("tier.target", Some(&t)).unwrap_err();
        assert_eq!(e.field(), Some("tier.target.number_id"));
        let t = pb::Target {
            target: Some(pb::target::Target::PortfolioId("a b".into())),
        };
        let e = target("target", Some(&t)).unwrap_err();
        assert_eq!(e.field(), Some("target.portfolio_id"));
        let s = pb::Send {
            number_id: "1".into(),
            customer_id: "+4915112345".into(),
            kind: Some(pb::send::Kind::FreeForm(pb::FreeForm {})),
            idempotency_key: String::new(),
        };
        assert_eq!(one(&s).unwrap_err().field(), Some("customer_id"));
        let e = send_at("send.", Some(&s)).unwrap_err();
        assert_eq!(e.field(), Some("send.customer_id"));
        assert_eq!(send_at("send.", None).unwrap_err().field(), Some("send"));
    }

    #[test]
    fn sends_name_the_bad_field() {
        let mut s = pb::Send {
            number_id: "123".into(),
            customer_id: "4915112345".into(),
            kind: Some(pb::send::Kind::FreeForm(pb::FreeForm {})),
            idempotency_key: String::new(),
        };
        assert!(one(&s).is_ok());
        s.customer_id = "12".into();
        assert_eq!(one(&s).unwrap_err().field(), Some("customer_id"));
        s.customer_id = "4915112345".into();
        s.number_id = "x".into();
        assert_eq!(one(&s).unwrap_err().field(), Some("number_id"));
        s.number_id = "1".into();
        s.kind = Some(pb::send::Kind::Template(pb::Template {
            template_id: "t1".into(),
            category: 0,
            ..Default::default()
        }));
        assert_eq!(one(&s).unwrap_err().field(), Some("template.category"));
    }
}
