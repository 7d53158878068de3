use super::*;
use super::{changes::*, parameters::*};
use crate::shared::layout::SCOPE_LABEL;
use crate::shared::layout::dcs_labels;
use std::collections::BTreeMap;
use tusk_api::Cluster;
use tusk_api::cluster::FORBIDDEN_PARAMETERS;

fn cluster(yaml: &str) -> Cluster {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn minimal() -> Cluster {
    cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod}
spec:
  postgresVersion: 17
  storage: {size: 10Gi}
",
    )
}

fn synchronous_three() -> Cluster {
    cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: orders, namespace: shop}
spec:
  postgresVersion: 16
  instances: 3
  storage: {size: 50Gi}
  replication: {mode: Synchronous, synchronousNodeCount: 1}
",
    )
}

fn fully_loaded() -> Cluster {
    cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: ledger, namespace: finance}
spec:
  postgresVersion: 18
  instances: 5
  storage: {size: 100Gi, storageClassName: fast}
  walStorage: {size: 20Gi}
  postgresql:
    parameters:
      max_connections: '300'
      shared_buffers: 4GB
      shared_preload_libraries: pg_stat_statements
      log_checkpoints: 'off'
      archive_timeout: 60s
      work_mem: 16MB
    pgHba:
      - hostssl all app_cert 10.0.0.0/8 cert
      - hostssl all all 192.168.0.0/16 reject
  replication: {mode: SynchronousStrict, synchronousNodeCount: 2}
  highAvailability:
    ttlSeconds: 20
    loopWaitSeconds: 5
    retryTimeoutSeconds: 7
    maximumLagOnFailover: 0
  monitoring: {enabled: false}
  bootstrap:
    initdb: {encoding: UTF8, locale: en_US.UTF-8, dataChecksums: false}
  backup:
    repositories:
      - name: repo1
        s3: {bucket: backups, endpoint: s3.eu-central-1.amazonaws.com, region: eu-central-1}
",
    )
}

#[test]
fn minimal_cluster_renders() {
    insta::assert_snapshot!("minimal", render_config(&minimal(), "prod").unwrap());
}

#[test]
fn synchronous_three_instance_cluster_renders() {
    insta::assert_snapshot!(
        "synchronous_three",
        render_config(&synchronous_three(), "shop").unwrap()
    );
}

#[test]
fn fully_loaded_cluster_renders() {
    insta::assert_snapshot!(
        "fully_loaded",
        render_config(&fully_loaded(), "finance").unwrap()
    );
}

#[test]
fn rendered_yaml_round_trips_to_the_typed_config() {
    for (cluster, namespace) in [
        (minimal(), "prod"),
        (synchronous_three(), "shop"),
        (fully_loaded(), "finance"),
    ] {
        let yaml = render_config(&cluster, namespace).unwrap();
        let parsed: PatroniConfig = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(parsed, patroni_config(&cluster, namespace).unwrap());
    }
}

#[test]
fn scope_is_the_read_write_service() {
    let config = patroni_config(&minimal(), "prod").unwrap();
    assert_eq!(config.scope, "db-rw");
    assert_eq!(config.kubernetes.namespace, "prod");
    assert_eq!(config.kubernetes.role_label, "tusk.dev/role");
    assert_eq!(config.kubernetes.ports[0].name, "postgresql");
    assert_eq!(dcs_labels("db")[SCOPE_LABEL], "db-rw");
    assert_eq!(dcs_labels("db")["tusk.dev/cluster"], "db");
}

#[test]
fn timing_and_replication_mode_come_from_the_spec() {
    let dcs = dynamic_config(&fully_loaded()).unwrap();
    assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (20, 5, 7));
    assert_eq!(dcs.maximum_lag_on_failover, 0);
    assert!(dcs.synchronous_mode && dcs.synchronous_mode_strict);
    assert_eq!(dcs.synchronous_node_count, 2);

    let dcs = dynamic_config(&synchronous_three()).unwrap();
    assert!(dcs.synchronous_mode && !dcs.synchronous_mode_strict);

    let dcs = dynamic_config(&minimal()).unwrap();
    assert!(!dcs.synchronous_mode && !dcs.synchronous_mode_strict);
    assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (8, 2, 3));
}

#[test]
fn spec_parameters_override_defaults_but_not_controlled_settings() {
    let params = parameters(&fully_loaded()).unwrap();
    assert_eq!(params["log_checkpoints"], "off", "spec beats a default");
    assert_eq!(params["max_connections"], "300");
    assert_eq!(
        params["archive_timeout"], "60s",
        "spec beats the archive default"
    );
    assert_eq!(params["password_encryption"], "scram-sha-256");
    assert_eq!(params["wal_level"], "replica");
    assert_eq!(params["archive_mode"], "on");
    assert_eq!(
        params["archive_command"],
        "pgbackrest --stanza=db archive-push \"%p\""
    );
}

#[test]
fn archiving_is_on_only_with_a_repository() {
    let params = parameters(&minimal()).unwrap();
    assert!(!params.contains_key("archive_mode"));
    assert!(!params.contains_key("archive_command"));
    assert!(!params.contains_key("archive_timeout"));
    assert_eq!(parameters(&fully_loaded()).unwrap()["archive_mode"], "on");
}

#[test]
fn tls_and_socket_settings_are_local_so_the_dcs_cannot_override_them() {
    let config = patroni_config(&minimal(), "prod").unwrap();
    let local = &config.postgresql.parameters;
    assert_eq!(local["ssl"], "on");
    assert_eq!(local["ssl_cert_file"], "/etc/tusk/tls/tls.crt");
    assert_eq!(local["ssl_key_file"], "/etc/tusk/tls/tls.key");
    assert_eq!(local["ssl_ca_file"], "/etc/tusk/tls/ca.crt");
    assert_eq!(local["unix_socket_directories"], "/var/run/postgresql");
    assert!(config.postgresql.use_unix_socket && config.postgresql.use_unix_socket_repl);
    let dynamic = &config.bootstrap.dcs.postgresql.parameters;
    assert!(local.keys().all(|name| !dynamic.contains_key(name)));
}

#[test]
fn no_forbidden_or_patroni_forced_parameter_is_rendered_from_the_spec() {
    for cluster in [minimal(), synchronous_three(), fully_loaded()] {
        let params = parameters(&cluster).unwrap();
        let controlled = controlled_parameters(&cluster);
        for name in params.keys() {
            assert!(
                !FORBIDDEN_PARAMETERS.contains(&name.as_str()) || controlled.contains_key(name),
                "{name} is forbidden and not tusk's own"
            );
            assert!(
                !PATRONI_FORCED_PARAMETERS.contains(&name.as_str()),
                "{name}"
            );
        }
    }
}

#[test]
fn forbidden_parameters_are_refused_not_dropped() {
    let mut cluster = minimal();
    let parameters = &mut cluster.spec.postgresql.parameters;
    parameters.insert("ssl".into(), "off".into());
    parameters.insert("wal_level".into(), "minimal".into());
    let error = render_config(&cluster, "prod").unwrap_err();
    assert!(
        matches!(&error, RenderError::ForbiddenParameter(names) if names == &["ssl", "wal_level"])
    );
    assert_eq!(error.reason(), "ForbiddenParameter");
    assert!(error.is_permanent());
}

#[test]
fn parameters_patroni_would_ignore_are_refused() {
    let refused = |name: &str, value: &str| {
        let mut cluster = minimal();
        cluster
            .spec
            .postgresql
            .parameters
            .insert(name.into(), value.into());
        render_config(&cluster, "prod").unwrap_err()
    };
    // cluster_name is also on the API's forbidden list now.
    assert!(matches!(
        refused("cluster_name", "x"),
        RenderError::ForbiddenParameter(_) | RenderError::PatroniControlledParameter(_)
    ));
    assert!(matches!(
        refused("max_connections", "20"),
        RenderError::ParameterBelowPatroniMinimum { minimum: 25, .. }
    ));
    assert!(matches!(
        refused("max_wal_senders", "2"),
        RenderError::ParameterBelowPatroniMinimum { minimum: 3, .. }
    ));
    assert!(matches!(
        refused("work_mem", "4MB'\nssl = 'off"),
        RenderError::InvalidParameterValue(_)
    ));
    assert!(matches!(
        refused("Work_Mem", "4MB"),
        RenderError::InvalidParameterName(_)
    ));
}

#[test]
fn pg_hba_puts_tusk_first_then_the_spec_then_the_default_then_reject() {
    let lines = pg_hba(&fully_loaded()).unwrap();
    let position = |wanted: &str| {
        lines
            .iter()
            .position(|line| line == wanted)
            .unwrap_or_else(|| panic!("{wanted} missing from {lines:#?}"))
    };
    let replication = position("hostssl replication replicator all scram-sha-256");
    let socket = position("local all postgres scram-sha-256");
    let rewind = position("hostssl postgres tusk_rewind all scram-sha-256");
    let user_cert = position("hostssl all app_cert 10.0.0.0/8 cert");
    let user_reject = position("hostssl all all 192.168.0.0/16 reject");
    let default = position("hostssl all all all scram-sha-256");
    let reject = position("host all all all reject");
    assert!(socket < replication && replication < rewind && rewind < user_cert);
    assert!(user_cert < user_reject && user_reject < default);
    assert_eq!(default + 1, reject);
    assert_eq!(reject, lines.len() - 1, "the reject line is last");
    assert!(
        lines.iter().all(|line| !line.contains("trust")
            && !line.contains("peer")
            && !line.contains(" md5")
            && !line.contains(" password")),
        "no password-less or weak method: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .all(|line| !line.starts_with("host ") || line.ends_with("reject")),
        "plain host lines only reject"
    );
}

#[test]
fn pg_hba_has_the_monitoring_line_only_with_monitoring() {
    let has_monitor = |cluster: &Cluster| {
        pg_hba(cluster)
            .unwrap()
            .iter()
            .any(|line| line.contains("tusk_monitor"))
    };
    assert!(has_monitor(&minimal()));
    assert!(!has_monitor(&fully_loaded()));
}

#[test]
fn pg_hba_line_with_a_line_break_is_refused_not_injected() {
    let mut cluster = minimal();
    cluster
        .spec
        .postgresql
        .pg_hba
        .push("hostssl all all 10.0.0.0/8 scram-sha-256\nhost all all all trust".into());
    assert!(matches!(
        render_config(&cluster, "prod").unwrap_err(),
        RenderError::InvalidHbaLine { .. }
    ));
    for bad in [
        "host all all all scram-sha-256",
        "hostssl all all all trust",
        "hostssl all all all md5",
    ] {
        let mut cluster = minimal();
        cluster.spec.postgresql.pg_hba.push(bad.into());
        assert!(pg_hba(&cluster).is_err(), "{bad}");
    }
}

#[test]
fn wal_storage_moves_wal_for_initdb_and_basebackup() {
    let config = patroni_config(&fully_loaded(), "finance").unwrap();
    let waldir = ToolOption::value("waldir", "/pgwal/pg18_wal");
    assert!(config.bootstrap.initdb.contains(&waldir));
    assert!(config.postgresql.basebackup.contains(&waldir));
    assert_eq!(config.postgresql.data_dir, "/pgdata/pg18");
    assert_eq!(config.postgresql.bin_dir, "/usr/lib/postgresql/18/bin");

    let config = patroni_config(&minimal(), "prod").unwrap();
    assert!(
        !config
            .bootstrap
            .initdb
            .iter()
            .any(|option| matches!(option, ToolOption::Value(map) if map.contains_key("waldir")))
    );
}

#[test]
fn initdb_options_follow_the_spec() {
    let config = patroni_config(&minimal(), "prod").unwrap();
    assert_eq!(
        config.bootstrap.initdb,
        vec![
            ToolOption::value("encoding", "UTF8"),
            ToolOption::value("locale", "C.UTF-8"),
            ToolOption::flag("data-checksums"),
        ]
    );
    let config = patroni_config(&fully_loaded(), "finance").unwrap();
    assert!(
        config
            .bootstrap
            .initdb
            .contains(&ToolOption::flag("no-data-checksums"))
    );
    assert!(
        config
            .bootstrap
            .initdb
            .contains(&ToolOption::value("locale", "en_US.UTF-8"))
    );
    assert!(config.bootstrap.method.is_none());
}

#[test]
fn restore_bootstrap_runs_pgbackrest_and_keeps_its_recovery_settings() {
    let mut cluster = minimal();
    cluster.spec.bootstrap = Some(tusk_api::cluster::BootstrapSpec {
        initdb: None,
        restore: Some(tusk_api::cluster::RestoreSpec {
            cluster: Some("old".into()),
            repository_name: "repo1".into(),
            target: Some(tusk_api::cluster::RecoveryTarget {
                time: Some("2026-11-22T10:15:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let config = patroni_config(&cluster, "prod").unwrap();
    assert_eq!(config.bootstrap.method.as_deref(), Some("pgbackrest"));
    let method = config.bootstrap.pgbackrest.unwrap();
    assert_eq!(
        method.command,
        "pgbackrest --config=/etc/pgbackrest/restore/pgbackrest.conf --stanza=db --type=time '--target=2026-11-22 10:15:00+00' --target-action=promote restore"
    );
    assert!(method.keep_existing_recovery_conf && method.no_params);
    assert_eq!(method.recovery_conf["recovery_target_action"], "promote");
    assert_eq!(
        method.recovery_conf["recovery_target_time"],
        "2026-11-22 10:15:00+00"
    );
    assert!(
        method.recovery_conf["restore_command"]
            .contains("--config=/etc/pgbackrest/restore/pgbackrest.conf"),
        "recovery reads the source"
    );
    // The YAML Patroni reads has the method under its name.
    let yaml = render_config(&cluster, "prod").unwrap();
    assert!(yaml.contains("method: pgbackrest"), "{yaml}");
    assert!(yaml.contains("keep_existing_recovery_conf: true"), "{yaml}");

    let mut bad = cluster.clone();
    bad.spec
        .bootstrap
        .as_mut()
        .unwrap()
        .restore
        .as_mut()
        .unwrap()
        .target = Some(tusk_api::cluster::RecoveryTarget {
        time: Some("tomorrow".into()),
        ..Default::default()
    });
    let error = render_config(&bad, "prod").unwrap_err();
    assert!(matches!(error, RenderError::Restore(_)));
    assert_eq!(error.reason(), "InvalidSpec");
}

#[test]
fn with_a_repository_replicas_restore_from_it_and_archive_with_the_stanza() {
    let config = patroni_config(&fully_loaded(), "finance").unwrap();
    assert_eq!(
        config.postgresql.create_replica_methods,
        ["pgbackrest", "basebackup"]
    );
    let method = config.postgresql.pgbackrest.unwrap();
    assert_eq!(
        method.command,
        "pgbackrest --stanza=db --delta --type=standby --link-all restore"
    );
    assert!(method.keep_data && method.no_params);
    assert_eq!(
        config.postgresql.recovery_conf["restore_command"],
        "pgbackrest --stanza=db archive-get %f \"%p\""
    );
    assert_eq!(
        parameters(&fully_loaded()).unwrap()["archive_command"],
        "pgbackrest --stanza=db archive-push \"%p\""
    );
    let minimal = patroni_config(&minimal(), "prod").unwrap();
    assert_eq!(minimal.postgresql.create_replica_methods, ["basebackup"]);
    assert!(minimal.postgresql.pgbackrest.is_none());
    assert!(minimal.postgresql.recovery_conf.is_empty());
    assert!(minimal.bootstrap.pgbackrest.is_none());
}

#[test]
fn no_password_is_rendered_into_the_config_map() {
    let yaml = render_config(&fully_loaded(), "finance").unwrap();
    assert!(!yaml.contains("password:"), "{yaml}");
}

#[test]
fn restart_classification_knows_postmaster_parameters() {
    for name in [
        "shared_buffers",
        "max_connections",
        "shared_preload_libraries",
        "max_worker_processes",
        "max_wal_senders",
        "max_replication_slots",
        "wal_level",
        "archive_mode",
        "pg_stat_statements.max",
    ] {
        assert_eq!(parameter_apply(name, 17), ParameterApply::Restart, "{name}");
    }
    for name in [
        "work_mem",
        "archive_command",
        "log_min_duration_statement",
        "ssl",
        "password_encryption",
        "synchronous_commit",
        "some_extension.setting",
    ] {
        assert_eq!(parameter_apply(name, 17), ParameterApply::Reload, "{name}");
    }
    assert_eq!(
        parameter_apply("autovacuum_max_workers", 17),
        ParameterApply::Restart
    );
    assert_eq!(
        parameter_apply("autovacuum_max_workers", 18),
        ParameterApply::Reload
    );
}

#[test]
fn parameter_change_plan_separates_reload_from_restart() {
    let old = parameters(&minimal()).unwrap();
    let mut changed = minimal();
    changed
        .spec
        .postgresql
        .parameters
        .insert("work_mem".into(), "64MB".into());
    let new = parameters(&changed).unwrap();
    let plan = plan_parameter_change(&old, &new, 17);
    assert_eq!(plan.changed, vec!["work_mem"]);
    assert!(!plan.needs_restart());
    assert!(!plan.primary_first);

    changed
        .spec
        .postgresql
        .parameters
        .insert("shared_buffers".into(), "1GB".into());
    let plan = plan_parameter_change(&old, &parameters(&changed).unwrap(), 17);
    assert_eq!(plan.changed, vec!["shared_buffers", "work_mem"]);
    assert_eq!(plan.restart, vec!["shared_buffers"]);
    assert!(plan.needs_restart());

    assert!(plan_parameter_change(&old, &old, 17).is_empty());
}

#[test]
fn lowering_a_hot_standby_minimum_restarts_the_primary_first() {
    let with = |value: &str| BTreeMap::from([("max_connections".to_owned(), value.to_owned())]);
    assert!(!plan_parameter_change(&with("100"), &with("200"), 17).primary_first);
    assert!(plan_parameter_change(&with("200"), &with("100"), 17).primary_first);
    assert!(plan_parameter_change(&with("200"), &BTreeMap::new(), 17).primary_first);
    let shared = |value: &str| BTreeMap::from([("shared_buffers".to_owned(), value.to_owned())]);
    assert!(!plan_parameter_change(&shared("2GB"), &shared("1GB"), 17).primary_first);
}

#[test]
fn steady_state_patch_is_empty() {
    let desired = dynamic_config(&minimal()).unwrap();
    let observed = serde_json::to_value(&desired).unwrap();
    assert_eq!(dynamic_config_patch(&observed, &desired).unwrap(), None);
}

#[test]
fn patch_carries_changes_and_deletes_dropped_parameters() {
    let mut before = minimal();
    before
        .spec
        .postgresql
        .parameters
        .insert("work_mem".into(), "8MB".into());
    let mut observed = serde_json::to_value(dynamic_config(&before).unwrap()).unwrap();
    // Patroni may hold a number where tusk renders a string, a boolean where bootstrap.dcs
    // had a plain `on` (PyYAML), and keys tusk does not own.
    observed["postgresql"]["parameters"]["max_wal_senders"] = serde_json::json!(20);
    observed["postgresql"]["parameters"]["log_checkpoints"] = serde_json::json!(true);
    observed["postgresql"]["parameters"]["logging_collector"] = serde_json::json!(false);
    observed["slots"] = serde_json::json!({"keep": {"type": "physical"}});

    let mut after = minimal();
    after.spec.high_availability.ttl_seconds = 12;
    after
        .spec
        .postgresql
        .parameters
        .insert("statement_timeout".into(), "30s".into());
    let desired = dynamic_config(&after).unwrap();
    let patch = dynamic_config_patch(&observed, &desired).unwrap().unwrap();
    assert!(same_value(
        &serde_json::json!(true),
        &serde_json::json!("on")
    ));
    assert!(!same_value(
        &serde_json::json!(true),
        &serde_json::json!("off")
    ));
    assert!(!same_value(
        &serde_json::json!(true),
        &serde_json::json!("1")
    ));
    assert_eq!(
        patch,
        serde_json::json!({
            "ttl": 12,
            "postgresql": {"parameters": {"statement_timeout": "30s", "work_mem": null}}
        })
    );
}

#[test]
fn observed_parameters_read_back_as_rendered() {
    let desired = dynamic_config(&minimal()).unwrap();
    let mut observed = serde_json::to_value(&desired).unwrap();
    observed["postgresql"]["parameters"]["log_checkpoints"] = serde_json::json!(true);
    observed["postgresql"]["parameters"]["logging_collector"] = serde_json::json!(false);
    observed["postgresql"]["parameters"]["max_wal_senders"] = serde_json::json!(20);
    let plan = plan_parameter_change(
        &observed_parameters(&observed),
        &desired.postgresql.parameters,
        17,
    );
    assert!(plan.is_empty(), "{plan:?}");
    assert!(observed_parameters(&serde_json::json!({})).is_empty());
}

#[test]
fn patch_replaces_pg_hba_as_a_whole() {
    let observed = serde_json::to_value(dynamic_config(&minimal()).unwrap()).unwrap();
    let mut after = minimal();
    after
        .spec
        .postgresql
        .pg_hba
        .push("hostssl all all 10.0.0.0/8 cert".into());
    let desired = dynamic_config(&after).unwrap();
    let patch = dynamic_config_patch(&observed, &desired).unwrap().unwrap();
    assert_eq!(
        patch["postgresql"]["pg_hba"],
        serde_json::to_value(&desired.postgresql.pg_hba).unwrap()
    );
    assert!(patch["postgresql"].get("parameters").is_none());
}
