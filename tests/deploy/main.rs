//! Checks of `deploy/` that need the `admitd` binary: what the container
//! image holds and how it runs (`image`), and that the alerts and the
//! dashboard use only metrics admitd exports (`drift`). The manifests, alerts and start
//! script are checked by `deploy/check/*.sh`, run by `.ci/run`.

#[path = "../support/mod.rs"]
mod support;

mod drift;
mod image;
