//! The node-local display-number index: `display_phone_number` (digits) ->
//! `phone_number_id`, for the events that carry only the number as shown
//! (`phone_number_quality_update`, `account_update`) when the number was
//! registered without its display digits (those registered with them are
//! found in replicated state first, see the crate docs). Filled from the
//! configuration and from the metadata of the deliveries themselves
//! (`messages`, `user_preferences` and `calls` carry both), and kept in a
//! file of the node's data dir when one is given, so a restart does not
//! forget what deliveries taught. Node-local, not shared between nodes.
//! Imports std and serde_json only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use crate::translate::digits;

/// The index; shared by every request of the receiver.
#[derive(Debug, Default)]
pub struct Numbers {
    map: RwLock<HashMap<String, String>>,
    /// Where learned pairs are kept, and the lock that orders its writes.
    file: Option<(PathBuf, Mutex<()>)>,
}

impl Numbers {
    /// An index holding the configured pairs (display, phone_number_id).
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Numbers {
        Numbers::open(pairs, None)
    }

    /// [`Numbers::new`] over the pairs kept in `file` (if it exists); the
    /// configured pairs win over kept ones, and what is learned is kept there.
    pub fn open(
        pairs: impl IntoIterator<Item = (String, String)>,
        file: Option<PathBuf>,
    ) -> Numbers {
        let kept: BTreeMap<String, String> = file
            .as_ref()
            .and_then(|f| match std::fs::read(f) {
                Ok(b) => serde_json::from_slice(&b)
                    .map_err(|e| {
                        tracing::warn!(file = %f.display(), error = %e, "display numbers file unreadable; starting without it")
                    })
                    .ok(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "display numbers file unreadable; starting without it");
                    None
                }
            })
            .unwrap_or_default();
        let n = Numbers {
            map: RwLock::new(HashMap::new()),
            file: None,
        };
        for (d, id) in kept.into_iter().chain(pairs) {
            n.learn(&d, &id);
        }
        Numbers {
            file: file.map(|f| (f, Mutex::new(()))),
            ..n
        }
    }

    /// Records a pair; the latest wins (Meta may move a display number).
    pub fn learn(&self, display: &str, id: &str) {
        let d = digits(display);
        if d.is_empty() || id.is_empty() {
            return;
        }
        {
            let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
            if m.get(&d).map(String::as_str) == Some(id) {
                return;
            }
            m.insert(d, id.to_owned());
        }
        self.keep();
    }

    /// The `phone_number_id` shown as `display`.
    pub fn get(&self, display: &str) -> Option<String> {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        m.get(&digits(display)).cloned()
    }

    /// Writes the whole index to its file (a new file renamed over the old,
    /// so a crash leaves one or the other). A failure is logged: the index
    /// in memory still serves.
    fn keep(&self) {
        let Some((path, order)) = &self.file else {
            return;
        };
        let _one_writer = order.lock().unwrap_or_else(|p| p.into_inner());
        let all: BTreeMap<String, String> = self
            .map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let tmp = path.with_extension("tmp");
        let r = serde_json::to_vec_pretty(&all)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            tracing::warn!(file = %path.display(), error = %e, "display numbers not kept");
        }
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

    #[test]
    fn learned_pairs_survive_a_restart_and_configured_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("webhook-display-numbers.json");
        let n = Numbers::open([], Some(file.clone()));
        n.learn("15550001234", "1001");
        n.learn("15550005678", "1005");
        drop(n);
        let n = Numbers::open(
            [("15550005678".to_string(), "2005".to_string())],
            Some(file.clone()),
        );
        assert_eq!(n.get("15550001234").as_deref(), Some("1001"));
        assert_eq!(n.get("15550005678").as_deref(), Some("2005"));
        // an unreadable file is no reason not to start
        std::fs::write(&file, b"{not json").unwrap();
        let n = Numbers::open([], Some(file));
        assert_eq!(n.get("15550001234"), None);
    }
}
