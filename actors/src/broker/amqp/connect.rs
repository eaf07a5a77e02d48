//! The connection: one [`Link`] at a time, replaced when found broken,
//! and the reconnect with [`Backoff`] every other part goes through.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lapin::types::ShortString;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::watch;
use tokio::time::Instant;

use super::AmqpOptions;
use super::backoff::Backoff;
use crate::broker::BrokerError;

pub(super) struct Inner {
    pub(super) url: String,
    pub(super) options: AmqpOptions,
    /// The current connection, replaced when it is found broken.
    pub(super) link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Round-robin cursor over the publisher channels.
    pub(super) next_publisher: AtomicUsize,
    pub(super) pump_started: AtomicBool,
    /// Set by [`AmqpBroker::close`]: no reconnecting any more.
    pub(super) closed: AtomicBool,
    /// Dropped with the broker; the pump stops when it sees that.
    pub(super) _alive: watch::Sender<()>,
    pub(super) alive: watch::Receiver<()>,
}

/// One connection and its publisher channels.
pub(super) struct Link {
    pub(super) connection: Connection,
    /// Confirm-mode channels, created on first use; the lock is held while
    /// a batch writes its messages, so delivery tags match the order of
    /// the frames.
    pub(super) publishers: Vec<tokio::sync::Mutex<Option<Channel>>>,
}

impl Inner {
    /// The current connection, connecting once if there is none or it is
    /// broken.
    pub(super) async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(BrokerError::Closed);
        }
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && link.connection.status().connected()
        {
            return Ok(Arc::clone(link));
        }
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let publishers = (0..self.options.publisher_channels.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        let link = Arc::new(Link {
            connection,
            publishers,
        });
        *current = Some(Arc::clone(&link));
        Ok(link)
    }

    /// [`Inner::link`], retried with backoff until `deadline` (forever
    /// without one).
    pub(super) async fn link_retrying(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Arc<Link>, BrokerError> {
        let mut backoff = Backoff::new(&self.options);
        loop {
            match self.link().await {
                Ok(link) => return Ok(link),
                Err(BrokerError::Closed) => return Err(BrokerError::Closed),
                Err(error) => {
                    if !backoff.fits(deadline) {
                        return Err(error);
                    }
                    tracing::warn!(%error, retry_in = ?backoff.wait(), "rabbitmq connect failed");
                    backoff.sleep().await;
                }
            }
        }
    }

    pub(super) fn exchange(&self) -> ShortString {
        self.options.exchange.as_str().into()
    }
}
