//! Unguessable admission ids. The engine names an admission by its scope
//! and a sequence number (deterministic, so Raft replay is exact); at the
//! edge that name is sealed with a MAC: `<scope>-<seq>.<tag>`, the tag the
//! first 128 bits of HMAC-SHA256 over the name under a key every node
//! shares. Guessing an id means guessing the tag; an id whose tag does not
//! match is NOT_FOUND and changes nothing. Imports `admit_core` ids,
//! `error` and the MAC crates.

use std::path::Path;

use admit_core::AdmissionId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Tag length in bytes (128 bits).
const TAG: usize = 16;

/// The file in the data dir holding a single node's generated key.
pub const KEY_FILE: &str = "admission-id.key";

/// The key used when a cluster runs without auth and without a configured
/// key: public, so it protects nothing; anyone who can reach such a
/// cluster may call Admin anyway. Start logs a warning.
const OPEN_CLUSTER_KEY: &[u8] = b"admit: open cluster, no admission key configured";

#[derive(Clone)]
pub struct AdmissionKey {
    /// The MAC with the key already absorbed: an id then costs a copy of
    /// this state, not the key schedule's two extra SHA-256 blocks.
    mac: HmacSha256,
}

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionKey(..)")
    }
}

impl AdmissionKey {
    pub fn new(key: &[u8]) -> AdmissionKey {
        AdmissionKey {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    /// The public key of an open cluster (see [`OPEN_CLUSTER_KEY`]).
    pub fn open_cluster() -> AdmissionKey {
        AdmissionKey::new(OPEN_CLUSTER_KEY)
    }

    /// A single node's own key: read from `dir`, or made (32 random bytes)
    /// and stored there on first start, so ids outlive restarts.
    pub fn in_dir(dir: &Path) -> std::io::Result<AdmissionKey> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(k) if k.len() >= 16 => return Ok(AdmissionKey::new(&k)),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{} holds fewer than 16 bytes",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{KEY_FILE}.tmp"));
        write_private(&tmp, &key)?;
        std::fs::rename(&tmp, &path)?;
        Ok(AdmissionKey::new(&key))
    }

    fn mac(&self, name: &str) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(name.as_bytes());
        m
    }

    /// The id as callers see it.
    pub fn seal(&self, id: &AdmissionId) -> String {
        use std::fmt::Write;
        // room for the longest name and its tag: one allocation, no regrowth
        let mut sealed = String::with_capacity(96);
        let _ = write!(sealed, "{id}");
        let tag = self.mac(&sealed).finalize().into_bytes();
        sealed.push('.');
        super::push_hex(&mut sealed, &tag[..TAG]);
        sealed
    }

    /// The admission a sealed id names. A malformed name is INVALID_ARGUMENT
    /// (naming `field`); a missing or wrong tag (a guess, or an id from
    /// before ids were sealed) is NOT_FOUND.
    pub fn open(&self, field: &'static str, text: &str) -> Result<AdmissionId, ApiError> {
        let not_found = || ApiError::NotFound(format!("{field}: no admission {text:?}"));
        let Some((name, tag)) = text.rsplit_once('.') else {
            AdmissionId::parse(field, text)?;
            return Err(not_found());
        };
        let id = AdmissionId::parse(field, name)?;
        let tag = super::unhex(tag)
            .filter(|t| t.len() == TAG)
            .ok_or_else(not_found)?;
        self.mac(name)
            .verify_truncated_left(&tag)
            .map_err(|_| not_found())?;
        Ok(id)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use admit_core::{NumberId, ScopeKey};

    fn id(seq: u64) -> AdmissionId {
        AdmissionId {
            scope: ScopeKey::Number(NumberId::parse("n", "15550001").unwrap()),
            seq,
        }
    }

    #[test]
    fn sealed_ids_open_and_guesses_do_not() {
        let k = AdmissionKey::new(b"0123456789abcdef0123");
        let s = k.seal(&id(7));
        assert!(s.starts_with("n15550001-7."), "{s}");
        assert_eq!(k.open("admission_id", &s).unwrap(), id(7));
        // the next sequence number with the same tag, the bare name, a
        // flipped tag, another key: all NOT_FOUND
        let tag = s.rsplit_once('.').unwrap().1;
        let mut flipped = s.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        let other = AdmissionKey::new(b"another key, 16+ bytes");
        for guess in [
            format!("n15550001-8.{tag}"),
            "n15550001-7".to_string(),
            flipped,
            other.seal(&id(7)),
            format!("n15550001-7.{}", &tag[..8]),
        ] {
            let e = k.open("admission_id", &guess).unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound, "{guess}");
        }
        let e = k.open("admission_id", "garbage.00").unwrap_err();
        assert_eq!(e.field(), Some("admission_id"));
    }

    #[test]
    fn a_node_keeps_its_key_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = AdmissionKey::in_dir(dir.path()).unwrap();
        let b = AdmissionKey::in_dir(dir.path()).unwrap();
        assert_eq!(a.seal(&id(1)), b.seal(&id(1)));
        let other = tempfile::tempdir().unwrap();
        let c = AdmissionKey::in_dir(other.path()).unwrap();
        assert_ne!(a.seal(&id(1)), c.seal(&id(1)));
    }
}
