//! The restore bootstrap under real Patroni: the Patroni configuration the Cluster controller
//! renders for `spec.bootstrap.restore` (method `pgbackrest`, `keep_existing_recovery_conf`,
//! `recovery_conf`) bootstraps a new cluster from a real pgBackRest backup, recovers to a time
//! between two commits, promotes, and Patroni takes the leader lock; the controller's own
//! recovery query then reads the target reached from the new timeline's history.
//!
//! Only the Kubernetes DCS (→ etcd), the pod's paths and ports, and the restore
//! configuration's path are made local; everything else is rendered. Needs PostgreSQL 15,
//! pgBackRest, Patroni and etcd (`cargo xtask install`); skips without them, fails under
//! `TUSK_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_yaml_ng::{Mapping, Value as Yaml};
use tusk_api::Cluster;
use tusk_cluster_controller::backup::{HISTORY_QUERY, recovery_outcome};
use tusk_cluster_controller::patroni;
use tusk_pgbackrest::restore::{RESTORE_CONFIG_PATH, resolve_source, restore_settings_in};
use tusk_pgbackrest::{Layout, OptionValue, RepoAccess, Settings, repository_options};
use tusk_testkit::{
    ChildProcess, EtcdServer, PostgresOptions, PostgresServer, RunAs, command_as,
    daemon_command_as, free_port, run_checked,
};

const PG_MAJOR: u32 = 15;

fn cluster(yaml: &str) -> Cluster {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn owned_dir(path: &Path, run_as: Option<&RunAs>) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(user) = run_as {
        user.chown(path).unwrap();
    }
}

fn owned_file(path: &Path, text: &[u8], run_as: Option<&RunAs>) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if let Some(user) = run_as {
        user.chown(path).unwrap();
    }
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
    pg_ctl: PathBuf,
    data: PathBuf,
    run_as: Option<RunAs>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut patroni) = self.patroni.take() {
            patroni.kill();
        }
        let _ = command_as(&self.pg_ctl, self.run_as.as_ref())
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn patroni_bootstraps_a_restore_to_the_target_and_promotes() {
    let started = Instant::now();
    let Some(pgbackrest) = tusk_testkit::require(tusk_testkit::pgbackrest()) else {
        return;
    };
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(PG_MAJOR)) else {
        return;
    };
    let Some(patroni_bin) = tusk_testkit::require(tusk_testkit::patroni()) else {
        return;
    };
    let Some(etcd_bin) = tusk_testkit::require(tusk_testkit::etcd()) else {
        return;
    };
    let binary = pgbackrest.pgbackrest;
    let run_as = pg.run_as.clone();
    let run_as = run_as.as_ref();
    let root = tempfile::Builder::new()
        .prefix("tusk-patroni-restore-")
        .tempdir()
        .unwrap();
    let node_dir = root.path().join("db-restored-1");
    for dir in [
        root.path().to_path_buf(),
        root.path().join("repo"),
        root.path().join("tmp"),
        node_dir.clone(),
        node_dir.join("pgdata"),
        node_dir.join("pgwal"),
        node_dir.join("tls"),
        node_dir.join("run"),
        node_dir.join("tmp"),
    ] {
        owned_dir(&dir, run_as);
    }

    // The source Cluster's archive and a full backup, on its default path.
    let source = cluster(
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
    let source_conf = root.path().join("source.conf");
    let mut server = PostgresServer::start(
        &pg,
        PostgresOptions::default()
            .with_config("archive_mode = on")
            .with_config(format!(
                "archive_command = '{} --config={} --stanza=db archive-push \"%p\"'",
                binary.display(),
                source_conf.display()
            )),
    )
    .await
    .unwrap();
    let mut layout = Layout::pod("test");
    layout.tmp_dir = root.path().join("tmp").display().to_string();
    layout.volume_root = root.path().join("repo").display().to_string();
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
        &source.spec.backup.as_ref().unwrap().repositories[0],
        RepoAccess::Local,
        &source,
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
    owned_file(&source_conf, settings.to_ini().as_bytes(), run_as);
    for command in [&["stanza-create"][..], &["--type=full", "backup"]] {
        let mut run = command_as(&binary, run_as);
        run.arg(format!("--config={}", source_conf.display()))
            .arg("--stanza=db")
            .args(command);
        run_checked(run, &format!("pgbackrest {}", command.join(" ")))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let client = server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let target: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
        .await
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let archived: Option<String> = client
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await
            .unwrap()
            .get(0);
        if archived.as_deref() >= Some(segment.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "{segment} was not archived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await.unwrap();

    // The restoring Cluster, rendered by the controller.
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
    let restore_conf = root.path().join("restore.conf");
    let spec = restoring.spec.bootstrap.clone().unwrap().restore.unwrap();
    let resolved = resolve_source(&restoring, &spec, Some(&source)).unwrap();
    let mut restore_layout = layout.clone();
    restore_layout.data_dir = Some(data.display().to_string());
    let restore_ini =
        restore_settings_in(&restoring, &resolved, &restore_layout, RepoAccess::Local)
            .unwrap()
            .to_ini();
    owned_file(&restore_conf, restore_ini.as_bytes(), run_as);

    let etcd = EtcdServer::start(&etcd_bin).await.unwrap();
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
            patroni::DATA_MOUNT.into(),
            node_dir.join("pgdata").display().to_string(),
        ),
        (
            patroni::WAL_MOUNT.into(),
            node_dir.join("pgwal").display().to_string(),
        ),
        (
            patroni::TLS_DIR.into(),
            node_dir.join("tls").display().to_string(),
        ),
        (
            patroni::SOCKET_DIR.into(),
            node_dir.join("run").display().to_string(),
        ),
        ("/tmp".into(), node_dir.join("tmp").display().to_string()),
        (patroni::bin_dir(15), pg.bin_dir.display().to_string()),
    ];
    localise(&mut config, &mounts, &restore_conf.display().to_string());
    config["postgresql"]["listen"] = Yaml::String(format!("127.0.0.1:{pg_port}"));
    config["restapi"]["listen"] = Yaml::String(format!("127.0.0.1:{api_port}"));
    let bootstrap = &config["bootstrap"];
    assert_eq!(bootstrap["method"], Yaml::String("pgbackrest".into()));
    let config_path = node_dir.join("patroni.yaml");
    owned_file(
        &config_path,
        serde_yaml_ng::to_string(&config).unwrap().as_bytes(),
        run_as,
    );

    let tls = tusk_cluster_controller::tls::plan_tls(
        &restoring,
        &tusk_cluster_controller::tls::ObservedTlsSecrets::default(),
        jiff::Timestamp::now(),
    )
    .unwrap();
    for (key, value) in tls.server_secret_data().unwrap() {
        owned_file(&node_dir.join("tls").join(key), &value.0, run_as);
    }
    let superuser = tusk_cluster_controller::secrets::generate_password().unwrap();
    let other = tusk_cluster_controller::secrets::generate_password().unwrap();
    let log_path = node_dir.join("patroni.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut command = daemon_command_as(&patroni_bin.patroni, run_as);
    command
        .arg(&config_path)
        .env("HOME", node_dir.join("tmp"))
        .env(patroni::ENV_NAME, "db-restored-1")
        .env(
            patroni::ENV_POSTGRESQL_CONNECT_ADDRESS,
            format!("127.0.0.1:{pg_port}"),
        )
        .env(
            patroni::ENV_RESTAPI_CONNECT_ADDRESS,
            format!("127.0.0.1:{api_port}"),
        )
        .env(patroni::ENV_SUPERUSER_PASSWORD, &superuser)
        .env(patroni::ENV_REPLICATION_PASSWORD, &other)
        .env(patroni::ENV_REWIND_PASSWORD, &other)
        .env(patroni::ENV_RESTAPI_PASSWORD, &other)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let node = Node {
        patroni: Some(ChildProcess::spawn("patroni db-restored-1", command).unwrap()),
        pg_ctl: pg.bin("pg_ctl"),
        data: data.clone(),
        run_as: run_as.cloned(),
    };

    // Patroni restores, recovers to the target, promotes and takes the leader lock.
    let api = SocketAddr::from(([127, 0, 0, 1], api_port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = tusk_testkit::http_request(api, "GET", "/patroni", None).await
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
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let (client, connection) = tokio_postgres::Config::new()
        .host_path(node_dir.join("run"))
        .port(pg_port)
        .user("postgres")
        .password(&superuser)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
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
    drop(etcd);
    let elapsed = started.elapsed();
    eprintln!("restore_patroni_real: {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
