//! [`TestCluster`]: N `cairn` processes forming one cluster on 127.0.0.1, each with its own data
//! directory, the same `--voters` list and an optional TOML config; killed and cleaned up on
//! drop, also when a test panics.
//!
//! Broker ids run from 1 to N and every broker is a voter. The ports are reserved before the
//! first start, because every broker must be told every voter's address: see
//! [`reserve_ports`] for the small race that leaves.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_client::Client;
use cairn_proto::v1::admin_client::AdminClient;
use cairn_proto::v1::{DescribeClusterRequest, DescribeClusterResponse};
use tonic::transport::{Channel, Endpoint};

use crate::{LaunchOptions, TestBroker, wait_for};

/// The uid of broker `id` when a cluster runs its brokers as distinct uids
/// ([`ClusterOptions::distinct_uids`]): `UID_BASE + id`. No `/etc/passwd` entry is needed.
pub const UID_BASE: u32 = 41000;

/// How a [`TestCluster`] runs its brokers. The default is what most tests want: every broker
/// as the test's own uid, logging to the test's stderr.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Run broker `id` as uid [`UID_BASE`]` + id`, so that [`crate::netfault`] can cut brokers
    /// off from each other while the test (root) still reaches them all. Needs root.
    pub distinct_uids: bool,
    /// Write broker `id`'s log to `<log_dir>/broker-<id>.log` (appended across restarts).
    pub log_dir: Option<PathBuf>,
}

/// How long the cluster waits may take by default: several Raft election timeouts (3–6 s by
/// default) and broker sessions (9 s by default) on a busy 2-core machine.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);

/// How long one admin call to one broker may take before the broker counts as not answering
/// (a paused broker never answers).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller a `DescribeCluster` answer names; `None` while the broker knows none (it
/// answers `controller_id: 0` during an election, or before it registered): every wait that
/// asks the controller treats that as "not yet".
pub fn controller_of(answer: &DescribeClusterResponse) -> Option<u32> {
    (answer.controller_id != 0).then_some(answer.controller_id)
}

/// N brokers forming one cluster. Methods take broker ids (1..=N), not indexes.
pub struct TestCluster {
    /// Broker `id` is `brokers[id - 1]`. Declared first so the processes die before the config
    /// directory goes.
    brokers: Vec<TestBroker>,
    /// One lazily connected channel per broker, for admin calls aimed at that broker. Made on
    /// first use inside the test's runtime; a restarted broker is reconnected by tonic.
    channels: Mutex<Vec<Option<Channel>>>,
    /// `1@127.0.0.1:P1,2@127.0.0.1:P2,...`, the same on every broker.
    voters: String,
    /// The `--config` file, if the test gave one.
    config_path: Option<PathBuf>,
    _config_dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` brokers, ids 1 to `n`, all voters, each on a reserved port with a fresh data
    /// directory, and `config_toml` (if any) as every broker's `--config` file. All are launched
    /// before any is waited for, since a broker may wait for its peers before announcing.
    ///
    /// Returns once every broker announced its address; use [`TestCluster::wait_controller`]
    /// and [`TestCluster::wait_brokers_alive`] to wait for the cluster to form.
    ///
    /// # Errors
    ///
    /// If a port cannot be reserved or a broker does not start.
    pub fn start(n: usize, config_toml: Option<&str>) -> Result<Self> {
        Self::start_with_options(n, config_toml, &ClusterOptions::default())
    }

    /// [`TestCluster::start`] with [`ClusterOptions`].
    ///
    /// # Errors
    ///
    /// As [`TestCluster::start`], or if a directory cannot be handed to a broker's uid.
    pub fn start_with_options(
        n: usize,
        config_toml: Option<&str>,
        options: &ClusterOptions,
    ) -> Result<Self> {
        assert!(n >= 1, "a cluster has at least one broker");
        let config_dir = tempfile::Builder::new()
            .prefix("cairn-cluster-")
            .tempdir()?;
        if options.distinct_uids {
            // Brokers running as other uids must read the config file.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(config_dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let config_path = match config_toml {
            Some(toml) => {
                let path = config_dir.path().join("cairn.toml");
                std::fs::write(&path, toml).context("writing the cluster config")?;
                Some(path)
            }
            None => None,
        };
        let addrs = reserve_ports(n)?;
        let voters = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            brokers: Vec::with_capacity(n),
            channels: Mutex::new(vec![None; n]),
            voters,
            config_path,
            _config_dir: config_dir,
        };
        for (i, addr) in addrs.into_iter().enumerate() {
            let id = u32::try_from(i + 1).expect("a test cluster has few brokers");
            let args = cluster.serve_args(id, &cluster.voters);
            let launch = LaunchOptions {
                uid: options.distinct_uids.then_some(UID_BASE + id),
                log_file: options
                    .log_dir
                    .as_ref()
                    .map(|d| d.join(format!("broker-{id}.log"))),
            };
            cluster
                .brokers
                .push(TestBroker::launch_with(addr, args, launch)?);
        }
        for b in &mut cluster.brokers {
            b.wait_started()?;
        }
        Ok(cluster)
    }

    /// The `cairn serve` arguments of broker `id` (besides `--data-dir` and `--listen`), with
    /// `voters` as its voters list.
    pub fn serve_args(&self, id: u32, voters: &str) -> Vec<String> {
        let mut args = vec![
            "--node-id".to_owned(),
            id.to_string(),
            "--voters".to_owned(),
            voters.to_owned(),
        ];
        if let Some(path) = &self.config_path {
            args.push("--config".to_owned());
            args.push(path.display().to_string());
        }
        args
    }

    /// The voters list every broker was given.
    pub fn voters(&self) -> &str {
        &self.voters
    }

    /// Broker ids, 1 to N.
    pub fn ids(&self) -> impl Iterator<Item = u32> + use<> {
        1..=u32::try_from(self.brokers.len()).expect("a test cluster has few brokers")
    }

    /// Broker `id`.
    ///
    /// # Panics
    ///
    /// If there is no such broker.
    pub fn broker(&self, id: u32) -> &TestBroker {
        &self.brokers[index(id, self.brokers.len())]
    }

    /// Broker `id`, mutably.
    ///
    /// # Panics
    ///
    /// If there is no such broker.
    pub fn broker_mut(&mut self, id: u32) -> &mut TestBroker {
        let i = index(id, self.brokers.len());
        &mut self.brokers[i]
    }

    /// SIGKILLs broker `id` (a crash).
    pub fn kill(&mut self, id: u32) {
        self.broker_mut(id).kill();
    }

    /// SIGTERMs broker `id` and waits for it to exit.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::stop`].
    pub fn stop(&mut self, id: u32) -> Result<()> {
        self.broker_mut(id).stop()
    }

    /// SIGTERMs every broker at once and waits for each to exit, as `cluster.sh stop` does:
    /// stopped one by one, the last brokers would shut down without a quorum. Returns each
    /// broker's outcome.
    pub fn stop_all(&mut self) -> Vec<(u32, Result<()>)> {
        std::thread::scope(|scope| {
            let stops: Vec<_> = self
                .brokers
                .iter_mut()
                .zip(1u32..)
                .map(|(b, id)| scope.spawn(move || (id, b.stop())))
                .collect();
            stops
                .into_iter()
                .map(|s| s.join().expect("stopping a broker does not panic"))
                .collect()
        })
    }

    /// Starts broker `id` again on its port and data directory, killing it first if it runs.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::restart`].
    pub fn restart(&mut self, id: u32) -> Result<()> {
        self.broker_mut(id).restart()
    }

    /// Starts every broker in `ids` again (killing any that runs), all launched before any is
    /// waited for: after a full stop no broker can find a quorum alone.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::restart`].
    pub fn restart_many(&mut self, ids: &[u32]) -> Result<()> {
        for &id in ids {
            let b = self.broker_mut(id);
            b.kill();
            b.relaunch()?;
        }
        for &id in ids {
            self.broker_mut(id).wait_started()?;
        }
        Ok(())
    }

    /// SIGSTOPs broker `id`.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::pause`].
    pub fn pause(&mut self, id: u32) -> Result<()> {
        self.broker_mut(id).pause()
    }

    /// SIGCONTs broker `id`.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::resume`].
    pub fn resume(&mut self, id: u32) -> Result<()> {
        self.broker_mut(id).resume()
    }

    /// Ids of the brokers that run and are not paused: those that can answer.
    pub fn answering(&self) -> Vec<u32> {
        self.ids()
            .filter(|&id| {
                let b = self.broker(id);
                b.is_running() && !b.is_paused()
            })
            .collect()
    }

    /// Every broker's `host:port`, for a client's bootstrap list (the client skips those that do
    /// not answer).
    pub fn bootstrap(&self) -> Vec<String> {
        self.brokers.iter().map(|b| b.addr().to_string()).collect()
    }

    /// [`TestCluster::bootstrap`] comma-separated, as `--brokers` and `CAIRN_BROKERS` take it.
    pub fn bootstrap_list(&self) -> String {
        self.bootstrap().join(",")
    }

    /// A client bootstrapped from every broker.
    ///
    /// # Errors
    ///
    /// If no broker answers.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(self.bootstrap()).await?)
    }

    /// An admin client aimed at broker `id` alone (no failover to other brokers), for asking
    /// one broker what it knows.
    pub fn admin(&self, id: u32) -> AdminClient<Channel> {
        let i = index(id, self.brokers.len());
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let channel = channels[i].get_or_insert_with(|| {
            Endpoint::from_shared(self.brokers[i].url())
                .expect("a broker's url is valid")
                .connect_timeout(CALL_TIMEOUT)
                .connect_lazy()
        });
        AdminClient::new(channel.clone())
    }

    /// `DescribeCluster` as broker `id` answers it.
    ///
    /// # Errors
    ///
    /// If the broker does not answer within 5 s or answers with an error.
    pub async fn describe_cluster(&self, id: u32) -> Result<DescribeClusterResponse> {
        let mut admin = self.admin(id);
        let call = admin.describe_cluster(DescribeClusterRequest {});
        let response = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .with_context(|| format!("broker {id} did not answer DescribeCluster"))?
            .with_context(|| format!("DescribeCluster on broker {id}"))?;
        Ok(response.into_inner())
    }

    /// `DescribeCluster` from every answering broker, as `(id, answer)`; `None` if any of them
    /// fails to answer.
    async fn describe_all(&self) -> Option<Vec<(u32, DescribeClusterResponse)>> {
        let ids = self.answering();
        let calls = ids.iter().map(|&id| self.describe_cluster(id));
        let answers = futures::future::join_all(calls).await;
        ids.into_iter()
            .zip(answers)
            .map(|(id, a)| a.ok().map(|a| (id, a)))
            .collect()
    }

    /// Waits until every answering broker names the same controller, and it is not `except`
    /// (the controller a test just killed, say); returns its id.
    ///
    /// # Errors
    ///
    /// If that does not happen within [`CLUSTER_WAIT`].
    pub async fn wait_controller(&self, except: Option<u32>) -> Result<u32> {
        let what = match except {
            Some(old) => format!("a controller other than {old} agreed on by every broker"),
            None => "a controller agreed on by every broker".to_owned(),
        };
        wait_for(&what, CLUSTER_WAIT, || async {
            let answers = self.describe_all().await?;
            let controller = answers.first()?.1.controller_id;
            let agreed = answers.iter().all(|(_, a)| a.controller_id == controller);
            (agreed && controller != 0 && Some(controller) != except).then_some(controller)
        })
        .await
    }

    /// Waits until every answering broker lists each of `ids` as alive (registered, not
    /// fenced); returns the controller's description at that moment.
    ///
    /// # Errors
    ///
    /// If that does not happen within [`CLUSTER_WAIT`].
    pub async fn wait_brokers_alive(&self, ids: &[u32]) -> Result<DescribeClusterResponse> {
        self.wait_brokers(ids, true).await
    }

    /// Waits until every answering broker lists each of `ids` as fenced (or does not list it);
    /// returns the controller's description at that moment.
    ///
    /// # Errors
    ///
    /// If that does not happen within [`CLUSTER_WAIT`].
    pub async fn wait_brokers_fenced(&self, ids: &[u32]) -> Result<DescribeClusterResponse> {
        self.wait_brokers(ids, false).await
    }

    async fn wait_brokers(&self, ids: &[u32], alive: bool) -> Result<DescribeClusterResponse> {
        let state = if alive { "alive" } else { "fenced" };
        let what = format!("brokers {ids:?} {state} on every broker, with a controller");
        wait_for(&what, CLUSTER_WAIT, || async {
            let answers = self.describe_all().await?;
            let all_agree = answers.iter().all(|(_, a)| {
                ids.iter().all(|id| {
                    let listed = a.brokers.iter().find(|b| b.id == *id);
                    listed.map_or(!alive, |b| b.alive == alive)
                })
            });
            if !all_agree {
                return None;
            }
            let (_, first) = answers.first()?;
            let controller = controller_of(first)?;
            answers
                .into_iter()
                .find(|(id, _)| *id == controller)
                .map(|(_, a)| a)
        })
        .await
    }
}

/// `brokers[id - 1]`, checked.
fn index(id: u32, n: usize) -> usize {
    let i = usize::try_from(id).unwrap_or(usize::MAX).wrapping_sub(1);
    assert!(i < n, "no broker {id} in a cluster of {n}");
    i
}

/// The ports [`reserve_ports`] picks from: below Linux's ephemeral range (32768–60999), so
/// that neither a broker started on port 0 nor any outgoing connection can be given one by
/// the kernel between the reservation and the broker's bind.
const RESERVED_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Reserves `n` distinct free ports on 127.0.0.1, picked at random in [`RESERVED_RANGE`] and
/// checked free by binding them, then released for the brokers to bind.
///
/// Ephemeral ports (port 0) were used before: in the window between the release and a broker's
/// bind, a broker of a concurrently running test (bound to port 0) or an outgoing connection
/// could take the port, and then this cluster's Raft traffic reached another cluster's broker
/// (seen as an openraft assertion in that broker). Outside the ephemeral range only another
/// reservation can collide, with a chance of about one in ten thousand per port; such a broker
/// exits before announcing and [`TestBroker::wait_started`] launches it again for up to 30 s,
/// and Raft calls carry a cluster fingerprint, so a stray one changes nothing.
///
/// # Errors
///
/// If no free ports are found after many tries.
pub fn reserve_ports(n: usize) -> Result<Vec<SocketAddr>> {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
    seed.write_u32(std::process::id());
    let mut listeners = Vec::with_capacity(n);
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(n);
    for attempt in 0u64..10_000 {
        if addrs.len() == n {
            break;
        }
        seed.write_u64(attempt);
        let span = u64::from(RESERVED_RANGE.end - RESERVED_RANGE.start);
        let port = RESERVED_RANGE.start + u16::try_from(seed.finish() % span).unwrap_or(0);
        if addrs.iter().any(|a| a.port() == port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            addrs.push(l.local_addr()?);
            listeners.push(l);
        }
    }
    if addrs.len() < n {
        bail!(
            "found only {} free ports of {n} in {RESERVED_RANGE:?}",
            addrs.len()
        );
    }
    drop(listeners);
    Ok(addrs)
}
