//! The names a client certificate carries (subject CN and subject
//! alternative names), read from its DER bytes, so a certificate can be
//! mapped to a configured caller. Imports only `x509-parser`.

use x509_parser::extensions::GeneralName;

/// Every name in the certificate a caller can be configured by: the
/// subject's common names, then the DNS, URI and e-mail SANs. Empty for
/// bytes that are not a certificate (such a peer is not identified).
pub fn names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    out.push((*s).to_owned())
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_and_sans_are_read() {
        let der = cert(
            Some("billing-sender"),
            vec![
                SanType::DnsName("sender.billing.svc".try_into().unwrap()),
                SanType::URI("spiffe://admit/billing".try_into().unwrap()),
            ],
        );
        assert_eq!(
            names(&der),
            [
                "billing-sender",
                "sender.billing.svc",
                "spiffe://admit/billing"
            ]
        );
    }

    #[test]
    fn a_san_alone_names_the_caller() {
        let der = cert(None, vec![SanType::DnsName("ops".try_into().unwrap())]);
        assert_eq!(names(&der), ["ops"]);
    }

    #[test]
    fn garbage_has_no_names() {
        assert!(names(b"not a certificate").is_empty());
        assert!(names(&[]).is_empty());
    }
}
