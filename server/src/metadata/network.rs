//! The client half of the Raft transport: openraft's `RaftNetworkFactory` and `RaftNetwork` for
//! [`TypeConfig`], over the internal `cairn.v1.Raft` gRPC service.
//!
//! This module owns the connections to peers: one tonic [`Channel`] per peer address, created
//! lazily on first use and shared by every openraft connection to that peer (openraft asks for a
//! new client per replication stream and after errors; none of that opens a new TCP connection).
//! It encodes openraft's requests as the JSON payloads `raft.proto` documents, bounds each call
//! by openraft's [`RPCOption`] deadline, and maps failures as openraft expects: a peer that cannot
//! be reached is [`Unreachable`] (openraft backs off), a reply that cannot be decoded or a gRPC
//! error is a [`NetworkError`], an expired deadline is a [`Timeout`], and openraft's own error
//! from the peer is a [`RemoteError`].
//!
//! It does not know the server side (`service::raft`), the log store, the state machine or the
//! broker. It sees a `tonic::Status` only as the generated client returns it, and turns it into an
//! openraft error at once.

use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::v1::{self as pb, raft_client::RaftClient};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::TypeConfig;
use crate::peers::PeerChannels;

type NodeId = u64;
/// What every RPC returns: openraft's error for the RPC's remote error type `E`.
type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// Largest Raft message, either way. Snapshot chunks are JSON, where bytes become numbers (up to
/// four characters each), so openraft's default 3 MiB chunk grows to about 12 MiB; this leaves
/// room for that and for large append batches. The server side uses the same bound.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// How long establishing a TCP connection to a peer may take before the call fails as
/// unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The request header that carries the sender's cluster fingerprint
/// ([`cluster_fingerprint`]); a broker refuses Raft calls whose fingerprint differs from its
/// own, so a message misrouted to another cluster's broker (a reused address) changes nothing.
pub const CLUSTER_HEADER: &str = "x-cairn-cluster";

/// A short, stable fingerprint of the configured voters list, the same on every broker of one
/// cluster (every broker must be given the same `--voters`).
pub fn cluster_fingerprint(voters: &[crate::config::Voter]) -> String {
    let mut list: Vec<String> = voters
        .iter()
        .map(|v| format!("{}@{}", v.id, v.addr))
        .collect();
    list.sort();
    format!("{:08x}", crc32fast::hash(list.join(",").as_bytes()))
}

/// Wraps `message` in a request tagged with `cluster`.
fn tagged<T>(cluster: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = cluster.parse() {
        request.metadata_mut().insert(CLUSTER_HEADER, value);
    }
    request
}

/// Why a peer's address could not become a channel.
#[derive(Debug, thiserror::Error)]
#[error("peer {target} has an invalid address {addr:?}")]
pub struct InvalidPeerAddress {
    /// The peer's node id.
    pub target: NodeId,
    /// The address as its membership entry gives it.
    pub addr: String,
    /// What tonic made of it.
    #[source]
    pub source: tonic::transport::Error,
}

/// A gRPC call that failed, as the transport or the peer's edge reported it.
#[derive(Debug, thiserror::Error)]
#[error("raft rpc to peer {target} failed: {code:?}: {message}")]
pub struct RpcFailed {
    /// The peer's node id.
    pub target: NodeId,
    /// The gRPC status code.
    pub code: Code,
    /// The status message.
    pub message: String,
}

/// Why a payload could not be encoded or a peer's reply decoded.
#[derive(Debug, thiserror::Error)]
#[error("raft payload codec ({what})")]
pub struct PayloadCodec {
    /// What was being encoded or decoded.
    pub what: &'static str,
    /// serde_json's error.
    #[source]
    pub source: serde_json::Error,
}

/// openraft's network factory: hands out [`PeerClient`]s that share one channel per peer.
///
/// Cloning is cheap and shares the channel cache.
#[derive(Debug, Clone)]
pub struct RaftNetworkClient {
    /// This node's id, reported in timeouts.
    id: NodeId,
    /// This cluster's fingerprint, sent with every call.
    cluster: Arc<str>,
    /// One lazily connected channel per peer address.
    channels: PeerChannels,
}

impl RaftNetworkClient {
    /// A factory for node `id` of the cluster with fingerprint `cluster`, with no connections
    /// yet.
    pub fn new(id: NodeId, cluster: &str) -> Self {
        Self {
            id,
            cluster: Arc::from(cluster),
            channels: PeerChannels::new(|e| e.tcp_nodelay(true).connect_timeout(CONNECT_TIMEOUT)),
        }
    }

    /// The cached channel to `addr`, creating it (unconnected) on first use.
    fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, InvalidPeerAddress> {
        self.channels
            .get(addr)
            .map_err(|source| InvalidPeerAddress {
                target,
                addr: addr.to_owned(),
                source,
            })
    }
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkClient {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            id: self.id,
            cluster: Arc::clone(&self.cluster),
            target,
            node: node.clone(),
            channel: self.channel(target, &node.addr).map_err(Arc::new),
        }
    }
}

/// openraft's connection to one peer: a handle on the peer's shared channel.
#[derive(Debug)]
pub struct PeerClient {
    /// This node's id.
    id: NodeId,
    /// This cluster's fingerprint, sent with every call.
    cluster: Arc<str>,
    /// The peer's id.
    target: NodeId,
    /// The peer as membership describes it, attached to its remote errors.
    node: BasicNode,
    /// The shared channel, or why the peer's address is unusable (every call then fails as
    /// unreachable, so openraft backs off instead of spinning).
    channel: Result<Channel, Arc<InvalidPeerAddress>>,
}

impl PeerClient {
    /// Sends `request` with `send`, bounded by `option`'s deadline, and decodes the reply.
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        request: &Req,
        send: F,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Bytes) -> Fut,
        Fut: Future<Output = Result<Bytes, Status>>,
    {
        let channel = match &self.channel {
            Ok(channel) => channel.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e.as_ref()))),
        };
        let payload = serde_json::to_vec(request).map_err(|source| {
            RPCError::Network(NetworkError::new(&PayloadCodec {
                what: "encoding the request",
                source,
            }))
        })?;
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let timeout = option.hard_ttl();
        let reply = match tokio::time::timeout(timeout, send(client, payload.into())).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(status)) => return Err(self.status_error(&status)),
            Err(_elapsed) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: self.id,
                    target: self.target,
                    timeout,
                }));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply).map_err(|source| {
                RPCError::Network(NetworkError::new(&PayloadCodec {
                    what: "decoding the peer's reply",
                    source,
                }))
            })?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }

    /// A failed call: the peer could not be reached (`UNAVAILABLE`, which tonic also reports
    /// for a refused or broken connection) or something else went wrong on the way.
    fn status_error<E: Error>(&self, status: &Status) -> RPCError<NodeId, BasicNode, E> {
        let failed = RpcFailed {
            target: self.target,
            code: status.code(),
            message: status.message().to_owned(),
        };
        if status.code() == Code::Unavailable {
            RPCError::Unreachable(Unreachable::new(&failed))
        } else {
            RPCError::Network(NetworkError::new(&failed))
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let cluster = Arc::clone(&self.cluster);
        self.call(
            RPCTypes::AppendEntries,
            &option,
            &rpc,
            |mut client, payload| async move {
                let request = tagged(&cluster, pb::AppendEntriesRequest { payload });
                let reply = client.append_entries(request).await?;
                Ok(reply.into_inner().payload)
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let cluster = Arc::clone(&self.cluster);
        self.call(
            RPCTypes::InstallSnapshot,
            &option,
            &rpc,
            |mut client, payload| async move {
                let request = tagged(&cluster, pb::InstallSnapshotRequest { payload });
                let reply = client.install_snapshot(request).await?;
                Ok(reply.into_inner().payload)
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let cluster = Arc::clone(&self.cluster);
        self.call(
            RPCTypes::Vote,
            &option,
            &rpc,
            |mut client, payload| async move {
                let request = tagged(&cluster, pb::VoteRequest { payload });
                let reply = client.vote(request).await?;
                Ok(reply.into_inner().payload)
            },
        )
        .await
    }
}

/// The pre-vote transport: asks other voters over `cairn.v1.Raft/PreVote`, on the same
/// channels openraft's calls use.
#[derive(Clone)]
pub struct PreVoteClient {
    /// Shared with [`RaftNetworkClient`].
    channels: PeerChannels,
    /// This cluster's fingerprint, sent with every call.
    cluster: Arc<str>,
    /// Where the voters are: the effective membership's node addresses.
    raft: openraft::Raft<TypeConfig>,
}

impl PreVoteClient {
    /// Pre-votes over `network`'s channels to the voters `raft`'s membership names.
    pub fn new(network: &RaftNetworkClient, raft: openraft::Raft<TypeConfig>) -> Self {
        Self {
            channels: network.channels.clone(),
            cluster: Arc::clone(&network.cluster),
            raft,
        }
    }

    /// Asks one voter; any failure (unreachable, slow, undecodable) counts as a refusal.
    async fn ask_one(
        &self,
        voter: NodeId,
        req: &super::election::PreVoteRequest,
    ) -> Result<super::election::PreVoteResponse, String> {
        let addr = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&voter)
            .map(|n| n.addr.clone())
            .ok_or_else(|| format!("voter {voter} has no address"))?;
        let channel = self.channels.get(&addr).map_err(|e| e.to_string())?;
        let payload = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        let reply = RaftClient::new(channel)
            .pre_vote(tagged(
                &self.cluster,
                pb::PreVoteRequest {
                    payload: payload.into(),
                },
            ))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
        serde_json::from_slice(&reply.into_inner().payload).map_err(|e| e.to_string())
    }
}

impl super::election::PreVoter for PreVoteClient {
    async fn ask(
        &self,
        voters: &[u64],
        needed: usize,
        req: &super::election::PreVoteRequest,
        timeout: Duration,
    ) -> usize {
        use futures::StreamExt;
        let mut asks: futures::stream::FuturesUnordered<_> = voters
            .iter()
            .map(|&v| async move {
                match tokio::time::timeout(timeout, self.ask_one(v, req)).await {
                    Ok(Ok(answer)) if answer.granted => true,
                    Ok(Ok(answer)) => {
                        tracing::debug!(voter = v, reason = %answer.reason, "pre-vote refused");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(voter = v, error = %e, "pre-vote failed");
                        false
                    }
                    Err(_) => false,
                }
            })
            .collect();
        let mut granted = 0;
        while granted < needed
            && let Some(yes) = asks.next().await
        {
            granted += usize::from(yes);
        }
        granted
    }
}
