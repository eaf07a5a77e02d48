//! The set-up shared by the restart scenarios of the fault suite (3:
//! RabbitMQ, 4: Redis): one replica (`--role all`) working through a run
//! of numbered users that fires a few seconds after the start, watched by
//! a ledger; and a private `redis-server` with AOF on a free port, which a
//! test may stop and start again without touching the shared server.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use chrono::{DurationRound, TimeDelta, Utc};

use super::{
    Backends, Ledger, config_file, enable_users, free_address, hourly_task, seed_last_fire,
    serve_on, terminate,
};

/// One run under a restart: the ledger, the backends, the replica.
pub struct RestartRun {
    /// The endpoint recording every call.
    pub ledger: Ledger,
    /// The test's prefix and vhost.
    pub backends: Backends,
    /// The replica's config file.
    pub config: PathBuf,
    /// Where the replica's API listens.
    pub address: SocketAddr,
    /// The replica.
    pub replica: Child,
    /// Users (and so jobs) of the run.
    pub users: usize,
}

/// What a [`RestartRun`] runs.
pub struct RunShape<'a> {
    /// Users of the run.
    pub users: usize,
    /// `worker.pool_size`.
    pub pool: usize,
    /// `scheduler.distribution_window`, e.g. `20s`.
    pub window: &'a str,
    /// The ledger path the task calls, e.g. `/delay/5/work`.
    pub path: &'a str,
}

impl RestartRun {
    /// Enables the users of task `work` on `backends`, fires the task 5 s
    /// from now and starts one replica.
    pub async fn start(shape: RunShape<'_>, backends: Backends) -> RestartRun {
        let ledger = Ledger::start();
        let store = backends.store().await;
        let t0 = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
        let users: Vec<String> = (0..shape.users).map(|n| format!("user_{n:05}")).collect();
        enable_users(&store, "work", &users).await;
        seed_last_fire(&store, "work", t0).await;
        let config = config_file(
            &backends,
            &format!("worker:\n  pool_size: {}", shape.pool),
            &hourly_task("work", t0 + TimeDelta::seconds(5), &ledger.url(shape.path)),
        );
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "distribution_window: 3s",
            &format!("distribution_window: {}", shape.window),
        );
        std::fs::write(&config, text).unwrap();
        let address = free_address();
        let replica = serve_on(&config, address);
        RestartRun {
            ledger,
            backends,
            config,
            address,
            replica,
            users: shape.users,
        }
    }

    /// Waits until a `fraction` of the run's users was called.
    pub async fn wait_started(&self, fraction: usize) {
        let want = self.users / fraction;
        assert!(
            self.ledger
                .wait_until(Duration::from_secs(60), |calls| calls.len() >= want)
                .await,
            "the run never started"
        );
    }

    /// Waits for every user's success (then `settle` for late copies),
    /// prints the scenario's line, asserts nothing was lost or succeeded
    /// twice, and stops the replica (exit code 0).
    pub async fn finish(mut self, scenario: &str, settle: Duration) {
        self.ledger
            .wait_delivered(self.users, Duration::from_secs(180), settle)
            .await;
        self.ledger.outcome(self.users).report_and_check(scenario);
        assert_eq!(terminate(&mut self.replica), 0);
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A `redis-server` of one test with AOF (`appendfsync always`), as
/// production runs it, on a free loopback port; stopped and its data
/// removed on drop.
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl PrivateRedis {
    /// Starts the server and waits until it answers.
    pub fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_address().port(),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        redis.boot();
        redis
    }

    /// `host:port` of the server.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn boot(&mut self) {
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (scripts/services.sh start installs it)");
        self.server = Some(server);
        let url = format!("redis://{}/", self.address());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let answered = redis::Client::open(url.as_str())
                .and_then(|client| client.get_connection())
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
                .is_ok();
            if answered {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private redis-server on {} never answered", self.port);
    }

    /// Stops the server (SIGTERM: it finishes its AOF and exits) and waits
    /// for the exit.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = terminate(&mut server);
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is running");
        self.boot();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
