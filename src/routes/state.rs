//! What the handlers share: the running pipeline's addresses and the
//! backends, behind one `web::Data`.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use actix::Addr;
use actors::{
    catalog::TaskCatalog,
    clock::SharedClock,
    distributor::DistributionSettings,
    health::{Dependency, HealthBoard, Quarantine},
    metrics::MetricsActor,
    scheduler::{ReloadHealth, SchedulerActor},
    store::StateStore,
    supervisor::WorkerGauge,
};

/// Shared by every handler.
#[derive(Clone)]
pub struct ApiState {
    /// When the process started, for `uptime`.
    pub started: Instant,
    /// Shared state.
    pub store: Arc<dyn StateStore>,
    /// Task definitions in force.
    pub catalog: TaskCatalog,
    /// Where "now" comes from (trigger instants, status).
    pub clock: SharedClock,
    /// Present when this process runs the scheduler side: triggers go to
    /// it.
    pub scheduler: Option<Addr<SchedulerActor>>,
    /// Window and rates of fan-outs.
    pub distribution: Arc<DistributionSettings>,
    /// Outcome counters.
    pub metrics: Addr<MetricsActor>,
    /// Present when this process runs the worker side.
    pub worker: Option<WorkerGauge>,
    /// Outcome of the last tasks reload.
    pub reload_health: ReloadHealth,
    /// The backends `/health` probes (none in embedded mode).
    pub dependencies: Vec<Arc<dyn Dependency>>,
    /// Heartbeats and restarts of the actors.
    pub board: HealthBoard,
    /// Records skipped because they could not be read.
    pub quarantine: Quarantine,
    /// Set once shutdown has started: triggers are refused.
    pub stopping: Arc<AtomicBool>,
}
