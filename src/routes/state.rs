//! What the handlers share: the running pipeline's addresses and the
//! backends, behind one `web::Data`.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
};

use actix::Addr;
use actors::{
    broker::JobBroker,
    catalog::TaskCatalog,
    clock::SharedClock,
    distributor::DistributionSettings,
    health::{Dependency, HealthBoard, Quarantine},
    metrics::MetricsActor,
    pause::OperatorPauses,
    pipeline::WorkerGauge,
    prometheus::Families,
    scheduler::{ReloadHealth, SchedulerActor},
    store::{
        StateStore, dead_letters::DeadLetterStore, durations::DurationStore,
        replicas::ReplicaStore, results::JobResultStore,
    },
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
    /// The Prometheus families of this process.
    pub families: Families,
    /// The job broker (queue depths, replays).
    pub broker: Arc<dyn JobBroker>,
    /// Jobs that failed for good.
    pub dead_letters: Arc<dyn DeadLetterStore>,
    /// The execution duration samples.
    pub durations: Arc<dyn DurationStore>,
    /// The jobs' results and each user's recent runs.
    pub results: Arc<dyn JobResultStore>,
    /// Where every replica reports itself ([`crate::beacon`]).
    pub replicas: Arc<dyn ReplicaStore>,
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
    /// This process's copy of the operator pauses (updated at once by the
    /// pause and resume routes).
    pub pauses: Arc<OperatorPauses>,
}
