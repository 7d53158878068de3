//! The restore bootstrap under real Patroni: the Patroni configuration the Cluster controller
//! renders for `spec.bootstrap.restore` (method `pgbackrest`, `keep_existing_recovery_conf`,
//! `recovery_conf`) bootstraps a new cluster from a real pgBackRest backup, recovers to a time
//! between two commits, promotes, and Patroni takes the leader lock; the controller's own
//! recovery query then reads the target reached from the new timeline's history. A target
//! past the end of the archive instead makes Patroni give up and exit with an error, and the
//! end of its log — what the kubelet keeps as the termination message — gives the controller
//! the cause it quotes.
//!
//! Only the Kubernetes DCS (→ etcd), the pod's paths and ports, and the restore
//! configuration's path are made local; everything else is rendered. Needs PostgreSQL 15,
//! pgBackRest, Patroni and etcd (`cargo xtask install`); skips without them, fails under
//! `TUSK_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_yaml_ng::{Mapping, Value as Yaml};
use tusk_api::Cluster;
use tusk_cluster_controller::observe::backup::{HISTORY_QUERY, recovery_outcome};
use tusk_cluster_controller::plan::patroni;
use tusk_cluster_controller::shared::layout;
use tusk_pgbackrest::restore::{RESTORE_CONFIG_PATH, resolve_source, restore_settings_in};
use tusk_pgbackrest::{Layout, OptionValue, RepoAccess, Settings, repository_options};
use tusk_testkit::{
    ChildProcess, EtcdBinaries, EtcdServer, PgBackRestBinary, PostgresBinaries, PostgresOptions,
    PostgresServer, RunAs, StopOnDrop, archive_command, commits_around_a_target, connect_with,
    daemon_command_as, free_port, private_dir, private_file, recovery_target_time,
    switch_wal_and_wait_archived,
};

const PG_MAJOR: u32 = 15;

fn cluster(yaml: &str) -> Cluster {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// Rewrites every string: pod paths at its start to local ones, and the restore
/// configuration's path wherever it appears (inside the bootstrap command).
fn localise(value: &mut Yaml, mounts: &[(String, String)], restore_conf: &str) {
    match value {
        Yaml::String(text) => {
            *text = text.replace(RESTORE_CONFIG_PATH, restore_conf);
            for (mount, local) in mounts {
                if let Some(rest) = text.strip_prefix(mount.as_str())
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    *text = format!("{local}{rest}");
                    break;
                }
            }
        }
        Yaml::Sequence(items) => items
            .iter_mut()
            .for_each(|item| localise(item, mounts, restore_conf)),
        Yaml::Mapping(map) => map
            .iter_mut()
            .for_each(|(_, item)| localise(item, mounts, restore_conf)),
        _ => {}
    }
}

/// Stops what Patroni started however the test ends (the postmaster runs in a session of its
/// own), then Patroni.
struct Node {
    patroni: Option<ChildProcess>,
    // Dropped after `Drop::drop` has stopped Patroni.
    _postgres: StopOnDrop,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut patroni) = self.patroni.take() {
            patroni.kill();
        }
    }
}

/// The real components both tests run.
struct Components {
    pgbackrest: PgBackRestBinary,
    pg: PostgresBinaries,
    patroni: PathBuf,
    etcd: EtcdBinaries,
}

impl Components {
    /// All of them, or `None` (skip) when one is missing and `TUSK_REQUIRE_REAL` is not set.
    fn require() -> Option<Self> {
        Some(Self {
            pgbackrest: tusk_testkit::require(tusk_testkit::pgbackrest())?,
            pg: tusk_testkit::require(tusk_testkit::postgres(PG_MAJOR))?,
            patroni: tusk_testkit::require(tusk_testkit::patroni())?.patroni,
            etcd: tusk_testkit::require(tusk_testkit::etcd())?,
        })
    }

    fn run_as(&self) -> Option<&RunAs> {
        self.pg.run_as.as_ref()
    }
}

/// The source Cluster `db`: a server archiving to the Cluster's default pgBackRest
/// repository, with the stanza created and a full backup taken.
struct Source {
    cluster: Cluster,
    layout: Layout,
    server: PostgresServer,
}

async fn backed_up_source(components: &Components, root: &Path) -> Source {
    let run_as = components.run_as();
    for dir in [root.to_path_buf(), root.join("repo"), root.join("tmp")] {
        private_dir(&dir, run_as).unwrap();
    }
    let cluster = cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: test}
spec:
  postgresVersion: 15
  storage: {size: 1Gi}
  backup:
    repositories: [{name: repo1, volume: {size: 1Gi}}]
",
    );
    let source_conf = root.join("source.conf");
    let server = PostgresServer::start(
        &components.pg,
        PostgresOptions::default()
            .with_config("archive_mode = on")
            .with_config(archive_command(
                &components.pgbackrest.pgbackrest,
                &source_conf,
            )),
    )
    .await
    .unwrap();
    let mut layout = Layout::pod("test");
    layout.tmp_dir = root.join("tmp").display().to_string();
    layout.volume_root = root.join("repo").display().to_string();
    layout.data_dir = Some(server.data_dir().display().to_string());
    let mut settings = Settings::default();
    for (option, value) in [
        ("lock-path", format!("{}/lock", layout.tmp_dir)),
        ("log-path", format!("{}/log", layout.tmp_dir)),
        ("spool-path", format!("{}/spool", layout.tmp_dir)),
        ("log-level-file", "off".to_owned()),
    ] {
        settings.set_global(option, OptionValue::literal(value));
    }
    repository_options(
        &mut settings,
        &cluster.spec.backup.as_ref().unwrap().repositories[0],
        RepoAccess::Local,
        &cluster,
        &layout,
    )
    .unwrap();
    for (option, value) in [
        ("pg1-path", server.data_dir().display().to_string()),
        ("pg1-socket-path", server.socket_dir().display().to_string()),
        ("pg1-port", server.port().to_string()),
        ("pg1-user", "postgres".to_owned()),
    ] {
        settings.set_stanza(option, OptionValue::literal(value));
    }
    private_file(&source_conf, settings.to_ini(), run_as).unwrap();
    for command in [&["stanza-create"][..], &["--type=full", "backup"]] {
        components
            .pgbackrest
            .run(run_as, &source_conf, command)
            .await
            .unwrap();
    }
    Source {
        cluster,
        layout,
        server,
    }
}

/// The first instance of Cluster `db-restored`, restoring `db` to `target`, under real Patroni
/// against its own etcd.
struct RestoringNode {
    // Declared first so Patroni and its postmaster stop before etcd does.
    node: Node,
    _etcd: EtcdServer,
    dir: PathBuf,
    api: SocketAddr,
    pg_port: u16,
    log_path: PathBuf,
    superuser: String,
    other: String,
    /// When Patroni was spawned.
    spawned: Instant,
}

impl RestoringNode {
    fn patroni(&self) -> &ChildProcess {
        self.node.patroni.as_ref().unwrap()
    }

    /// Patroni's combined stdout and stderr so far.
    fn log(&self) -> Vec<u8> {
        std::fs::read(&self.log_path).unwrap_or_default()
    }
}

/// Renders the restoring Cluster's Patroni configuration with the controller, localises it and
/// starts Patroni on it; the source server must have stopped.
async fn start_restoring_node(
    components: &Components,
    root: &Path,
    source: &Source,
    target: &str,
) -> RestoringNode {
    let run_as = components.run_as();
    let node_dir = root.join("db-restored-1");
    for dir in [
        node_dir.clone(),
        node_dir.join("pgdata"),
        node_dir.join("pgwal"),
        node_dir.join("tls"),
        node_dir.join("run"),
        node_dir.join("tmp"),
    ] {
        private_dir(&dir, run_as).unwrap();
    }
    let restoring = cluster(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db-restored, namespace: test}}
spec:
  postgresVersion: 15
  storage: {{size: 1Gi}}
  monitoring: {{enabled: false}}
  bootstrap:
    restore:
      cluster: db
      target: {{time: '{target}'}}
"
    ));
    let rendered = patroni::render_config(&restoring, "test").unwrap();
    let data = node_dir.join("pgdata/pg15");
    let restore_conf = root.join("restore.conf");
    let spec = restoring.spec.bootstrap.clone().unwrap().restore.unwrap();
    let resolved = resolve_source(&restoring, &spec, Some(&source.cluster)).unwrap();
    let mut restore_layout = source.layout.clone();
    restore_layout.data_dir = Some(data.display().to_string());
    let restore_ini =
        restore_settings_in(&restoring, &resolved, &restore_layout, RepoAccess::Local)
            .unwrap()
            .to_ini();
    private_file(&restore_conf, restore_ini, run_as).unwrap();

    let etcd = EtcdServer::start(&components.etcd).await.unwrap();
    let pg_port = free_port().unwrap();
    let mut api_port = free_port().unwrap();
    while api_port == pg_port {
        api_port = free_port().unwrap();
    }
    let mut config: Yaml = serde_yaml_ng::from_str(&rendered).unwrap();
    let map = config.as_mapping_mut().unwrap();
    map.remove("kubernetes").unwrap();
    let mut etcd_section = Mapping::new();
    etcd_section.insert(
        "hosts".into(),
        Yaml::Sequence(vec![Yaml::String(
            etcd.endpoint().trim_start_matches("http://").to_owned(),
        )]),
    );
    map.insert("etcd3".into(), Yaml::Mapping(etcd_section));
    let mounts: Vec<(String, String)> = vec![
        (
            layout::DATA_MOUNT.into(),
            node_dir.join("pgdata").display().to_string(),
        ),
        (
            layout::WAL_MOUNT.into(),
            node_dir.join("pgwal").display().to_string(),
        ),
        (
            layout::TLS_DIR.into(),
            node_dir.join("tls").display().to_string(),
        ),
        (
            layout::SOCKET_DIR.into(),
            node_dir.join("run").display().to_string(),
        ),
        ("/tmp".into(), node_dir.join("tmp").display().to_string()),
        (
            layout::bin_dir(15),
            components.pg.bin_dir.display().to_string(),
        ),
    ];
    localise(&mut config, &mounts, &restore_conf.display().to_string());
    config["postgresql"]["listen"] = Yaml::String(format!("127.0.0.1:{pg_port}"));
    config["restapi"]["listen"] = Yaml::String(format!("127.0.0.1:{api_port}"));
    let bootstrap = &config["bootstrap"];
    assert_eq!(bootstrap["method"], Yaml::String("pgbackrest".into()));
    let config_path = node_dir.join("patroni.yaml");
    private_file(
        &config_path,
        serde_yaml_ng::to_string(&config).unwrap(),
        run_as,
    )
    .unwrap();

    let tls = tusk_cluster_controller::plan::tls::plan_tls(
        &restoring,
        &tusk_cluster_controller::plan::tls::ObservedTlsSecrets::default(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    for (key, value) in tls.server_secret_data().unwrap() {
        private_file(&node_dir.join("tls").join(key), &value.0, run_as).unwrap();
    }
    let superuser = tusk_cluster_controller::plan::secrets::generate_password().unwrap();
    let other = tusk_cluster_controller::plan::secrets::generate_password().unwrap();
    let log_path = node_dir.join("patroni.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut command = daemon_command_as(&components.patroni, run_as);
    command
        .arg(&config_path)
        .env("HOME", node_dir.join("tmp"))
        .env(layout::ENV_NAME, "db-restored-1")
        .env(
            layout::ENV_POSTGRESQL_CONNECT_ADDRESS,
            format!("127.0.0.1:{pg_port}"),
        )
        .env(
            layout::ENV_RESTAPI_CONNECT_ADDRESS,
            format!("127.0.0.1:{api_port}"),
        )
        .env(layout::ENV_SUPERUSER_PASSWORD, &superuser)
        .env(layout::ENV_REPLICATION_PASSWORD, &other)
        .env(layout::ENV_REWIND_PASSWORD, &other)
        .env(layout::ENV_RESTAPI_PASSWORD, &other)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let spawned = Instant::now();
    let node = Node {
        patroni: Some(ChildProcess::spawn("patroni db-restored-1", command).unwrap()),
        _postgres: StopOnDrop::new(&components.pg, data),
    };
    RestoringNode {
        node,
        _etcd: etcd,
        dir: node_dir,
        api: SocketAddr::from(([127, 0, 0, 1], api_port)),
        pg_port,
        log_path,
        superuser,
        other,
        spawned,
    }
}

/// What the kubelet makes the termination message of a container that failed under
/// `terminationMessagePolicy: FallbackToLogsOnError`: the last 80 lines of its log, of which
/// it keeps the last 2048 bytes.
/// What the kubelet keeps as termination message with `FallbackToLogsOnError`: the log's last
/// 80 lines, at most 2048 bytes.
fn termination_message(log: &[u8]) -> String {
    let lines: Vec<&[u8]> = log.split_inclusive(|&byte| byte == b'\n').collect();
    let tail = lines[lines.len().saturating_sub(80)..].concat();
    String::from_utf8_lossy(&tail[tail.len().saturating_sub(2048)..]).into_owned()
}

/// What the controller reads through `pods/log?previous=true&tailLines=…`.
fn previous_log_tail(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(
        usize::try_from(tusk_cluster_controller::observe::crash::LOG_TAIL_LINES).unwrap(),
    );
    lines[from..].join("\n")
}

#[tokio::test]
async fn patroni_bootstraps_a_restore_to_the_target_and_promotes() {
    let started = Instant::now();
    let Some(components) = Components::require() else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("tusk-patroni-restore-")
        .tempdir()
        .unwrap();

    // The source Cluster's archive and a full backup, on its default path, then a commit on
    // either side of the target.
    let mut source = backed_up_source(&components, root.path()).await;
    let client = source.server.connect().await.unwrap();
    let target = commits_around_a_target(&client).await.unwrap();
    source.server.stop().await.unwrap();

    // The restoring Cluster, rendered by the controller.
    let node = start_restoring_node(&components, root.path(), &source, &target).await;

    // Patroni restores, recovers to the target, promotes and takes the leader lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = tusk_testkit::http_request(node.api, "GET", "/patroni", None).await
            && response.status == 200
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&response.body)
            && matches!(body["role"].as_str(), Some("master" | "primary"))
            && body["state"] == "running"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Patroni did not become leader:\n{}",
            String::from_utf8_lossy(&node.log())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut config = tokio_postgres::Config::new();
    config
        .host_path(node.dir.join("run"))
        .port(node.pg_port)
        .user("postgres")
        .password(&node.superuser)
        .dbname("postgres");
    let client = connect_with(&config).await.unwrap();
    let ids: Vec<i32> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, [1], "exactly the commit before the target");
    assert!(
        !client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
    );
    // What the controller records as status.recoveryTargetReached.
    let row = client.query_one(HISTORY_QUERY, &[]).await.unwrap();
    let timeline: i64 = row.get(0);
    let history: Option<String> = row.get(1);
    assert_eq!(timeline, 2);
    let reached = recovery_outcome(timeline, &history.unwrap()).unwrap();
    assert!(
        reached.starts_with("timeline 2 began at ") && reached.contains("recovery stopped: "),
        "{reached}"
    );
    eprintln!("recoveryTargetReached: {reached}");
    drop(client);
    drop(node);
    let elapsed = started.elapsed();
    eprintln!("restore_patroni_real: {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}

/// A target past the last archived WAL cannot be reached: PostgreSQL stops recovery with a
/// FATAL, Patroni gives up on the bootstrap and exits with an error — on Kubernetes the
/// container crash-loops — and the end of its log, as the kubelet keeps it for the termination
/// message, tells the controller why without a password in it.
#[tokio::test]
async fn patroni_gives_up_on_a_restore_target_past_the_archive_and_says_why() {
    let started = Instant::now();
    let Some(components) = Components::require() else {
        return;
    };
    let root = tempfile::Builder::new()
        .prefix("tusk-patroni-restore-past-")
        .tempdir()
        .unwrap();

    // A commit after the backup, archived; the target is an hour past it.
    let mut source = backed_up_source(&components, root.path()).await;
    let client = source.server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    switch_wal_and_wait_archived(&client).await.unwrap();
    let target = recovery_target_time(&client, "1 hour").await.unwrap();
    drop(client);
    source.server.stop().await.unwrap();

    let node = start_restoring_node(&components, root.path(), &source, &target).await;

    // Patroni exits by itself, with an error.
    let status = node
        .patroni()
        .wait_timeout_async(Duration::from_secs(60))
        .await;
    let to_exit = node.spawned.elapsed();
    let log = node.log();
    let status = status.unwrap_or_else(|| {
        panic!(
            "Patroni still runs {to_exit:?} after it started:\n{}",
            String::from_utf8_lossy(&log)
        )
    });
    eprintln!(
        "Patroni exited ({status}) {:.1} s after it started",
        to_exit.as_secs_f64()
    );
    assert!(
        status.code().is_some_and(|code| code != 0),
        "Patroni exited with {status}:\n{}",
        String::from_utf8_lossy(&log)
    );

    // The termination message alone misses PostgreSQL's reason: Patroni's traceback fills
    // the 2 KiB the kubelet keeps. (If this starts to hold, the log read may be dropped.)
    let message = termination_message(&log);
    assert!(
        !message.contains("recovery ended before configured recovery target was reached"),
        "the termination message now carries the cause; crash.rs can rely on it"
    );
    // The end of the previous run's log, which the controller reads, has it.
    let tail = previous_log_tail(&log);
    let cause = tusk_cluster_controller::observe::crash::cause(&tail)
        .unwrap_or_else(|| panic!("no cause in the log's end:\n{tail}"));
    eprintln!("cause: {cause}");
    for expected in [
        "recovery ended before configured recovery target was reached",
        "Failed to bootstrap",
    ] {
        assert!(
            cause.contains(expected),
            "{expected:?} missing from {cause:?}; log:\n{tail}"
        );
    }
    for password in [&node.superuser, &node.other] {
        assert!(
            !cause.contains(password.as_str()),
            "a password in {cause:?}"
        );
    }
    drop(node);
    eprintln!(
        "restore_patroni_real (target past the archive): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
