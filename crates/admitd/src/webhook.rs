//! The webhook receiver's settings (`--webhook-*` flags, `ADMIT_WEBHOOK_*`
//! variables, the `[webhook]` table of the TOML file) and their one
//! validation step, which names the bad field. The receiver is off unless a
//! listen address is given; then the verify token and the app secret are
//! required. Neither is ever logged or shown (`--help` hides the variables'
//! values). Imports `config`, `admit_webhook::Config` and admit-server's
//! `transport::HttpsTls` (the receiver's certificate, when given).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{self, Flags};

/// The smallest and largest body limit accepted.
const MIN_BODY: usize = 1_024;
const MAX_BODY: usize = 64 << 20;

/// Flags of the receiver.
#[derive(Default, clap::Args)]
pub struct WebhookFlags {
    /// Serve Meta's webhooks on this address (e.g. 0.0.0.0:8443) [default:
    /// off].
    #[arg(long, env = "ADMIT_WEBHOOK_LISTEN")]
    pub webhook_listen: Option<String>,
    /// The verify token of the subscription handshake (hub.verify_token).
    #[arg(long, env = "ADMIT_WEBHOOK_VERIFY_TOKEN", hide_env_values = true)]
    pub webhook_verify_token: Option<String>,
    /// The Meta app's secret, the key of X-Hub-Signature-256 (prefer the
    /// file or the variable: a flag shows in the process list).
    #[arg(long, env = "ADMIT_WEBHOOK_APP_SECRET", hide_env_values = true)]
    pub webhook_app_secret: Option<String>,
    /// A file holding the app secret (surrounding white space ignored).
    #[arg(long, env = "ADMIT_WEBHOOK_APP_SECRET_FILE")]
    pub webhook_app_secret_file: Option<PathBuf>,
    /// Larger deliveries are refused with 413 [default: 1048576].
    #[arg(long, env = "ADMIT_WEBHOOK_MAX_BODY_BYTES")]
    pub webhook_max_body_bytes: Option<usize>,
    /// Display numbers of events that carry no phone_number_id:
    /// `display=phone_number_id,...` (e.g. 15550101234=109900112233445).
    #[arg(long, env = "ADMIT_WEBHOOK_DISPLAY_NUMBERS")]
    pub webhook_display_numbers: Option<String>,
    /// Certificate of the receiver's port (PEM, chain); with
    /// --webhook-tls-key the port speaks HTTPS (reloaded when the files
    /// change) [default: plain HTTP, for a proxy that ends TLS].
    #[arg(long, env = "ADMIT_WEBHOOK_TLS_CERT")]
    pub webhook_tls_cert: Option<PathBuf>,
    /// Private key of the receiver's port (PEM).
    #[arg(long, env = "ADMIT_WEBHOOK_TLS_KEY")]
    pub webhook_tls_key: Option<PathBuf>,
}

/// The `[webhook]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub listen: Option<String>,
    pub verify_token: Option<String>,
    pub app_secret_file: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    /// `"display=phone_number_id"` each.
    pub display_numbers: Option<Vec<String>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookFlags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the token and the secret are never shown
        f.debug_struct("WebhookFlags")
            .field("webhook_listen", &self.webhook_listen)
            .field("webhook_app_secret_file", &self.webhook_app_secret_file)
            .field("webhook_max_body_bytes", &self.webhook_max_body_bytes)
            .field("webhook_tls_cert", &self.webhook_tls_cert)
            .field("webhook_tls_key", &self.webhook_tls_key)
            .finish_non_exhaustive()
    }
}

/// The receiver's settings from the file and the flags; `None`: off.
/// Certificate files are checked for changes every `reload_every` (the
/// transport's interval).
pub fn load(
    flags: &Flags,
    data_dir: &std::path::Path,
    reload_every: std::time::Duration,
) -> Result<Option<admit_webhook::Config>, String> {
    let file = config::read_file(flags)?.webhook.unwrap_or_default();
    let tls = tls_files(&file, &flags.webhook)?;
    let mut c = resolve(file, &flags.webhook, &|p| std::fs::read(p))?;
    if let Some(c) = &mut c {
        // the pairs deliveries teach, kept beside the journal
        c.display_numbers_file = Some(data_dir.join(DISPLAY_NUMBERS_FILE));
        if let Some(files) = tls {
            let files = admit_server::transport::HttpsTls::load(files)
                .map_err(|e| format!("invalid webhook tls_cert/tls_key: {e}"))?;
            c.tls = Some(admit_webhook::Tls {
                files,
                reload_every,
            });
        }
    }
    Ok(c)
}

/// The receiver's certificate and key (flags win over the file): both or
/// neither.
pub fn tls_files(
    file: &WebhookFile,
    flags: &WebhookFlags,
) -> Result<Option<admit_server::transport::TlsFiles>, String> {
    let cert = flags.webhook_tls_cert.clone().or(file.tls_cert.clone());
    let key = flags.webhook_tls_key.clone().or(file.tls_key.clone());
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(admit_server::transport::TlsFiles {
            cert,
            key,
            ca: None,
        })),
        (Some(_), None) => {
            Err("invalid webhook tls_key: required with tls_cert (--webhook-tls-key)".into())
        }
        (None, Some(_)) => {
            Err("invalid webhook tls_cert: required with tls_key (--webhook-tls-cert)".into())
        }
    }
}

/// The file in the data dir keeping learned display numbers.
const DISPLAY_NUMBERS_FILE: &str = "webhook-display-numbers.json";

/// Merges file and flags (flags win) and validates.
pub fn resolve(
    file: WebhookFile,
    flags: &WebhookFlags,
    read: &dyn Fn(&std::path::Path) -> std::io::Result<Vec<u8>>,
) -> Result<Option<admit_webhook::Config>, String> {
    let bad = |field: &str, why: &str| format!("invalid webhook {field}: {why}");
    let Some(listen) = flags.webhook_listen.clone().or(file.listen) else {
        return Ok(None);
    };
    let listen: SocketAddr = listen
        .parse()
        .map_err(|_| bad("listen", "must be an address like 0.0.0.0:8443"))?;
    let verify_token = flags
        .webhook_verify_token
        .clone()
        .or(file.verify_token)
        .unwrap_or_default();
    if verify_token.trim().is_empty() {
        return Err(bad(
            "verify_token",
            "is required with webhook_listen (--webhook-verify-token)",
        ));
    }
    if flags.webhook_app_secret.is_some() && flags.webhook_app_secret_file.is_some() {
        return Err(bad(
            "app_secret",
            "give the secret or a file holding it, not both",
        ));
    }
    let path = flags
        .webhook_app_secret_file
        .clone()
        .or(file.app_secret_file);
    let secret = if let Some(s) = &flags.webhook_app_secret {
        s.trim().as_bytes().to_vec()
    } else if let Some(path) = path {
        let raw = read(&path).map_err(|e| {
            bad(
                "app_secret_file",
                &format!("cannot read {}: {e}", path.display()),
            )
        })?;
        raw.trim_ascii().to_vec()
    } else {
        Vec::new()
    };
    if secret.is_empty() {
        return Err(bad(
            "app_secret",
            "is required with webhook_listen (--webhook-app-secret-file or ADMIT_WEBHOOK_APP_SECRET)",
        ));
    }
    let max_body_bytes = flags
        .webhook_max_body_bytes
        .or(file.max_body_bytes)
        .unwrap_or(admit_webhook::DEFAULT_MAX_BODY_BYTES);
    if !(MIN_BODY..=MAX_BODY).contains(&max_body_bytes) {
        return Err(bad("max_body_bytes", "must be 1024 to 67108864"));
    }
    let pairs: Vec<String> = match &flags.webhook_display_numbers {
        Some(t) => t
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        None => file.display_numbers.unwrap_or_default(),
    };
    let mut display_numbers = Vec::new();
    for p in pairs {
        let (d, id) = p
            .split_once('=')
            .map(|(d, id)| (d.trim(), id.trim()))
            .filter(|(d, id)| {
                d.chars().any(|c| c.is_ascii_digit())
                    && !id.is_empty()
                    && id.len() <= 32
                    && id.chars().all(|c| c.is_ascii_digit())
            })
            .ok_or_else(|| {
                bad(
                    "display_numbers",
                    &format!("{p:?} is not <display number>=<phone_number_id>"),
                )
            })?;
        display_numbers.push((d.to_owned(), id.to_owned()));
    }
    Ok(Some(admit_webhook::Config {
        listen,
        verify_token,
        app_secret: admit_webhook::Secret::new(secret),
        max_body_bytes,
        display_numbers,
        // filled in by `load`, which knows the data dir and loads certificates
        display_numbers_file: None,
        tls: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_file(_: &std::path::Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    fn flags() -> WebhookFlags {
        WebhookFlags {
            webhook_listen: Some("127.0.0.1:8443".into()),
            webhook_verify_token: Some("tok".into()),
            webhook_app_secret: Some("s3cret\n".into()),
            ..WebhookFlags::default()
        }
    }

    #[test]
    fn off_by_default() {
        let c = resolve(WebhookFile::default(), &WebhookFlags::default(), &no_file).unwrap();
        assert!(c.is_none());
    }

    #[test]
    fn on_with_a_token_and_a_secret() {
        let c = resolve(WebhookFile::default(), &flags(), &no_file)
            .unwrap()
            .unwrap();
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.max_body_bytes, admit_webhook::DEFAULT_MAX_BODY_BYTES);
        // the secret is trimmed and never shown
        assert_eq!(
            c.app_secret.sign(b"x"),
            admit_webhook::Secret::new("s3cret").sign(b"x")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok\""),
            "{shown}"
        );
    }

    #[test]
    fn the_secret_from_a_file() {
        let f = WebhookFile {
            app_secret_file: Some("/run/secrets/meta".into()),
            display_numbers: Some(vec!["+1 555-010-1234=109900112233445".into()]),
            ..WebhookFile::default()
        };
        let fl = WebhookFlags {
            webhook_app_secret: None,
            ..flags()
        };
        let c = resolve(f, &fl, &|_| Ok(b"  from-file \n".to_vec()))
            .unwrap()
            .unwrap();
        assert_eq!(
            c.app_secret.sign(b"x"),
            admit_webhook::Secret::new("from-file").sign(b"x")
        );
        assert_eq!(
            c.display_numbers,
            vec![("+1 555-010-1234".into(), "109900112233445".into())]
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: Vec<(WebhookFlags, &str)> = vec![
            (
                WebhookFlags {
                    webhook_listen: Some("nope".into()),
                    ..flags()
                },
                "listen",
            ),
            (
                WebhookFlags {
                    webhook_verify_token: None,
                    ..flags()
                },
                "verify_token",
            ),
            (
                WebhookFlags {
                    webhook_app_secret: None,
                    ..flags()
                },
                "app_secret",
            ),
            (
                WebhookFlags {
                    webhook_app_secret: Some("  ".into()),
                    ..flags()
                },
                "app_secret",
            ),
            (
                WebhookFlags {
                    webhook_app_secret_file: Some("/missing".into()),
                    webhook_app_secret: None,
                    ..flags()
                },
                "app_secret_file",
            ),
            (
                WebhookFlags {
                    webhook_app_secret_file: Some("/also".into()),
                    ..flags()
                },
                "app_secret",
            ),
            (
                WebhookFlags {
                    webhook_max_body_bytes: Some(10),
                    ..flags()
                },
                "max_body_bytes",
            ),
            (
                WebhookFlags {
                    webhook_display_numbers: Some("15550101234=abc".into()),
                    ..flags()
                },
                "display_numbers",
            ),
        ];
        for (f, field) in cases {
            let e = resolve(WebhookFile::default(), &f, &no_file).unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn the_table_of_the_file() {
        let f = config::parse(
            "[webhook]\nlisten = \"127.0.0.1:0\"\nverify_token = \"t\"\napp_secret_file = \"/s\"\nmax_body_bytes = 4096",
        )
        .unwrap();
        let w = f.webhook.unwrap();
        let c = resolve(w, &WebhookFlags::default(), &|_| Ok(b"k".to_vec()))
            .unwrap()
            .unwrap();
        assert_eq!(c.max_body_bytes, 4096);
        let e = config::parse("[webhook]\napp_secret = \"inline\"").unwrap_err();
        assert!(e.contains("app_secret"), "{e}");
    }
}
