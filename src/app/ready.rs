//! Readiness (reference §1.6): the hub serves its clients once it has a client certificate
//! (while the cloud answers), has read yurt-hub-cfg, and servicetopology's inputs have synced
//! or it fails open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::certs::Certs;
use crate::filter::Topology;
use crate::health::Health;
use crate::server::{Gate, NotReady};

/// What the hub needs before it serves clients other than itself (reference §1.6).
pub struct Readiness {
    /// The hub's certificates.
    pub certs: Arc<Certs>,
    /// Whether yurt-hub-cfg has been read (edge mode).
    pub config_synced: Option<Arc<AtomicBool>>,
    /// Whether any server answers; a missing certificate only matters while one does.
    pub health: Option<Arc<Health>>,
    /// servicetopology's inputs, when that filter runs.
    pub topology: Option<Arc<Topology>>,
}

impl Gate for Readiness {
    fn check(&self) -> Result<(), NotReady> {
        let cloud_reachable = self.health.as_ref().is_none_or(|h| h.any_healthy());
        self.certs
            .check(cloud_reachable)
            .map_err(|e| NotReady::Certificates(e.to_string()))?;
        if self
            .config_synced
            .as_ref()
            .is_some_and(|s| !s.load(Ordering::Relaxed))
        {
            return Err(NotReady::HubConfig);
        }
        if let Some(t) = &self.topology {
            t.ready().map_err(|e| NotReady::Topology(e.to_string()))?;
        }
        Ok(())
    }
}
