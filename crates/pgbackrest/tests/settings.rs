//! Golden files of the rendered pgBackRest settings for every repository kind, compression
//! and encryption (instance, repository host, backup Job: configuration file, environment,
//! Secret mounts), and the errors for configurations pgBackRest could not work with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use tusk_api::Cluster;
use tusk_pgbackrest::{
    OptionValue, Settings, SettingsError, backup_job_settings, instance_address, instance_settings,
    repo_host_settings, repo_index,
};

fn fixture(name: &str) -> Cluster {
    let path = format!(
        "{}/tests/fixtures/clusters/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// One readable text per settings: the file, then the environment, then the mounts.
fn describe(title: &str, settings: &Settings) -> String {
    let mut out = format!("### {title}: pgbackrest.conf\n{}", settings.to_ini());
    let env = settings.env();
    if !env.is_empty() {
        writeln!(out, "### {title}: environment").unwrap();
        for var in env {
            let secret = var.value_from.unwrap().secret_key_ref.unwrap();
            writeln!(out, "{} <- secret {}/{}", var.name, secret.name, secret.key).unwrap();
        }
    }
    let volumes = settings.volumes();
    if !volumes.is_empty() {
        writeln!(out, "### {title}: secret files").unwrap();
        for (volume, mount) in volumes.iter().zip(settings.volume_mounts()) {
            let secret = volume.secret.as_ref().unwrap();
            let item = &secret.items.as_ref().unwrap()[0];
            writeln!(
                out,
                "{} at {}/{} <- secret {}/{}",
                volume.name,
                mount.mount_path,
                item.path,
                secret.secret_name.as_deref().unwrap(),
                item.key
            )
            .unwrap();
        }
    }
    out
}

fn render_all(name: &str) -> String {
    let cluster = fixture(name);
    let primary = instance_address("shop", "shop-1", "prod");
    let mut out = describe("instance", &instance_settings(&cluster).unwrap());
    match repo_host_settings(&cluster).unwrap() {
        Some(repo_host) => out.push_str(&describe("repository host", &repo_host)),
        None => out.push_str("### repository host: none (no volume repository)\n"),
    }
    out.push_str(&describe(
        "backup job",
        &backup_job_settings(&cluster, &primary).unwrap(),
    ));
    out
}

#[test]
fn volume_repository_is_served_by_the_repository_host() {
    insta::assert_snapshot!(render_all("volume"));
}

#[test]
fn s3_compatible_repository_with_private_ca_and_time_retention() {
    insta::assert_snapshot!(render_all("s3"));
}

#[test]
fn s3_on_aws_without_keys_uses_the_pod_identity() {
    insta::assert_snapshot!(render_all("s3-irsa"));
}

#[test]
fn gcs_repositories_with_a_key_file_and_with_workload_identity() {
    insta::assert_snapshot!(render_all("gcs"));
}

#[test]
fn azure_repository_in_another_cloud_without_compression() {
    insta::assert_snapshot!(render_all("azure"));
}

#[test]
fn four_repositories_encrypted_with_lz4() {
    insta::assert_snapshot!(render_all("everything"));
}

#[test]
fn rendering_is_deterministic() {
    let cluster = fixture("everything");
    assert_eq!(
        instance_settings(&cluster).unwrap().to_ini(),
        instance_settings(&cluster).unwrap().to_ini()
    );
}

#[test]
fn no_secret_value_or_reference_key_reaches_a_configuration_file() {
    let cluster = fixture("everything");
    let primary = instance_address("shop", "shop-1", "prod");
    for settings in [
        instance_settings(&cluster).unwrap(),
        repo_host_settings(&cluster).unwrap().unwrap(),
        backup_job_settings(&cluster, &primary).unwrap(),
    ] {
        let ini = settings.to_ini();
        for (option, _) in settings.secret_options() {
            assert!(!ini.contains(&format!("{option}=")), "{option} in\n{ini}");
        }
        for forbidden in [
            "cipher-pass",
            "s3-key=",
            "s3-key-secret",
            "azure-key=",
            "azure-account",
        ] {
            assert!(!ini.contains(forbidden), "{forbidden} in\n{ini}");
        }
    }
}

#[test]
fn instances_do_not_hold_the_passphrase_of_a_repository_the_repository_host_encrypts() {
    let cluster = fixture("everything");
    let instance = instance_settings(&cluster).unwrap();
    assert!(instance.get("repo1-cipher-pass").is_none());
    assert!(matches!(
        instance.get("repo2-cipher-pass"),
        Some(OptionValue::Secret(_))
    ));
    let repo_host = repo_host_settings(&cluster).unwrap().unwrap();
    assert!(matches!(
        repo_host.get("repo1-cipher-pass"),
        Some(OptionValue::Secret(_))
    ));
    assert!(
        repo_host.get("repo2-type").is_none(),
        "object stores are not the host's"
    );
}

#[test]
fn process_max_follows_the_cpu_limit_of_each_container() {
    let cluster = fixture("everything");
    // One per CPU: job limit 3 CPUs → 3; instance limit 500m → 1.
    let job = backup_job_settings(&cluster, "h").unwrap();
    assert_eq!(job.value("process-max"), Some("3"));
    assert_eq!(
        instance_settings(&cluster).unwrap().value("process-max"),
        Some("1")
    );
    // No limits: the measured default.
    let volume = fixture("volume");
    assert_eq!(
        backup_job_settings(&volume, "h")
            .unwrap()
            .value("process-max"),
        Some(tusk_pgbackrest::DEFAULT_PROCESS_MAX.to_string().as_str())
    );
    let mut explicit = fixture("everything");
    explicit.spec.backup.as_mut().unwrap().process_max = Some(12);
    assert_eq!(
        backup_job_settings(&explicit, "h")
            .unwrap()
            .value("process-max"),
        Some("12")
    );
}

#[test]
fn repository_names_map_to_pgbackrest_indexes() {
    let cluster = fixture("everything");
    assert_eq!(repo_index(&cluster, "repo1"), Some(1));
    assert_eq!(repo_index(&cluster, "repo4"), Some(4));
    assert_eq!(repo_index(&fixture("s3-irsa"), "repo2"), Some(2));
    assert_eq!(repo_index(&fixture("s3-irsa"), "repo1"), None);
    let error = tusk_pgbackrest::require_repo_index(&fixture("gcs"), "repo3").unwrap_err();
    assert_eq!(error.reason(), "RepositoryNotFound");
    assert_eq!(
        error.to_string(),
        "the Cluster has no repository named \"repo3\" (it has: repo1, repo2): name one of them, or add it to spec.backup.repositories"
    );
}

fn error_of(cluster: &Cluster) -> SettingsError {
    instance_settings(cluster).unwrap_err()
}

#[test]
fn impossible_configurations_are_refused_with_what_to_fix() {
    let mut no_backup = fixture("volume");
    no_backup.spec.backup = None;
    assert_eq!(error_of(&no_backup), SettingsError::NoRepository);

    let mut s3_without_keys = fixture("s3");
    s3_without_keys.spec.backup.as_mut().unwrap().repositories[0]
        .s3
        .as_mut()
        .unwrap()
        .credentials_secret = None;
    let error = error_of(&s3_without_keys);
    assert_eq!(error.reason(), "RepositoryCredentialsMissing");
    assert!(
        error.to_string().contains("set s3.credentialsSecret"),
        "{error}"
    );

    let mut empty_passphrase = fixture("everything");
    empty_passphrase
        .spec
        .backup
        .as_mut()
        .unwrap()
        .encryption
        .as_mut()
        .unwrap()
        .passphrase_secret
        .key = String::new();
    assert_eq!(
        error_of(&empty_passphrase),
        SettingsError::EncryptionPassphraseMissing
    );

    let mut twice = fixture("gcs");
    twice.spec.backup.as_mut().unwrap().repositories[1].name = "repo1".to_owned();
    assert_eq!(error_of(&twice).reason(), "InvalidRepository");

    let mut two_kinds = fixture("volume");
    two_kinds.spec.backup.as_mut().unwrap().repositories[0].gcs =
        fixture("gcs").spec.backup.unwrap().repositories[0]
            .gcs
            .clone();
    assert_eq!(
        error_of(&two_kinds).to_string(),
        "repository repo1 needs exactly one of volume, s3, gcs or azure"
    );

    let mut bad_level = fixture("gcs");
    bad_level.spec.backup.as_mut().unwrap().compression.level = Some(12);
    assert_eq!(
        error_of(&bad_level).to_string(),
        "spec.backup.compression.level 12 is out of range for gz (allowed 0 to 9)"
    );

    let mut injected = fixture("s3");
    injected.spec.backup.as_mut().unwrap().repositories[0]
        .s3
        .as_mut()
        .unwrap()
        .bucket = "backups\nrepo1-path=/".to_owned();
    let error = error_of(&injected);
    assert_eq!(error.reason(), "InvalidBackupConfiguration");
    assert!(error.to_string().contains("line break"), "{error}");

    let mut empty_secret = fixture("azure");
    empty_secret.spec.backup.as_mut().unwrap().repositories[0]
        .azure
        .as_mut()
        .unwrap()
        .credentials_secret
        .name = String::new();
    assert_eq!(error_of(&empty_secret).reason(), "InvalidSecretReference");

    assert!(backup_job_settings(&fixture("volume"), "").is_err());
}

#[test]
fn azure_sas_tokens_switch_the_key_type_and_key() {
    let mut settings = instance_settings(&fixture("azure")).unwrap();
    tusk_pgbackrest::use_azure_sas(&mut settings, 1);
    assert_eq!(settings.value("repo1-azure-key-type"), Some("sas"));
    let env = settings.env();
    let key = env
        .iter()
        .find(|var| var.name == "PGBACKREST_REPO1_AZURE_KEY")
        .unwrap();
    assert_eq!(
        key.value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .key,
        "AZURE_STORAGE_SAS_TOKEN"
    );
}
