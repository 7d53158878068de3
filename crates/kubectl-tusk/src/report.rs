//! `report CLUSTER -o FILE.zip`: what a support request needs, in one file, with no Secret value
//! in it.
//!
//! ```text
//!  <namespace>-<cluster>/
//!    README.txt            what is here and what was left out
//!    status.txt, .json     what `kubectl tusk status` shows
//!    cluster.yaml          the Cluster
//!    children/             every object labelled tusk.dev/cluster=<cluster>: StatefulSets,
//!                          Deployments (Poolers'), pods, Services, ConfigMaps, PVCs, Jobs,
//!                          PDBs, Secrets (keys only)
//!    related/              Backups, BackupSchedules, PGUpgrades, PostgresUsers, bindings,
//!                          Poolers
//!    events.yaml           events about any of the above
//!    operator.log          the operator's last log lines that name the Cluster
//!    patroni.json          Patroni's view (GET /cluster on the primary, through the API
//!                          server's pods/proxy), or why it could not be read
//! ```
//!
//! Secrets are written with their key names and sizes only; `managedFields` and
//! last-applied annotations are dropped; and before anything is written, every file is
//! searched for every Secret value read (and its base64) and any occurrence replaced.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::{Exit, Terminal};

/// What `report` was asked for.
#[derive(Debug)]
pub struct ReportRequest<'a> {
    pub cluster: &'a str,
    pub output: &'a Path,
    /// Where the operator runs (its log lines are read there).
    pub operator_namespace: &'a str,
    /// How many of each operator pod's last log lines are searched.
    pub log_lines: i64,
}

/// The files of a report, in order: (path inside the archive, content).
#[derive(Debug, Default)]
pub struct Bundle {
    pub files: Vec<(String, String)>,
    /// Every Secret value read, decoded; none may appear in a file.
    secrets: BTreeSet<String>,
}

impl Bundle {
    fn add(&mut self, path: String, content: String) {
        self.files.push((path, content));
    }

    fn add_yaml<T: Serialize>(&mut self, path: String, value: &T) -> anyhow::Result<()> {
        let mut value = serde_json::to_value(value)?;
        scrub(&mut value);
        self.add(path, serde_yaml_ng::to_string(&value)?);
        Ok(())
    }

    /// Replaces every Secret value (and its base64) anywhere in the files.
    fn redact(&mut self) {
        use base64::Engine as _;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let needles: Vec<String> = self
            .secrets
            .iter()
            .filter(|s| s.len() >= 4)
            .flat_map(|s| [s.clone(), encode(s.as_bytes())])
            .collect();
        for (_, content) in &mut self.files {
            for needle in &needles {
                if content.contains(needle.as_str()) {
                    *content = content.replace(needle.as_str(), "<redacted>");
                }
            }
        }
    }
}

/// Drops what a support request does not need and what may carry a secret: `managedFields`,
/// last-applied annotations.
fn scrub(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// Keys of tusk's Secrets whose values are not secret (user names, hosts, ports, database
/// names, certificates): searching the report for them would blank out `shop`, `5432` or
/// `patroni` wherever they appear. Their values are still left out of the Secret's own file.
fn is_public_key(key: &str) -> bool {
    matches!(
        key,
        "username" | "user" | "host" | "port" | "database" | "dbname" | "type" | "provider"
    ) || key.ends_with(".crt")
}

/// A Secret as the report shows it: metadata, type, and per key its size.
fn redacted_secret(secret: &Secret) -> Value {
    let keys: serde_json::Map<String, Value> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| {
            (
                key.clone(),
                Value::String(format!("<redacted: {} bytes>", value.0.len())),
            )
        })
        .collect();
    let mut metadata = serde_json::to_value(&secret.metadata).unwrap_or_default();
    if let Some(meta) = metadata.as_object_mut() {
        meta.remove("managedFields");
        meta.remove("annotations");
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": secret.type_,
        "data": keys,
    })
}

/// `report CLUSTER -o FILE.zip`.
pub async fn report(
    client: &kube::Client,
    namespace: &str,
    request: &ReportRequest<'_>,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let bundle = collect(client, namespace, request).await?;
    write_zip(
        request.output,
        &format!("{namespace}-{}", request.cluster),
        &bundle,
    )?;
    terminal.line(&format!(
        "wrote {} ({} files); Secret values are not in it",
        request.output.display(),
        bundle.files.len()
    ))?;
    Ok(Exit::Ok)
}

/// Reads everything the report holds.
pub async fn collect(
    client: &kube::Client,
    namespace: &str,
    request: &ReportRequest<'_>,
) -> anyhow::Result<Bundle> {
    let name = request.cluster;
    let gathered = crate::status::read(client, namespace, name).await?;
    let status = crate::status::report(&gathered);
    let mut bundle = Bundle::default();
    bundle.add("status.txt".to_owned(), crate::render::text(&status, false));
    bundle.add(
        "status.json".to_owned(),
        serde_json::to_string_pretty(&status)? + "\n",
    );
    bundle.add_yaml("cluster.yaml".to_owned(), &gathered.cluster)?;

    let mut children = Children {
        client,
        namespace,
        params: ListParams::default().labels(&format!("{}={name}", tusk_api::labels::CLUSTER)),
        bundle: &mut bundle,
        names: BTreeSet::from([name.to_owned()]),
    };
    children.add::<StatefulSet>("statefulset").await?;
    children.add::<Deployment>("deployment").await?;
    children.add::<Pod>("pod").await?;
    children.add::<Service>("service").await?;
    children.add::<ConfigMap>("configmap").await?;
    children.add::<PersistentVolumeClaim>("pvc").await?;
    children.add::<Job>("job").await?;
    children.add::<PodDisruptionBudget>("pdb").await?;
    children.add::<ServiceAccount>("serviceaccount").await?;
    children.add_secrets().await?;
    let mut names = children.names;
    related(&gathered, &mut bundle, &mut names)?;
    events(client, namespace, &names, &mut bundle).await?;
    operator_log(client, request, namespace, &mut bundle).await;
    patroni_view(
        client,
        namespace,
        status.current_primary.as_deref(),
        &mut bundle,
    )
    .await;
    bundle.add(
        "README.txt".to_owned(),
        format!(
            "kubectl tusk report of Cluster {namespace}/{name}.\n\
             Secrets are listed with their key names and sizes only; no Secret value is in any file.\n\
             operator.log holds the lines of the last {} log lines of each operator pod (namespace {}) that name the Cluster.\n",
            request.log_lines, request.operator_namespace
        ),
    );
    bundle.redact();
    Ok(bundle)
}

/// The Cluster's children (objects labelled with it) going into the bundle, and the names of
/// all of them (for the events).
struct Children<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
    params: ListParams,
    bundle: &'a mut Bundle,
    names: BTreeSet<String>,
}

impl Children<'_> {
    /// Every `K` of the Cluster, as `children/<kind>-<name>.yaml`.
    async fn add<K>(&mut self, kind: &str) -> anyhow::Result<()>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let list = Api::<K>::namespaced(self.client.clone(), self.namespace)
            .list(&self.params)
            .await
            .with_context(|| format!("listing the Cluster's {kind}s"))?;
        for object in list {
            self.names.insert(object.name_any());
            self.bundle.add_yaml(
                format!("children/{kind}-{}.yaml", object.name_any()),
                &object,
            )?;
        }
        Ok(())
    }

    /// The Cluster's Secrets with key names only; their values are remembered to be searched
    /// for in every file.
    async fn add_secrets(&mut self) -> anyhow::Result<()> {
        let list = Api::<Secret>::namespaced(self.client.clone(), self.namespace)
            .list(&self.params)
            .await
            .context("listing the Cluster's Secrets")?;
        for secret in list {
            for (key, value) in secret.data.iter().flatten() {
                if !is_public_key(key) {
                    self.bundle
                        .secrets
                        .insert(String::from_utf8_lossy(&value.0).into_owned());
                }
            }
            self.names.insert(secret.name_any());
            self.bundle.add_yaml(
                format!("children/secret-{}.yaml", secret.name_any()),
                &redacted_secret(&secret),
            )?;
        }
        Ok(())
    }
}

/// Backups, schedules, upgrades, users and Poolers of the Cluster, and bindings to it from
/// anywhere:
/// what `status` read.
fn related(
    gathered: &crate::status::Gathered,
    bundle: &mut Bundle,
    names: &mut BTreeSet<String>,
) -> anyhow::Result<()> {
    fn add<K: kube::Resource + Serialize>(
        kind: &str,
        file: String,
        object: &K,
        bundle: &mut Bundle,
        names: &mut BTreeSet<String>,
    ) -> anyhow::Result<()> {
        names.insert(object.meta().name.clone().unwrap_or_default());
        bundle.add_yaml(format!("related/{kind}-{file}.yaml"), object)
    }
    for b in &gathered.backups {
        add("backup", b.name_any(), b, bundle, names)?;
    }
    for s in &gathered.schedules {
        add("backupschedule", s.name_any(), s, bundle, names)?;
    }
    for u in &gathered.upgrades {
        add("pgupgrade", u.name_any(), u, bundle, names)?;
    }
    for u in &gathered.users {
        add("postgresuser", u.name_any(), u, bundle, names)?;
    }
    for b in &gathered.bindings {
        let file = format!("{}-{}", b.namespace().unwrap_or_default(), b.name_any());
        add("servicebinding", file, b, bundle, names)?;
    }
    for p in &gathered.poolers {
        add("pooler", p.name_any(), p, bundle, names)?;
    }
    Ok(())
}

async fn events(
    client: &kube::Client,
    namespace: &str,
    names: &BTreeSet<String>,
    bundle: &mut Bundle,
) -> anyhow::Result<()> {
    let mut about: Vec<Value> = Vec::new();
    for event in Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .context("listing events")?
    {
        let regarding = event.regarding.as_ref().and_then(|r| r.name.as_deref());
        if regarding.is_some_and(|n| names.contains(n)) {
            let mut value = serde_json::to_value(&event)?;
            scrub(&mut value);
            about.push(value);
        }
    }
    bundle.add("events.yaml".to_owned(), serde_yaml_ng::to_string(&about)?);
    Ok(())
}

/// The operator's log lines that name the Cluster; a note instead when they cannot be read.
async fn operator_log(
    client: &kube::Client,
    request: &ReportRequest<'_>,
    namespace: &str,
    bundle: &mut Bundle,
) {
    let pods = Api::<Pod>::namespaced(client.clone(), request.operator_namespace);
    let listed = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=tusk"))
        .await;
    let mut text = String::new();
    match listed {
        Err(error) => text.push_str(&format!("could not list the operator's pods: {error}\n")),
        Ok(list) if list.items.is_empty() => text.push_str(&format!(
            "no tusk operator pod in namespace {}\n",
            request.operator_namespace
        )),
        Ok(list) => {
            for pod in list {
                let params = LogParams {
                    tail_lines: Some(request.log_lines),
                    ..LogParams::default()
                };
                text.push_str(&format!("== {}\n", pod.name_any()));
                match pods.logs(&pod.name_any(), &params).await {
                    Ok(log) => {
                        for line in log.lines() {
                            if line.contains(request.cluster) && line.contains(namespace) {
                                text.push_str(line);
                                text.push('\n');
                            }
                        }
                    }
                    Err(error) => text.push_str(&format!("could not read its log: {error}\n")),
                }
            }
        }
    }
    bundle.add("operator.log".to_owned(), text);
}

/// Patroni's `GET /cluster` on the primary, through the API server (pods/proxy).
async fn patroni_view(
    client: &kube::Client,
    namespace: &str,
    primary: Option<&str>,
    bundle: &mut Bundle,
) {
    let Some(primary) = primary else {
        bundle.add(
            "patroni.txt".to_owned(),
            "the Cluster has no primary: Patroni's view was not read\n".to_owned(),
        );
        return;
    };
    let pod = tusk_api::names::statefulset_pod(primary);
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:8008/proxy/cluster");
    let answer = match http::Request::get(&path).body(Vec::new()) {
        Ok(request) => client
            .request_text(request)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match answer {
        Ok(body) => bundle.add("patroni.json".to_owned(), body),
        Err(error) => bundle.add(
            "patroni.txt".to_owned(),
            format!("GET {path} failed: {error}\n"),
        ),
    }
}

/// Writes the bundle as a zip file, every file under `root/`.
pub fn write_zip(output: &Path, root: &str, bundle: &Bundle) -> anyhow::Result<()> {
    let file = std::fs::File::create(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, content) in &bundle.files {
        zip.start_file(format!("{root}/{path}"), options)?;
        zip.write_all(content.as_bytes())?;
    }
    zip.finish()?;
    Ok(())
}
