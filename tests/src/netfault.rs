//! Real network partitions between brokers on one machine, with every packet still on
//! 127.0.0.1: each broker runs under its own uid (see [`crate::cluster::ClusterOptions`]) and
//! an nftables `output` hook drops, per uid, the TCP segments a broker sends to the peers it is
//! cut off from.
//!
//! Cutting broker A off from broker B drops, at each sender:
//! - `meta skuid A tcp dport B` and `meta skuid B tcp dport A`: what each sends to the other's
//!   listening port, on new and established connections alike (requests, and the SYN of a
//!   new connection);
//! - `meta skuid A tcp sport A ct mark B` and the same from B: what each sends from its
//!   listening port on a connection the other opened. Those packets go to an ephemeral port,
//!   so no destination port can name them (an answer, or a server stream's push, would still
//!   get through); instead every connection is marked with the uid of the process that opened
//!   it (conntrack's `ct mark`, set by a rule of a second chain, for uids [`TRACKED_UIDS`]),
//!   and the mark names the peer. The source port keeps the rule to this cluster's brokers:
//!   other clusters may run brokers as the same uids.
//!
//! Connections are marked when they open, so create the [`NetFaults`] before the brokers
//! start: on a connection opened before, only the packets to a listening port are dropped.
//! The test runner runs as root (uid 0), matched by no rule, so clients still reach every
//! broker, as in Jepsen's partitions.
//!
//! Each [`NetFaults`] owns one table, `inet cairn_chaos_<pid>_<n>`, created on
//! [`NetFaults::new`] and deleted on drop; `new` also deletes tables left by test processes
//! that no longer run (a killed test cannot drop its own). Several test processes can thus
//! partition their own clusters at once; their rules name only their own brokers' ports.
//!
//! `nft` must be installed; [`NetFaults::new`] installs the Debian package if it is missing.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// Prefix of every table this module creates.
const TABLE_PREFIX: &str = "cairn_chaos_";

/// The chain holding the drop rules (flushed by a heal).
const CHAIN: &str = "output";

/// The chain that marks each new connection with its opener's uid (never flushed).
const MARK_CHAIN: &str = "opener";

/// The uids whose connections are marked: every uid a [`crate::TestCluster`] gives its
/// brokers (`UID_BASE + id`, ids 1 to 64).
pub const TRACKED_UIDS: std::ops::RangeInclusive<u32> =
    crate::cluster::UID_BASE + 1..=crate::cluster::UID_BASE + 64;

/// One broker as the packet filter sees it: the uid its process runs as and the port it
/// listens on (on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetNode {
    /// The uid the broker process runs as.
    pub uid: u32,
    /// The broker's listening port.
    pub port: u16,
}

/// One nftables table of drop rules between brokers; healed (deleted) on drop.
#[derive(Debug)]
pub struct NetFaults {
    /// `cairn_chaos_<pid>_<n>`, in family `inet`.
    table: String,
}

impl NetFaults {
    /// Creates this process's next table with an empty `output` chain, after deleting tables
    /// of test processes that have exited.
    ///
    /// # Errors
    ///
    /// If `nft` is missing and cannot be installed, or refuses the table (not root).
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        ensure_nft()?;
        delete_stale_tables()?;
        let pid = std::process::id();
        let table = format!(
            "{TABLE_PREFIX}{pid}_{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut script = format!(
            "add table inet {table}\n\
             add chain inet {table} {MARK_CHAIN} {{ type filter hook output priority -1; policy accept; }}\n\
             add chain inet {table} {CHAIN} {{ type filter hook output priority 0; policy accept; }}\n"
        );
        for uid in TRACKED_UIDS {
            script.push_str(&format!(
                "add rule inet {table} {MARK_CHAIN} meta skuid {uid} ct state new ct mark set {uid}\n"
            ));
        }
        nft(&script)?;
        Ok(Self { table })
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Cuts `node` off from every one of `peers`, both ways.
    ///
    /// # Errors
    ///
    /// If `nft` refuses the rules.
    pub fn isolate(&self, node: NetNode, peers: &[NetNode]) -> Result<()> {
        self.cut(&[node], peers)
    }

    /// Cuts every node of `a` off from every node of `b`, both ways (a split: `a` and `b` are
    /// the two sides). Nodes on the same side still reach each other.
    ///
    /// # Errors
    ///
    /// If a node's uid is outside [`TRACKED_UIDS`], or `nft` refuses the rules.
    pub fn cut(&self, a: &[NetNode], b: &[NetNode]) -> Result<()> {
        if let Some(n) = a.iter().chain(b).find(|n| !TRACKED_UIDS.contains(&n.uid)) {
            bail!(
                "uid {} is not in {TRACKED_UIDS:?}: its connections are not marked",
                n.uid
            );
        }
        let mut script = String::new();
        for (from, to) in [(a, b), (b, a)] {
            if to.is_empty() {
                continue;
            }
            let list = |f: fn(&NetNode) -> String| to.iter().map(f).collect::<Vec<_>>().join(", ");
            let (ports, uids) = (list(|n| n.port.to_string()), list(|n| n.uid.to_string()));
            for n in from {
                let (table, uid, port) = (&self.table, n.uid, n.port);
                script.push_str(&format!(
                    "add rule inet {table} {CHAIN} meta skuid {uid} tcp dport {{ {ports} }} drop\n\
                     add rule inet {table} {CHAIN} meta skuid {uid} tcp sport {port} ct mark {{ {uids} }} drop\n"
                ));
            }
        }
        nft(&script)
    }

    /// Removes every rule: all brokers reach each other again.
    ///
    /// # Errors
    ///
    /// If `nft` fails.
    pub fn heal(&self) -> Result<()> {
        nft(&format!("flush chain inet {} {CHAIN}\n", self.table))
    }

    /// The table as `nft list table` prints it, for logs.
    ///
    /// # Errors
    ///
    /// If `nft` fails.
    pub fn describe(&self) -> Result<String> {
        nft_output(&["list", "table", "inet", &self.table])
    }
}

impl Drop for NetFaults {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}

/// Installs the `nftables` Debian package if `nft` is not on the PATH.
///
/// # Errors
///
/// If it is missing and `apt-get install` fails.
pub fn ensure_nft() -> Result<()> {
    let found = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    eprintln!("nft not found: installing the nftables package (apt-get install -y nftables)");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "nftables"])
        .stdout(Stdio::null())
        .status()
        .context("running apt-get install nftables")?;
    if !status.success() {
        bail!(
            "nft is missing and `apt-get install -y nftables` failed ({status}); \
             network partition tests need root and the nftables package"
        );
    }
    Ok(())
}

/// Deletes `cairn_chaos_<pid>_<n>` tables whose process no longer runs.
fn delete_stale_tables() -> Result<()> {
    let listing = nft_output(&["list", "tables", "inet"])?;
    for line in listing.lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        let Some(rest) = name.strip_prefix(TABLE_PREFIX) else {
            continue;
        };
        let pid = rest.split('_').next().unwrap_or_default();
        let alive = !pid.is_empty() && std::path::Path::new("/proc").join(pid).exists();
        if !alive {
            nft(&format!("delete table inet {name}\n"))?;
        }
    }
    Ok(())
}

/// Runs an `nft -f -` script, atomically.
fn nft(script: &str) -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning nft")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .context("writing the nft script")?;
    let output = child.wait_with_output().context("waiting for nft")?;
    if !output.status.success() {
        bail!(
            "nft refused:\n{script}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Runs `nft args` and returns its stdout.
fn nft_output(args: &[&str]) -> Result<String> {
    let output = Command::new("nft")
        .args(args)
        .output()
        .context("running nft")?;
    if !output.status.success() {
        bail!(
            "nft {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl crate::TestCluster {
    /// Broker `id` as the packet filter sees it.
    ///
    /// # Errors
    ///
    /// If the cluster does not run its brokers as distinct uids
    /// ([`crate::cluster::ClusterOptions::distinct_uids`]).
    pub fn net_node(&self, id: u32) -> Result<NetNode> {
        let b = self.broker(id);
        let uid = b
            .uid()
            .context("network faults need a cluster started with distinct_uids")?;
        Ok(NetNode {
            uid,
            port: b.addr().port(),
        })
    }

    /// Cuts broker `id` off from every other broker of the cluster (the runner still reaches
    /// it).
    ///
    /// # Errors
    ///
    /// As [`TestCluster::net_node`](crate::TestCluster::net_node) and [`NetFaults::cut`].
    pub fn isolate(&self, faults: &NetFaults, id: u32) -> Result<()> {
        let others: Vec<u32> = self.ids().filter(|&o| o != id).collect();
        self.split(faults, &[id], &others)
    }

    /// Splits the cluster into `a` and `b`: brokers on one side no longer reach those on the
    /// other.
    ///
    /// # Errors
    ///
    /// As [`TestCluster::net_node`](crate::TestCluster::net_node) and [`NetFaults::cut`].
    pub fn split(&self, faults: &NetFaults, a: &[u32], b: &[u32]) -> Result<()> {
        let nodes = |ids: &[u32]| -> Result<Vec<NetNode>> {
            ids.iter().map(|&id| self.net_node(id)).collect()
        };
        faults.cut(&nodes(a)?, &nodes(b)?)
    }
}
