//! The display-number index: `display_phone_number` (digits) ->
//! `phone_number_id`, for the events that carry only the number as shown
//! (`phone_number_quality_update`, `account_update`). Filled from the
//! configuration and from the metadata of the deliveries themselves
//! (`messages`, `user_preferences` and `calls` carry both). Node-local and
//! kept in memory: admit's replicated state does not keep display numbers
//! (see the crate docs). Imports std only.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::translate::digits;

/// The index; shared by every request of the receiver.
#[derive(Debug, Default)]
pub struct Numbers {
    map: RwLock<HashMap<String, String>>,
}

impl Numbers {
    /// An index holding the configured pairs (display, phone_number_id).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Numbers {
        let n = Numbers::default();
        for (d, id) in pairs {
            n.learn(&d, &id);
        }
        n
    }

    /// Records a pair; the latest wins (Meta may move a display number).
    pub fn learn(&self, display: &str, id: &str) {
        let d = digits(display);
        if d.is_empty() || id.is_empty() {
            return;
        }
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        if m.get(&d).map(String::as_str) != Some(id) {
            m.insert(d, id.to_owned());
        }
    }

    /// The `phone_number_id` shown as `display`.
    pub fn get(&self, display: &str) -> Option<String> {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        m.get(&digits(display)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_digits_whatever_the_format() {
        let n = Numbers::new([("+1 555-000-1234".to_string(), "1001".to_string())]);
        assert_eq!(n.get("15550001234").as_deref(), Some("1001"));
        assert_eq!(n.get("+1 (555) 000 1234").as_deref(), Some("1001"));
        assert_eq!(n.get("15550009999"), None);
        n.learn("15550001234", "1002");
        assert_eq!(n.get("15550001234").as_deref(), Some("1002"));
    }
}
