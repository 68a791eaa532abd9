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

use crate::metadata::Controller;
use crate::metadata::lease::Registered;
use crate::node::Node;
use tokio::sync::watch;

pub use admin::AdminService;
pub use broker::BrokerService;

/// HTTP/2 flow-control windows. Large windows let one stream carry a full fetch or a pipelined
/// produce without waiting for window updates on loopback or a fast LAN.
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
/// How long in-flight requests may take to finish after a shutdown signal before the server
/// closes their connections anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Serves Cairn on `listener` until `shutdown` resolves, then stops accepting, flips health to
/// NOT_SERVING, drains in-flight requests, stops background work and flushes every log.
///
/// Besides the public services it serves the internal Raft and Controller services and runs the
/// broker's background work: log upkeep, following the metadata (opening and closing
/// partitions), the controller's duties while this broker leads, and registration and lease
/// renewal with the controller.
///
/// # Errors
///
/// [`ServeError`] if the server cannot be built or the transport fails.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    controller: Arc<Controller>,
    registered: watch::Sender<Option<Registered>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let limits = node.config().limits.clone();
    let cancel = CancellationToken::new();
    let quorum = Arc::clone(controller.quorum());
    let registration = registered.subscribe();
    let isr = crate::replication::alter::IsrUpdater::new(Arc::clone(&controller));
    let leave = CancellationToken::new();
    let lease = tokio::spawn(crate::metadata::lease::run(
        Arc::clone(&quorum),
        node.advertised_address(),
        node.config().cluster.clone(),
        registered,
        leave.clone(),
    ));
    let coordinator = crate::coordinator::Coordinator::new(Arc::clone(&node));
    let background = [
        tokio::spawn(Arc::clone(&node).run_upkeep(cancel.clone())),
        tokio::spawn(Arc::clone(&node).run_reconcile(registration, cancel.clone())),
        tokio::spawn(Arc::clone(&controller).run(cancel.clone())),
        tokio::spawn(Arc::clone(&coordinator).run(cancel.clone())),
        tokio::spawn(crate::replication::alter::run_isr_checks(
            Arc::clone(&node),
            Arc::clone(&isr),
            node.config().replication.clone(),
            cancel.clone(),
        )),
    ];

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
        let health = health.clone();
        let cancel = cancel.clone();
        let node = Arc::clone(&node);
        let quorum = Arc::clone(&quorum);
        async move {
            shutdown.await;
            controlled_shutdown(&node, &quorum, leave, lease).await;
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
    cancel.cancel();
    for task in background {
        let _ = task.await;
    }
    node.stop_fetchers();
    quorum.shutdown().await;
    let flush_node = Arc::clone(&node);
    let _ = tokio::task::spawn_blocking(move || flush_node.flush_all()).await;
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

/// Controlled shutdown (Kafka's): if another broker is alive to take over, asks the controller
/// to fence this broker, which moves its partition leaderships to other in-sync replicas, and
/// waits (at most [`DRAIN_TIMEOUT`]) until this broker leads nothing, so clients move to the new
/// leaders before this one stops answering. Then stops the lease.
async fn controlled_shutdown(
    node: &Node,
    quorum: &crate::metadata::Quorum,
    leave: CancellationToken,
    lease: tokio::task::JoinHandle<()>,
) {
    let me = quorum.id();
    let others_alive = quorum
        .view()
        .state
        .brokers()
        .iter()
        .any(|(&id, b)| id != me && !b.fenced);
    leave.cancel();
    if !others_alive {
        lease.abort();
        return;
    }
    tracing::info!("controlled shutdown: handing over partition leaderships");
    let _ = lease.await;
    let handed_over = async {
        while !node.led_partitions().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, handed_over)
        .await
        .is_err()
    {
        tracing::warn!(
            still_leading = node.led_partitions().len(),
            "controlled shutdown: some leaderships did not move in time"
        );
    }
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
