//! `admitctl certs`: writes a development CA, node certificates and caller
//! certificates (see the "Transport" section of docs/security.md). Only
//! file output: no node is contacted. Imports `admit-certs`.

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `admitctl certs`.
#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Node certificates for ids 1..=N.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Caller (client) certificates, comma-separated names.
    #[arg(long, value_delimiter = ',')]
    pub callers: Vec<String>,
    /// More DNS names or IP addresses for the node certificates (the
    /// addresses callers and joining nodes use), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
}

/// Writes the files and lists them.
pub fn run(a: &CertsArgs) -> Result<()> {
    let files = admit_certs::write_dir(&a.out, a.nodes, &a.callers, &a.hosts)
        .map_err(anyhow::Error::msg)?;
    for f in files {
        outln!("{}", f.display());
    }
    Ok(())
}
