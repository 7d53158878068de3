//! A throwaway single-member etcd on loopback, the DCS Patroni uses in tests.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::discovery::EtcdBinaries;
use crate::http::http_request;
use crate::process::{ChildProcess, daemon_command_as, free_port, last_lines, read_from};

const PORT_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A single-member etcd cluster for one test, with its data in a temp dir; dropping it kills
/// the server and removes the directory.
#[derive(Debug)]
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_file: PathBuf,
    process: ChildProcess,
    _dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd on free client and peer ports of 127.0.0.1 and waits until `/health`
    /// answers healthy.
    pub async fn start(binaries: &EtcdBinaries) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-etcd-")
            .tempdir()
            .context("creating a temp dir for etcd")?;
        let data_dir = dir.path().join("data");
        let log_file = dir.path().join("etcd.log");
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let client_port = free_port()?;
            let peer_port = free_port()?;
            if client_port == peer_port {
                continue;
            }
            let log_start = std::fs::metadata(&log_file).map_or(0, |meta| meta.len());
            let mut process = spawn(binaries, &data_dir, &log_file, client_port, peer_port)?;
            let client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
            match wait_healthy(&process, client_addr).await {
                Ok(()) => {
                    return Ok(Self {
                        client_port,
                        peer_port,
                        data_dir,
                        log_file,
                        process,
                        _dir: dir,
                    });
                }
                Err(error) => {
                    process.kill();
                    let log = read_from(&log_file, log_start);
                    let error = error.context(format!(
                        "etcd did not start on ports {client_port}/{peer_port}; log {}:\n{}",
                        log_file.display(),
                        last_lines(&log, 20)
                    ));
                    if !log.contains("address already in use") {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("etcd found no free ports")))
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`, for `--endpoints` or Patroni's
    /// `etcd3.hosts`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address, for [`crate::http_request`] against etcd's JSON gateway (`/v3/...`).
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// The peer port.
    pub fn peer_port(&self) -> u16 {
        self.peer_port
    }

    /// etcd's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// etcd's log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

fn spawn(
    binaries: &EtcdBinaries,
    data_dir: &Path,
    log_file: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<ChildProcess> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut command = daemon_command_as(&binaries.etcd, None);
    command
        .args(["--name", "tusk-test", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tusk-test={peer_url}")])
        .args(["--initial-cluster-state", "new", "--logger", "zap"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    ChildProcess::spawn("etcd", command)
}

async fn wait_healthy(process: &ChildProcess, client_addr: SocketAddr) -> Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = process.exit_status() {
            bail!("etcd exited with {status}");
        }
        if let Ok(response) = http_request(client_addr, "GET", "/health", None).await
            && response.status == 200
            && response.body.contains("\"health\":\"true\"")
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("etcd was not healthy after {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
