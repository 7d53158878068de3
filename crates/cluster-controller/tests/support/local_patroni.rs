//! Real Patroni nodes on loopback, run from the configuration tusk renders.
//!
//! ```text
//!  render_config(cluster) ──► localise ──► <node>/patroni.yaml ──► patroni (as the test user)
//!                              │  kubernetes:  → etcd3: {hosts: 127.0.0.1:<etcd>}
//!                              │  /pgdata /pgwal /etc/tusk/tls /var/run/postgresql /tmp
//!                              │               → <node>/pgdata ... (the pod's mounts)
//!                              │  /usr/lib/postgresql/<major>/bin → the test binaries
//!                              └  0.0.0.0:5432 / 0.0.0.0:8008 → 127.0.0.1:<free ports>
//!  environment: layout::INSTANCE_ENV, as the pod sets it (the pod IP only feeds the
//!  Kubernetes DCS, which is replaced)
//! ```
//!
//! Nothing else is changed: pg_hba, parameters, authentication and bootstrap are the rendered
//! ones, so a test that passes here shows the rendered configuration works.
//!
//! Each node runs in a PID namespace of its own when the kernel allows it (as root), so
//! killing the node's process group kills Patroni *and* the PostgreSQL it started (Patroni
//! starts the postmaster in a session of its own, outside Patroni's process group). Without a
//! namespace, [`Node::kill`] (and dropping a node) also kills the postmaster's group from
//! `postmaster.pid`; only a test process killed outright can then leave a PostgreSQL behind.
//!
//! Shared by `tests/patroni_real.rs` and `cargo xtask bench failover` (which includes this
//! file with `#[path]`), so it uses only crates both have.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value as Yaml};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};
use tusk_api::Cluster;
use tusk_api::names::keys;
use tusk_cluster_controller::plan::patroni;
use tusk_cluster_controller::shared::layout;
use tusk_testkit::{
    ChildProcess, EtcdBinaries, EtcdServer, Missing, PatroniBinaries, PostgresBinaries, RunAs,
    daemon_command_as, free_port,
};

/// The real programs a local cluster needs.
#[derive(Debug, Clone)]
pub(crate) struct Components {
    pub(crate) postgres: PostgresBinaries,
    pub(crate) patroni: PatroniBinaries,
    pub(crate) etcd: EtcdBinaries,
}

impl Components {
    /// PostgreSQL 17 (else 15), Patroni and etcd.
    pub(crate) fn find() -> Result<Self, Missing> {
        let postgres = tusk_testkit::postgres(17)
            .or_else(|missing| tusk_testkit::postgres(15).map_err(|_| missing))?;
        Ok(Self {
            postgres,
            patroni: tusk_testkit::patroni()?,
            etcd: tusk_testkit::etcd()?,
        })
    }

    /// The PostgreSQL major the Cluster under test must ask for.
    pub(crate) fn major(&self) -> i32 {
        i32::try_from(self.postgres.major).unwrap_or(17)
    }
}

/// The credentials the pod would get from its Secrets.
#[derive(Clone)]
pub(crate) struct Passwords {
    pub(crate) superuser: String,
    pub(crate) replication: String,
    pub(crate) rewind: String,
    pub(crate) restapi: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords { .. }")
    }
}

impl Passwords {
    fn generate() -> Result<Self> {
        let one = || {
            tusk_cluster_controller::plan::secrets::generate_password()
                .map_err(|error| anyhow::anyhow!("generating a password: {error}"))
        };
        Ok(Self {
            superuser: one()?,
            replication: one()?,
            rewind: one()?,
            restapi: one()?,
        })
    }
}

/// One Patroni + PostgreSQL instance, like one pod.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) pg_port: u16,
    pub(crate) api_port: u16,
    /// Holds the pod's "mounts": `pgdata/`, `pgwal/`, `tls/`, `run/` (the socket), `tmp/`.
    pub(crate) dir: PathBuf,
    major: i32,
    process: Option<ChildProcess>,
    isolated: bool,
}

impl Node {
    /// The REST API's address.
    pub(crate) fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    /// The directory of PostgreSQL's unix socket.
    pub(crate) fn socket_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// Patroni's and PostgreSQL's log (Patroni passes its stderr to the postmaster).
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }

    /// The data directory the rendered `/pgdata/pg<major>` became.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join(format!("pgdata/pg{}", self.major))
    }

    /// Whether Patroni is running.
    pub(crate) fn is_running(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// `kill -9` of Patroni and its PostgreSQL, as a node crash.
    pub(crate) fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        if !self.isolated {
            kill_postmaster(&self.data_dir());
        }
    }

    /// The last lines of the node's log, for failure messages.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Without a PID namespace the postmaster outlives Patroni's group: Patroni starts it from a
/// helper that called `setsid`, so kill the postmaster's own process group (its backends are
/// in it too), looked up in `/proc` from `postmaster.pid`.
fn kill_postmaster(data_dir: &Path) {
    let Ok(pid_file) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = pid_file.lines().next().map(str::trim) else {
        return;
    };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return;
    };
    // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after the ')'.
    let Some(group) = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(2))
    else {
        return;
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A local Patroni cluster: etcd and one node per `spec.instances`. Dropping it kills every
/// process and removes every file.
#[derive(Debug)]
pub(crate) struct LocalCluster {
    // Dropped in this order: nodes, then etcd, then the files.
    pub(crate) nodes: Vec<Node>,
    pub(crate) etcd: EtcdServer,
    pub(crate) cluster: Cluster,
    pub(crate) passwords: Passwords,
    rendered: String,
    components: Components,
    /// The CA the server certificates were issued by, to issue a renewal.
    ca_data: BTreeMap<String, k8s_openapi::ByteString>,
    dir: TempDir,
}

/// What `GET /cluster` says about one member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberView {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) state: String,
}

impl LocalCluster {
    /// Renders `cluster`'s configuration, localises it per node and starts etcd and every node
    /// at once (they race for initialisation as pods would). Returns when the nodes are
    /// spawned; wait with [`Self::wait_healthy`].
    pub(crate) async fn start(components: &Components, cluster: Cluster) -> Result<Self> {
        let rendered = patroni::render_config(&cluster, "test")
            .context("rendering the Patroni configuration")?;
        let etcd = EtcdServer::start(&components.etcd).await?;
        let dir = tempfile::Builder::new().prefix("tusk-patroni-").tempdir()?;
        let run_as = components.postgres.run_as.clone();
        if let Some(user) = &run_as {
            user.chown(dir.path())?;
        }
        let tls = tusk_cluster_controller::plan::tls::plan_tls(
            &cluster,
            &tusk_cluster_controller::plan::tls::ObservedTlsSecrets::default(),
            jiff::Timestamp::now(),
        )
        .map_err(|error| anyhow::anyhow!("issuing the test certificates: {error}"))?;
        let server_tls = tls
            .server_secret_data()
            .context("the plan has no generated server certificate")?;
        let ca_data = tls.ca_secret_data();
        let isolated = pid_namespaces_work();
        let cluster_name = cluster.metadata.name.clone().unwrap_or_default();
        let instances = u32::try_from(cluster.spec.instances.max(1))?;
        let mut local = Self {
            nodes: Vec::new(),
            etcd,
            cluster,
            passwords: Passwords::generate()?,
            rendered,
            components: components.clone(),
            ca_data,
            dir,
        };
        for n in 1..=instances {
            let name = tusk_api::names::instance(&cluster_name, n);
            let node_dir = local.dir.path().join(&name);
            let mut pg_port = free_port()?;
            let mut api_port = free_port()?;
            while api_port == pg_port {
                api_port = free_port()?;
            }
            while local
                .nodes
                .iter()
                .any(|node| [node.pg_port, node.api_port].contains(&pg_port))
            {
                pg_port = free_port()?;
            }
            for sub in ["", "pgdata", "pgwal", "tls", "run", "tmp"] {
                let path = node_dir.join(sub);
                std::fs::create_dir_all(&path)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                if let Some(user) = &run_as {
                    user.chown(&path)?;
                }
            }
            for (key, value) in &server_tls {
                let path = node_dir.join("tls").join(key);
                std::fs::write(&path, &value.0)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                if let Some(user) = &run_as {
                    user.chown(&path)?;
                }
            }
            local.nodes.push(Node {
                name,
                pg_port,
                api_port,
                dir: node_dir,
                major: local.cluster.spec.postgres_version,
                process: None,
                isolated,
            });
        }
        for index in 0..local.nodes.len() {
            local.spawn(index)?;
        }
        Ok(local)
    }

    /// Issues a new server certificate from the same CA (as tusk does on renewal) and writes
    /// it over every node's `tls/` files, as the kubelet updates a Secret volume. Returns the
    /// new certificate, PEM.
    pub(crate) fn renew_server_certificate(&self) -> Result<Vec<u8>> {
        let ca = k8s_openapi::api::core::v1::Secret {
            data: Some(self.ca_data.clone()),
            ..Default::default()
        };
        let tls = tusk_cluster_controller::plan::tls::plan_tls(
            &self.cluster,
            &tusk_cluster_controller::plan::tls::ObservedTlsSecrets {
                ca: Some(ca),
                ..Default::default()
            },
            jiff::Timestamp::now(),
        )
        .map_err(|error| anyhow::anyhow!("issuing the renewed certificate: {error}"))?;
        let server_tls = tls
            .server_secret_data()
            .context("the plan has no generated server certificate")?;
        for node in &self.nodes {
            for key in [keys::TLS_CERT, keys::TLS_KEY] {
                let value = server_tls.get(key).context("certificate key missing")?;
                // Written in place: the file keeps its owner and mode, its mtime moves.
                std::fs::write(node.dir.join("tls").join(key), &value.0)?;
            }
        }
        Ok(server_tls
            .get(keys::TLS_CERT)
            .map(|v| v.0.clone())
            .unwrap_or_default())
    }

    /// The configuration as rendered for Kubernetes.
    pub(crate) fn rendered(&self) -> &str {
        &self.rendered
    }

    /// The PostgreSQL major the nodes run.
    pub(crate) fn major(&self) -> i32 {
        self.cluster.spec.postgres_version
    }

    /// A program of the PostgreSQL binaries the nodes run, e.g. `psql`.
    pub(crate) fn postgres_program(&self, program: &str) -> PathBuf {
        self.components.postgres.bin(program)
    }

    /// The rendered configuration with the DCS, paths and addresses made local for `node`.
    pub(crate) fn local_config(&self, node: &Node) -> Result<String> {
        localise(
            &self.rendered,
            node,
            &self.etcd.endpoint(),
            &self.components.postgres.bin_dir,
            self.major(),
        )
    }

    /// Starts (or restarts, with its data) node `index`.
    pub(crate) fn spawn(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let config_path = node.dir.join("patroni.yaml");
        std::fs::write(&config_path, self.local_config(node)?)?;
        let run_as = self.components.postgres.run_as.as_ref();
        if let Some(user) = run_as {
            user.chown(&config_path)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_file())?;
        let mut command = if node.isolated {
            // unshare (ours, dies with the test) → PID 1 of a new namespace: setpriv → patroni.
            let mut command = daemon_command_as(Path::new("unshare"), None);
            command.args(["--pid", "--fork", "--kill-child", "--mount-proc"]);
            command.arg("setpriv");
            if let Some(user) = run_as {
                command
                    .arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--init-groups");
                set_user_env(&mut command, user);
            }
            // Credential changes clear the parent-death signal unshare's --kill-child set, so
            // set it again: when unshare dies, so does the namespace's PID 1, and with it every
            // process of the node.
            command
                .args(["--pdeathsig", "KILL", "--"])
                .arg(&self.components.patroni.patroni);
            command
        } else {
            daemon_command_as(&self.components.patroni.patroni, run_as)
        };
        command
            .arg(&config_path)
            .env("HOME", node.dir.join("tmp"))
            .envs(self.instance_env(node)?)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = ChildProcess::spawn(format!("patroni {}", node.name), command)?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    /// The environment the pod gives Patroni: every variable of [`layout::INSTANCE_ENV`].
    fn instance_env(&self, node: &Node) -> Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        for name in layout::INSTANCE_ENV {
            let value = match *name {
                layout::ENV_NAME => node.name.clone(),
                // Only the Kubernetes DCS reads it, and that section is replaced by etcd.
                layout::ENV_POD_IP => continue,
                layout::ENV_POSTGRESQL_CONNECT_ADDRESS => format!("127.0.0.1:{}", node.pg_port),
                layout::ENV_RESTAPI_CONNECT_ADDRESS => format!("127.0.0.1:{}", node.api_port),
                layout::ENV_SUPERUSER_PASSWORD => self.passwords.superuser.clone(),
                layout::ENV_REPLICATION_PASSWORD => self.passwords.replication.clone(),
                layout::ENV_REWIND_PASSWORD => self.passwords.rewind.clone(),
                layout::ENV_RESTAPI_PASSWORD => self.passwords.restapi.clone(),
                other => {
                    bail!("layout::INSTANCE_ENV has {other}, which this harness does not set")
                }
            };
            env.push(((*name).to_owned(), value));
        }
        Ok(env)
    }

    /// Index of the node named `name`.
    pub(crate) fn index_of(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .with_context(|| format!("no node named {name}"))
    }

    /// `GET /cluster` from the first running node that answers.
    pub(crate) async fn members(&self) -> Result<Vec<MemberView>> {
        let mut last_error = anyhow::anyhow!("no node is running");
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            match api_request(node.api(), "GET", "/cluster", None, None).await {
                Ok((200, body)) => return parse_members(&body),
                Ok((status, body)) => last_error = anyhow::anyhow!("GET /cluster: {status} {body}"),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    /// The leader's node index, when there is a running leader.
    pub(crate) async fn leader(&self) -> Option<usize> {
        let members = self.members().await.ok()?;
        let leader = members
            .iter()
            .find(|member| is_leader_role(&member.role) && member.state == "running")?;
        self.index_of(&leader.name).ok()
    }

    /// Waits until there is a leader and `replicas` replicas stream from it (per the leader's
    /// `pg_stat_replication`), and in the synchronous modes until Patroni has registered a
    /// synchronous standby — PostgreSQL reports `sync` a loop earlier, and until the DCS says so
    /// no replica may be promoted; returns the leader's index.
    pub(crate) async fn wait_healthy(&self, replicas: usize, timeout: Duration) -> Result<usize> {
        let synchronous =
            self.cluster.spec.replication.mode != tusk_api::cluster::ReplicationMode::Asynchronous;
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no leader yet");
        loop {
            if let Some(leader) = self.leader().await {
                match self.streaming_replicas(leader).await {
                    Ok(streaming)
                        if streaming.len() >= replicas
                            && (!synchronous || self.sync_standby().await.is_some()) =>
                    {
                        return Ok(leader);
                    }
                    Ok(streaming) => last = format!("streaming: {streaming:?}"),
                    Err(error) => last = format!("{error:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no leader with {replicas} streaming replicas after {timeout:?} ({last}); \
                     members: {:?}\n{}",
                    self.members().await.ok(),
                    self.log_tails(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The member Patroni has registered as synchronous standby (`GET /cluster`).
    pub(crate) async fn sync_standby(&self) -> Option<String> {
        let members = self.members().await.ok()?;
        members
            .into_iter()
            .find(|member| member.role == "sync_standby" && member.state == "running")
            .map(|member| member.name)
    }

    /// `(member name, sync_state)` of each member streaming from the leader (per its
    /// `pg_stat_replication`; a pg_basebackup in progress is not a replica yet).
    pub(crate) async fn streaming_replicas(&self, leader: usize) -> Result<Vec<(String, String)>> {
        let client = self.connect(leader).await?;
        let rows = client
            .query(
                "SELECT application_name, sync_state FROM pg_stat_replication \
                 WHERE state = 'streaming' ORDER BY application_name",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, String>(1)))
            .filter(|(name, _)| self.nodes.iter().any(|node| &node.name == name))
            .collect())
    }

    /// A superuser connection to node `index` over its unix socket — the rendered
    /// `local all postgres scram-sha-256` line.
    pub(crate) async fn connect(&self, index: usize) -> Result<Client> {
        connect_config(&[&self.nodes[index]], &self.passwords.superuser)
            .connect_timeout(Duration::from_secs(2))
            .connect(NoTls)
            .await
            .map(spawn_connection)
            .with_context(|| format!("connecting to {} over its socket", self.nodes[index].name))
    }

    /// A connection string to whichever node accepts writes, as an application with a
    /// multi-host URL (or the `-rw` Service) would have it.
    pub(crate) fn primary_config(&self) -> tokio_postgres::Config {
        let nodes: Vec<&Node> = self.nodes.iter().collect();
        let mut config = connect_config(&nodes, &self.passwords.superuser);
        config
            .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite)
            .connect_timeout(Duration::from_secs(1));
        config
    }

    /// A request to node `index`'s REST API with the rendered user name and the pod's
    /// password.
    pub(crate) async fn api(
        &self,
        index: usize,
        method: &str,
        path: &str,
        body: Option<&Json>,
    ) -> Result<(u16, String)> {
        let auth = (layout::RESTAPI_USERNAME, self.passwords.restapi.as_str());
        api_request(self.nodes[index].api(), method, path, body, Some(auth)).await
    }

    /// Kills node `index` like a crashed pod.
    pub(crate) fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// The last `lines` lines of every node's log.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- {} ---\n{}", node.name, node.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn set_user_env(command: &mut Command, user: &RunAs) {
    command.env("USER", &user.user).env("LOGNAME", &user.user);
}

/// Whether this process may create PID namespaces (`unshare --pid`), which keeps every process
/// of a node in one killable unit.
fn pid_namespaces_work() -> bool {
    // For exercising the fallback on a machine where namespaces work.
    if std::env::var_os("TUSK_TEST_NO_PID_NAMESPACE").is_some() {
        return false;
    }
    Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn connect_config(nodes: &[&Node], password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    for node in nodes {
        config.host_path(node.socket_dir()).port(node.pg_port);
    }
    config
        .user(tusk_api::user::SUPERUSER_ROLE)
        .password(password)
        .dbname("postgres")
        .application_name("tusk-test");
    config
}

fn spawn_connection<S, T>(
    (client, connection): (Client, tokio_postgres::Connection<S, T>),
) -> Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Patroni 3.x calls the leader `master` in some places and `leader` in others; 4.x `primary`.
pub(crate) fn is_leader_role(role: &str) -> bool {
    matches!(role, "leader" | "master" | "primary")
}

fn parse_members(body: &str) -> Result<Vec<MemberView>> {
    let view: Json = serde_json::from_str(body).with_context(|| format!("GET /cluster: {body}"))?;
    let text = |member: &Json, key: &str| {
        member
            .get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(view
        .get("members")
        .and_then(Json::as_array)
        .map(|members| {
            members
                .iter()
                .map(|member| MemberView {
                    name: text(member, "name"),
                    role: text(member, "role"),
                    state: text(member, "state"),
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Replaces the Kubernetes DCS with etcd and moves every path and address to `node`'s own.
/// Fails when the rendered configuration lacks what it is expected to have, so a change of
/// shape shows up here rather than as a puzzling Patroni error.
pub(crate) fn localise(
    rendered: &str,
    node: &Node,
    etcd_endpoint: &str,
    bin_dir: &Path,
    major: i32,
) -> Result<String> {
    let mut config: Yaml = serde_yaml_ng::from_str(rendered)?;
    let root = config
        .as_mapping_mut()
        .context("the configuration is not a mapping")?;
    if root.remove("kubernetes").is_none() {
        bail!("the rendered configuration has no kubernetes section");
    }
    let etcd_host = etcd_endpoint.trim_start_matches("http://").to_owned();
    let mut etcd = Mapping::new();
    etcd.insert(
        "hosts".into(),
        Yaml::Sequence(vec![Yaml::String(etcd_host)]),
    );
    root.insert("etcd3".into(), Yaml::Mapping(etcd));

    let rendered_bin = layout::bin_dir(major);
    let mounts: BTreeMap<&str, PathBuf> = BTreeMap::from([
        (layout::DATA_MOUNT, node.dir.join("pgdata")),
        (layout::WAL_MOUNT, node.dir.join("pgwal")),
        (layout::TLS_DIR, node.dir.join("tls")),
        (layout::SOCKET_DIR, node.dir.join("run")),
        ("/tmp", node.dir.join("tmp")),
        (rendered_bin.as_str(), bin_dir.to_path_buf()),
    ]);
    let mut moved = 0;
    relocate(&mut config, &mounts, &mut moved);
    if moved == 0 {
        bail!("the rendered configuration names none of the pod's paths");
    }
    replace(
        &mut config,
        &["postgresql", "listen"],
        &format!("0.0.0.0:{}", tusk_api::names::POSTGRES_PORT),
        &format!("127.0.0.1:{}", node.pg_port),
    )?;
    replace(
        &mut config,
        &["restapi", "listen"],
        &format!("0.0.0.0:{}", tusk_api::names::PATRONI_PORT),
        &format!("127.0.0.1:{}", node.api_port),
    )?;
    Ok(serde_yaml_ng::to_string(&config)?)
}

/// Rewrites every string that is a path under one of `mounts` to the local directory.
fn relocate(value: &mut Yaml, mounts: &BTreeMap<&str, PathBuf>, moved: &mut usize) {
    match value {
        Yaml::String(text) => {
            for (mount, local) in mounts {
                if let Some(rest) = text.strip_prefix(mount)
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    *text = format!("{}{rest}", local.display());
                    *moved += 1;
                    break;
                }
            }
        }
        Yaml::Sequence(items) => {
            for item in items {
                relocate(item, mounts, moved);
            }
        }
        Yaml::Mapping(map) => {
            for (_, item) in map.iter_mut() {
                relocate(item, mounts, moved);
            }
        }
        _ => {}
    }
}

/// Sets the string at `path` to `new`, requiring that it was `old`.
fn replace(config: &mut Yaml, path: &[&str], old: &str, new: &str) -> Result<()> {
    let mut cursor = config;
    for key in path {
        cursor = cursor
            .get_mut(*key)
            .with_context(|| format!("the rendered configuration has no {}", path.join(".")))?;
    }
    if cursor.as_str() != Some(old) {
        bail!("{} is {cursor:?}, expected {old:?}", path.join("."));
    }
    *cursor = Yaml::String(new.to_owned());
    Ok(())
}

/// One HTTP/1.0 request to a Patroni REST API, with Basic authentication when `auth` is given.
pub(crate) async fn api_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Json>,
    auth: Option<(&str, &str)>,
) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let body = body.map(Json::to_string).unwrap_or_default();
        let authorization = auth
            .map(|(user, password)| {
                format!(
                    "Authorization: Basic {}\r\n",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{user}:{password}")
                    )
                )
            })
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer in 10 s"))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path}: incomplete answer {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} {path}: no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The path of the CA certificate a node's PostgreSQL presents, for `sslrootcert`.
pub(crate) fn ca_file(node: &Node) -> PathBuf {
    node.dir.join("tls").join(keys::CA_CERT)
}
