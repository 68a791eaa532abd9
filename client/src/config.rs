//! Connection settings shared by everything a [`Client`](crate::Client) makes, and the builder
//! that collects them.
//!
//! Every field documents its default, so that a reader of a bug report knows what a client with
//! no settings did.

use std::time::Duration;

use crate::client::Client;
use crate::error::Result;

/// How a [`Client`] connects, times out and retries. Build one with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bootstrap brokers, `host:port` or `http://host:port`. Only used to find the cluster: after
    /// the first metadata answer, requests go to the addresses the brokers advertise.
    pub brokers: Vec<String>,
    /// Upper bound on one request's round trip (not counting retries). Default 30 s.
    pub request_timeout: Duration,
    /// Upper bound on opening a TCP connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Attempts per request before a retriable error is surfaced. Default 20, which with the
    /// default backoff spans about 17 s: several leader failovers (about 3–4 s each).
    pub retries: u32,
    /// Backoff before the second attempt; doubled for each further attempt. Default 100 ms.
    pub retry_backoff: Duration,
    /// Ceiling of the doubling backoff. Default 1 s (Kafka's `retry.backoff.max.ms`): a
    /// longer one would keep a client waiting well after a failover completed.
    pub retry_backoff_max: Duration,
    /// Largest gRPC message sent or accepted, in bytes. Default 64 MiB: a fetch answer holds
    /// whole batches, so this must exceed the largest batch plus a fetch's `max_bytes`.
    pub max_message_bytes: usize,
    /// HTTP/2 flow-control window per stream, in bytes. Default 8 MiB: the 64 KiB protocol
    /// default caps a single stream at a few MB/s on any real round-trip time.
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window per connection, in bytes. Default 16 MiB.
    pub connection_window_bytes: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retries: 20,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(1000),
            max_message_bytes: 64 << 20,
            stream_window_bytes: 8 << 20,
            connection_window_bytes: 16 << 20,
        }
    }
}

impl ClientConfig {
    /// The backoff before attempt `attempt + 1`, after `attempt` (≥ 1) failures.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(factor)
            .min(self.retry_backoff_max)
    }
}

/// Collects a [`ClientConfig`] and connects. Made by [`Client::builder`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: ClientConfig,
}

impl ClientBuilder {
    /// Sets the bootstrap brokers (`host:port` or `http://host:port`).
    pub fn brokers(mut self, brokers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.config.brokers = brokers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets [`ClientConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::retries`] (at least 1 attempt is always made).
    pub fn retries(mut self, retries: u32) -> Self {
        self.config.retries = retries.max(1);
        self
    }

    /// Sets [`ClientConfig::retry_backoff`] and [`ClientConfig::retry_backoff_max`].
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_backoff = initial;
        self.config.retry_backoff_max = max.max(initial);
        self
    }

    /// Sets [`ClientConfig::max_message_bytes`].
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.config.max_message_bytes = bytes;
        self
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects: loads the cluster's metadata from the first bootstrap broker that answers.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) without brokers or with an unparsable address;
    /// [`Error::Transport`](crate::Error::Transport) when no broker answered within the retries.
    pub async fn build(self) -> Result<Client> {
        Client::with_config(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_backoff_spans_a_leader_failover() {
        let c = ClientConfig::default();
        let total: Duration = (1..c.retries).map(|a| c.backoff(a)).sum();
        assert!(total >= Duration::from_secs(15), "{total:?}");
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(9), c.retry_backoff_max);
        assert_eq!(c.backoff(60), c.retry_backoff_max);
    }
}
