//! The kit's server lock (`test_kit::server_lock`), on a directory of its own
//! (flock locks belong to each open file, so two holds in one process
//! behave as two processes would): uses share, a restart excludes every
//! use, and a waiting restart keeps newcomers out.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use test_kit::server_lock::{Access, ServerLock};

/// Long enough for any lock hand-over on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// Waits until `condition` holds, polling, at most [`DEADLINE`].
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        thread::yield_now();
    }
}

#[test]
fn uses_share_the_servers_and_a_restart_waits_for_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServerLock::acquire(dir.path(), Access::Shared);
    let second = ServerLock::try_acquire(dir.path(), Access::Shared)
        .expect("a second use runs beside the first");
    assert!(
        ServerLock::try_acquire(dir.path(), Access::Exclusive).is_none(),
        "a restart while the servers are in use"
    );
    drop(first);
    assert!(
        ServerLock::try_acquire(dir.path(), Access::Exclusive).is_none(),
        "a restart while one use remains"
    );
    drop(second);
    let restart = ServerLock::try_acquire(dir.path(), Access::Exclusive)
        .expect("a restart once every use is over");
    assert_eq!(restart.access(), Access::Exclusive);
}

#[test]
fn a_restart_keeps_every_use_out_until_it_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let restart = ServerLock::acquire(dir.path(), Access::Exclusive);
    assert!(ServerLock::try_acquire(dir.path(), Access::Shared).is_none());
    assert!(ServerLock::try_acquire(dir.path(), Access::Exclusive).is_none());

    // A use that blocks on the restart gets in once it is over.
    let (entered, entry) = mpsc::channel();
    let path = dir.path().to_owned();
    let user = thread::spawn(move || {
        let hold = ServerLock::acquire(&path, Access::Shared);
        entered.send(()).unwrap();
        hold
    });
    drop(restart);
    entry
        .recv_timeout(DEADLINE)
        .expect("the use got in after the restart");
    let hold = user.join().unwrap();
    assert_eq!(hold.access(), Access::Shared);
}

#[test]
fn a_waiting_restart_keeps_newcomers_out_and_runs_when_the_uses_end() {
    let dir = tempfile::tempdir().unwrap();
    let running = ServerLock::acquire(dir.path(), Access::Shared);

    let (started, start) = mpsc::channel();
    let path = dir.path().to_owned();
    let restarter = thread::spawn(move || {
        let hold = ServerLock::acquire(&path, Access::Exclusive);
        started.send(()).unwrap();
        hold
    });
    // The waiting restart holds the gate: a newcomer cannot start.
    eventually("the restart waits at the gate", || {
        ServerLock::try_acquire(dir.path(), Access::Shared).is_none()
    });
    assert!(
        start.try_recv().is_err(),
        "the restart ran while a use held the servers"
    );

    drop(running);
    start
        .recv_timeout(DEADLINE)
        .expect("the restart ran once the use ended");
    let restart = restarter.join().unwrap();
    assert!(ServerLock::try_acquire(dir.path(), Access::Shared).is_none());
    drop(restart);
    assert!(ServerLock::try_acquire(dir.path(), Access::Shared).is_some());
}
