//! `tusk-operator render`: what the controllers would apply, without a cluster.
//!
//! Each input document is parsed into its typed resource (so a typo fails here, as it would
//! at the API server) and handed to the renderer of its controller; a document that cannot
//! be rendered is an error naming it — never an empty success.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Renders every resource in `files` to `out`; fails if any document cannot be rendered.
pub(crate) fn render_files(files: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let mut rendered = 0usize;
    // Clusters seen so far: a Backup's Job is built from its Cluster's backup configuration.
    let mut clusters = Vec::new();
    for file in files {
        let text = read_input(file)?;
        for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("{file}: document {} is not valid YAML", index + 1))?;
            if value.is_null() {
                continue;
            }
            if value.get("kind").and_then(|k| k.as_str()) == Some("Cluster") {
                clusters.push(value.clone());
            }
            match render_one(&value, &clusters) {
                Ok(objects) => {
                    for object in objects {
                        writeln!(out, "---")?;
                        write!(out, "{}", serde_yaml_ng::to_string(&object)?)?;
                        rendered += 1;
                    }
                }
                Err(error) => failures.push(format!("{file}: document {}: {error:#}", index + 1)),
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    if rendered == 0 {
        bail!("no resources found in {}", files.join(", "));
    }
    Ok(())
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

/// The objects one resource's controller would apply.
fn render_one(
    value: &serde_json::Value,
    clusters: &[serde_json::Value],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let expected_api_version = format!("{}/{}", tusk_api::GROUP, tusk_api::VERSION);
    if api_version != expected_api_version {
        bail!(
            "apiVersion {api_version:?} kind {kind:?} is not a tusk resource (expected apiVersion {expected_api_version})"
        );
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(|v| v.as_str())
        .unwrap_or("<unnamed>");
    match kind {
        "Cluster" => render_cluster(value, name),
        "PostgresUser" => render_user(value, name),
        "ServiceBinding" => render_binding(value, name),
        "Backup" => render_backup(value, name, clusters),
        "BackupSchedule" => render_schedule(value, name),
        "PGUpgrade" => render_upgrade(value, name),
        "Pooler" => render_pooler(value, name, clusters),
        other => bail!("unknown tusk kind {other:?}"),
    }
}

/// Every child the Cluster controller would apply for a new Cluster: the objects of the first
/// pass, with generated secret material replaced by placeholders.
fn render_cluster(value: &serde_json::Value, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut cluster = tusk_api::Cluster::deserialize(value)
        .with_context(|| format!("Cluster {name} does not match the Cluster schema"))?;
    if cluster.metadata.namespace.is_none() {
        cluster.metadata.namespace = Some("default".to_owned());
    }
    // Owner references carry the Cluster's UID, which only the API server assigns.
    if cluster.metadata.uid.is_none() {
        cluster.metadata.uid = Some("<uid of the Cluster>".to_owned());
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let desired = tusk_cluster_controller::plan::plan(
        &cluster,
        &tusk_cluster_controller::observe::Observed::default(),
        &tusk_cluster_controller::shared::pod::Images::default(),
        now,
    )
    .map_err(|error| anyhow::anyhow!("Cluster {name}: {error}"))?;
    if let Some(problem) = &desired.problem {
        bail!("Cluster {name}: {} ({})", problem.message, problem.reason);
    }
    let mut objects = Vec::new();
    objects.push(serde_json::to_value(&desired.service_account)?);
    objects.push(serde_json::to_value(&desired.role)?);
    objects.push(serde_json::to_value(&desired.role_binding)?);
    for secret in &desired.secrets {
        let mut secret = secret.clone();
        // Passwords and keys are generated at apply time; never print them. Usernames and
        // certificates' key names stay visible for review.
        if let Some(data) = secret.data.take() {
            let shown = data
                .into_iter()
                .map(|(key, value)| {
                    let text = if key == tusk_api::names::keys::USERNAME {
                        String::from_utf8_lossy(&value.0).into_owned()
                    } else {
                        "<generated when applied>".to_owned()
                    };
                    (key, text)
                })
                .collect();
            secret.string_data = Some(shown);
        }
        objects.push(serde_json::to_value(&secret)?);
    }
    objects.push(serde_json::to_value(&desired.config_map)?);
    for service in &desired.services {
        objects.push(serde_json::to_value(service)?);
    }
    for statefulset in &desired.statefulsets {
        objects.push(serde_json::to_value(statefulset)?);
    }
    if let Some(pdb) = &desired.pdb {
        objects.push(serde_json::to_value(pdb)?);
    }
    // pgBackRest's ConfigMap and, for a volume repository, the repository host.
    objects.extend(desired.backup.objects());
    Ok(objects)
}

/// A Pooler's Secrets (placeholders for what is generated or issued when applied), ConfigMap,
/// Service, PodDisruptionBudget and Deployment, as the chart's operator would apply them (with
/// the metrics sidecar). A Cluster earlier in the input supplies its CA Secret's name when it
/// brings its own (`spec.tls.caSecret`).
fn render_pooler(
    value: &serde_json::Value,
    name: &str,
    clusters: &[serde_json::Value],
) -> anyhow::Result<Vec<serde_json::Value>> {
    use tusk_pooler_controller::{children, secrets};
    let mut pooler = tusk_api::Pooler::deserialize(value)
        .with_context(|| format!("Pooler {name} does not match the Pooler schema"))?;
    let namespace = pooler
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned())
        .clone();
    if pooler.metadata.uid.is_none() {
        pooler.metadata.uid = Some("<uid of the Pooler>".to_owned());
    }
    let cluster_name = pooler.spec.cluster.name.clone();
    let ca_secret = clusters
        .iter()
        .rev()
        .find(|c| {
            c.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(cluster_name.as_str())
        })
        .and_then(|c| c.pointer("/spec/tls/caSecret/name"))
        .and_then(|n| n.as_str())
        .map_or_else(|| tusk_api::names::ca_secret(&cluster_name), str::to_owned);
    let placeholder = |secret_name: String, keys: &[&str]| {
        // The role's Secret belongs to the Cluster (shared by its Poolers), the others to the
        // Pooler.
        let labels = if secret_name == secrets::cluster_auth_secret(&cluster_name) {
            tusk_api::labels::cluster_child_labels(&cluster_name, children::COMPONENT)
        } else {
            children::child_labels(&pooler)
        };
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
            "stringData": keys.iter().map(|k| ((*k).to_owned(), "<generated when applied>".to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        })
    };
    let exporter_image = format!(
        "ghcr.io/tusk-operator/tusk-operator:{}",
        env!("CARGO_PKG_VERSION")
    );
    let mut deployment = serde_json::to_value(children::desired_deployment(
        &pooler,
        &children::PodInputs {
            image: tusk_runtime::context::DEFAULT_PGBOUNCER_IMAGE,
            server_ca_secret: &ca_secret,
            exporter_image: Some(&exporter_image),
            certificate_pem: "",
        },
    ))?;
    if let Some(annotations) = deployment
        .pointer_mut("/spec/template/metadata/annotations")
        .and_then(|a| a.as_object_mut())
    {
        annotations.insert(
            children::CERTIFICATE_ANNOTATION.to_owned(),
            "<digest of PgBouncer's certificate, issued when applied>".into(),
        );
    }
    Ok(vec![
        placeholder(
            secrets::cluster_auth_secret(&cluster_name),
            &[secrets::AUTH_PASSWORD_KEY],
        ),
        placeholder(
            children::auth_secret(name),
            &[children::AUTH_FILE_KEY, secrets::ADMIN_PASSWORD_KEY],
        ),
        placeholder(
            children::tls_secret(name),
            &[
                tusk_api::names::keys::TLS_CERT,
                tusk_api::names::keys::TLS_KEY,
                tusk_api::names::keys::CA_CERT,
            ],
        ),
        serde_json::to_value(children::desired_config_map(&pooler, &namespace))?,
        serde_json::to_value(children::desired_service(&pooler))?,
        serde_json::to_value(children::desired_pod_disruption_budget(&pooler))?,
        deployment,
    ])
}

/// A PostgresUser's credentials Secret with placeholders for the password and the values
/// derived from it (never a real secret). Its SQL is planned against the live catalog, so it
/// is not rendered; an annotation on the Secret says so.
fn render_user(value: &serde_json::Value, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let user = tusk_api::PostgresUser::deserialize(value)
        .with_context(|| format!("PostgresUser {name} does not match the PostgresUser schema"))?;
    let secret = tusk_user_controller::credentials::rendered_secret(&user)
        .with_context(|| format!("PostgresUser {name} has no name to derive a role from"))?;
    Ok(vec![serde_json::to_value(secret)?])
}

/// A ServiceBinding's dedicated PostgresUser and its binding Secret, with placeholders for
/// the secret values and a note that the names hash the UID the API server assigns.
fn render_binding(value: &serde_json::Value, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let binding = tusk_api::ServiceBinding::deserialize(value).with_context(|| {
        format!("ServiceBinding {name} does not match the ServiceBinding schema")
    })?;
    let (user, secret) = tusk_binding_controller::desired::rendered(&binding)
        .with_context(|| format!("ServiceBinding {name} has no name"))?;
    Ok(vec![
        serde_json::to_value(user)?,
        serde_json::to_value(secret)?,
    ])
}

/// A Backup's ConfigMap and Job, built from its Cluster (which must come earlier in the
/// input). Offline the primary is unknown: the first instance stands in, and an annotation
/// says so.
fn render_backup(
    value: &serde_json::Value,
    name: &str,
    clusters: &[serde_json::Value],
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut backup = tusk_api::Backup::deserialize(value)
        .with_context(|| format!("Backup {name} does not match the Backup schema"))?;
    let namespace = backup
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned())
        .clone();
    if backup.metadata.uid.is_none() {
        backup.metadata.uid = Some("<uid of the Backup>".to_owned());
    }
    let cluster_name = &backup.spec.cluster.name;
    let cluster_value = clusters.iter().rev().find(|c| {
        c.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(cluster_name.as_str())
            && c.pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default")
                == namespace
    });
    let Some(cluster_value) = cluster_value else {
        bail!(
            "Backup {name}: its Job is built from Cluster {cluster_name:?} (repositories, image, resources): render the Cluster first, in the same run, e.g. `tusk-operator render -f cluster.yaml -f backup.yaml`"
        );
    };
    let mut cluster = tusk_api::Cluster::deserialize(cluster_value)
        .with_context(|| format!("Cluster {cluster_name} does not match the Cluster schema"))?;
    cluster.metadata.namespace = Some(namespace);
    let primary = tusk_api::names::instance(cluster_name, 1);
    cluster
        .status
        .get_or_insert_with(Default::default)
        .current_primary
        .get_or_insert(primary.clone());
    let image =
        tusk_backup_controller::job::image(&cluster, tusk_runtime::context::DEFAULT_POSTGRES_IMAGE);
    let desired = tusk_backup_controller::job::desired(
        &backup,
        &cluster,
        &tusk_backup_controller::job::Operation::Backup(backup.spec.type_),
        &image,
    )
    .map_err(|error| anyhow::anyhow!("Backup {name}: {error}"))?;
    let mut job = desired.job;
    job.metadata.annotations.get_or_insert_with(Default::default).insert(
        "tusk.dev/rendered".to_owned(),
        format!(
            "offline render: pg1-host names {primary}; the controller uses the Cluster's current primary, and creates this Job only once the Cluster is Ready"
        ),
    );
    Ok(vec![
        serde_json::to_value(desired.config_map)?,
        serde_json::to_value(job)?,
    ])
}

/// The next Backup a BackupSchedule would create, from now, with an annotation saying when.
fn render_schedule(
    value: &serde_json::Value,
    name: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut schedule = tusk_api::BackupSchedule::deserialize(value).with_context(|| {
        format!("BackupSchedule {name} does not match the BackupSchedule schema")
    })?;
    schedule
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    if schedule.metadata.uid.is_none() {
        schedule.metadata.uid = Some("<uid of the BackupSchedule>".to_owned());
    }
    let cron = tusk_schedule_controller::cron::CronSchedule::parse(
        &schedule.spec.schedule,
        schedule.spec.time_zone(),
    )
    .map_err(|error| anyhow::anyhow!("BackupSchedule {name}: {error}"))?;
    let now = jiff::Timestamp::now();
    let (at, note) = if schedule.spec.immediate {
        let at = tusk_schedule_controller::plan::minute_of(now);
        (at, "created at once (spec.immediate)".to_owned())
    } else {
        let at = cron
            .next_after(now)
            .with_context(|| format!("BackupSchedule {name}: the schedule never comes due"))?;
        let local = at.to_zoned(cron.time_zone().clone());
        (
            at,
            format!(
                "created at {} ({})",
                local.strftime("%Y-%m-%d %H:%M %Z"),
                schedule.spec.time_zone()
            ),
        )
    };
    if schedule.spec.suspend {
        bail!(
            "BackupSchedule {name}: spec.suspend is true, so it creates no Backup (the next would be {note})"
        );
    }
    let run = tusk_schedule_controller::plan::Run {
        name: tusk_api::schedule::scheduled_backup_name(&name_of(&schedule), at),
        scheduled: at,
        immediate: schedule.spec.immediate,
    };
    let mut backup = tusk_schedule_controller::reconcile::desired_backup(&schedule, &run);
    backup.metadata.annotations.get_or_insert_with(Default::default).insert(
        "tusk.dev/rendered".to_owned(),
        format!("offline render: the next Backup of this schedule, {note}; later ones follow the schedule"),
    );
    Ok(vec![serde_json::to_value(backup)?])
}

fn name_of(schedule: &tusk_api::BackupSchedule) -> String {
    schedule.metadata.name.clone().unwrap_or_default()
}

/// A PGUpgrade's check, upgrade and post-upgrade Jobs (the scripts in full), rendered against
/// a Cluster with default settings whose primary is instance 1: the live Cluster's WAL
/// volume, resources, scheduling and primary change the details.
fn render_upgrade(value: &serde_json::Value, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut upgrade = tusk_api::PGUpgrade::deserialize(value)
        .with_context(|| format!("PGUpgrade {name} does not match the PGUpgrade schema"))?;
    if upgrade.metadata.namespace.is_none() {
        upgrade.metadata.namespace = Some("default".to_owned());
    }
    if upgrade.metadata.uid.is_none() {
        upgrade.metadata.uid = Some("<uid of the PGUpgrade>".to_owned());
    }
    tusk_upgrade_controller::jobs::rendered(&upgrade)
        .into_iter()
        .map(|job| Ok(serde_json::to_value(job)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn render_text(text: &str) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in.yaml");
        std::fs::write(&path, text)?;
        let mut out = Vec::new();
        render_files(&[path.display().to_string()], &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn pg_upgrade_renders_its_jobs_with_the_scripts() {
        let out = render_text(include_str!("../../../docs/examples/pgupgrade.yaml")).unwrap();
        assert!(out.contains("name: db-to-18-check"), "{out}");
        assert!(out.contains("name: db-to-18-upgrade"), "{out}");
        assert!(out.contains("name: db-to-18-post"), "{out}");
        assert!(out.contains("claimName: data-db-1-0"), "{out}");
        assert!(out.contains("pg_upgrade"), "{out}");
    }

    #[test]
    fn pooler_renders_pgbouncer_and_placeholders_only() {
        let out = render_text(include_str!("../../../docs/examples/pooler.yaml")).unwrap();
        for needle in [
            "kind: Deployment",
            "name: db-pooler-auth",
            "name: db-pooler-role",
            "pool_mode = transaction",
            "default_pool_size = 20",
            "pgbouncer-exporter",
            "<digest of PgBouncer's certificate",
        ] {
            assert!(out.contains(needle), "{needle}: {out}");
        }
        for secret_material in ["SCRAM-SHA-256$", "PRIVATE KEY", "BEGIN CERTIFICATE"] {
            assert!(!out.contains(secret_material), "{secret_material}: {out}");
        }
        assert!(out.contains("<generated when applied>"), "{out}");
    }

    #[test]
    fn postgres_user_renders_its_secret_with_placeholders_only() {
        let out = render_text(include_str!("../../../docs/examples/postgresuser.yaml")).unwrap();
        assert!(out.contains("kind: Secret"), "{out}");
        assert!(out.contains("name: db-shop-credentials"), "{out}");
        assert!(out.contains("password: <generated>"), "{out}");
        assert!(out.contains("live catalog"), "{out}");
        assert!(
            !out.contains("\ndata:"),
            "only stringData placeholders: {out}"
        );
    }

    #[test]
    fn service_binding_renders_its_user_and_secret_with_placeholders_only() {
        let out = render_text(include_str!(
            "../../../docs/examples/servicebinding-cross-namespace.yaml"
        ))
        .unwrap();
        assert!(out.contains("kind: PostgresUser"), "{out}");
        assert!(out.contains("namespace: db"), "{out}");
        assert!(out.contains("type: servicebinding.io/postgresql"), "{out}");
        assert!(out.contains("password: <generated>"), "{out}");
        assert!(out.contains("tusk.dev/binding-name: storefront"), "{out}");
        assert!(
            !out.contains("\ndata:"),
            "only stringData placeholders: {out}"
        );
    }

    #[test]
    fn backup_renders_its_job_from_the_cluster_before_it() {
        let cluster = include_str!("../../../docs/examples/cluster.yaml");
        let backup = include_str!("../../../docs/examples/backup.yaml");
        let out = render_text(&format!("{cluster}\n---\n{backup}")).unwrap();
        assert!(out.contains("kind: Job"), "{out}");
        assert!(out.contains("backoffLimit: 0"), "{out}");
        assert!(out.contains("pgbackrest.conf"), "{out}");
        let alone = render_text(backup).unwrap_err().to_string();
        assert!(alone.contains("render the Cluster first"), "{alone}");
    }

    /// Host names cluster DNS serves for the rendered objects, by the rule of a real cluster:
    /// `<svc>.<ns>.svc` for every Service, and `<pod>.<serviceName>.<ns>.svc` for each pod
    /// `<sts>-<ordinal>` of a StatefulSet whose `serviceName` is a headless Service.
    fn served_host_names(objects: &[serde_json::Value]) -> BTreeSet<String> {
        let of_kind = |kind: &'static str| {
            objects
                .iter()
                .filter(move |o| o["kind"] == kind)
                .map(|o| (o["metadata"]["name"].as_str().unwrap(), o))
        };
        let mut served = BTreeSet::new();
        let mut headless = BTreeSet::new();
        for (name, service) in of_kind("Service") {
            let namespace = service["metadata"]["namespace"].as_str().unwrap();
            served.insert(format!("{name}.{namespace}.svc"));
            if service["spec"]["clusterIP"] == "None" {
                headless.insert(format!("{name}.{namespace}"));
            }
        }
        for (name, sts) in of_kind("StatefulSet") {
            let namespace = sts["metadata"]["namespace"].as_str().unwrap();
            let Some(subdomain) = sts["spec"]["serviceName"].as_str() else {
                continue;
            };
            if !headless.contains(&format!("{subdomain}.{namespace}")) {
                continue;
            }
            for ordinal in 0..sts["spec"]["replicas"].as_i64().unwrap_or(1) {
                served.insert(format!("{name}-{ordinal}.{subdomain}.{namespace}.svc"));
            }
        }
        served
    }

    /// Every host pgBackRest is told to reach (`pgN-host`, `repoN-host` in a configuration
    /// file, or the same options as `PGBACKREST_*_HOST` environment variables).
    fn pgbackrest_hosts(objects: &[serde_json::Value]) -> Vec<String> {
        let mut hosts = Vec::new();
        let is_host_option = |key: &str| {
            let key = key.to_ascii_lowercase().replace('_', "-");
            let key = key.trim_start_matches("pgbackrest-");
            (key.starts_with("pg") || key.starts_with("repo")) && key.ends_with("-host")
        };
        for object in objects {
            if object["kind"] == "ConfigMap" {
                for text in object["data"]
                    .as_object()
                    .into_iter()
                    .flat_map(|d| d.values())
                {
                    for line in text.as_str().unwrap_or_default().lines() {
                        if let Some((key, value)) = line.split_once('=')
                            && is_host_option(key.trim())
                        {
                            hosts.push(value.trim().to_owned());
                        }
                    }
                }
            }
            let mut stack = vec![object];
            while let Some(node) = stack.pop() {
                match node {
                    serde_json::Value::Object(map) => {
                        if let (Some(name), Some(value)) = (map.get("name"), map.get("value"))
                            && name.as_str().is_some_and(|n| n.starts_with("PGBACKREST_"))
                            && name.as_str().is_some_and(is_host_option)
                        {
                            hosts.push(value.as_str().unwrap().to_owned());
                        }
                        stack.extend(map.values());
                    }
                    serde_json::Value::Array(items) => stack.extend(items),
                    _ => {}
                }
            }
        }
        hosts
    }

    /// A real cluster resolves only the names its DNS serves: a backup Job or an instance
    /// naming a host that no Service or StatefulSet pod gets retries its lookup until the Job's
    /// deadline (a break seen on a real cluster, where `pg1-host` named `<instance>.<cluster>-
    /// pods` instead of the pod `<instance>-0`).
    #[test]
    fn every_pgbackrest_host_is_a_name_cluster_dns_serves() {
        for cluster in [
            include_str!("../../../docs/examples/cluster-backup-volume.yaml"),
            include_str!("../../../docs/examples/cluster-backup-s3.yaml"),
        ] {
            let cluster_name =
                serde_yaml_ng::from_str::<serde_json::Value>(cluster).unwrap()["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned();
            let backup = format!(
                "apiVersion: tusk.dev/v1alpha1\nkind: Backup\nmetadata: {{name: b, namespace: db}}\nspec: {{cluster: {{name: {cluster_name}}}}}\n"
            );
            let out = render_text(&format!("{cluster}\n---\n{backup}")).unwrap();
            let objects: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&out)
                .map(|document| serde_json::Value::deserialize(document).unwrap())
                .collect();
            let served = served_host_names(&objects);
            let hosts = pgbackrest_hosts(&objects);
            assert!(
                hosts
                    .iter()
                    .any(|h| h.starts_with(&format!("{cluster_name}-1-0."))),
                "the backup Job names the primary's pod: {hosts:?}"
            );
            for host in hosts {
                assert!(served.contains(&host), "{host} is not served: {served:?}");
            }
        }
    }

    #[test]
    fn backup_schedule_renders_its_next_backup() {
        let out = render_text(include_str!("../../../docs/examples/backupschedule.yaml")).unwrap();
        assert!(out.contains("kind: Backup"), "{out}");
        assert!(out.contains("tusk.dev/schedule: db-nightly"), "{out}");
        assert!(out.contains("offline render"), "{out}");
    }

    #[test]
    fn foreign_resources_are_refused() {
        let error = render_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a tusk resource"), "{error}");
    }

    #[test]
    fn invalid_resources_name_the_kind() {
        let error = render_text("apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {name: db}\nspec: {instances: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("does not match the Cluster schema"),
            "{error}"
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        let error = render_text("# nothing\n").unwrap_err().to_string();
        assert!(error.contains("no resources found"), "{error}");
    }
}
