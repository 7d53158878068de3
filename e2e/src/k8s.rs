//! Talking to the cluster: a [`Scope`] per scenario (its namespaces, created and deleted),
//! creating objects, waiting on conditions, and running SQL Jobs.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{DeleteParams, ListParams, LogParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tusk_api::condition::types;
use tusk_api::{Backup, BackupSchedule, Cluster, PGUpgrade, Pooler, PostgresUser, ServiceBinding};

use crate::env::E2e;
use crate::sql::{self, Connection};
use crate::wait::{Poll, wait_for};

/// Labels on every namespace the suite creates: findable, and held to the `restricted` Pod
/// Security Standard, so every pod tusk creates is checked against it.
pub fn namespace_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tusk.dev/e2e".to_owned(), "true".to_owned()),
        (
            "pod-security.kubernetes.io/enforce".to_owned(),
            "restricted".to_owned(),
        ),
    ])
}

/// `e2e-<scenario>-<suffix>`, a valid DNS label of at most 63 characters.
pub fn namespace_name(scenario: &str, suffix: &str) -> String {
    let scenario: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let room = 63 - "e2e--".len() - suffix.len();
    let scenario: String = scenario.chars().take(room).collect();
    format!("e2e-{}-{suffix}", scenario.trim_matches('-'))
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or_default();
    format!("{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
}

/// Kinds with conditions in their status.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
}

macro_rules! has_conditions {
    ($($kind:ty),*) => {$(
        impl HasConditions for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
        }
    )*};
}
has_conditions!(
    Cluster,
    PostgresUser,
    ServiceBinding,
    Backup,
    BackupSchedule,
    PGUpgrade,
    Pooler
);

/// `Type=Status Reason: message` of every condition, for messages.
pub fn describe_conditions(conditions: &[Condition]) -> String {
    if conditions.is_empty() {
        return "no conditions yet".to_owned();
    }
    conditions
        .iter()
        .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether condition `type_` has `status`, for the object's current generation.
pub fn condition_is(
    conditions: &[Condition],
    generation: Option<i64>,
    type_: &str,
    status: &str,
) -> bool {
    conditions.iter().any(|c| {
        c.type_ == type_
            && c.status == status
            && (generation.is_none()
                || c.observed_generation.is_none()
                || c.observed_generation == generation)
    })
}

/// No scenario runs longer than this (times `TUSK_E2E_TIMEOUT_SCALE`), whatever it waits on.
pub const SCENARIO_BUDGET: Duration = Duration::from_secs(3600);

/// One scenario's namespaces and client.
#[derive(Clone)]
pub struct Scope {
    pub e2e: E2e,
    /// The scenario's main namespace.
    pub namespace: String,
    created: Arc<Mutex<Vec<String>>>,
    jobs: Arc<AtomicU32>,
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Scope {
    /// Runs `body` in a fresh namespace and deletes every namespace it created afterwards —
    /// also when `body` fails or panics (kept with `TUSK_E2E_KEEP_NAMESPACES=1` on failure).
    pub async fn run<F, Fut>(e2e: &E2e, scenario: &str, body: F) -> anyhow::Result<()>
    where
        F: FnOnce(Scope) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let suffix = unique_suffix();
        let scope = Scope {
            e2e: e2e.clone(),
            namespace: namespace_name(scenario, &suffix),
            created: Arc::new(Mutex::new(Vec::new())),
            jobs: Arc::new(AtomicU32::new(0)),
        };
        scope.create_namespace(&scope.namespace.clone()).await?;
        eprintln!("[{scenario}] namespace {}", scope.namespace);
        let started = std::time::Instant::now();
        let budget = e2e.settings.timeout(SCENARIO_BUDGET);
        let task = tokio::spawn(body(scope.clone()));
        let abort = task.abort_handle();
        let outcome = match tokio::time::timeout(budget, task).await {
            Ok(joined) => joined,
            Err(_) => {
                abort.abort();
                Ok(Err(anyhow::anyhow!(
                    "scenario {scenario} ran past its budget of {budget:?}"
                )))
            }
        };
        let failed = !matches!(outcome, Ok(Ok(())));
        eprintln!(
            "[{scenario}] {} after {:.0} s",
            if failed { "FAILED" } else { "passed" },
            started.elapsed().as_secs_f64()
        );
        if failed {
            let report = crate::diagnose::report(e2e, &scope.created_namespaces()).await;
            eprintln!("[{scenario}] what the cluster looked like:\n{report}");
        }
        let cleanup = if failed && e2e.settings.keep_namespaces {
            eprintln!(
                "[{scenario}] keeping namespaces {:?}",
                scope.created_namespaces()
            );
            Ok(())
        } else {
            scope.delete_namespaces().await
        };
        match outcome {
            Ok(result) => result.with_context(|| format!("scenario {scenario}"))?,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => anyhow::bail!("scenario {scenario} was cancelled: {join}"),
        }
        cleanup
    }

    fn created_namespaces(&self) -> Vec<String> {
        self.created.lock().map(|c| c.clone()).unwrap_or_default()
    }

    async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(namespace_labels()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.e2e.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        if let Ok(mut created) = self.created.lock() {
            created.push(name.to_owned());
        }
        Ok(())
    }

    /// Another namespace for this scenario, `<namespace>-<suffix>`, deleted with the scope.
    pub async fn extra_namespace(&self, suffix: &str) -> anyhow::Result<String> {
        let name: String = format!("{}-{suffix}", self.namespace)
            .chars()
            .take(63)
            .collect();
        self.create_namespace(&name).await?;
        Ok(name)
    }

    /// Deletes the namespaces and waits until they are gone: one stuck in Terminating means a
    /// finalizer that is never removed, which is a bug the suite reports.
    async fn delete_namespaces(&self) -> anyhow::Result<()> {
        let api = Api::<Namespace>::all(self.e2e.client.clone());
        let names = self.created_namespaces();
        for name in &names {
            match api.delete(name, &DeleteParams::foreground()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e).with_context(|| format!("deleting namespace {name}")),
            }
        }
        for name in &names {
            let api = api.clone();
            wait_for(
                self.e2e.settings.timeout(Duration::from_secs(300)),
                &format!("namespace {name} to be deleted"),
                || {
                    let api = api.clone();
                    let name = name.clone();
                    async move {
                        Ok(match api.get_opt(&name).await? {
                            None => Poll::Ready(()),
                            Some(ns) => Poll::Pending(format!(
                                "still {:?}, finalizers {:?}",
                                ns.status.and_then(|s| s.phase),
                                ns.metadata.finalizers
                            )),
                        })
                    }
                },
            )
            .await?;
        }
        Ok(())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.e2e.client.clone(), &self.namespace)
    }

    pub fn api_in<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.e2e.client.clone(), namespace)
    }

    /// Creates `object` in its own namespace (or the scope's).
    pub async fn create<K>(&self, object: &K) -> anyhow::Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let ns = object.namespace().unwrap_or_else(|| self.namespace.clone());
        self.api_in::<K>(&ns)
            .create(&PostParams::default(), object)
            .await
            .with_context(|| format!("creating {} {}/{}", K::kind(&()), ns, object.name_any()))
    }

    /// Waits until `name`'s condition `type_` is `status` for its current generation.
    pub async fn wait_condition<K>(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + HasConditions
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api_in::<K>(namespace);
        let what = format!("{} {namespace}/{name} {type_}={status}", K::kind(&()));
        wait_for(self.e2e.settings.timeout(timeout), &what, || {
            let api = api.clone();
            async move {
                Ok(match api.get_opt(name).await? {
                    None => Poll::Pending("not found".to_owned()),
                    Some(object) => {
                        if condition_is(
                            object.conditions(),
                            object.meta().generation,
                            type_,
                            status,
                        ) {
                            Poll::Ready(object)
                        } else {
                            Poll::Pending(describe_conditions(object.conditions()))
                        }
                    }
                })
            }
        })
        .await
    }

    /// Waits for `Ready=True` on the current generation.
    pub async fn wait_ready<K>(&self, name: &str, timeout: Duration) -> anyhow::Result<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + HasConditions
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        self.wait_condition::<K>(&self.namespace, name, types::READY, "True", timeout)
            .await
    }

    /// The instance image a Cluster runs (it carries psql): `status.image`, else the
    /// `postgres` container of one of its pods.
    pub async fn cluster_image(&self, namespace: &str, cluster: &str) -> anyhow::Result<String> {
        let c = self.api_in::<Cluster>(namespace).get(cluster).await?;
        if let Some(image) = c.status.and_then(|s| s.image) {
            return Ok(image);
        }
        let selector = format!("{}={cluster}", tusk_api::labels::CLUSTER);
        let pods = self
            .api_in::<Pod>(namespace)
            .list(&ListParams::default().labels(&selector))
            .await?;
        pods.items
            .iter()
            .filter_map(|p| p.spec.as_ref())
            .flat_map(|spec| spec.containers.iter())
            .find(|c| c.name == "postgres")
            .and_then(|c| c.image.clone())
            .with_context(|| format!("Cluster {namespace}/{cluster} has no postgres container yet"))
    }

    /// Runs `job` in `namespace` until it finishes; whether it succeeded, and its log.
    pub async fn run_job(&self, namespace: &str, job: &Job) -> anyhow::Result<(bool, String)> {
        let name = job.name_any();
        let jobs = self.api_in::<Job>(namespace);
        jobs.create(&PostParams::default(), job)
            .await
            .with_context(|| format!("creating Job {namespace}/{name}"))?;
        let succeeded = wait_for(
            self.e2e.settings.timeout(Duration::from_secs(180)),
            &format!("Job {namespace}/{name}"),
            || {
                let jobs = jobs.clone();
                let name = name.clone();
                async move {
                    let status = jobs.get(&name).await?.status.unwrap_or_default();
                    Ok(if status.succeeded.unwrap_or(0) > 0 {
                        Poll::Ready(true)
                    } else if status.failed.unwrap_or(0) > 0 {
                        Poll::Ready(false)
                    } else {
                        Poll::Pending(format!("active {}", status.active.unwrap_or(0)))
                    })
                }
            },
        )
        .await?;
        let pods = self.api_in::<Pod>(namespace);
        let listed = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await?;
        let pod = listed
            .items
            .first()
            .with_context(|| format!("no pod of Job {name}"))?;
        let log = pods
            .logs(
                &pod.name_any(),
                &LogParams {
                    container: Some(sql::CONTAINER.to_owned()),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap_or_default();
        let _ = jobs.delete(&name, &DeleteParams::background()).await;
        Ok((succeeded, log))
    }

    fn job_name(&self, prefix: &str) -> String {
        let n = self.jobs.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{n}-{}", unique_suffix())
    }

    /// Runs `sql` once in a Job in `namespace`; the rows it printed.
    pub async fn sql_in(
        &self,
        namespace: &str,
        image: &str,
        connection: &Connection,
        sql_text: &str,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let name = self.job_name("sql");
        let job = sql::psql_job(&name, namespace, image, connection, sql_text);
        let (succeeded, log) = self.run_job(namespace, &job).await?;
        let rows = sql::parse_rows(&log)?;
        anyhow::ensure!(succeeded, "SQL Job {name} failed after printing its rows");
        Ok(rows)
    }

    /// The metrics a pod serves on `port`, fetched from inside the cluster (as Prometheus
    /// would), with `image` (it needs Python).
    pub async fn pod_metrics(
        &self,
        pod: &Pod,
        port: u16,
        image: &str,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .with_context(|| format!("pod {} has no IP", pod.name_any()))?;
        let name = self.job_name("metrics");
        let job = sql::metrics_job(
            &name,
            &self.namespace,
            image,
            &format!("http://{ip}:{port}/metrics"),
        );
        let (succeeded, log) = self.run_job(&self.namespace, &job).await?;
        let body = sql::framed_output(&log)?;
        anyhow::ensure!(succeeded, "metrics Job {name} failed");
        Ok(sql::parse_metrics(body))
    }

    /// [`Scope::sql_in`] in the scope's namespace.
    pub async fn sql(
        &self,
        image: &str,
        connection: &Connection,
        sql_text: &str,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        self.sql_in(&self.namespace, image, connection, sql_text)
            .await
    }

    /// Retries `sql` until it succeeds (after a failover, while a Service comes back).
    pub async fn sql_eventually(
        &self,
        image: &str,
        connection: &Connection,
        sql_text: &str,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        wait_for(
            self.e2e.settings.timeout(timeout),
            &format!("SQL to succeed: {sql_text}"),
            || async {
                Ok(match self.sql(image, connection, sql_text).await {
                    Ok(rows) => Poll::Ready(rows),
                    Err(e) => Poll::Pending(format!("{e:#}")),
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        let name = namespace_name("Backup_and_PITR restore", "a1b2c3");
        assert_eq!(name, "e2e-backup-and-pitr-restore-a1b2c3");
        let long = namespace_name(&"x".repeat(200), "a1b2c3");
        assert!(long.len() <= 63, "{long}");
        assert!(long.ends_with("-a1b2c3"));
        assert_eq!(unique_suffix().len(), 6);
    }

    #[test]
    fn namespaces_enforce_the_restricted_pod_security_standard() {
        assert_eq!(
            namespace_labels()["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }

    fn condition(type_: &str, status: &str, generation: Option<i64>) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: "Because".to_owned(),
            message: "said so".to_owned(),
            observed_generation: generation,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    #[test]
    fn a_condition_counts_only_for_the_current_generation() {
        let conditions = vec![condition("Ready", "True", Some(1))];
        assert!(condition_is(&conditions, Some(1), "Ready", "True"));
        assert!(
            !condition_is(&conditions, Some(2), "Ready", "True"),
            "stale"
        );
        assert!(!condition_is(&conditions, Some(1), "Ready", "False"));
        assert!(!condition_is(&conditions, Some(1), "Progressing", "True"));
    }

    #[test]
    fn conditions_are_described_for_timeouts() {
        assert_eq!(describe_conditions(&[]), "no conditions yet");
        assert_eq!(
            describe_conditions(&[condition("Ready", "False", None)]),
            "Ready=False Because: said so"
        );
    }
}
