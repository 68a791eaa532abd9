//! Test harness: real `cairn` broker processes, each with its own temporary data directory,
//! killed and cleaned up on drop.
//!
//! Tests drive brokers through the public client crate (or grpcurl, or the CLI) exactly as a
//! user would. Nothing here sleeps to hope: every wait polls a condition with a deadline.
//!
//! # Layout
//!
//! - [`TestBroker`]: one broker process (port 0, or a port the caller reserved).
//! - [`cluster`]: [`TestCluster`], N brokers forming one metadata cluster, with kill, stop,
//!   restart, pause and the waits a failover test needs.
//! - [`group`]: consumer group members as `cairn topic consume -g` processes, and the group as
//!   its coordinator describes it.
//! - [`partition`]: a partition's leader, ISR and high watermark, and the waits a replication
//!   test needs (a new leader, a full ISR, more acknowledged values).
//! - [`netfault`]: real network partitions between brokers on 127.0.0.1 (per-uid nftables
//!   rules); brokers must run as distinct uids ([`cluster::ClusterOptions`]).
//! - [`chaos`]: the fault suite: a seeded nemesis, a workload of unique values, a history, and
//!   a checker over it (the `cairn-chaos` binary and `tests/chaos.rs` drive it).
//! - [`run_cli`]: the `cairn` command line, with a deadline.

pub mod chaos;
pub mod cluster;
pub mod group;
pub mod netfault;
pub mod partition;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use cluster::TestCluster;

/// How long a starting broker may take to announce its address.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a restart keeps retrying while the old port is still taken.
const REBIND_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `cairn` binary, built once per test process in the same profile as the tests.
pub fn cairn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>/cairn; a harness binary
        // (cairn-chaos) lives in target/<profile> itself.
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.parent().expect("a binary lives in a directory");
        let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
            dir.parent().expect("deps lives in target/<profile>")
        } else {
            dir
        }
        .to_owned();
        let bin = profile_dir.join("cairn");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-q", "-p", "cairn-server", "--bin", "cairn"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo build for the cairn binary");
        assert!(status.success(), "building the cairn binary failed");
        assert!(bin.exists(), "cairn binary not found at {}", bin.display());
        bin
    })
}

/// A broker process. Dropping it kills the process and removes its data directory.
pub struct TestBroker {
    /// The running process; `None` once killed or stopped.
    child: Option<Child>,
    /// Receives the address the process announces on stdout; `Some` between a launch and the
    /// wait for its announcement, so that several brokers can start at once (a cluster broker
    /// may wait for its peers before it announces).
    announced: Option<Receiver<String>>,
    /// Where the broker listens: the announced address once started, so a restart reuses the
    /// port.
    addr: SocketAddr,
    /// Set by [`TestBroker::pause`] (SIGSTOP), cleared by [`TestBroker::resume`].
    paused: bool,
    data_dir: PathBuf,
    _owned_dir: tempfile::TempDir,
    /// `cairn serve` arguments besides `--data-dir` and `--listen`, reused on restart.
    extra_args: Vec<String>,
    /// How the process runs (uid, log file), reused on restart.
    options: LaunchOptions,
}

/// How a broker process runs besides its arguments. The default (the test's own uid, logs to
/// the test's stderr) is what most tests want.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Run the process as this uid (and gid), with its data directory chown'ed to it: what
    /// [`netfault`] rules match on. Needs root. `None`: the test's own uid.
    pub uid: Option<u32>,
    /// Append the broker's stderr (its log) to this file instead of the test's stderr; kept
    /// across restarts.
    pub log_file: Option<PathBuf>,
}

impl TestBroker {
    /// Starts a broker on a free port with a fresh data directory.
    ///
    /// # Errors
    ///
    /// If the process does not start or does not announce its address within 60 s.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Starts a broker with extra `cairn serve` arguments.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start`].
    pub fn start_with(extra_args: &[&str]) -> Result<Self> {
        let extra_args = extra_args.iter().map(|s| (*s).to_owned()).collect();
        let mut broker = Self::launch(([127, 0, 0, 1], 0).into(), extra_args)?;
        broker.wait_started()?;
        Ok(broker)
    }

    /// Launches a broker listening on `listen` with a fresh data directory, without waiting for
    /// it to announce its address: call [`TestBroker::wait_started`] next.
    ///
    /// # Errors
    ///
    /// If the data directory cannot be made or the process cannot be spawned.
    pub fn launch(listen: SocketAddr, extra_args: Vec<String>) -> Result<Self> {
        Self::launch_with(listen, extra_args, LaunchOptions::default())
    }

    /// [`TestBroker::launch`] with [`LaunchOptions`].
    ///
    /// # Errors
    ///
    /// As [`TestBroker::launch`], or if the data directory cannot be given to `options.uid`.
    pub fn launch_with(
        listen: SocketAddr,
        extra_args: Vec<String>,
        options: LaunchOptions,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("cairn-test-").tempdir()?;
        if let Some(uid) = options.uid {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid))
                .with_context(|| format!("giving {} to uid {uid}", dir.path().display()))?;
        }
        let mut broker = Self {
            child: None,
            announced: None,
            addr: listen,
            paused: false,
            data_dir: dir.path().to_owned(),
            _owned_dir: dir,
            extra_args,
            options,
        };
        broker.relaunch()?;
        Ok(broker)
    }

    /// Waits until a launched broker announces its address. A process that exits first (its
    /// port still held by the process it replaces, say) is launched again until 30 s have
    /// passed; only a fixed port (a restart, a cluster) can need that.
    ///
    /// # Errors
    ///
    /// If the broker has not announced its address within 60 s, or kept exiting for 30 s.
    pub fn wait_started(&mut self) -> Result<()> {
        let retry_until = Instant::now() + REBIND_TIMEOUT;
        loop {
            let Some(announced) = self.announced.take() else {
                return Ok(());
            };
            let outcome = announced.recv_timeout(ANNOUNCE_TIMEOUT);
            match outcome {
                Ok(addr) => {
                    self.addr = addr.parse().context("parsing the announced address")?;
                    return Ok(());
                }
                Err(RecvTimeoutError::Disconnected)
                    if self.addr.port() != 0 && Instant::now() < retry_until =>
                {
                    // The process exited before announcing: most likely its port is still
                    // held. Reap it and try again.
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                    self.relaunch()?;
                }
                Err(e) => {
                    let mut child = self.child.take().expect("a launched broker has a child");
                    let _ = child.kill();
                    let status = child.wait()?;
                    bail!(
                        "cairn serve on {} did not announce its address ({e}; exit: {status})",
                        self.addr
                    )
                }
            }
        }
    }

    /// Kills the broker if it runs and starts it again on the same data directory and port,
    /// without waiting for it to announce its address (it announces only once registered, which
    /// a broker started without a live quorum never is).
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned.
    pub fn restart_unannounced(&mut self) -> Result<()> {
        self.kill();
        self.relaunch()
    }

    /// Spawns the process again on the same data directory, port and arguments.
    pub(crate) fn relaunch(&mut self) -> Result<()> {
        let command = serve_command(&self.data_dir, self.addr, &self.extra_args, &self.options)?;
        let (child, announced) = launch(command)?;
        self.child = Some(child);
        self.announced = Some(announced);
        self.paused = false;
        Ok(())
    }

    /// The broker's address, `host:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`, for tonic clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The uid the process runs as, if not the test's own.
    pub fn uid(&self) -> Option<u32> {
        self.options.uid
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (started and neither killed nor stopped; it may be
    /// paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process is paused by [`TestBroker::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Stops the broker with SIGTERM and waits for it to exit (graceful shutdown). A paused
    /// broker is resumed first, or it could not act on the signal.
    ///
    /// # Errors
    ///
    /// If it does not exit within 30 s or exits unsuccessfully.
    pub fn stop(&mut self) -> Result<()> {
        self.resume()?;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        self.announced = None;
        signal(&child, "TERM")?;
        let status = wait_exit(&mut child, Duration::from_secs(30))?;
        if !status.success() {
            bail!("broker on {} exited with {status}", self.addr);
        }
        Ok(())
    }

    /// Kills the broker with SIGKILL (a crash). Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.announced = None;
        self.paused = false;
    }

    /// Freezes the process with SIGSTOP: it holds its port and connections but answers nothing,
    /// like a broker stuck in a long GC pause or a partitioned host.
    ///
    /// # Errors
    ///
    /// If the broker is not running or the signal cannot be sent.
    pub fn pause(&mut self) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .context("pausing a broker that is not running")?;
        signal(child, "STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Lets a paused process run again with SIGCONT. Does nothing if it is not paused.
    ///
    /// # Errors
    ///
    /// If the signal cannot be sent.
    pub fn resume(&mut self) -> Result<()> {
        if let (true, Some(child)) = (self.paused, &self.child) {
            signal(child, "CONT")?;
        }
        self.paused = false;
        Ok(())
    }

    /// Starts the broker again on the same data directory and the same port (killing it first
    /// if it still runs).
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.relaunch()?;
        self.wait_started()
    }

    /// Runs `cairn serve` once on this broker's data directory and port, with `extra_args`
    /// instead of the broker's own, and returns its output once it exits: for a start that must
    /// be refused. The broker must not be running (it holds the data directory's lock).
    ///
    /// # Errors
    ///
    /// If the broker is running, or the process is still running after `timeout` (it is then
    /// killed).
    pub fn serve_until_exit(&self, extra_args: &[String], timeout: Duration) -> Result<Output> {
        if self.is_running() {
            bail!("serve_until_exit on a running broker");
        }
        let mut command = serve_command(&self.data_dir, self.addr, extra_args, &self.options)?;
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        output_within(command, "", timeout)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `cairn serve` on `data_dir` and `listen`, logging at `CAIRN_LOG` to the test's stderr (or
/// `options.log_file`); by default warnings, without openraft's retries to a peer a test killed
/// on purpose.
fn serve_command(
    data_dir: &Path,
    listen: SocketAddr,
    extra: &[String],
    options: &LaunchOptions,
) -> Result<Command> {
    let mut command = Command::new(cairn_bin());
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen.to_string())
        .args(extra)
        .env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG")
                .unwrap_or_else(|_| "warn,openraft=error,openraft::replication=off".into()),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(path) = &options.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the broker log {}", path.display()))?;
        command.stderr(file);
    }
    if let Some(uid) = options.uid {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(uid);
    }
    Ok(command)
}

/// Spawns `cairn serve` (`command`, from [`serve_command`]); the receiver yields the address it
/// announces, or disconnects if the process exits first.
fn launch(mut command: Command) -> Result<(Child, Receiver<String>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning cairn serve")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("cairn listening on ") {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send(addr);
                break;
            }
        }
        // Keep draining so the broker never blocks on a full pipe.
        for _ in lines {}
    });
    Ok((child, rx))
}

/// Sends `kill -<sig>` to the process.
fn signal(child: &Child, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {} failed: {status}", child.id());
    }
    Ok(())
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` (stdout and stderr set up by the caller) with `stdin` piped in and returns
/// its output; kills it if it has not exited within `timeout`.
fn output_within(mut command: Command, stdin: &str, timeout: Duration) -> Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .spawn()
        .context("spawning cairn")?;
    let pid = child.id();
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_owned();
    std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => output.context("waiting for cairn"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            bail!("{command:?} did not exit within {timeout:?}")
        }
    }
}

/// Runs the `cairn` command line (`args`, e.g. `["topic", "describe", "t"]`) against
/// `brokers` (comma-separated `host:port`, as `CAIRN_BROKERS`) with `stdin` piped in.
///
/// # Errors
///
/// If it cannot be spawned or has not exited within `timeout` (it is then killed).
pub fn run_cli(brokers: &str, args: &[&str], stdin: &str, timeout: Duration) -> Result<Output> {
    let mut command = Command::new(cairn_bin());
    command
        .args(args)
        .env("CAIRN_BROKERS", brokers)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    output_within(command, stdin, timeout)
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
///
/// # Errors
///
/// If the condition does not hold in time; the message names `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
