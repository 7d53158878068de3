//! A throwaway S3-compatible server (s3rver) over TLS, for pgBackRest's S3 repositories.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::discovery::S3rverBinaries;
use crate::process::{ChildProcess, daemon_command_as, last_lines, read_from, run_checked};

/// s3rver's fixed access key id.
pub const S3RVER_ACCESS_KEY: &str = "S3RVER";
/// s3rver's fixed secret access key.
pub const S3RVER_SECRET_KEY: &str = "S3RVER";
/// The bucket [`S3Server::start`] creates.
pub const DEFAULT_BUCKET: &str = "tusk";

const START_TIMEOUT: Duration = Duration::from_secs(30);
const LISTENING: &str = "S3rver listening on ";

/// An s3rver for one test: TLS with a fresh self-signed certificate for `localhost` (a DNS
/// name, since pgBackRest ignores IP SANs), a port the server picked itself, and one bucket.
/// Dropping it kills the server and removes its temp dir.
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    bucket: String,
    ca_file: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    process: ChildProcess,
    _dir: TempDir,
}

impl S3Server {
    /// Starts s3rver with the bucket [`DEFAULT_BUCKET`].
    pub async fn start(binaries: &S3rverBinaries) -> Result<Self> {
        Self::start_with_bucket(binaries, DEFAULT_BUCKET).await
    }

    /// Starts s3rver with `bucket` created.
    pub async fn start_with_bucket(binaries: &S3rverBinaries, bucket: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tusk-s3-")
            .tempdir()
            .context("creating a temp dir for s3rver")?;
        let ca_file = dir.path().join("localhost.crt");
        let key_file = dir.path().join("localhost.key");
        let mut openssl = Command::new(&binaries.openssl);
        openssl
            .args(["req", "-x509", "-nodes", "-days", "7"])
            .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key_file)
            .arg("-out")
            .arg(&ca_file);
        run_checked(openssl, "openssl req (s3rver certificate)").await?;

        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let log_file = dir.path().join("s3rver.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .with_context(|| format!("opening {}", log_file.display()))?;
        let mut command = daemon_command_as(&binaries.node, None);
        command
            .arg(&binaries.script)
            .arg("--directory")
            .arg(&data_dir)
            .args(["--address", "127.0.0.1", "--port", "0"])
            .arg("--key")
            .arg(&key_file)
            .arg("--cert")
            .arg(&ca_file)
            .args(["--configure-bucket", bucket])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut process = ChildProcess::spawn("s3rver", command)?;
        let port = match wait_listening(&process, &log_file).await {
            Ok(port) => port,
            Err(error) => {
                process.kill();
                return Err(error.context(format!(
                    "s3rver did not start; log {}:\n{}",
                    log_file.display(),
                    last_lines(&read_from(&log_file, 0), 20)
                )));
            }
        };
        Ok(Self {
            port,
            bucket: bucket.to_owned(),
            ca_file,
            data_dir,
            log_file,
            process,
            _dir: dir,
        })
    }

    /// The endpoint URL, `https://localhost:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://{}:{}", self.host(), self.port)
    }

    /// The host name the certificate is for: `localhost`.
    pub fn host(&self) -> &str {
        "localhost"
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region clients should sign for (s3rver accepts any).
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// The self-signed certificate, to trust as a CA (`repo1-s3-ca-file`, `curl --cacert`).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The access key id.
    pub fn access_key(&self) -> &str {
        S3RVER_ACCESS_KEY
    }

    /// The secret access key.
    pub fn secret_key(&self) -> &str {
        S3RVER_SECRET_KEY
    }

    /// Where s3rver keeps the objects.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// s3rver's log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Waits for s3rver to print the port it bound.
async fn wait_listening(process: &ChildProcess, log_file: &Path) -> Result<u16> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(port) = listening_port(&read_from(log_file, 0)) {
            return Ok(port);
        }
        if let Some(status) = process.exit_status() {
            bail!("s3rver exited with {status}");
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("s3rver did not listen within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The port in s3rver's `S3rver listening on 127.0.0.1:PORT` line.
fn listening_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(LISTENING))
        .and_then(|address| address.rsplit(':').next())
        .and_then(|port| port.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_port_is_read_from_the_log() {
        assert_eq!(
            listening_port("\nS3rver listening on 127.0.0.1:41235\n"),
            Some(41235)
        );
        assert_eq!(listening_port("starting\n"), None);
    }
}
