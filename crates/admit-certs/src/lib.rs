//! # admit-certs: development certificates
//!
//! A CA, node certificates (`node-<id>.admit.internal`, the name the peer
//! port checks, plus `localhost`, `127.0.0.1` and any given hosts, for both
//! the peer and the API port) and caller certificates (client only), made
//! with rcgen so tests and newcomers need no OpenSSL CLI (`admitctl certs`).
//! Not for production: the CA key sits next to the certificates.
//!
//! Layering: imports only rcgen; used by `admitctl` and tests, never by a
//! serving path.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The DNS name a node's certificate carries (the peer port's identity of
/// node `id`; admit-server reads it back the same way).
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.admit.internal")
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), String> {
        let c = dir.join(format!("{stem}.pem"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert).map_err(|e| format!("{}: {e}", c.display()))?;
        std::fs::write(&k, &self.key).map_err(|e| format!("{}: {e}", k.display()))?;
        Ok((c, k))
    }
}

/// Validity of a leaf, in Unix seconds.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: u64,
    pub not_after: u64,
}

impl Validity {
    /// From an hour ago for `days` days.
    pub fn days(days: u64) -> Validity {
        let now = unix_now();
        Validity {
            not_before: now.saturating_sub(3_600),
            not_after: now + days * 86_400,
        }
    }

    /// Expired a day ago.
    pub fn expired() -> Validity {
        let now = unix_now();
        Validity {
            not_before: now - 10 * 86_400,
            not_after: now - 86_400,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time as rcgen's date type (not named here: it is the `time`
/// crate's, not a dependency of this one).
macro_rules! at {
    ($unix:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs($unix)
    };
}

/// A development certificate authority.
#[derive(Debug)]
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM): what every node and caller trusts.
    pub cert: String,
    /// The CA private key (PEM).
    pub key: String,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate: {e}")
}

impl DevCa {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<DevCa, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let v = Validity::days(3_650);
        p.not_before = at!(v.not_before);
        p.not_after = at!(v.not_after);
        let cert = p.self_signed(&key).map_err(err)?.pem();
        let key_pem = key.serialize_pem();
        Ok(DevCa {
            issuer: Issuer::new(p, key),
            cert,
            key: key_pem,
        })
    }

    /// A leaf certificate: common name, DNS/IP names, client and/or server
    /// use, validity.
    pub fn leaf(
        &self,
        cn: &str,
        names: &[String],
        server: bool,
        validity: Validity,
    ) -> Result<Pem, String> {
        let key = KeyPair::generate().map_err(err)?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(err)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        p.not_before = at!(validity.not_before);
        p.not_after = at!(validity.not_after);
        let cert = p.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Node `id`'s certificate: `node-<id>.admit.internal`, `localhost`,
    /// `127.0.0.1` and `hosts`; server and client use; a year.
    pub fn node(&self, id: u64, hosts: &[String]) -> Result<Pem, String> {
        self.node_with(id, hosts, Validity::days(365))
    }

    /// [`Self::node`] with another validity.
    pub fn node_with(&self, id: u64, hosts: &[String], v: Validity) -> Result<Pem, String> {
        let mut names = vec![node_dns_name(id), "localhost".into(), "127.0.0.1".into()];
        names.extend(hosts.iter().cloned());
        self.leaf(&format!("admit node {id}"), &names, true, v)
    }

    /// A caller's client certificate: common name `name`, DNS name
    /// `<name>.callers.admit.internal`; client use only; a year.
    pub fn caller(&self, name: &str) -> Result<Pem, String> {
        self.leaf(
            name,
            &[format!("{name}.callers.admit.internal")],
            false,
            Validity::days(365),
        )
    }
}

/// Writes a development CA (`ca.pem`, `ca.key`), node certificates
/// `node-<id>.pem`/`.key` for ids 1..=`nodes` and caller certificates
/// `caller-<name>.pem`/`.key` into `out`; returns the files written.
pub fn write_dir(
    out: &Path,
    nodes: u64,
    callers: &[String],
    hosts: &[String],
) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for c in callers {
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
            return Err(format!("caller name {c:?}: letters, digits and '-' only"));
        }
    }
    let ca = DevCa::new("admit development CA")?;
    let mut files = Vec::new();
    let (c, k) = Pem {
        cert: ca.cert.clone(),
        key: ca.key.clone(),
    }
    .write(out, "ca")?;
    files.extend([c, k]);
    for id in 1..=nodes {
        let (c, k) = ca.node(id, hosts)?.write(out, &format!("node-{id}"))?;
        files.extend([c, k]);
    }
    for name in callers {
        let (c, k) = ca.caller(name)?.write(out, &format!("caller-{name}"))?;
        files.extend([c, k]);
    }
    Ok(files)
}
