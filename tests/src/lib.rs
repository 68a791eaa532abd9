//! Test harness: real `cairn` broker processes on port 0, each with its own temporary data
//! directory, killed and cleaned up on drop.
//!
//! Tests drive brokers through the public client crate (or grpcurl, or the CLI) exactly as a
//! user would. Nothing here sleeps to hope: every wait polls a condition with a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Path of the `cairn` binary, built once per test process in the same profile as the tests.
pub fn cairn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test-binary> → target/<profile>/cairn
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
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

/// A broker process. Dropping it kills the process and removes its data directory (unless the
/// directory was handed in by the caller).
pub struct TestBroker {
    child: Option<Child>,
    addr: SocketAddr,
    data_dir: PathBuf,
    _owned_dir: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
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
        let dir = tempfile::Builder::new().prefix("cairn-test-").tempdir()?;
        let data_dir = dir.path().to_owned();
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        let (child, addr) = spawn(&data_dir, "127.0.0.1:0", &extra_args)?;
        Ok(Self {
            child: Some(child),
            addr,
            data_dir,
            _owned_dir: Some(dir),
            extra_args,
        })
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

    /// Stops the broker with SIGTERM and waits for it to exit (graceful shutdown).
    ///
    /// # Errors
    ///
    /// If it does not exit within 30 s or exits unsuccessfully.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = wait_exit(&mut child, Duration::from_secs(30))?;
        if !status.success() {
            bail!("broker exited with {status}");
        }
        Ok(())
    }

    /// Kills the broker with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same data directory and the same port.
    ///
    /// # Errors
    ///
    /// As [`TestBroker::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let listen = self.addr.to_string();
        // The old port may linger briefly; retry the bind for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match spawn(&self.data_dir, &listen, &self.extra_args) {
                Ok((child, addr)) => {
                    self.child = Some(child);
                    self.addr = addr;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(data_dir: &Path, listen: &str, extra: &[String]) -> Result<(Child, SocketAddr)> {
    let mut child = Command::new(cairn_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg(listen)
        .args(extra)
        .env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning cairn serve")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
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
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((
            child,
            addr.parse().context("parsing the announced address")?,
        )),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait()?;
            bail!("cairn serve did not announce its address (exit: {status})")
        }
    }
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
