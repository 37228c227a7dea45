//! Caller identity and scopes (issue 12; docs/security.md).
//!
//! A caller is named by a bearer token (`authorization: Bearer <token>`,
//! configured only as the token's SHA-256) or by its client certificate (a
//! subject CN or SAN configured as `cert_name`). Each caller holds scopes
//! (`send`, `read`, `admin`, `cluster`) and, for `send`, a grant of numbers
//! and portfolios. [`layer`] authenticates every API request once, at the
//! edge; `service::handle` checks the method's scope and the request's
//! numbers against the grant. Without an `[auth]` block nothing is checked
//! (the embedded single node on loopback).
//!
//! This module may import `admit_core` (ids), `error`, and the crypto,
//! certificate and http/tower crates; it knows no protobuf, no handler
//! and no routing. (`ctx::access` builds a node's settings from it.)

pub mod admission;
pub mod audit;
pub mod cert;
pub mod layer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use admit_core::{NumberId, PortfolioId};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a caller may do (docs/security.md, "Callers and scopes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Admit, AdmitBatch, Release, RecordInbound, ReportOutcome on the
    /// granted numbers and portfolios.
    Send,
    /// Status, lists, policies, cluster listings, the clock's time.
    Read,
    /// Registration, platform events, policies, the test clock.
    Admin,
    /// Membership changes (AddNode, RemoveNode).
    Cluster,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Read => "read",
            Scope::Admin => "admin",
            Scope::Cluster => "cluster",
        }
    }
}

/// One `[[auth.callers]]` entry as written in the TOML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    pub name: String,
    /// Hex SHA-256 of the caller's bearer token (`admitd hash-token`).
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A subject CN or SAN of the caller's client certificate.
    #[serde(default)]
    pub cert_name: Option<String>,
    #[serde(default)]
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub numbers: Vec<String>,
    #[serde(default)]
    pub portfolios: Vec<String>,
}

/// The `[auth]` block as written in the TOML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse requests without credentials (default true). `false` lets
    /// anonymous requests through with every right, while callers that do
    /// present credentials are held to their grants (a migration aid).
    #[serde(default)]
    pub required: Option<bool>,
    #[serde(default)]
    pub callers: Vec<CallerConfig>,
    /// A TOML file of more `[[callers]]`, kept apart from the config as a
    /// secret (relative paths are taken from the config file's folder).
    #[serde(default)]
    pub callers_file: Option<PathBuf>,
    /// The key of admission-id MACs (at least 16 bytes); every node of a
    /// cluster must read the same one.
    #[serde(default)]
    pub admission_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallersFile {
    #[serde(default)]
    callers: Vec<CallerConfig>,
}

/// An authenticated caller: its name (the identity quotas and the audit
/// log use), scopes and grant.
pub struct Caller {
    pub name: String,
    scopes: BTreeSet<Scope>,
    numbers: HashSet<NumberId>,
    portfolios: HashSet<PortfolioId>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// PERMISSION_DENIED unless the caller holds `scope`.
    pub fn require(&self, scope: Scope, method: &str) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "caller {:?} lacks the {:?} scope that {method} needs",
            self.name,
            scope.as_str()
        )))
    }

    pub fn grants_number(&self, n: &NumberId) -> bool {
        self.numbers.contains(n)
    }

    pub fn grants_portfolio(&self, p: &PortfolioId) -> bool {
        self.portfolios.contains(p)
    }

    /// Whether a portfolio grant could still cover a number not granted by
    /// name (worth looking the number's portfolio up).
    pub fn has_portfolios(&self) -> bool {
        !self.portfolios.is_empty()
    }
}

/// The authenticated caller of a request, put in its extensions by
/// [`layer::AuthLayer`].
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Caller>);

/// The client certificate chain (DER, leaf first) of a request's
/// connection. The TLS side inserts it into the request's extensions (from
/// `peer_certs()`); [`layer::AuthLayer`] maps the leaf to a caller.
#[derive(Clone, Debug)]
pub struct ClientCerts(pub Arc<Vec<Vec<u8>>>);

/// The configured callers, checked and indexed. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    required: bool,
    by_token: HashMap<[u8; 32], Arc<Caller>>,
    by_cert: HashMap<String, Arc<Caller>>,
    admission_key: Option<Vec<u8>>,
}

impl fmt::Debug for Auth {
    // names only: neither token hashes nor the admission key are printed
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self
            .inner
            .by_token
            .values()
            .chain(self.inner.by_cert.values())
            .map(|c| c.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        f.debug_struct("Auth")
            .field("required", &self.inner.required)
            .field("callers", &names)
            .finish_non_exhaustive()
    }
}

/// A bearer token this node sends (to join a cluster with auth); its debug
/// form hides it, so a printed config never shows it.
#[derive(Clone)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The hex SHA-256 of a token, as `token_sha256` holds it.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 * b.len());
    push_hex(&mut s, b);
    s
}

/// Appends `b` in lower-case hex (every answer's admission id has a tag, so
/// no allocation per byte).
pub(crate) fn push_hex(s: &mut String, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl AuthConfig {
    /// Reads the named files (relative to `base`) and checks every caller,
    /// naming the bad field (`auth.callers[2].token_sha256`).
    pub fn load(&self, base: &Path) -> Result<Auth, String> {
        let mut callers: Vec<(String, CallerConfig)> = self
            .callers
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("auth.callers[{i}]"), c.clone()))
            .collect();
        if let Some(f) = &self.callers_file {
            let path = base.join(f);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "invalid auth.callers_file: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let more: CallersFile = toml::from_str(&text)
                .map_err(|e| format!("invalid auth.callers_file {}: {e}", path.display()))?;
            callers.extend(
                more.callers
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| (format!("auth.callers_file callers[{i}]"), c)),
            );
        }
        let admission_key = match &self.admission_key_file {
            None => None,
            Some(f) => {
                let path = base.join(f);
                let key = std::fs::read(&path).map_err(|e| {
                    format!(
                        "invalid auth.admission_key_file: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                if key.len() < 16 {
                    return Err(
                        "invalid auth.admission_key_file: must hold at least 16 bytes".into(),
                    );
                }
                Some(key)
            }
        };
        Auth::new(self.required.unwrap_or(true), callers, admission_key)
    }
}

impl Auth {
    /// Checks and indexes callers given as `(field path, entry)`.
    pub fn new(
        required: bool,
        callers: Vec<(String, CallerConfig)>,
        admission_key: Option<Vec<u8>>,
    ) -> Result<Auth, String> {
        let bad = |field: &str, why: &str| format!("invalid {field}: {why}");
        let mut names = HashSet::new();
        let mut by_token = HashMap::new();
        let mut by_cert = HashMap::new();
        for (at, c) in callers {
            if c.name.is_empty() || c.name.len() > 128 {
                return Err(bad(&format!("{at}.name"), "must be 1 to 128 characters"));
            }
            if !names.insert(c.name.clone()) {
                return Err(bad(&format!("{at}.name"), "names another caller too"));
            }
            if c.token_sha256.is_none() && c.cert_name.is_none() {
                return Err(bad(&at, "needs token_sha256 or cert_name"));
            }
            if c.scopes.is_empty() {
                return Err(bad(&format!("{at}.scopes"), "must name at least one scope"));
            }
            let mut numbers = HashSet::new();
            for n in &c.numbers {
                numbers.insert(
                    NumberId::parse("numbers", n)
                        .map_err(|e| bad(&format!("{at}.numbers"), &format!("{n:?}: {e}")))?,
                );
            }
            let mut portfolios = HashSet::new();
            for p in &c.portfolios {
                portfolios.insert(
                    PortfolioId::parse("portfolios", p)
                        .map_err(|e| bad(&format!("{at}.portfolios"), &format!("{p:?}: {e}")))?,
                );
            }
            let caller = Arc::new(Caller {
                name: c.name.clone(),
                scopes: c.scopes.iter().copied().collect(),
                numbers,
                portfolios,
            });
            if let Some(h) = &c.token_sha256 {
                let h: [u8; 32] = unhex(h).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                    bad(
                        &format!("{at}.token_sha256"),
                        "must be 64 hex digits (admitd hash-token)",
                    )
                })?;
                if by_token.insert(h, caller.clone()).is_some() {
                    return Err(bad(
                        &format!("{at}.token_sha256"),
                        "is another caller's token too",
                    ));
                }
            }
            if let Some(n) = &c.cert_name {
                if n.is_empty() {
                    return Err(bad(&format!("{at}.cert_name"), "must not be empty"));
                }
                if by_cert.insert(n.clone(), caller).is_some() {
                    return Err(bad(
                        &format!("{at}.cert_name"),
                        "names another caller's certificate too",
                    ));
                }
            }
        }
        Ok(Auth {
            inner: Arc::new(Inner {
                required,
                by_token,
                by_cert,
                admission_key,
            }),
        })
    }

    /// Whether requests without credentials are refused.
    pub fn required(&self) -> bool {
        self.inner.required
    }

    /// The configured admission-id key, if any.
    pub fn admission_key(&self) -> Option<&[u8]> {
        self.inner.admission_key.as_deref()
    }

    /// Who sends a request: its bearer token, else its client certificate.
    /// `Ok(None)`: no credentials and none required. A token that names no
    /// caller is refused even when a certificate would do: a wrong token is
    /// a mistake worth seeing. The token is never logged or echoed.
    pub fn identify(
        &self,
        authorization: Option<&[u8]>,
        certs: Option<&[Vec<u8>]>,
    ) -> Result<Option<Arc<Caller>>, ApiError> {
        if let Some(h) = authorization {
            let token = std::str::from_utf8(h)
                .ok()
                .and_then(|v| {
                    let (scheme, rest) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                })
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthenticated(
                        "the authorization metadata must be \"Bearer <token>\"".into(),
                    )
                })?;
            let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            return match self.inner.by_token.get(&h) {
                Some(c) => Ok(Some(c.clone())),
                None => Err(ApiError::Unauthenticated(
                    "the bearer token names no caller".into(),
                )),
            };
        }
        if let Some(leaf) = certs.and_then(|c| c.first()) {
            let names = cert::names(leaf);
            if let Some(c) = names.iter().find_map(|n| self.inner.by_cert.get(n)) {
                return Ok(Some(c.clone()));
            }
            if self.inner.required {
                return Err(ApiError::Unauthenticated(format!(
                    "the client certificate ({}) names no caller",
                    names.join(", ")
                )));
            }
        }
        if self.inner.required {
            return Err(ApiError::Unauthenticated(
                "no credentials: send \"authorization: Bearer <token>\" or a client certificate"
                    .into(),
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_two_lower_case_digits_a_byte_and_unhex_reverses_it() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff, 0x10];
        assert_eq!(hex(&bytes), "000fa5ff10");
        assert_eq!(unhex("000fa5ff10").as_deref(), Some(&bytes[..]));
        assert_eq!(hex(&[]), "");
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }

    fn caller(name: &str, token: &str, scopes: &[Scope]) -> CallerConfig {
        CallerConfig {
            name: name.into(),
            token_sha256: Some(hash_token(token)),
            cert_name: None,
            scopes: scopes.to_vec(),
            numbers: vec!["15550001".into()],
            portfolios: vec!["waba-1".into()],
        }
    }

    fn auth(required: bool) -> Auth {
        let mut cert = caller("cert-caller", "unused", &[Scope::Read]);
        cert.token_sha256 = None;
        cert.cert_name = Some("sender.billing.svc".into());
        Auth::new(
            required,
            vec![
                ("a".into(), caller("billing", "s3cret", &[Scope::Send])),
                ("b".into(), cert),
            ],
            None,
        )
        .unwrap()
    }

    #[test]
    fn tokens_name_callers_by_their_hash() {
        let a = auth(true);
        let c = a.identify(Some(b"Bearer s3cret"), None).unwrap().unwrap();
        assert_eq!(c.name, "billing");
        assert!(c.grants_number(&NumberId::parse("n", "15550001").unwrap()));
        assert!(!c.grants_number(&NumberId::parse("n", "15550002").unwrap()));
        assert!(c.grants_portfolio(&PortfolioId::parse("p", "waba-1").unwrap()));
        assert!(c.require(Scope::Send, "Admit").is_ok());
        let e = c.require(Scope::Admin, "SetPolicy").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.to_string().contains("admin"), "{e}");
        for bad in [&b"Bearer wrong"[..], b"Basic s3cret", b"Bearer ", b"s3cret"] {
            let e = a.identify(Some(bad), None).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let e = a.identify(None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(auth(false).identify(None, None).unwrap().is_none());
    }

    #[test]
    fn certificates_name_callers_by_cn_or_san() {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let mut p = CertificateParams::new(vec!["sender.billing.svc".into()]).unwrap();
        p.subject_alt_names
            .push(SanType::DnsName("other".try_into().unwrap()));
        let der = p
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let a = auth(true);
        let c = a.identify(None, Some(&[der])).unwrap().unwrap();
        assert_eq!(c.name, "cert-caller");
        let mut p = CertificateParams::new(vec!["stranger".into()]).unwrap();
        p.subject_alt_names.clear();
        let der = p
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let e = a.identify(None, Some(&[der])).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn bad_config_names_the_field() {
        let mut c = caller("x", "t", &[Scope::Send]);
        c.token_sha256 = Some("abc".into());
        let e = Auth::new(true, vec![("auth.callers[0]".into(), c)], None).unwrap_err();
        assert!(e.contains("auth.callers[0].token_sha256"), "{e}");
        let mut c = caller("x", "t", &[Scope::Send]);
        c.numbers = vec!["not-a-number".into()];
        let e = Auth::new(true, vec![("auth.callers[0]".into(), c)], None).unwrap_err();
        assert!(e.contains("auth.callers[0].numbers"), "{e}");
        let e = Auth::new(
            true,
            vec![
                ("auth.callers[0]".into(), caller("x", "t", &[Scope::Send])),
                ("auth.callers[1]".into(), caller("y", "t", &[Scope::Send])),
            ],
            None,
        )
        .unwrap_err();
        assert!(e.contains("auth.callers[1].token_sha256"), "{e}");
        let mut c = caller("x", "t", &[]);
        c.scopes.clear();
        let e = Auth::new(true, vec![("auth.callers[0]".into(), c)], None).unwrap_err();
        assert!(e.contains("scopes"), "{e}");
    }
}
