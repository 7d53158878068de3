//! `tusk-operator render`: what the controllers would apply, without a cluster.
//!
//! Each input document is parsed into its typed resource (so a typo fails here, as it would
//! at the API server) and handed to the renderer of its controller. A kind whose controller
//! is not built yet is an error naming that kind — never an empty success.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Renders every resource in `files` to `out`; fails if any document cannot be rendered.
pub(crate) fn render_files(files: &[String], out: &mut impl Write) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    let mut rendered = 0usize;
    for file in files {
        let text = read_input(file)?;
        for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("{file}: document {} is not valid YAML", index + 1))?;
            if value.is_null() {
                continue;
            }
            match render_one(&value) {
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
fn render_one(value: &serde_json::Value) -> anyhow::Result<Vec<serde_json::Value>> {
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
        "ServiceBinding" => not_built::<tusk_api::ServiceBinding>(value, kind, name, "binding"),
        "Backup" => not_built::<tusk_api::Backup>(value, kind, name, "backup"),
        "BackupSchedule" => not_built::<tusk_api::BackupSchedule>(value, kind, name, "schedule"),
        "PGUpgrade" => not_built::<tusk_api::PGUpgrade>(value, kind, name, "upgrade"),
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
    let desired = tusk_cluster_controller::reconcile::plan(
        &cluster,
        &tusk_cluster_controller::reconcile::Observed::default(),
        &tusk_cluster_controller::children::Images::default(),
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
    Ok(objects)
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

/// Parses the resource (so the input is checked) and reports that its controller does not
/// exist yet.
fn not_built<K: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    kind: &str,
    name: &str,
    controller: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    K::deserialize(value)
        .with_context(|| format!("{kind} {name} does not match the {kind} schema"))?;
    bail!(
        "{kind} {name}: not implemented yet: the {controller} controller is not built, so there is nothing to render"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_text(text: &str) -> anyhow::Result<String> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("in.yaml");
        std::fs::write(&path, text)?;
        let mut out = Vec::new();
        render_files(&[path.display().to_string()], &mut out)?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn kinds_without_a_controller_are_an_error_not_an_empty_success() {
        let error = render_text(
            "apiVersion: tusk.dev/v1alpha1\nkind: PGUpgrade\nmetadata: {name: up}\nspec: {cluster: {name: db}, fromPostgresVersion: 16, toPostgresVersion: 17}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("PGUpgrade up: not implemented yet"),
            "{error}"
        );
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
