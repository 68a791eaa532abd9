//! The serving half of the Raft transport: the internal `cairn.v1.Raft` service, which hands a
//! peer's AppendEntries, Vote and InstallSnapshot to this node's `openraft::Raft`.
//!
//! It owns only the edge: decoding the JSON payloads `raft.proto` documents (a payload that does
//! not decode is `INVALID_ARGUMENT`) and encoding openraft's answer back, openraft's own errors
//! included, since the calling node's openraft wants those as they are. It does not know the log
//! store, the state machine or the client half (`metadata::network`), and it is not yet part of
//! [`serve`](super::serve).

use std::sync::Arc;

use bytes::Bytes;
use cairn_proto::v1::{self as pb, raft_server::RaftServer};
use openraft::Raft;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Code, Request, Response, Status};

use super::error::{invalid_argument, status};
use crate::metadata::TypeConfig;
use crate::metadata::election::{Election, PreVoteRequest};
use crate::metadata::network::{CLUSTER_HEADER, MAX_MESSAGE_BYTES};

/// Reason of the (never expected) status for an answer that could not be encoded.
const ENCODING_FAILED: &str = "RAFT_ENCODING_FAILED";
/// Reason of a refusal of a call from another cluster.
const WRONG_CLUSTER: &str = "WRONG_CLUSTER";

/// The `cairn.v1.Raft` service over one node's Raft handle.
#[derive(Clone)]
pub struct RaftService {
    /// The node's Raft; every call is handed to it.
    raft: Raft<TypeConfig>,
    /// This voter's election state: told when a leader's message is accepted, and answers
    /// pre-votes.
    election: Arc<Election>,
    /// This cluster's fingerprint: calls carrying another are refused.
    cluster: String,
}

impl RaftService {
    /// The service for `raft` of the cluster with fingerprint `cluster`, with its `election`
    /// state.
    pub fn new(raft: Raft<TypeConfig>, election: Arc<Election>, cluster: &str) -> Self {
        Self {
            raft,
            election,
            cluster: cluster.to_owned(),
        }
    }

    /// Refuses a call from another cluster (or one that does not say): a message misrouted to
    /// this broker (another cluster's broker now on an address this one's peers knew) must not
    /// reach this node's Raft.
    fn check_cluster<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let theirs = request
            .metadata()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok());
        if theirs == Some(self.cluster.as_str()) {
            return Ok(());
        }
        Err(status(
            Code::FailedPrecondition,
            WRONG_CLUSTER,
            format!(
                "this broker belongs to the cluster with voters fingerprint {}, the caller to {}; \
                 check the caller's --voters",
                self.cluster,
                theirs.unwrap_or("none")
            ),
            &[],
        ))
    }

    /// The service ready to add to a tonic server, with message limits matching the client's.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Decodes a peer's payload; garbage is the caller's fault.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(payload).map_err(|e| {
        invalid_argument(
            "payload",
            format!("payload is not a JSON-encoded openraft request: {e}"),
        )
    })
}

/// Encodes openraft's answer, success or error.
fn encode<T: Serialize>(answer: &T) -> Result<Bytes, Status> {
    serde_json::to_vec(answer).map(Bytes::from).map_err(|e| {
        tracing::error!(error = %e, "encoding a raft answer");
        status(
            Code::Internal,
            ENCODING_FAILED,
            format!("could not encode the raft answer: {e}"),
            &[],
        )
    })
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.check_cluster(&request)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
            decode(&request.into_inner().payload)?;
        let leader = rpc.vote.leader_id().voted_for();
        let answer = self.raft.append_entries(rpc).await;
        if matches!(
            answer,
            Ok(openraft::raft::AppendEntriesResponse::Success
                | openraft::raft::AppendEntriesResponse::PartialSuccess(_)
                | openraft::raft::AppendEntriesResponse::Conflict)
        ) {
            // A leader this node accepts is alive: no pre-vote from here for a lease.
            if let Some(leader) = leader {
                self.election.heard_from_leader(leader);
            }
        }
        Ok(Response::new(pb::AppendEntriesResponse {
            payload: encode(&answer)?,
        }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_cluster(&request)?;
        let rpc = decode(&request.into_inner().payload)?;
        let answer = self.raft.vote(rpc).await;
        Ok(Response::new(pb::VoteResponse {
            payload: encode(&answer)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.check_cluster(&request)?;
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
            decode(&request.into_inner().payload)?;
        let leader = rpc.vote.leader_id().voted_for();
        let answer = self.raft.install_snapshot(rpc).await;
        if answer.is_ok()
            && let Some(leader) = leader
        {
            self.election.heard_from_leader(leader);
        }
        Ok(Response::new(pb::InstallSnapshotResponse {
            payload: encode(&answer)?,
        }))
    }

    async fn pre_vote(
        &self,
        request: Request<pb::PreVoteRequest>,
    ) -> Result<Response<pb::PreVoteResponse>, Status> {
        self.check_cluster(&request)?;
        let req: PreVoteRequest = decode(&request.into_inner().payload)?;
        let answer = self.election.answer(&self.raft, &req);
        Ok(Response::new(pb::PreVoteResponse {
            payload: encode(&answer)?,
        }))
    }
}
