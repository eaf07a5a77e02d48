//! The real servers every test and bench of the workspace runs against
//! (Redis and RabbitMQ on loopback, started by `scripts/services.sh`),
//! in one place:
//!
//! - where they are: [`redis_url`], [`redis_address`], [`amqp_url`]
//!   (`TASKQUEUE_TEST_REDIS_URL`, `TASKQUEUE_TEST_AMQP_URL`);
//! - a namespace of one's own: a fresh [`Prefix`] of Redis keys and a
//!   fresh [`Vhost`] of RabbitMQ, both removed on drop;
//! - the cross-process [`server_lock`]: shared by a process that uses the
//!   servers, exclusive by one that restarts them.
//!
//! The URL functions only read the configuration; taking the lock is the
//! caller's (a restart test holds it exclusively before it asks for a
//! URL), and [`Prefix::new`] and [`Vhost::new`] take it shared.

pub mod server_lock;

use std::process::{Command, Stdio};
use std::time::Duration;

use uuid::Uuid;

/// `rabbitmqctl` as Debian installs it.
pub const RABBITMQCTL: &str = "/usr/sbin/rabbitmqctl";

/// What the kit could not do.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// `rabbitmqctl` failed or could not be run.
    #[error("rabbitmqctl {args}: {reason}")]
    Ctl {
        /// Its arguments.
        args: String,
        /// Its exit status or why it did not run.
        reason: String,
    },
}

/// The tests' Redis (`TASKQUEUE_TEST_REDIS_URL`, by default the local
/// server's database 0).
pub fn redis_url() -> String {
    std::env::var("TASKQUEUE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// `host:port` of [`redis_url`].
pub fn redis_address() -> String {
    address_of(&redis_url())
}

/// `host:port` of a `redis://host:port/...` URL.
pub fn address_of(url: &str) -> String {
    let rest = url.strip_prefix("redis://").unwrap_or(url);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

/// The tests' RabbitMQ, default vhost (`TASKQUEUE_TEST_AMQP_URL`, by
/// default the local server as `guest`).
pub fn amqp_url() -> String {
    std::env::var("TASKQUEUE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// [`amqp_url`] with its vhost replaced by `vhost`.
pub fn amqp_url_of(vhost: &str) -> String {
    with_vhost(&amqp_url(), vhost)
}

/// The AMQP URL `base` with its vhost replaced by `vhost`.
pub fn with_vhost(base: &str, vhost: &str) -> String {
    let scheme = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[scheme..]
        .find('/')
        .map_or(base.len(), |at| at + scheme);
    format!("{}/{}", &base[..authority_end], vhost)
}

/// Deletes every key under `prefix` (`{prefix}:*`) on the Redis at `url`
/// (SCAN and UNLINK); answers with the number deleted.
pub fn delete_prefix(url: &str, prefix: &str) -> Result<u64, KitError> {
    let mut connection = redis::Client::open(url)?.get_connection()?;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(10_000)
            .query(&mut connection)?;
        if !keys.is_empty() {
            deleted += keys.len() as u64;
            redis::cmd("UNLINK")
                .arg(keys)
                .query::<()>(&mut connection)?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// A key prefix of one's own on the tests' Redis; its keys are deleted on
/// drop.
#[derive(Debug)]
pub struct Prefix {
    /// The prefix, without the trailing `:`.
    pub name: String,
    url: String,
}

impl Prefix {
    /// A fresh prefix named after `tag` on [`redis_url`] (takes the server
    /// lock shared).
    pub fn new(tag: &str) -> Prefix {
        server_lock::shared_servers();
        Prefix::on(&redis_url(), tag)
    }

    /// A fresh prefix named after `tag` on the Redis at `url` (no lock:
    /// for a server of the caller's own, or one it holds already).
    pub fn on(url: &str, tag: &str) -> Prefix {
        Prefix {
            name: format!("tq-{tag}-{}", Uuid::new_v4().simple()),
            url: url.to_owned(),
        }
    }

    /// The prefix `name` itself on [`redis_url`] (takes the server lock
    /// shared): for a caller that needs a name of a given length.
    pub fn named(name: impl Into<String>) -> Prefix {
        server_lock::shared_servers();
        Prefix {
            name: name.into(),
            url: redis_url(),
        }
    }

    /// Deletes the prefix's keys now; answers with the number deleted.
    pub fn clear(&self) -> Result<u64, KitError> {
        delete_prefix(&self.url, &self.name)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        if let Err(error) = self.clear() {
            eprintln!("could not delete the keys of {}: {error}", self.name);
        }
    }
}

/// Runs `rabbitmqctl -q args`. RabbitMQ 3.10 can abort a vhost operation
/// with `{aborted, {no_exists, [rabbit_vhost, ..]}}` when several run at
/// once (tests create their vhosts in parallel), so a failure is tried
/// again a few times, and an `add_vhost` that reported a failure but made
/// its vhost counts as done.
pub fn rabbitmqctl(args: &[&str]) -> Result<(), KitError> {
    let mut reason = String::new();
    for attempt in 1..=5u64 {
        match Command::new(RABBITMQCTL)
            .arg("-q")
            .args(args)
            .stdout(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => return Ok(()),
            Ok(status) => reason = status.to_string(),
            Err(error) => {
                return Err(KitError::Ctl {
                    args: args.join(" "),
                    reason: error.to_string(),
                });
            }
        }
        if vhost_created(args) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200 * attempt));
    }
    Err(KitError::Ctl {
        args: args.join(" "),
        reason: format!("{reason}, five times"),
    })
}

/// Whether `args` is an `add_vhost` whose vhost exists.
fn vhost_created(args: &[&str]) -> bool {
    let [verb, vhost, ..] = args else {
        return false;
    };
    *verb == "add_vhost"
        && Command::new(RABBITMQCTL)
            .args(["-q", "list_vhosts"])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|line| line.trim() == *vhost)
            })
            .unwrap_or(false)
}

/// A RabbitMQ vhost of one's own (`guest` has every permission); deleted
/// on drop.
#[derive(Debug)]
pub struct Vhost {
    /// Its name.
    pub name: String,
    /// Its AMQP URL.
    pub url: String,
}

impl Vhost {
    /// A fresh vhost named after `tag` (takes the server lock shared, a
    /// no-op in a process that holds it exclusively to restart the broker).
    pub fn new(tag: &str) -> Result<Vhost, KitError> {
        server_lock::shared_servers();
        let name = format!("tq-{tag}-{}", Uuid::new_v4().simple());
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Vhost {
            url: amqp_url_of(&name),
            name,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])?;
        Ok(vhost)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new(RABBITMQCTL)
            .args(["-q", "delete_vhost", &self.name])
            .stdout(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_the_url_authority_without_credentials() {
        assert_eq!(address_of("redis://127.0.0.1:6379/"), "127.0.0.1:6379");
        assert_eq!(address_of("redis://:pw@10.0.0.2:6380/3"), "10.0.0.2:6380");
        assert_eq!(address_of("redis://localhost:6379"), "localhost:6379");
    }

    #[test]
    fn a_vhost_url_keeps_the_credentials_and_host() {
        assert_eq!(
            with_vhost("amqp://u:p@h:5673/%2f", "tq-x"),
            "amqp://u:p@h:5673/tq-x"
        );
        assert_eq!(with_vhost("amqp://h", "v"), "amqp://h/v");
    }
}
