//! [`Client`]: the cached channels, the metadata cache and the routing of requests to partition
//! leaders, with the retry loop that follows leadership as it moves.
//!
//! One `tonic` channel per broker address, created once and cloned for every request (a channel
//! multiplexes requests over one HTTP/2 connection and reconnects by itself). The metadata cache
//! maps broker ids to addresses and each topic's partitions to their leaders; it is refreshed as
//! a whole, by one caller at a time, whenever a request meets `NOT_LEADER`, an unreachable
//! broker or an unknown topic.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cairn_proto::v1::admin_client::AdminClient;
use cairn_proto::v1::broker_client::BrokerClient;
use cairn_proto::v1::groups_client::GroupsClient;
use cairn_proto::v1::position::Position as PositionKind;
use cairn_proto::v1::{
    Boundary, ListOffsetsRequest, MetadataRequest, MetadataResponse, PartitionOffset, Position,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use crate::config::{ClientBuilder, ClientConfig};
use crate::error::{Error, LeaderHint, Result};

/// Where to start reading a partition, or which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// An exact offset.
    Offset(i64),
    /// The first record whose timestamp is at or after this time (ms since the Unix epoch); the
    /// high watermark if there is none.
    Timestamp(i64),
    /// The log start offset: the oldest record still stored.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
}

impl From<SeekTo> for Position {
    fn from(seek: SeekTo) -> Self {
        let kind = match seek {
            SeekTo::Offset(o) => PositionKind::Offset(o),
            SeekTo::Timestamp(t) => PositionKind::TimestampMs(t),
            SeekTo::Earliest => PositionKind::Boundary(Boundary::Earliest as i32),
            SeekTo::Latest => PositionKind::Boundary(Boundary::Latest as i32),
        };
        Position {
            position: Some(kind),
        }
    }
}

/// A connection to a Cairn cluster: cheap to clone, safe to share. Makes
/// [`Producer`](crate::Producer)s, [`Consumer`](crate::Consumer)s and an [`Admin`](crate::Admin).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// Bootstrap addresses, normalised to `http://host:port`.
    bootstrap: Vec<String>,
    /// One channel per normalised address, for the client's lifetime.
    channels: Mutex<HashMap<String, Channel>>,
    cache: RwLock<Cache>,
    /// Serialises refreshes, so a burst of `NOT_LEADER`s costs one `Metadata` call.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Bumped by every completed refresh; a caller that waited for the lock skips its own
    /// refresh if this moved while it waited.
    generation: AtomicU64,
    /// Rotates the broker that unrouted requests (metadata, admin) try first.
    next_any: AtomicUsize,
    /// The broker that last answered an unrouted request: tried first next time, so a paused
    /// or cut-off broker (which accepts connections but never answers) is not picked by the
    /// rotation while a known-good one exists. Forgotten when it fails.
    answered: Mutex<Option<String>>,
}

/// What the client knows of the cluster.
#[derive(Debug, Default)]
struct Cache {
    /// Broker id → normalised address.
    brokers: HashMap<u32, String>,
    /// Topic → leader id of each partition, by index.
    topics: HashMap<String, Vec<u32>>,
}

/// The outcome of looking a partition's leader up in the cache.
enum Lookup {
    Found(String),
    NoTopic,
    NoPartition(usize),
    NoLeader,
}

impl Client {
    /// Connects with default settings to a cluster through `bootstrap` brokers (`host:port` or
    /// `http://host:port`).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub async fn connect(bootstrap: impl IntoIterator<Item = impl Into<String>>) -> Result<Self> {
        Self::builder().brokers(bootstrap).build().await
    }

    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with the settings in `config`.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub async fn with_config(config: ClientConfig) -> Result<Self> {
        if config.brokers.is_empty() {
            return Err(Error::Config("no bootstrap brokers given".into()));
        }
        let bootstrap: Vec<String> = config.brokers.iter().map(|b| normalize(b)).collect();
        let client = Self {
            inner: Arc::new(Inner {
                config,
                bootstrap,
                channels: Mutex::new(HashMap::new()),
                cache: RwLock::new(Cache::default()),
                refresh_lock: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
                next_any: AtomicUsize::new(0),
                answered: Mutex::new(None),
            }),
        };
        for addr in &client.inner.bootstrap {
            client.channel(addr)?;
        }
        // A bootstrap broker that cannot be reached is retried only for the connect timeout:
        // a wrong address or a stopped cluster is reported in seconds, not after every retry.
        let deadline = tokio::time::Instant::now() + client.config().connect_timeout;
        let mut attempt = 0;
        loop {
            match client.refresh_now().await {
                Ok(()) => return Ok(client),
                Err(e) => {
                    attempt += 1;
                    let pause = client.config().backoff(attempt);
                    let unreachable = matches!(e, Error::Transport { .. } | Error::Timeout(_));
                    if !client.should_retry(&e, attempt)
                        || (unreachable && tokio::time::Instant::now() + pause >= deadline)
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// The settings this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Asks a broker for the cluster's brokers and the partitions of `topics` (all topics when
    /// empty). Does not touch the cache.
    ///
    /// # Errors
    ///
    /// The last broker's error when none answered.
    pub async fn metadata(&self, topics: &[&str]) -> Result<MetadataResponse> {
        let request = MetadataRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        };
        self.call_any(|mut c| {
            let request = request.clone();
            async move { c.metadata(request).await }
        })
        .await
    }

    /// Number of partitions of `topic`, from the cache (refreshed if the topic is not in it).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`] if the cluster does not know the topic after a few refreshes.
    pub async fn partition_count(&self, topic: &str) -> Result<u32> {
        let mut attempt = 0;
        loop {
            if let Some(n) = self.cached_partition_count(topic) {
                return Ok(n);
            }
            let e = match self.refresh().await {
                Ok(()) => match self.cached_partition_count(topic) {
                    Some(n) => return Ok(n),
                    None => Error::unknown_topic(topic),
                },
                Err(e) => e,
            };
            attempt += 1;
            if !self.should_retry(&e, attempt) {
                return Err(e);
            }
            tokio::time::sleep(self.config().backoff(attempt)).await;
        }
    }

    /// Number of partitions of `topic` if the cache knows the topic.
    pub fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        let cache = self
            .inner
            .cache
            .read()
            .expect("metadata cache lock poisoned");
        cache.topics.get(topic).map(|p| p.len() as u32)
    }

    /// Looks up offsets of `partitions` of `topic` (every partition when empty), asking each
    /// partition's leader.
    ///
    /// # Errors
    ///
    /// The first partition's error, after retries.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        at: SeekTo,
    ) -> Result<Vec<PartitionOffset>> {
        let partitions: Vec<u32> = if partitions.is_empty() {
            (0..self.partition_count(topic).await?).collect()
        } else {
            partitions.to_vec()
        };
        let calls = partitions.iter().map(|&p| {
            let request = ListOffsetsRequest {
                topic: topic.to_owned(),
                partitions: vec![p],
                position: Some(at.into()),
            };
            self.call_leader(topic, p, move |mut c| {
                let request = request.clone();
                async move { c.list_offsets(request).await }
            })
        });
        let mut out = Vec::with_capacity(partitions.len());
        for response in futures::future::join_all(calls).await {
            out.extend(response?.offsets);
        }
        Ok(out)
    }

    /// An admin handle on this client's cluster.
    pub fn admin(&self) -> crate::Admin {
        crate::Admin::new(self.clone())
    }

    /// A `BrokerService` client on the leader of `topic`/`partition`.
    pub(crate) async fn leader_client(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<BrokerClient<Channel>> {
        let addr = self.leader_address(topic, partition).await?;
        Ok(self.broker_client(self.channel(&addr)?))
    }

    /// The normalised address of the leader of `topic`/`partition`, refreshing the metadata
    /// once if the cache does not know it.
    pub(crate) async fn leader_address(&self, topic: &str, partition: u32) -> Result<String> {
        let mut lookup = self.lookup(topic, partition);
        if !matches!(lookup, Lookup::Found(_)) {
            self.refresh().await?;
            lookup = self.lookup(topic, partition);
        }
        let addr = match lookup {
            Lookup::Found(addr) => addr,
            Lookup::NoTopic => return Err(Error::unknown_topic(topic)),
            Lookup::NoPartition(n) => return Err(Error::unknown_partition(topic, partition, n)),
            Lookup::NoLeader => {
                return Err(Error::NotLeader {
                    topic: topic.to_owned(),
                    partition,
                    leader: None,
                    status: None,
                });
            }
        };
        Ok(addr)
    }

    fn lookup(&self, topic: &str, partition: u32) -> Lookup {
        let cache = self
            .inner
            .cache
            .read()
            .expect("metadata cache lock poisoned");
        let Some(leaders) = cache.topics.get(topic) else {
            return Lookup::NoTopic;
        };
        let Some(leader) = leaders.get(partition as usize) else {
            return Lookup::NoPartition(leaders.len());
        };
        match cache.brokers.get(leader) {
            Some(addr) => Lookup::Found(addr.clone()),
            None => Lookup::NoLeader,
        }
    }

    /// Records a `NOT_LEADER` hint; returns whether the cache now knows where to go.
    pub(crate) fn apply_hint(&self, topic: &str, partition: u32, hint: &LeaderHint) -> bool {
        let mut cache = self
            .inner
            .cache
            .write()
            .expect("metadata cache lock poisoned");
        if let Some(addr) = &hint.addr {
            cache.brokers.insert(hint.id, normalize(addr));
        }
        if !cache.brokers.contains_key(&hint.id) {
            return false;
        }
        match cache
            .topics
            .get_mut(topic)
            .and_then(|l| l.get_mut(partition as usize))
        {
            Some(leader) => {
                *leader = hint.id;
                true
            }
            None => false,
        }
    }

    /// Refreshes the metadata cache, unless another caller refreshed it while this one waited.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let seen = self.inner.generation.load(Ordering::Acquire);
        let _guard = self.inner.refresh_lock.lock().await;
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        self.refresh_locked().await
    }

    async fn refresh_now(&self) -> Result<()> {
        let _guard = self.inner.refresh_lock.lock().await;
        self.refresh_locked().await
    }

    async fn refresh_locked(&self) -> Result<()> {
        let mut last = None;
        for addr in self.any_addresses() {
            let mut client = self.broker_client(self.channel(&addr)?);
            match self
                .timed(client.metadata(MetadataRequest { topics: vec![] }))
                .await
            {
                Ok(response) => {
                    self.note_answer(&addr, true);
                    self.store(response);
                    return Ok(());
                }
                Err(e) => {
                    if matches!(e, Error::Transport { .. } | Error::Timeout(_)) {
                        self.note_answer(&addr, false);
                    }
                    last = Some(e.at_address(&addr));
                }
            }
        }
        Err(last.expect("the broker list is never empty: bootstrap is checked"))
    }

    fn store(&self, response: MetadataResponse) {
        let brokers = response
            .brokers
            .into_iter()
            .filter(|b| !b.address.is_empty())
            .map(|b| (b.id, normalize(&b.address)))
            .collect();
        let topics = response
            .topics
            .into_iter()
            .map(|mut t| {
                t.partitions.sort_by_key(|p| p.partition);
                (t.name, t.partitions.iter().map(|p| p.leader_id).collect())
            })
            .collect();
        *self
            .inner
            .cache
            .write()
            .expect("metadata cache lock poisoned") = Cache { brokers, topics };
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Known broker addresses then bootstrap addresses, rotated so that unrouted requests
    /// spread over the cluster.
    pub(crate) fn any_addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = {
            let cache = self
                .inner
                .cache
                .read()
                .expect("metadata cache lock poisoned");
            let mut ids: Vec<_> = cache.brokers.iter().collect();
            ids.sort();
            ids.into_iter().map(|(_, a)| a.clone()).collect()
        };
        if !out.is_empty() {
            let start = self.inner.next_any.fetch_add(1, Ordering::Relaxed) % out.len();
            out.rotate_left(start);
        }
        for b in &self.inner.bootstrap {
            if !out.contains(b) {
                out.push(b.clone());
            }
        }
        let answered = self
            .inner
            .answered
            .lock()
            .expect("answered lock poisoned")
            .clone();
        if let Some(a) = answered
            && let Some(i) = out.iter().position(|o| *o == a)
        {
            out[..=i].rotate_right(1);
        }
        out
    }

    /// Records whether the broker at `addr` answered an unrouted request.
    pub(crate) fn note_answer(&self, addr: &str, answered: bool) {
        let mut last = self.inner.answered.lock().expect("answered lock poisoned");
        if answered {
            *last = Some(addr.to_owned());
        } else if last.as_deref() == Some(addr) {
            *last = None;
        }
    }

    /// The cached channel to `addr` (normalised), created lazily on first use.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .expect("channel map lock poisoned");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = &self.inner.config;
        let endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| Error::Config(format!("bad broker address {addr:?}: {e}")))?
            .connect_timeout(c.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(c.stream_window_bytes)
            .initial_connection_window_size(c.connection_window_bytes)
            .http2_keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    pub(crate) fn broker_client(&self, channel: Channel) -> BrokerClient<Channel> {
        let max = self.inner.config.max_message_bytes;
        BrokerClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    pub(crate) fn admin_client(&self, channel: Channel) -> AdminClient<Channel> {
        let max = self.inner.config.max_message_bytes;
        AdminClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    pub(crate) fn groups_client(&self, channel: Channel) -> GroupsClient<Channel> {
        let max = self.inner.config.max_message_bytes;
        GroupsClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Runs one call under the request timeout and parses its error.
    pub(crate) async fn timed<T>(
        &self,
        call: impl Future<Output = std::result::Result<Response<T>, Status>>,
    ) -> Result<T> {
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Error::from_status(status)),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }
}

/// The port a broker address without one gets: Kafka's.
pub const DEFAULT_PORT: u16 = 9092;

/// `host:port` → `http://host:port`; an address with a scheme keeps it; an address without a
/// port gets [`DEFAULT_PORT`] (`localhost` → `http://localhost:9092`, `[::1]` →
/// `http://[::1]:9092`), where an `http://` URI would otherwise mean port 80.
pub(crate) fn normalize(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    let (scheme, authority) = match addr.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("http", addr),
    };
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    let bare_ipv6 = !authority.starts_with('[') && authority.matches(':').count() > 1;
    if authority[host_end..].contains(':') && !bare_ipv6 {
        format!("{scheme}://{authority}")
    } else if bare_ipv6 {
        format!("{scheme}://[{authority}]:{DEFAULT_PORT}")
    } else {
        format!("{scheme}://{authority}:{DEFAULT_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised() {
        assert_eq!(normalize("127.0.0.1:9092"), "http://127.0.0.1:9092");
        assert_eq!(normalize("http://127.0.0.1:9092/"), "http://127.0.0.1:9092");
        assert_eq!(normalize(" broker-1:9092 "), "http://broker-1:9092");
        assert_eq!(normalize("https://b:443"), "https://b:443");
    }

    #[test]
    fn an_address_without_a_port_gets_kafkas() {
        assert_eq!(normalize("localhost"), "http://localhost:9092");
        assert_eq!(normalize("http://localhost"), "http://localhost:9092");
        assert_eq!(normalize("10.0.0.1"), "http://10.0.0.1:9092");
        assert_eq!(normalize("[::1]"), "http://[::1]:9092");
        assert_eq!(normalize("[::1]:9093"), "http://[::1]:9093");
        assert_eq!(normalize("::1"), "http://[::1]:9092");
    }

    /// A port nobody listens on: bound, then released.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let addr = listener.local_addr().expect("bound").to_string();
        drop(listener);
        addr
    }

    #[tokio::test]
    async fn a_refused_connection_fails_within_the_connect_timeout_naming_address_and_reason() {
        let addr = closed_port();
        let started = std::time::Instant::now();
        let e = Client::builder()
            .brokers([addr.as_str()])
            .connect_timeout(std::time::Duration::from_secs(2))
            .build()
            .await
            .expect_err("nothing listens there");
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(4),
            "took {elapsed:?}"
        );
        let text = e.to_string();
        assert!(text.contains(&addr), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    }

    #[test]
    fn seek_maps_to_positions() {
        let p: Position = SeekTo::Latest.into();
        assert_eq!(
            p.position,
            Some(PositionKind::Boundary(Boundary::Latest as i32))
        );
        let p: Position = SeekTo::Timestamp(5).into();
        assert_eq!(p.position, Some(PositionKind::TimestampMs(5)));
    }
}
