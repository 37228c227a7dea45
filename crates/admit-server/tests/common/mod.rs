//! What the admit-server test binaries share.

use admit_proto::v1 as pb;

/// A utility template from `number` to customer `491500000000 + customer`.
pub fn utility(number: &str, customer: u64) -> pb::Send {
    pb::Send {
        number_id: number.into(),
        customer_id: (491_500_000_000 + customer).to_string(),
        kind: Some(pb::send::Kind::Template(pb::Template {
            template_id: "t-util".into(),
            category: pb::TemplateCategory::Utility as i32,
            ..Default::default()
        })),
        idempotency_key: String::new(),
    }
}
