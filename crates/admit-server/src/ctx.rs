//! What every handler shares: routing (Raft groups, readers, the other
//! nodes, the clock), the admission path, reads and self-protection.

use std::sync::Arc;

use admit_core::Ts;

use crate::admission::Admission;
use crate::auth::admission::AdmissionKey;
use crate::auth::Auth;
use crate::protect::Protect;
use crate::reads::Reads;
use crate::routing::Routing;

#[derive(Debug)]
pub(crate) struct Ctx {
    pub routing: Arc<Routing>,
    pub admission: Admission,
    pub reads: Reads,
    pub protect: Protect,
    /// Who may do what (`None`: auth off) and the admission-id key.
    pub access: Access,
}

/// Caller authentication settings of a node (issue 12).
#[derive(Debug)]
pub(crate) struct Access {
    pub auth: Option<Auth>,
    pub admission_key: AdmissionKey,
    /// Numbers' portfolios as the grant check learned them: a number's
    /// portfolio, once set, never changes (admin.proto), so an entry never
    /// goes stale and a portfolio grant costs one lookup per number.
    pub portfolios: dashmap::DashMap<admit_core::NumberId, admit_core::PortfolioId>,
}

impl Ctx {
    pub fn new(routing: Routing, protect: Protect, access: Access) -> Ctx {
        let routing = Arc::new(routing);
        Ctx {
            admission: Admission::new(routing.clone()),
            reads: Reads::new(routing.clone()),
            routing,
            protect,
            access,
        }
    }

    /// The service clock's time.
    pub fn now(&self) -> Ts {
        self.routing.now()
    }
}

/// A node's access settings from its config: the callers, and the
/// admission-id key: the configured one, else a single node's own (kept in
/// its data dir), else, in a cluster without auth, a public key (with a
/// warning: such a cluster lets anyone in anyway). A cluster with auth
/// must configure the key, the same on every node.
pub(crate) fn access(
    auth: Option<Auth>,
    clustered: bool,
    data_dir: &std::path::Path,
) -> Result<Access, String> {
    let admission_key = match auth.as_ref().and_then(Auth::admission_key) {
        Some(k) => AdmissionKey::new(k),
        None if !clustered => AdmissionKey::in_dir(data_dir)
            .map_err(|e| format!("cannot keep the admission-id key in the data dir: {e}"))?,
        None if auth.is_some() => {
            return Err(
                "invalid auth.admission_key_file: required in a multi-node cluster \
                 (every node must check the ids the others issued)"
                    .into(),
            )
        }
        None => {
            tracing::warn!(
                "no admission-id key configured in a cluster without auth: admission ids \
                 are sealed with a public key and can be forged"
            );
            AdmissionKey::open_cluster()
        }
    };
    Ok(Access {
        auth,
        admission_key,
        portfolios: Default::default(),
    })
}
