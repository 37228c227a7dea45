//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body with the app secret,
//! as `sha256=<64 hex digits>`, compared in constant time. Checked before a
//! byte of the body is parsed. Imports hmac and sha2 only.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Meta signs deliveries with.
pub const HEADER: &str = "x-hub-signature-256";

/// Why a signature was refused (all end in HTTP 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSignature {
    Missing,
    Malformed,
    Mismatch,
}

impl BadSignature {
    pub fn reason(self) -> &'static str {
        match self {
            BadSignature::Missing => "missing X-Hub-Signature-256",
            BadSignature::Malformed => "X-Hub-Signature-256 is not sha256=<64 hex digits>",
            BadSignature::Mismatch => "X-Hub-Signature-256 does not match the body",
        }
    }
}

/// The app secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The header value for `body` (for tests and tools that sign).
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut s = String::from("sha256=");
        for b in tag {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Checks a header value against `body`.
    pub fn verify(&self, header: Option<&[u8]>, body: &[u8]) -> Result<(), BadSignature> {
        let header = header.ok_or(BadSignature::Missing)?;
        let hex = header
            .strip_prefix(b"sha256=")
            .ok_or(BadSignature::Malformed)?;
        let tag = decode_hex(hex).ok_or(BadSignature::Malformed)?;
        if tag.len() != 32 {
            return Err(BadSignature::Malformed);
        }
        let mut mac = self.mac();
        mac.update(body);
        // constant time (hmac's verify_slice)
        mac.verify_slice(&tag).map_err(|_| BadSignature::Mismatch)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length
        Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

fn decode_hex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// Equality of two secrets' worth of bytes in time independent of where
/// they differ (the verify token).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let s = Secret::new("app-secret");
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let h = s.sign(body);
        assert!(h.starts_with("sha256=") && h.len() == 7 + 64);
        assert_eq!(s.verify(Some(h.as_bytes()), body), Ok(()));
        assert_eq!(
            s.verify(
                Some(h.to_uppercase().replace("SHA256=", "sha256=").as_bytes()),
                body
            ),
            Ok(())
        );
        assert_eq!(s.verify(None, body), Err(BadSignature::Missing));
        assert_eq!(
            s.verify(Some(b"sha1=abcd"), body),
            Err(BadSignature::Malformed)
        );
        assert_eq!(
            s.verify(Some(&h.as_bytes()[..h.len() - 2]), body),
            Err(BadSignature::Malformed)
        );
        assert_eq!(
            s.verify(Some(h.as_bytes()), &body[..body.len() - 1]),
            Err(BadSignature::Mismatch)
        );
        let other = Secret::new("other").sign(body);
        assert_eq!(
            s.verify(Some(other.as_bytes()), body),
            Err(BadSignature::Mismatch)
        );
        assert!(!format!("{s:?}").contains("app-secret"));
    }

    /// A known HMAC-SHA256 vector (RFC 4231, test case 2).
    #[test]
    fn matches_the_rfc_vector() {
        let s = Secret::new("Jefe");
        assert_eq!(
            s.sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"tok", b"tok"));
        assert!(!same(b"tok", b"tok2"));
        assert!(!same(b"tok", b"tak"));
        assert!(!same(b"", b"x"));
        // a longer value that only adds zero bytes is still another value
        assert!(!same(b"tok", b"tok\0"));
    }
}
