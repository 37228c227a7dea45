//! What every handler shares: routing (Raft groups, readers, the other
//! nodes, the clock), the admission path, reads and self-protection.

use std::sync::Arc;

use admit_core::Ts;

use crate::admission::Admission;
use crate::protect::Protect;
use crate::reads::Reads;
use crate::routing::Routing;

#[derive(Debug)]
pub(crate) struct Ctx {
    pub routing: Arc<Routing>,
    pub admission: Admission,
    pub reads: Reads,
    pub protect: Protect,
}

impl Ctx {
    pub fn new(routing: Routing, protect: Protect) -> Ctx {
        let routing = Arc::new(routing);
        Ctx {
            admission: Admission::new(routing.clone()),
            reads: Reads::new(routing.clone()),
            routing,
            protect,
        }
    }

    /// The service clock's time.
    pub fn now(&self) -> Ts {
        self.routing.now()
    }
}
