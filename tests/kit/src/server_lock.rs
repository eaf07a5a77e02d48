//! A lock across test processes on the shared Redis and RabbitMQ.
//!
//! Most tests only use the servers (each on a key prefix and a vhost of its
//! own) and may run side by side; a few restart a server, and no other test
//! may run while they do. Test binaries run in parallel under
//! cargo-nextest (one process per test), so the rule is a file lock
//! (`flock`) every process takes: shared by a process that uses the
//! servers ([`shared_servers`], called by the support builders), exclusive
//! by one that restarts them ([`restarting_servers`], the first line of
//! each restart test). The lock is held until the process exits.
//!
//! A restarter that waits keeps newcomers out (a gate lock, taken briefly
//! by every shared acquirer and held by the restarter), so it is not
//! starved by a stream of short tests.
//!
//! The files live in `TASKQUEUE_TEST_LOCK_DIR`, by default the system's
//! temporary directory: the servers are the machine's, so every checkout
//! and target directory on it takes the same lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a process holds the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Uses them; others may too.
    Shared,
    /// Restarts them; nobody else may use them meanwhile.
    Exclusive,
}

/// A hold on the servers' lock in `dir`, released on drop (or when the
/// process exits).
#[derive(Debug)]
pub struct ServerLock {
    access: Access,
    /// The lock itself (shared or exclusive).
    _main: File,
    /// Held by an exclusive hold, so no shared acquirer gets in while it
    /// waits or works.
    _gate: Option<File>,
}

fn open(path: PathBuf) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|error| panic!("test server lock {}: {error}", path.display()))
}

fn main_file(dir: &Path) -> File {
    open(dir.join("taskqueue-test-servers.lock"))
}

fn gate_file(dir: &Path) -> File {
    open(dir.join("taskqueue-test-servers.gate"))
}

impl ServerLock {
    /// Waits for `access` to the lock in `dir`.
    pub fn acquire(dir: &Path, access: Access) -> ServerLock {
        let gate = gate_file(dir);
        gate.lock().expect("lock the test server gate");
        let main = main_file(dir);
        match access {
            Access::Shared => {
                main.lock_shared().expect("lock the test servers, shared");
                drop(gate);
                ServerLock {
                    access,
                    _main: main,
                    _gate: None,
                }
            }
            Access::Exclusive => {
                main.lock().expect("lock the test servers, exclusive");
                ServerLock {
                    access,
                    _main: main,
                    _gate: Some(gate),
                }
            }
        }
    }

    /// `access` to the lock in `dir` if it is free now, else `None`.
    pub fn try_acquire(dir: &Path, access: Access) -> Option<ServerLock> {
        let gate = gate_file(dir);
        match gate.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Error(error)) => panic!("test server gate: {error}"),
        }
        let main = main_file(dir);
        let taken = match access {
            Access::Shared => main.try_lock_shared(),
            Access::Exclusive => main.try_lock(),
        };
        match taken {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Error(error)) => panic!("test server lock: {error}"),
        }
        Some(ServerLock {
            access,
            _main: main,
            _gate: (access == Access::Exclusive).then_some(gate),
        })
    }

    /// How this hold holds the servers.
    pub fn access(&self) -> Access {
        self.access
    }
}

/// The directory of the lock files.
pub fn lock_dir() -> PathBuf {
    std::env::var_os("TASKQUEUE_TEST_LOCK_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// This process's hold, kept until it exits.
static HELD: Mutex<Option<ServerLock>> = Mutex::new(None);

fn hold(access: Access) {
    let mut held = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match held.as_ref().map(ServerLock::access) {
        Some(Access::Exclusive) => {}
        Some(Access::Shared) if access == Access::Shared => {}
        current => {
            // A shared hold becoming exclusive lets go first (flock would
            // too): two such processes never wait on each other.
            if current.is_some() {
                *held = None;
            }
            *held = Some(ServerLock::acquire(&lock_dir(), access));
        }
    }
}

/// Marks this process as one that uses the shared servers: waits while a
/// restart runs, and keeps restarts out until the process exits. Cheap
/// after the first call.
pub fn shared_servers() {
    hold(Access::Shared);
}

/// Marks this process as one that restarts the shared servers: waits
/// until no other process uses them and keeps every other out until it
/// exits. Call it first in a test that restarts a server.
pub fn restarting_servers() {
    hold(Access::Exclusive);
}
