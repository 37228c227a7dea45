//! Sends: a `Send` as the core's `AdmitRequest`, and template categories.

use admit_core::{AdmitRequest, Category, SendKind};
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

/// One send, validated; errors name the field within the Send (a batch item's
/// `ItemError.field`).
pub(crate) fn send(s: Option<&pb::Send>) -> Result<AdmitRequest, ApiError> {
    send_at("", s)
}

/// One send found at `path` in its request (`"send."` for Admit): errors name the
/// field as its path in the request.
pub(crate) fn send_at(path: &str, s: Option<&pb::Send>) -> Result<AdmitRequest, ApiError> {
    let s = s.ok_or_else(|| {
        let at = path.trim_end_matches('.');
        ApiError::invalid(if at.is_empty() { "send" } else { at }, "is required")
    })?;
    send_fields(s).map_err(|e| under(path, e))
}

fn send_fields(s: &pb::Send) -> Result<AdmitRequest, ApiError> {
    let number = number("number_id", &s.number_id)?;
    let customer = customer("customer_id", &s.customer_id)?;
    let kind = match &s.kind {
        Some(pb::send::Kind::Template(t)) => SendKind::Template {
            id: template("template.template_id", &t.template_id)?,
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
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("customer_id"));
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
        assert!(send(Some(&s)).is_ok());
        s.customer_id = "12".into();
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("customer_id"));
        s.customer_id = "4915112345".into();
        s.number_id = "x".into();
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("number_id"));
        s.number_id = "1".into();
        s.kind = Some(pb::send::Kind::Template(pb::Template {
            template_id: "t1".into(),
            category: 0,
            ..Default::default()
        }));
        assert_eq!(
            send(Some(&s)).unwrap_err().field(),
            Some("template.category")
        );
    }
}
