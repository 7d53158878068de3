//! Restore and point-in-time recovery for real (issue 7, item 4): a source PostgreSQL archives
//! to a posix repository at the source Cluster's default path; after a full backup, two
//! commits a second apart; then the restore configuration and command `restore.rs` renders
//! for a new Cluster (source as repo5 in its own file, a time target between the commits)
//! restore into a fresh data directory — through the very command line Patroni's
//! `bootstrap.pgbackrest.command` holds (split with Python's shlex as Patroni does, with the
//! `pg_wal` move of a Cluster with `walStorage`). The restored server must hold exactly the first
//! commit, promote to timeline 2, and archive that timeline to *its own* repository path —
//! with nothing of timeline 2 in the source's.
//!
//! Paths and ports are made local (a [`Layout`] over a temp dir, the volume mounted as it is
//! in a backup Job); everything else is rendered by the crate. Needs PostgreSQL 15 and
//! pgBackRest (`cargo xtask install`); skips without them, fails under `TUSK_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tusk_api::Cluster;
use tusk_pgbackrest::restore::{
    self, recovery_settings, resolve_source, restore_argv, restore_settings_in,
};
use tusk_pgbackrest::{Layout, OptionValue, RepoAccess, Settings, repository_options};
use tusk_testkit::{
    PostgresOptions, PostgresServer, StopOnDrop, archive_command, command_as,
    commits_around_a_target, connect_with, free_port, private_dir, private_file, run_checked,
};

/// pgBackRest 2.45 (Debian bookworm) knows PostgreSQL up to 15.
const PG_MAJOR: u32 = 15;

fn cluster(yaml: &str) -> Cluster {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn source_cluster() -> Cluster {
    cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop}
spec:
  postgresVersion: 15
  storage: {size: 1Gi}
  backup:
    repositories: [{name: repo1, volume: {size: 1Gi}}]
",
    )
}

fn restored_cluster(target_time: &str) -> Cluster {
    cluster(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db-restored, namespace: shop}}
spec:
  postgresVersion: 15
  storage: {{size: 1Gi}}
  bootstrap:
    restore:
      cluster: db
      target: {{time: '{target_time}'}}
  backup:
    repositories: [{{name: repo1, volume: {{size: 1Gi}}}}]
"
    ))
}

/// The Layout of this test: one temp dir for the (shared) repository volume and the writable
/// paths.
fn layout(root: &Path, data_dir: &Path, socket_dir: &Path, port: u16) -> Layout {
    let mut layout = Layout::pod("shop");
    layout.tmp_dir = root.join("tmp").display().to_string();
    layout.volume_root = root.join("pgbackrest").display().to_string();
    layout.data_dir = Some(data_dir.display().to_string());
    layout.socket_dir = socket_dir.display().to_string();
    layout.pg_port = port;
    layout
}

/// A Cluster's own archiving configuration with its volume mounted (as on the repository
/// host), plus the local PostgreSQL it archives from.
fn own_settings(cluster: &Cluster, layout: &Layout) -> Settings {
    let mut settings = Settings::default();
    for (option, value) in [
        ("lock-path", format!("{}/pgbackrest/lock", layout.tmp_dir)),
        ("log-path", format!("{}/pgbackrest/log", layout.tmp_dir)),
        ("spool-path", format!("{}/pgbackrest/spool", layout.tmp_dir)),
        ("log-level-file", "off".to_owned()),
        ("log-level-console", "info".to_owned()),
    ] {
        settings.set_global(option, OptionValue::literal(value));
    }
    let repository = &cluster.spec.backup.as_ref().unwrap().repositories[0];
    repository_options(
        &mut settings,
        repository,
        RepoAccess::Local,
        cluster,
        layout,
    )
    .unwrap();
    for (option, value) in [
        ("pg1-path", layout.data_dir.clone().unwrap()),
        ("pg1-socket-path", layout.socket_dir.clone()),
        ("pg1-port", layout.pg_port.to_string()),
        ("pg1-user", "postgres".to_owned()),
    ] {
        settings.set_stanza(option, OptionValue::literal(value));
    }
    settings
}

/// The restored server, stopped however the test ends.
struct Restored {
    _stop: StopOnDrop,
    port: u16,
    socket: PathBuf,
}

impl Restored {
    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        connect_with(&config).await
    }
}

/// The interpreter on the `patroni` script's `#!` line (Debian: `/usr/bin/python3`).
fn patroni_interpreter(patroni: &Path) -> PathBuf {
    std::fs::read_to_string(patroni)
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.strip_prefix("#!")?.trim().to_owned();
            let program = first.split_whitespace().next()?.to_owned();
            Some(PathBuf::from(program))
        })
        .filter(|path| path.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

/// `PATH` with the directory of the pgBackRest binary first.
fn path_with(binary: &Path) -> String {
    let dir = binary
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// WAL file names under a repository's archive of the stanza.
fn archived_files(repo: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let archive = repo.join("archive/db");
    let Ok(versions) = std::fs::read_dir(&archive) else {
        return files;
    };
    for version in versions.flatten().filter(|e| e.path().is_dir()) {
        for entry in walk(&version.path()) {
            files.push(entry);
        }
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            names.extend(walk(&path));
        } else {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names
}

#[tokio::test]
async fn point_in_time_restore_promotes_and_archives_to_its_own_path() {
    let started = Instant::now();
    let Some(pgbackrest_bin) = tusk_testkit::require(tusk_testkit::pgbackrest()) else {
        return;
    };
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(PG_MAJOR)) else {
        return;
    };
    // Patroni splits the bootstrap command with Python's shlex: use Patroni's own interpreter.
    let Some(patroni) = tusk_testkit::require(tusk_testkit::patroni()) else {
        return;
    };
    let python = patroni_interpreter(&patroni.patroni);
    let binary = pgbackrest_bin.pgbackrest.clone();
    let run_as = pg.run_as.clone();
    let run_as = run_as.as_ref();
    let root = tempfile::Builder::new()
        .prefix("tusk-restore-")
        .tempdir()
        .unwrap();
    for dir in ["", "tmp", "pgbackrest", "restored", "sock", "pgwal"] {
        private_dir(&root.path().join(dir), run_as).unwrap();
    }

    // The source: archiving to its default path /shop/db on the volume.
    let source_conf = root.path().join("source.conf");
    let mut server = PostgresServer::start(
        &pg,
        PostgresOptions::default()
            .with_config("archive_mode = on")
            .with_config(archive_command(&binary, &source_conf))
            .with_config("wal_level = replica"),
    )
    .await
    .unwrap();
    // archive-push fails (and PostgreSQL retries) until the configuration below exists.
    let source = source_cluster();
    let source_layout = layout(
        root.path(),
        server.data_dir(),
        server.socket_dir(),
        server.port(),
    );
    private_file(
        &source_conf,
        own_settings(&source, &source_layout).to_ini(),
        run_as,
    )
    .unwrap();
    pgbackrest_bin
        .run(run_as, &source_conf, &["stanza-create"])
        .await
        .unwrap();
    pgbackrest_bin
        .run(run_as, &source_conf, &["--type=full", "backup"])
        .await
        .unwrap();

    // Two commits with a target time between them; the backup ended before both.
    let client = server.connect().await.unwrap();
    let target = commits_around_a_target(&client).await.unwrap();
    server.stop().await.unwrap();

    // The restore, as the restoring Cluster renders it.
    let restoring = restored_cluster(&target);
    let spec = restoring.spec.bootstrap.clone().unwrap().restore.unwrap();
    let data = root.path().join("restored/data");
    let socket = root.path().join("sock");
    let port = free_port().unwrap();
    let restored_layout = layout(root.path(), &data, &socket, port);
    let resolved = resolve_source(&restoring, &spec, Some(&source)).unwrap();
    restore::check_own_paths(&restoring, &resolved).unwrap();
    let restore_conf = root.path().join("restore.conf");
    let restore_ini =
        restore_settings_in(&restoring, &resolved, &restored_layout, RepoAccess::Local)
            .unwrap()
            .to_ini();
    assert!(
        restore_ini.contains(&format!("repo{}-path=", restore::source_index(&resolved))),
        "{restore_ini}"
    );
    private_file(&restore_conf, &restore_ini, run_as).unwrap();
    let argv = restore_argv(&spec, &restore_conf.display().to_string()).unwrap();
    assert_eq!(argv[0], "pgbackrest");
    // Run the exact command Patroni's `bootstrap.pgbackrest.command` holds, split the way
    // Patroni splits it (Python's shlex, no shell), with a separate WAL directory as
    // `spec.walStorage` gives.
    let wal = root.path().join("pgwal/pg15_wal");
    let command = restore::bootstrap_command(
        &spec,
        &restore_conf.display().to_string(),
        &data.display().to_string(),
        Some(&wal.display().to_string()),
    )
    .unwrap();
    assert!(command.starts_with("/bin/sh -c "), "{command}");
    let mut bootstrap = command_as(&python, run_as);
    bootstrap
        .args([
            "-c",
            "import shlex, subprocess, sys; sys.exit(subprocess.call(shlex.split(sys.argv[1])))",
        ])
        .arg(&command)
        .env("PATH", path_with(&binary));
    run_checked(bootstrap, "the Patroni bootstrap command")
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_link(data.join("pg_wal")).unwrap(),
        wal,
        "pg_wal lives on the WAL volume, linked from the data directory"
    );

    // What Patroni adds: its own configuration (port, socket) and the recovery settings; the
    // restored server archives with the Cluster's own configuration.
    let own_conf = root.path().join("own.conf");
    private_file(
        &own_conf,
        own_settings(&restoring, &restored_layout).to_ini(),
        run_as,
    )
    .unwrap();
    let mut extra = vec![
        format!("port = {port}"),
        format!("unix_socket_directories = '{}'", socket.display()),
        "listen_addresses = ''".to_owned(),
        archive_command(&binary, &own_conf),
    ];
    for (name, value) in recovery_settings(&spec, &restore_conf.display().to_string()).unwrap() {
        let value = value.replace("pgbackrest ", &format!("{} ", binary.display()));
        extra.push(format!("{name} = '{}'", value.replace('\'', "''")));
    }
    let conf_path = data.join("postgresql.conf");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    conf.push('\n');
    conf.push_str(&extra.join("\n"));
    conf.push('\n');
    std::fs::write(&conf_path, conf).unwrap();
    let auto_conf = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&restore_conf.display().to_string()),
        "pgBackRest's restore_command reads the source: {auto_conf}"
    );
    // pgBackRest's restore_command calls `pgbackrest` by name: give it the found binary.
    std::fs::write(
        data.join("postgresql.auto.conf"),
        auto_conf.replace("'pgbackrest ", &format!("'{} ", binary.display())),
    )
    .unwrap();
    if let Some(run_as) = run_as {
        run_as.chown(&conf_path).unwrap();
        run_as.chown(&data.join("postgresql.auto.conf")).unwrap();
    }

    let restored = Restored {
        _stop: StopOnDrop::new(&pg, data.clone()),
        port,
        socket: socket.clone(),
    };
    let log = root.path().join("restored/postgres.log");
    let mut start = pg.command("pg_ctl");
    start
        .args(["start", "-w", "-t", "30", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(&log);
    run_checked(start, "pg_ctl start of the restored server")
        .await
        .unwrap_or_else(|error| {
            panic!(
                "{error}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });

    // Recovery stops at the target and promotes.
    let client = restored.connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        if !in_recovery {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still in recovery:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<i32> = client
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, [1], "exactly the commit before the target");
    let timeline: String = client
        .query_one(
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeline, "00000002", "promoted to a new timeline");
    let history: String = client
        .query_one("SELECT pg_read_file('pg_wal/00000002.history')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        history.starts_with("1\t") && (history.contains("before") || history.contains("after")),
        "recovery stopped at the time target: {history}"
    );

    // The restored Cluster's own stanza (the stanza Job's work), then archiving to its path.
    pgbackrest_bin
        .run(run_as, &own_conf, &["stanza-create"])
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    pgbackrest_bin
        .run(run_as, &own_conf, &["check"])
        .await
        .unwrap();

    let volume = root.path().join("pgbackrest/repo1/shop");
    let own = archived_files(&volume.join("db-restored"));
    let source_files = archived_files(&volume.join("db"));
    assert!(
        own.iter().any(|f| f.starts_with("00000002")),
        "timeline 2 is archived to the restored Cluster's path: {own:?}"
    );
    assert!(
        own.iter().any(|f| f == "00000002.history"),
        "with its history file: {own:?}"
    );
    assert!(
        !source_files.iter().any(|f| f.starts_with("00000002")),
        "nothing of timeline 2 reaches the source's path: {source_files:?}"
    );
    assert!(
        source_files.iter().any(|f| f.starts_with("00000001")),
        "{source_files:?}"
    );
    drop(client);
    drop(restored);
    let elapsed = started.elapsed();
    eprintln!("restore_real: {:.1} s", elapsed.as_secs_f64());
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
