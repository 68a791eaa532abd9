//! [`PeerChannels`]: lazily connected gRPC channels to other brokers, one per address, shared
//! by every caller of one kind (Raft, the lease, admin forwarding, follower fetches, ISR and
//! producer-id requests to the controller). A channel is created unconnected on first use and
//! reconnects by itself, so a restarted peer at the same address needs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::transport::{Channel, Endpoint};

/// One channel per peer address, each built with the same endpoint settings.
#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Applies the caller's settings (timeouts, windows, nodelay) to a new endpoint.
    configure: fn(Endpoint) -> Endpoint,
}

impl std::fmt::Debug for PeerChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers = self
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("PeerChannels")
            .field("peers", &peers)
            .finish_non_exhaustive()
    }
}

impl PeerChannels {
    /// An empty cache whose channels get `configure`'s settings.
    pub fn new(configure: fn(Endpoint) -> Endpoint) -> Self {
        Self {
            channels: Arc::default(),
            configure,
        }
    }

    /// The channel to `addr` (`host:port`, or a URI), created unconnected on first use.
    ///
    /// # Errors
    ///
    /// The address does not make a URI.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let channel = (self.configure)(Endpoint::from_shared(uri)?).connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}
