//! The network partition primitive ([`cairn_tests::netfault`]): brokers running as distinct
//! uids, cut off from their peers by per-uid nftables rules on 127.0.0.1, while the test (root)
//! still reaches them. A cut broker's peers lose it (the controller fences it, over connections
//! that were established before the cut), and a heal brings it back. Below the brokers, two
//! processes of this test binary (as two uids) show that an established connection stalls in
//! both directions, the accepting side's sends included, and carries on after the heal.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_tests::cluster::{CLUSTER_WAIT, ClusterOptions, UID_BASE};
use cairn_tests::netfault::{NetFaults, NetNode};
use cairn_tests::{TestCluster, wait_for};

/// Fast failure detection, so a cut broker is fenced within seconds.
const CONFIG: &str = "\
[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000
";

fn cluster() -> Result<TestCluster> {
    let options = ClusterOptions {
        distinct_uids: true,
        log_dir: None,
    };
    TestCluster::start_with_options(3, Some(CONFIG), &options)
}

/// Whether broker `via`'s view lists `id` as alive, with `via` the controller.
async fn controller_sees(cluster: &TestCluster, via: u32, id: u32) -> Option<bool> {
    let answer = cluster.describe_cluster(via).await.ok()?;
    if answer.controller_id != via {
        return None;
    }
    answer.brokers.iter().find(|b| b.id == id).map(|b| b.alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_broker_is_fenced_by_its_peers_yet_reachable_by_clients() -> Result<()> {
    let cluster = cluster()?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let controller = cluster.wait_controller(None).await?;
    let victim = cluster
        .ids()
        .find(|&id| id != controller)
        .expect("3 brokers");
    let faults = NetFaults::new()?;

    cluster.isolate(&faults, victim)?;
    wait_for(
        "the controller to fence the cut broker",
        CLUSTER_WAIT,
        || async {
            (controller_sees(&cluster, controller, victim).await == Some(false)).then_some(())
        },
    )
    .await?;
    // The runner (root) is matched by no rule: the cut broker still answers it.
    let answer = cluster.describe_cluster(victim).await?;
    assert!(!answer.brokers.is_empty(), "the cut broker answers clients");

    faults.heal()?;
    wait_for("the healed broker to come back", CLUSTER_WAIT, || async {
        (controller_sees(&cluster, controller, victim).await == Some(true)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_controller_is_replaced_and_the_rules_go_with_the_table() -> Result<()> {
    let faults = NetFaults::new()?;
    let cluster = cluster()?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let controller = cluster.wait_controller(None).await?;
    let table = faults.table().to_owned();

    cluster.isolate(&faults, controller)?;
    let others: Vec<u32> = cluster.ids().filter(|&id| id != controller).collect();
    wait_for(
        "the majority to elect another controller",
        CLUSTER_WAIT,
        || async {
            let a = cluster.describe_cluster(others[0]).await.ok()?;
            let b = cluster.describe_cluster(others[1]).await.ok()?;
            let new = a.controller_id;
            (new != 0 && new != controller && b.controller_id == new).then_some(())
        },
    )
    .await?;

    drop(faults);
    let tables = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()?;
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(
        !tables.contains(&table),
        "dropping NetFaults deletes {table}"
    );
    // Healed: the old controller hears the new one again.
    cluster.wait_controller(None).await?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    Ok(())
}

/// Set in a child process of this test binary: `server` or `client:<port>`.
const ROLE: &str = "CAIRN_NETFAULT_PEER";

/// A peer process: one end of a TCP connection, run as its own uid. It prints `port <p>` (the
/// server), `connected`, and `got <line>` for every line the connection brings; a line on its
/// stdin is sent over the connection.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Peer {
    fn spawn(role: &str, uid: u32) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--exact", "peer_process", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning a peer")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    /// What follows `prefix` in the next line holding it, within `timeout`; `None` if none came.
    fn expect(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            // libtest prints `test peer_process ... ` before the first line, unterminated.
            if let Some((_, rest)) = line.split_once(prefix) {
                return Some(rest.to_owned());
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        Ok(self.stdin.flush()?)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a peer process; does nothing in a normal test run.
#[test]
fn peer_process() -> Result<()> {
    let Ok(role) = std::env::var(ROLE) else {
        return Ok(());
    };
    let stream = if role == "server" {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        println!("port {}", listener.local_addr()?.port());
        listener.accept()?.0
    } else {
        let port = role.strip_prefix("client:").context("a client role")?;
        TcpStream::connect(format!("127.0.0.1:{port}"))?
    };
    println!("connected");
    let reader = stream.try_clone()?;
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            println!("got {line}");
        }
    });
    let mut writer = stream;
    for line in std::io::stdin().lines() {
        writeln!(writer, "{}", line?)?;
    }
    Ok(())
}

#[test]
fn an_established_connection_stalls_both_ways_and_resumes_on_heal() -> Result<()> {
    const SOON: Duration = Duration::from_secs(10);
    // Within this, an unblocked line on loopback arrives; a cut one must not.
    const QUIET: Duration = Duration::from_secs(2);
    let (server_uid, client_uid) = (UID_BASE + 61, UID_BASE + 62);
    let faults = NetFaults::new()?;
    let mut server = Peer::spawn("server", server_uid)?;
    let port = server.expect("port ", SOON).context("the server's port")?;
    let mut client = Peer::spawn(&format!("client:{port}"), client_uid)?;
    assert!(server.expect("connected", SOON).is_some());
    assert!(client.expect("connected", SOON).is_some());
    client.send("before")?;
    assert_eq!(server.expect("got ", SOON).as_deref(), Some("before"));

    let port: u16 = port.parse()?;
    let server_node = NetNode {
        uid: server_uid,
        port,
    };
    // The client listens nowhere; port 1 names no socket of this test.
    let client_node = NetNode {
        uid: client_uid,
        port: 1,
    };
    faults.cut(&[server_node], &[client_node])?;
    client.send("to-the-listener")?;
    server.send("from-the-listener")?;
    assert_eq!(
        server.expect("got ", QUIET),
        None,
        "the opener's data crossed the cut"
    );
    assert_eq!(
        client.expect("got ", QUIET),
        None,
        "the acceptor's data crossed the cut"
    );

    faults.heal()?;
    let wait = Duration::from_secs(30);
    assert_eq!(
        server.expect("got ", wait).as_deref(),
        Some("to-the-listener")
    );
    assert_eq!(
        client.expect("got ", wait).as_deref(),
        Some("from-the-listener")
    );
    Ok(())
}
