//! The gRPC edge: the only module that sees tonic and prost types. It turns requests into node
//! calls and node errors into statuses ([`error`]), and assembles the server: Cairn's services,
//! `grpc.health.v1`, and server reflection in both `v1` and `v1alpha` (grpcurl 1.8 speaks only
//! v1alpha) with the health and error-detail descriptors registered so grpcurl can show them.

pub mod admin;
pub mod broker;
pub mod controller;
pub mod convert;
pub mod drain;
pub mod edge;
pub mod error;
pub mod groups;
pub mod oversize;
pub mod producer_ids;
pub mod raft;
pub mod replication;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{
    admin_server::AdminServer, broker_server::BrokerServer, groups_server::GroupsServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::coordinator::Coordinator;
use crate::metadata::Controller;
use crate::node::Node;
use crate::replication::alter::IsrUpdater;

pub use admin::AdminService;
pub use broker::BrokerService;

/// HTTP/2 flow-control windows. Large windows let one stream carry a full fetch or a pipelined
/// produce without waiting for window updates on loopback or a fast LAN.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// How long in-flight requests may take to finish after a shutdown signal before the server
/// closes their connections anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not load the descriptor sets (a build problem).
    #[error("building the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("serving gRPC")]
    Transport(#[from] tonic::transport::Error),
}

/// Services reflection lists: the public ones. The broker also serves the internal
/// `cairn.v1.Raft` and `cairn.v1.Controller` (broker-to-broker only, see `raft.proto`), which are
/// left out so that a grpcurl user browsing the API sees only what is meant for them. Add a
/// public service here when it is added to the server.
const SERVED: &[&str] = &[
    "cairn.v1.Broker",
    "cairn.v1.Admin",
    "cairn.v1.Groups",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    SERVED.iter().fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cairn_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET),
        |builder, name| builder.with_service_name(*name),
    )
}

/// The broker's parts the gRPC edge turns requests into calls on (built by `broker.rs`).
#[derive(Debug, Clone)]
pub struct Parts {
    /// The hosted partitions.
    pub node: Arc<Node>,
    /// The controller (and, through it, the metadata quorum).
    pub controller: Arc<Controller>,
    /// The group coordinator.
    pub coordinator: Arc<Coordinator>,
    /// ISR changes, sent when followers' fetches move the ISR.
    pub isr: Arc<IsrUpdater>,
}

/// Serves Cairn on `listener` until `shutdown` resolves, then flips health to NOT_SERVING,
/// cancels `cancel` (which ends subscriptions, produce streams and long polls, and tells the
/// broker's background work to stop), and waits for in-flight requests, at most
/// [`DRAIN_TIMEOUT`]. Besides the public services it serves the internal Raft, Controller
/// and Replication services. It spawns nothing: `broker.rs` runs the background work.
///
/// # Errors
///
/// [`ServeError`] if the server cannot be built or the transport fails.
pub async fn serve(
    listener: TcpListener,
    parts: Parts,
    cancel: CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Parts {
        node,
        controller,
        coordinator,
        isr,
    } = parts;
    let limits = node.config().limits.clone();
    let quorum = Arc::clone(controller.quorum());

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BrokerServer<BrokerService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health
        .set_serving::<GroupsServer<groups::GroupsService>>()
        .await;

    let broker = BrokerServer::new(BrokerService::new(
        Arc::clone(&node),
        Arc::clone(&controller),
        cancel.clone(),
    ))
    .max_decoding_message_size(limits.max_request_bytes)
    .max_encoding_message_size(limits.max_request_bytes);
    let admin_service = AdminService::new(
        Arc::clone(&node),
        Arc::clone(&controller),
        Arc::clone(&coordinator),
    );
    let groups = GroupsServer::new(groups::GroupsService::new(
        coordinator,
        Arc::clone(&node),
        admin_service.clone(),
        cancel.clone(),
    ))
    .max_decoding_message_size(limits.max_request_bytes)
    .max_encoding_message_size(limits.max_request_bytes);
    let admin = AdminServer::new(admin_service)
        .max_decoding_message_size(limits.max_request_bytes)
        .max_encoding_message_size(limits.max_request_bytes);

    let drain = {
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests");
            health
                .set_not_serving::<BrokerServer<BrokerService>>()
                .await;
            health.set_not_serving::<AdminServer<AdminService>>().await;
            health
                .set_not_serving::<GroupsServer<groups::GroupsService>>()
                .await;
            // Ends subscriptions and produce streams, which would otherwise hold the drain open.
            cancel.cancel();
        }
    };
    // `Server::tcp_nodelay` does not apply to an incoming stream we hand over, so set it here:
    // without it about one fetch in a hundred waits ~40 ms on delayed ACKs.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let in_flight = drain::InFlight::default();
    let server = tonic::transport::Server::builder()
        .layer(edge::EdgeLayer::new(in_flight.clone()))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(limits.max_concurrent_streams_per_connection)
        // Peers and clients that gave up on calls while this broker did not answer (paused,
        // cut off) reset those streams, and the resets arrive together when it answers again;
        // h2's default of 20 would then tear the whole connection down. Bounded by the
        // streams a connection may open, so a flood of resets still cannot grow without limit.
        .http2_max_pending_accept_reset_streams(Some(
            limits.max_concurrent_streams_per_connection as usize,
        ))
        .add_service(health_service)
        .add_service(reflection_builder().build_v1()?)
        .add_service(reflection_builder().build_v1alpha()?)
        .add_service(broker)
        .add_service(admin)
        .add_service(groups)
        .add_service(
            raft::RaftService::new(
                quorum.raft().clone(),
                Arc::clone(quorum.election()),
                quorum.fingerprint(),
            )
            .into_server(),
        )
        .add_service(controller::ControllerService::new(Arc::clone(&controller)).into_server())
        .add_service(replication::ReplicationService::new(Arc::clone(&node), isr).into_server())
        .serve_with_incoming_shutdown(incoming, drain);
    // hyper's own graceful shutdown also waits for clients to close idle connections, which
    // a client may never do; Cairn waits for running requests only, and at most DRAIN_TIMEOUT.
    let drained = async {
        cancel.cancelled().await;
        if tokio::time::timeout(DRAIN_TIMEOUT, in_flight.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?DRAIN_TIMEOUT,
                running = in_flight.count(),
                "requests still running after the drain timeout; closing them"
            );
        }
    };
    let result = tokio::select! {
        r = server => r,
        () = drained => Ok(()),
    };
    result.map_err(ServeError::from)
}

/// Binds `addr` (port 0 picks a free port) and returns the listener with its real address.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
