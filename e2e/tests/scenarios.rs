//! What a user of tusk checks, on a real cluster with the chart installed (e2e/README.md).
//! Every scenario runs in namespaces of its own, deleted afterwards; without
//! `TUSK_E2E_KUBECONFIG` each prints why it is skipped and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tusk_api::backup::BackupPhase;
use tusk_api::cluster::InstanceRole;
use tusk_api::upgrade::UpgradePhase;
use tusk_api::{
    Backup, Cluster, ClusterStatus, PGUpgrade, Pooler, PostgresUser, ServiceBinding, labels,
};
use tusk_e2e::manifests::{self, ClusterOptions};
use tusk_e2e::sql::{Connection, ServiceKind, single_value};
use tusk_e2e::wait::{Poll, wait_for};
use tusk_e2e::{Scope, setup};

const READY: Duration = Duration::from_secs(600);
const LONG: Duration = Duration::from_secs(1200);

fn superuser(cluster: &str, service: ServiceKind) -> Connection {
    Connection::Superuser {
        cluster: cluster.to_owned(),
        service,
        database: "postgres".to_owned(),
    }
}

/// Creates a Cluster and waits until it is Ready and its `-rw` Service answers; returns it
/// with its instance image. (Ready means the primary runs and holds the leader lock; a
/// client's route to it — DNS, the Service's proxy — can lag a moment behind, so the first
/// query is retried for a bounded time rather than assumed to work at once.)
async fn ready_cluster(
    s: &Scope,
    name: &str,
    options: &ClusterOptions,
) -> anyhow::Result<(Cluster, String)> {
    s.create(&manifests::cluster(name, &s.namespace, options)?)
        .await?;
    let cluster: Cluster = s.wait_ready(name, READY).await?;
    let image = s.cluster_image(&s.namespace, name).await?;
    s.sql_eventually(
        &image,
        &superuser(name, ServiceKind::ReadWrite),
        "SELECT 1",
        Duration::from_secs(120),
    )
    .await?;
    Ok((cluster, image))
}

async fn status(s: &Scope, cluster: &str) -> anyhow::Result<ClusterStatus> {
    s.api::<Cluster>()
        .get(cluster)
        .await?
        .status
        .context("the Cluster has no status")
}

/// The instance pods of `cluster`: those its instance StatefulSets own (a Job's pod may carry
/// the same labels).
async fn pods(s: &Scope, cluster: &str) -> anyhow::Result<Vec<Pod>> {
    let selector = format!(
        "{}={cluster},{}=database",
        labels::CLUSTER,
        labels::COMPONENT
    );
    Ok(s.api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|pod| tusk_api::names::pod_instance(cluster, pod).is_some())
        .collect())
}

/// The pod of the instance `instance` (`<cluster>-<n>`).
async fn pod_of_instance(s: &Scope, cluster: &str, instance: &str) -> anyhow::Result<Pod> {
    pods(s, cluster)
        .await?
        .into_iter()
        .find(|p| p.labels().get(labels::INSTANCE_NAME).map(String::as_str) == Some(instance))
        .with_context(|| format!("no pod for instance {instance}"))
}

async fn patch_cluster(s: &Scope, name: &str, patch: serde_json::Value) -> anyhow::Result<Cluster> {
    Ok(s.api::<Cluster>()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// Waits until the Cluster is Ready for its current generation with `instances` ready.
async fn wait_instances(s: &Scope, name: &str, instances: i32) -> anyhow::Result<ClusterStatus> {
    let api = s.api::<Cluster>();
    wait_for(
        s.e2e.settings.timeout(READY),
        &format!("Cluster {name} Ready with {instances} instances"),
        || {
            let api = api.clone();
            async move {
                let c = api.get(name).await?;
                let generation = c.metadata.generation;
                let st = c.status.unwrap_or_default();
                let ready =
                    tusk_e2e::k8s::condition_is(&st.conditions, generation, "Ready", "True");
                Ok(
                    if ready
                        && st.ready_instances == instances
                        && st.instances.len() == instances as usize
                    {
                        Poll::Ready(st)
                    } else {
                        Poll::Pending(format!(
                            "{} ready of {} listed; {}",
                            st.ready_instances,
                            st.instances.len(),
                            tusk_e2e::k8s::describe_conditions(&st.conditions)
                        ))
                    },
                )
            }
        },
    )
    .await
}

async fn count_rows(s: &Scope, image: &str, cluster: &str, table: &str) -> anyhow::Result<i64> {
    let rows = s
        .sql(
            image,
            &superuser(cluster, ServiceKind::ReadWrite),
            &format!("SELECT count(*) FROM {table}"),
        )
        .await?;
    Ok(single_value(&rows)?.parse()?)
}

macro_rules! scenario {
    ($name:ident, $body:expr) => {
        #[tokio::test]
        async fn $name() {
            let Some(e2e) = setup().await else { return };
            Scope::run(&e2e, stringify!($name), $body).await.unwrap();
        }
    };
}

// Install: every CRD is established, the operator runs, and the API server applies the
// CRDs' validation (a Cluster with no instances is refused with a message saying why).
scenario!(operator_and_crds_are_installed, |s: Scope| async move {
    let crds = Api::<CustomResourceDefinition>::all(s.e2e.client.clone());
    for crd in tusk_api::crds() {
        let name = crd.name_any();
        let found = crds
            .get(&name)
            .await
            .with_context(|| format!("CRD {name} is not installed"))?;
        let established = found
            .status
            .and_then(|st| st.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        ensure!(established, "CRD {name} is not Established");
    }
    let ns = &s.e2e.settings.operator_namespace;
    let deployments = Api::<Deployment>::namespaced(s.e2e.client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=tusk"))
        .await?
        .items;
    ensure!(
        !deployments.is_empty(),
        "no tusk Deployment in {ns}: install the chart first"
    );
    for d in &deployments {
        let available = d
            .status
            .as_ref()
            .and_then(|st| st.available_replicas)
            .unwrap_or(0);
        ensure!(
            available >= 1,
            "Deployment {ns}/{} has no available replica",
            d.name_any()
        );
    }
    let mut bad = manifests::cluster("bad", &s.namespace, &ClusterOptions::small(17, 1))?;
    bad.spec.instances = 0;
    match s.create(&bad).await {
        Ok(_) => bail!("a Cluster with 0 instances was accepted"),
        Err(e) => ensure!(
            format!("{e:#}").contains("instances"),
            "refused without saying why: {e:#}"
        ),
    }
    Ok(())
});

// A three-instance Cluster becomes Ready with one primary and two streaming replicas; data
// written through -rw is readable through -ro.
scenario!(
    three_instances_reach_ready_and_replicate,
    |s: Scope| async move {
        let version = s.e2e.settings.postgres_version;
        let (_, image) = ready_cluster(&s, "db", &ClusterOptions::small(version, 3)).await?;
        let st = wait_instances(&s, "db", 3).await?;
        let primary = st.current_primary.clone().context("no currentPrimary")?;
        let primaries = st
            .instances
            .iter()
            .filter(|i| i.role == InstanceRole::Primary)
            .count();
        ensure!(primaries == 1, "one primary expected: {:?}", st.instances);
        ensure!(st.postgres_version == Some(version));
        for service in ["db-rw", "db-ro", "db-r", "db-pods"] {
            s.api::<Service>()
                .get(service)
                .await
                .with_context(|| format!("Service {service}"))?;
        }
        s.sql(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes VALUES (1, 'written on the primary');
         SELECT pg_is_in_recovery();",
        )
        .await
        .and_then(|rows| {
            ensure!(single_value(&rows)? == "f", "-rw reached a replica");
            Ok(())
        })?;
        let rows = s
            .sql_eventually(
                &image,
                &superuser("db", ServiceKind::ReadOnly),
                "SELECT pg_is_in_recovery(), body FROM notes WHERE id = 1",
                Duration::from_secs(120),
            )
            .await?;
        ensure!(
            rows == vec![vec!["t".to_owned(), "written on the primary".to_owned()]],
            "{rows:?}"
        );
        eprintln!("primary {primary}, replicas streaming");
        Ok(())
    }
);

// Deleting the -rw Service: the controller recreates it, Patroni republishes its leader
// Endpoints, and applications reconnect through it.
scenario!(deleted_rw_service_comes_back, |s: Scope| async move {
    let (_, image) = ready_cluster(
        &s,
        "db",
        &ClusterOptions::small(s.e2e.settings.postgres_version, 1),
    )
    .await?;
    s.sql(
        &image,
        &superuser("db", ServiceKind::ReadWrite),
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
    )
    .await?;
    let services = s.api::<Service>();
    let before = services.get("db-rw").await?.uid();
    services.delete("db-rw", &DeleteParams::default()).await?;
    wait_for(
        s.e2e.settings.timeout(Duration::from_secs(120)),
        "Service db-rw to be recreated",
        || {
            let services = services.clone();
            let before = before.clone();
            async move {
                Ok(match services.get_opt("db-rw").await? {
                    Some(svc) if svc.uid() != before => Poll::Ready(()),
                    Some(_) => Poll::Pending("the old Service is still there".to_owned()),
                    None => Poll::Pending("absent".to_owned()),
                })
            }
        },
    )
    .await?;
    let rows = s
        .sql_eventually(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "INSERT INTO t VALUES (2); SELECT count(*) FROM t;",
            Duration::from_secs(180),
        )
        .await?;
    ensure!(single_value(&rows)? == "2", "{rows:?}");
    Ok(())
});

// Deleting the primary's pod: Patroni promotes the replica, -rw follows the leader lock, the
// new primary accepts writes with the old data, and the old one rejoins as a replica.
scenario!(deleted_primary_pod_fails_over, |s: Scope| async move {
    let (_, image) = ready_cluster(
        &s,
        "db",
        &ClusterOptions::small(s.e2e.settings.postgres_version, 2),
    )
    .await?;
    wait_instances(&s, "db", 2).await?;
    s.sql(
        &image,
        &superuser("db", ServiceKind::ReadWrite),
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
    )
    .await?;
    let old = status(&s, "db")
        .await?
        .current_primary
        .context("no primary")?;
    let pod = pod_of_instance(&s, "db", &old).await?;
    s.api::<Pod>()
        .delete(&pod.name_any(), &DeleteParams::default())
        .await?;
    let api = s.api::<Cluster>();
    let new = wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        "a new primary",
        || {
            let api = api.clone();
            let old = old.clone();
            async move {
                let st = api.get("db").await?.status.unwrap_or_default();
                Ok(match st.current_primary {
                    Some(p) if p != old => Poll::Ready(p),
                    other => Poll::Pending(format!("primary {other:?}")),
                })
            }
        },
    )
    .await?;
    let rows = s
        .sql_eventually(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "INSERT INTO t VALUES (2); SELECT count(*) FROM t;",
            Duration::from_secs(180),
        )
        .await?;
    ensure!(
        single_value(&rows)? == "2",
        "data lost in the failover: {rows:?}"
    );
    let st = wait_instances(&s, "db", 2).await?;
    ensure!(
        st.current_primary.as_deref() == Some(new.as_str()),
        "primary moved again: {st:?}"
    );
    eprintln!("failover {old} -> {new}");
    Ok(())
});

// Scale 2 → 3 → 2: the new instance joins as a replica; scaling down never removes the
// primary; data stays.
scenario!(scale_two_three_two, |s: Scope| async move {
    let (_, image) = ready_cluster(
        &s,
        "db",
        &ClusterOptions::small(s.e2e.settings.postgres_version, 2),
    )
    .await?;
    wait_instances(&s, "db", 2).await?;
    s.sql(
        &image,
        &superuser("db", ServiceKind::ReadWrite),
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
    )
    .await?;
    patch_cluster(&s, "db", json!({"spec": {"instances": 3}})).await?;
    let st = wait_instances(&s, "db", 3).await?;
    let primary = st.current_primary.clone().context("no primary")?;
    ensure!(pods(&s, "db").await?.len() == 3);
    patch_cluster(&s, "db", json!({"spec": {"instances": 2}})).await?;
    let st = wait_instances(&s, "db", 2).await?;
    ensure!(
        st.current_primary.as_deref() == Some(primary.as_str()),
        "scaling down moved the primary: {st:?}"
    );
    wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        "two instance pods",
        || async {
            let n = pods(&s, "db").await?.len();
            Ok(if n == 2 {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("{n} pods"))
            })
        },
    )
    .await?;
    ensure!(count_rows(&s, &image, "db", "t").await? == 1);
    Ok(())
});

// A resource change rolls the instances one at a time, replicas first, and ends with a
// switchover so the old primary restarts last as a replica.
scenario!(
    resource_change_rolls_with_switchover,
    |s: Scope| async move {
        let (_, image) = ready_cluster(
            &s,
            "db",
            &ClusterOptions::small(s.e2e.settings.postgres_version, 2),
        )
        .await?;
        let before = wait_instances(&s, "db", 2).await?;
        let old_primary = before.current_primary.clone().context("no primary")?;
        s.sql(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        )
        .await?;
        patch_cluster(
            &s,
            "db",
            json!({"spec": {"resources": {"requests": {"cpu": "150m"}}}}),
        )
        .await?;
        wait_for(
            s.e2e.settings.timeout(LONG),
            "every instance restarted with 150m CPU",
            || async {
                let pods = pods(&s, "db").await?;
                let updated = pods
                    .iter()
                    .filter(|p| {
                        p.spec.as_ref().is_some_and(|spec| {
                            spec.containers.iter().any(|c| {
                                c.name == "postgres"
                                    && c.resources
                                        .as_ref()
                                        .and_then(|r| r.requests.as_ref())
                                        .and_then(|r| r.get("cpu"))
                                        == Some(&Quantity("150m".to_owned()))
                            })
                        })
                    })
                    .count();
                Ok(if updated == 2 {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{updated}/2 pods updated"))
                })
            },
        )
        .await?;
        let after = wait_instances(&s, "db", 2).await?;
        let new_primary = after.current_primary.clone().context("no primary")?;
        ensure!(
            new_primary != old_primary,
            "the rolling update ended without a switchover (primary still {old_primary})"
        );
        ensure!(
            after.last_primary_change != before.last_primary_change,
            "status.lastPrimaryChange did not move"
        );
        ensure!(count_rows(&s, &image, "db", "t").await? == 1);
        Ok(())
    }
);

// A PostgresUser gets its role, database and grants; the app logs in with the credentials
// Secret over verify-full TLS, owns its database, and cannot create roles.
scenario!(postgres_user_with_grants, |s: Scope| async move {
    let (_, image) = ready_cluster(
        &s,
        "db",
        &ClusterOptions::small(s.e2e.settings.postgres_version, 1),
    )
    .await?;
    s.create(&manifests::postgres_user("app", &s.namespace, "db", "app")?)
        .await?;
    let user: PostgresUser = s.wait_ready("app", Duration::from_secs(180)).await?;
    let secret_name = user
        .status
        .and_then(|st| st.secret_name)
        .unwrap_or_else(|| "db-app-credentials".to_owned());
    let secret = s.api::<Secret>().get(&secret_name).await?;
    let keys: BTreeSet<&String> = secret
        .data
        .as_ref()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    for key in ["username", "password", "uri", "ca.crt"] {
        ensure!(
            keys.contains(&key.to_owned()),
            "credentials Secret lacks {key}: {keys:?}"
        );
    }
    let app = Connection::Secret { name: secret_name };
    let rows = s
        .sql(
            &image,
            &app,
            "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1);
             SELECT current_user, current_database(), (SELECT count(*) FROM orders);",
        )
        .await?;
    ensure!(
        rows == vec![vec!["app".to_owned(), "app".to_owned(), "1".to_owned()]],
        "{rows:?}"
    );
    let refused = s.sql(&image, &app, "CREATE ROLE intruder").await;
    ensure!(refused.is_err(), "the app role could create roles");
    Ok(())
});

// A Pooler in front of a Cluster serves a binding: PgBouncer pods become Ready, the binding
// Secret points at the Pooler's Service, an application connects through it (TLS verify-full
// against the Cluster's CA, its own role looked up by auth_query) and writes; a settings
// change is applied without new pods; deleting the Pooler drops tusk's auth role.
scenario!(pooler_serves_a_binding, |s: Scope| async move {
    let options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    let (_, image) = ready_cluster(&s, "db", &options).await?;
    s.create(&manifests::postgres_user(
        "owner",
        &s.namespace,
        "db",
        "shop",
    )?)
    .await?;
    let owner: PostgresUser = s.wait_ready("owner", Duration::from_secs(180)).await?;
    let owner_secret = owner
        .status
        .and_then(|st| st.secret_name)
        .context("the owner has no credentials Secret")?;
    s.sql(
        &image,
        &Connection::Secret { name: owner_secret },
        "CREATE TABLE visits (n int); INSERT INTO visits VALUES (1);",
    )
    .await?;

    s.create(&manifests::pooler("db-pooler", &s.namespace, "db", 1)?)
        .await?;
    let pooler: Pooler = s.wait_ready("db-pooler", Duration::from_secs(240)).await?;
    let service = pooler.status.as_ref().and_then(|st| st.service.clone());
    ensure!(
        service.as_deref() == Some(&format!("db-pooler.{}.svc:5432", s.namespace)),
        "{service:?}"
    );

    s.create(&manifests::service_binding_through(
        "web",
        &s.namespace,
        "db",
        "shop",
        "db-pooler",
    )?)
    .await?;
    let bound: ServiceBinding = s.wait_ready("web", Duration::from_secs(180)).await?;
    let secret_name = bound
        .status
        .as_ref()
        .and_then(|st| st.binding.as_ref())
        .map(|b| b.name.clone())
        .context("no status.binding")?;
    let secret = s.api::<Secret>().get(&secret_name).await?;
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .unwrap_or_default()
    };
    ensure!(
        text("host") == format!("db-pooler.{}.svc", s.namespace),
        "host {}",
        text("host")
    );
    ensure!(
        text("jdbc-url").contains("prepareThreshold=0"),
        "{}",
        text("jdbc-url")
    );
    let rows = s
        .sql_eventually(
            &image,
            &Connection::Secret { name: secret_name },
            "INSERT INTO visits VALUES (2); SELECT count(*) FROM visits;",
            Duration::from_secs(120),
        )
        .await?;
    ensure!(single_value(&rows)? == "2", "{rows:?}");

    // A settings change: applied on the running pod (same pod, same Deployment template).
    let pods = || async {
        let list = s
            .api::<Pod>()
            .list(&ListParams::default().labels("tusk.dev/pooler=db-pooler"))
            .await?;
        anyhow::Ok(
            list.items
                .iter()
                .map(|p| p.name_any())
                .collect::<std::collections::BTreeSet<_>>(),
        )
    };
    let before = pods().await?;
    s.api::<Pooler>()
        .patch(
            "db-pooler",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pgbouncer": {"defaultPoolSize": 9}}})),
        )
        .await?;
    s.wait_condition(
        &s.namespace,
        "db-pooler",
        "Ready",
        "True",
        Duration::from_secs(120),
    )
    .await
    .map(|_: Pooler| ())?;
    ensure!(
        pods().await? == before,
        "a settings change replaced the pods"
    );

    // Deleting the last Pooler of the Cluster drops tusk's auth role.
    s.api::<Pooler>()
        .delete("db-pooler", &DeleteParams::default())
        .await?;
    let su = superuser("db", ServiceKind::ReadWrite);
    wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        "role tusk_pooler to be dropped",
        || async {
            let rows = s
                .sql(
                    &image,
                    &su,
                    "SELECT count(*) FROM pg_roles WHERE rolname = 'tusk_pooler';",
                )
                .await?;
            Ok(match single_value(&rows)? {
                "0" => Poll::Ready(()),
                other => Poll::Pending(format!("{other} such roles")),
            })
        },
    )
    .await?;
    Ok(())
});

// Cross-namespace binding: admitted by the Cluster's bindingPolicy it yields a working
// servicebinding.io Secret in the app's namespace; from an unlisted namespace it is refused
// with NamespaceNotAllowed and no Secret; deleting the binding removes its user.
scenario!(
    cross_namespace_binding_allowed_and_refused,
    |s: Scope| async move {
        let app_ns = s.extra_namespace("app").await?;
        let other_ns = s.extra_namespace("other").await?;
        let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
        options.binding_namespaces = vec![app_ns.clone()];
        let (_, image) = ready_cluster(&s, "db", &options).await?;
        s.create(&manifests::postgres_user(
            "owner",
            &s.namespace,
            "db",
            "shop",
        )?)
        .await?;
        let owner: PostgresUser = s.wait_ready("owner", Duration::from_secs(180)).await?;
        let owner_secret = owner
            .status
            .and_then(|st| st.secret_name)
            .context("the owner has no credentials Secret")?;
        // The schema's owner creates the table before any binding exists, as a migration
        // would; the binding's ReadWrite role then writes to it.
        s.sql(
            &image,
            &Connection::Secret { name: owner_secret },
            "CREATE TABLE visits (n int); INSERT INTO visits VALUES (1);",
        )
        .await?;

        s.create(&manifests::service_binding(
            "web",
            &app_ns,
            "db",
            &s.namespace,
            "shop",
        )?)
        .await?;
        let bound: ServiceBinding = s
            .wait_condition(&app_ns, "web", "Ready", "True", Duration::from_secs(180))
            .await?;
        let secret_name = bound
            .status
            .as_ref()
            .and_then(|st| st.binding.as_ref())
            .map(|b| b.name.clone())
            .context("no status.binding")?;
        let secret = s.api_in::<Secret>(&app_ns).get(&secret_name).await?;
        ensure!(
            secret.type_.as_deref() == Some(tusk_api::binding::secret::SECRET_TYPE),
            "{:?}",
            secret.type_
        );
        let rows = s
            .sql_in(
                &app_ns,
                &image,
                &Connection::Secret { name: secret_name },
                "INSERT INTO visits VALUES (2); SELECT count(*) FROM visits;",
            )
            .await?;
        ensure!(single_value(&rows)? == "2", "{rows:?}");

        s.create(&manifests::service_binding(
            "web",
            &other_ns,
            "db",
            &s.namespace,
            "shop",
        )?)
        .await?;
        let refused: ServiceBinding = s
            .wait_condition(&other_ns, "web", "Ready", "False", Duration::from_secs(120))
            .await?;
        let reason = refused
            .status
            .as_ref()
            .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.reason.clone());
        ensure!(
            reason.as_deref() == Some(tusk_api::binding::reasons::NAMESPACE_NOT_ALLOWED),
            "reason {reason:?}"
        );
        ensure!(
            refused
                .status
                .as_ref()
                .and_then(|st| st.binding.as_ref())
                .is_none(),
            "a refused binding got a Secret"
        );

        let user = bound
            .status
            .as_ref()
            .and_then(|st| st.user.as_ref())
            .map(|u| u.name.clone())
            .context("no status.user")?;
        s.api_in::<ServiceBinding>(&app_ns)
            .delete("web", &DeleteParams::default())
            .await?;
        let users = s.api::<PostgresUser>();
        wait_for(
            s.e2e.settings.timeout(Duration::from_secs(180)),
            "the binding's PostgresUser to be removed",
            || {
                let users = users.clone();
                let user = user.clone();
                async move {
                    Ok(match users.get_opt(&user).await? {
                        None => Poll::Ready(()),
                        Some(_) => Poll::Pending("still there".to_owned()),
                    })
                }
            },
        )
        .await?;
        Ok(())
    }
);

async fn backup_completed(s: &Scope, name: &str) -> anyhow::Result<Backup> {
    let api = s.api::<Backup>();
    wait_for(
        s.e2e.settings.timeout(READY),
        &format!("Backup {name} Completed"),
        || {
            let api = api.clone();
            async move {
                let b = api.get(name).await?;
                let st = b.status.clone().unwrap_or_default();
                Ok(match st.phase {
                    Some(BackupPhase::Completed) => Poll::Ready(b),
                    Some(BackupPhase::Failed) => {
                        return Err(anyhow::anyhow!("Backup {name} failed: {:?}", st.error));
                    }
                    phase => Poll::Pending(format!(
                        "{phase:?}; {}",
                        tusk_e2e::k8s::describe_conditions(&st.conditions)
                    )),
                })
            }
        },
    )
    .await
}

/// Switches WAL and waits until the switched segment is archived.
async fn archive_current_wal(s: &Scope, image: &str, cluster: &str) -> anyhow::Result<()> {
    let rows = s
        .sql(
            image,
            &superuser(cluster, ServiceKind::ReadWrite),
            "SELECT pg_walfile_name(pg_switch_wal())",
        )
        .await?;
    let segment = single_value(&rows)?.to_owned();
    wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        &format!("WAL {segment} archived"),
        || async {
            let rows = s
                .sql(
                    image,
                    &superuser(cluster, ServiceKind::ReadWrite),
                    "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
                )
                .await?;
            let last = single_value(&rows)?.to_owned();
            Ok(if last.as_str() >= segment.as_str() {
                Poll::Ready(())
            } else {
                Poll::Pending(format!("last archived {last:?}"))
            })
        },
    )
    .await
}

// Backup to a PVC repository, then a new Cluster restored to a point in time between two
// writes: the first is there, the second is not.
scenario!(backup_and_point_in_time_restore, |s: Scope| async move {
    let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    options.pvc_repository = Some("2Gi".to_owned());
    let (_, image) = ready_cluster(&s, "db", &options).await?;
    let rw = superuser("db", ServiceKind::ReadWrite);
    s.sql(
        &image,
        &rw,
        "CREATE TABLE events (name text); INSERT INTO events VALUES ('before-backup');",
    )
    .await?;
    s.create(&manifests::backup("first", &s.namespace, "db")?)
        .await?;
    backup_completed(&s, "first").await?;
    s.sql(&image, &rw, "INSERT INTO events VALUES ('in-target');")
        .await?;
    let target = s
        .sql(
            &image,
            &rw,
            r#"SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#,
        )
        .await?;
    let target = single_value(&target)?.to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.sql(&image, &rw, "INSERT INTO events VALUES ('after-target');")
        .await?;
    archive_current_wal(&s, &image, "db").await?;

    let mut restore = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    restore.pvc_repository = Some("2Gi".to_owned());
    restore.restore = Some((
        "db".to_owned(),
        manifests::REPOSITORY.to_owned(),
        target.clone(),
    ));
    s.create(&manifests::cluster("restored", &s.namespace, &restore)?)
        .await?;
    s.wait_ready::<Cluster>("restored", LONG).await?;
    let rows = s
        .sql_eventually(
            &image,
            &superuser("restored", ServiceKind::ReadWrite),
            "SELECT name FROM events ORDER BY name",
            Duration::from_secs(120),
        )
        .await?;
    ensure!(
        rows == vec![
            vec!["before-backup".to_owned()],
            vec!["in-target".to_owned()]
        ],
        "restored to {target}: {rows:?}"
    );
    Ok(())
});

// A BackupSchedule running every minute (and once at once) produces completed Backups it
// owns, and records its last success.
scenario!(backup_schedule_produces_backups, |s: Scope| async move {
    let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    options.pvc_repository = Some("2Gi".to_owned());
    ready_cluster(&s, "db", &options).await?;
    s.create(&manifests::backup_schedule(
        "every-minute",
        &s.namespace,
        "db",
    )?)
    .await?;
    let backups = s.api::<Backup>();
    let selector = format!("{}=every-minute", labels::SCHEDULE);
    wait_for(
        s.e2e.settings.timeout(READY),
        "two completed scheduled Backups",
        || {
            let backups = backups.clone();
            let selector = selector.clone();
            async move {
                let list = backups
                    .list(&ListParams::default().labels(&selector))
                    .await?
                    .items;
                let completed = list
                    .iter()
                    .filter(|b| {
                        b.status.as_ref().and_then(|st| st.phase) == Some(BackupPhase::Completed)
                    })
                    .count();
                if let Some(failed) = list.iter().find(|b| {
                    b.status.as_ref().and_then(|st| st.phase) == Some(BackupPhase::Failed)
                }) {
                    bail!(
                        "scheduled Backup {} failed: {:?}",
                        failed.name_any(),
                        failed.status.as_ref().and_then(|st| st.error.clone())
                    );
                }
                Ok(if completed >= 2 {
                    Poll::Ready(())
                } else {
                    Poll::Pending(format!("{completed} completed of {}", list.len()))
                })
            }
        },
    )
    .await?;
    let schedule = s
        .api::<tusk_api::BackupSchedule>()
        .get("every-minute")
        .await?;
    let st = schedule.status.context("no schedule status")?;
    ensure!(
        st.last_successful_time.is_some(),
        "lastSuccessfulTime not set: {st:?}"
    );
    ensure!(st.next_schedule_time.is_some(), "nextScheduleTime not set");
    Ok(())
});

// PGUpgrade to the next major: the PGUpgrade reaches Succeeded, the Cluster runs the new major
// with the data intact and its replica streaming again (its volume re-created from the new
// primary), and the completed Jobs' pods are left in place for their logs.
scenario!(major_upgrade_keeps_data, |s: Scope| async move {
    let from = s.e2e.settings.upgrade_from;
    let mut options = ClusterOptions::small(from, 2);
    options.pvc_repository = Some("2Gi".to_owned());
    let (_, image) = ready_cluster(&s, "db", &options).await?;
    s.sql(
        &image,
        &superuser("db", ServiceKind::ReadWrite),
        "CREATE TABLE kept AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 10000) g;",
    )
    .await?;
    s.create(&manifests::backup("before-upgrade", &s.namespace, "db")?)
        .await?;
    backup_completed(&s, "before-upgrade").await?;
    s.create(&manifests::pg_upgrade(
        "next-major",
        &s.namespace,
        "db",
        from,
    )?)
    .await?;
    // The Cluster first: the new major running on both instances (the replica's volume
    // re-created from the new primary), the data intact, the replica streaming, the Jobs'
    // pods kept. Then the PGUpgrade's own verdict, which also waits for the fresh backup.
    let clusters = s.api::<Cluster>();
    let upgrades = s.api::<PGUpgrade>();
    wait_for(
        s.e2e.settings.timeout(LONG),
        &format!(
            "Cluster db Ready on PostgreSQL {} with 2 instances",
            from + 1
        ),
        || {
            let clusters = clusters.clone();
            let upgrades = upgrades.clone();
            async move {
                let c = clusters.get("db").await?;
                let st = c.status.clone().unwrap_or_default();
                let u = upgrades.get("next-major").await?.status.unwrap_or_default();
                if u.phase == Some(UpgradePhase::Failed) {
                    bail!(
                        "upgrade failed: {}",
                        tusk_e2e::k8s::describe_conditions(&u.conditions)
                    );
                }
                let ready = tusk_e2e::k8s::condition_is(
                    &st.conditions,
                    c.metadata.generation,
                    "Ready",
                    "True",
                );
                Ok(
                    if ready && st.postgres_version == Some(from + 1) && st.ready_instances == 2 {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(format!(
                            "Cluster on {:?} with {} ready; PGUpgrade {:?} at {:?}: {}",
                            st.postgres_version,
                            st.ready_instances,
                            u.phase,
                            u.step,
                            tusk_e2e::k8s::describe_conditions(&u.conditions)
                        ))
                    },
                )
            }
        },
    )
    .await?;
    let image = s.cluster_image(&s.namespace, "db").await?;
    let rows = s
        .sql_eventually(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "SELECT current_setting('server_version_num')::int / 10000, count(*), sum(length(v)) FROM kept",
            Duration::from_secs(120),
        )
        .await?;
    ensure!(
        rows == vec![vec![
            (from + 1).to_string(),
            "10000".to_owned(),
            "320000".to_owned()
        ]],
        "{rows:?}"
    );
    let streaming = s
        .sql_eventually(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            Duration::from_secs(180),
        )
        .await?;
    ensure!(
        single_value(&streaming)? == "1",
        "the replica does not stream after the upgrade: {streaming:?}"
    );
    for job in ["next-major-check", "next-major-upgrade"] {
        let pods = s
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("job-name={job}")))
            .await?
            .items;
        ensure!(
            pods.iter()
                .any(|p| p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Succeeded")),
            "Job {job}'s completed pod is gone: {:?}",
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        );
    }
    let done: PGUpgrade = s
        .wait_condition(&s.namespace, "next-major", "Succeeded", "True", READY)
        .await?;
    ensure!(
        done.status.as_ref().and_then(|st| st.phase) == Some(UpgradePhase::Completed),
        "{:?}",
        done.status
    );
    Ok(())
});

/// Polls for `period`, failing if the Cluster's primary is ever not `expected`.
async fn primary_stays(
    s: &Scope,
    cluster: &str,
    expected: &str,
    period: Duration,
) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + period;
    while std::time::Instant::now() < until {
        let st = status(s, cluster).await?;
        if let Some(primary) = &st.current_primary {
            ensure!(
                primary == expected,
                "the primary moved again, {expected} -> {primary}: a switchover request must be carried out once"
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    Ok(())
}

// `tusk.dev/restart` (what `kubectl tusk restart` sets) recreates every instance once, the
// primary after a switchover, and is recorded in status when all are back; data survives.
scenario!(
    rolling_restart_recreates_every_instance,
    |s: Scope| async move {
        let (_, image) = ready_cluster(
            &s,
            "db",
            &ClusterOptions::small(s.e2e.settings.postgres_version, 2),
        )
        .await?;
        wait_instances(&s, "db", 2).await?;
        let rw = superuser("db", ServiceKind::ReadWrite);
        s.sql(
            &image,
            &rw,
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
        )
        .await?;
        let before: BTreeSet<String> = pods(&s, "db")
            .await?
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        ensure!(before.len() == 2, "pods before: {before:?}");
        patch_cluster(
            &s,
            "db",
            json!({"metadata": {"annotations": {labels::RESTART_ANNOTATION: "e2e-1"}}}),
        )
        .await?;
        let api = s.api::<Cluster>();
        wait_for(
            s.e2e.settings.timeout(Duration::from_secs(360)),
            "every instance restarted (status.restartRequest)",
            || {
                let api = api.clone();
                async move {
                    let st = api.get("db").await?.status.unwrap_or_default();
                    Ok(match st.restart_request.as_deref() {
                        Some("e2e-1") => Poll::Ready(()),
                        other => Poll::Pending(format!(
                            "restartRequest {other:?}, ready {}",
                            st.ready_instances
                        )),
                    })
                }
            },
        )
        .await?;
        let after: BTreeSet<String> = pods(&s, "db")
            .await?
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        ensure!(
            after.len() == 2 && after.is_disjoint(&before),
            "every pod is new: before {before:?}, after {after:?}"
        );
        s.wait_ready::<Cluster>("db", READY).await?;
        ensure!(count_rows(&s, &image, "db", "t").await? == 1);
        Ok(())
    }
);

// `tusk.dev/switchover=any` moves the primary exactly once: the annotation is removed, the
// primary then stays where it is, writes resume through -rw, and one Switchover event says
// what happened. (On a real cluster it once switched 13 times in two minutes.)
scenario!(switchover_any_moves_once, |s: Scope| async move {
    let (_, image) = ready_cluster(
        &s,
        "db",
        &ClusterOptions::small(s.e2e.settings.postgres_version, 3),
    )
    .await?;
    let before = wait_instances(&s, "db", 3).await?;
    let old = before.current_primary.clone().context("no primary")?;
    let rw = superuser("db", ServiceKind::ReadWrite);
    s.sql(
        &image,
        &rw,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
    )
    .await?;
    patch_cluster(
        &s,
        "db",
        json!({"metadata": {"annotations": {labels::SWITCHOVER_ANNOTATION: "any"}}}),
    )
    .await?;
    let api = s.api::<Cluster>();
    let new = wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        "the primary to move and the request to be cleared",
        || {
            let api = api.clone();
            let old = old.clone();
            async move {
                let c = api.get("db").await?;
                let requested = c.annotations().contains_key(labels::SWITCHOVER_ANNOTATION);
                let st = c.status.unwrap_or_default();
                Ok(match &st.current_primary {
                    Some(p) if *p != old && !requested => Poll::Ready(p.clone()),
                    other => Poll::Pending(format!(
                        "primary {other:?}, annotation still there: {requested}"
                    )),
                })
            }
        },
    )
    .await?;
    primary_stays(
        &s,
        "db",
        &new,
        s.e2e.settings.timeout(Duration::from_secs(60)),
    )
    .await?;
    let rows = s
        .sql_eventually(
            &image,
            &rw,
            "INSERT INTO t VALUES (2); SELECT count(*) FROM t;",
            Duration::from_secs(120),
        )
        .await?;
    ensure!(single_value(&rows)? == "2", "{rows:?}");
    let events = s
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&ListParams::default())
        .await?
        .items;
    let switchovers: Vec<_> = events
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Switchover")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Cluster")
        })
        .map(|e| {
            (
                e.note.clone().unwrap_or_default(),
                e.series.as_ref().map(|x| x.count),
            )
        })
        .collect();
    ensure!(
        switchovers.len() == 1 && switchovers[0].1.is_none(),
        "one Switchover event expected: {switchovers:?}"
    );
    ensure!(
        switchovers[0].0.contains(&old) && switchovers[0].0.contains(&new),
        "the event names the move {old} -> {new}: {switchovers:?}"
    );
    eprintln!("switchover {old} -> {new}: {}", switchovers[0].0);
    Ok(())
});

// A new Cluster with a repository archives WAL by itself (the stanza Job reaches the primary
// by the name cluster DNS serves for its pod) and a Backup completes, with no manual step.
scenario!(
    archiving_and_backup_on_a_new_cluster,
    |s: Scope| async move {
        let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
        options.pvc_repository = Some("2Gi".to_owned());
        ready_cluster(&s, "db", &options).await?;
        let started = std::time::Instant::now();
        s.wait_condition::<Cluster>(
            &s.namespace,
            "db",
            tusk_api::condition::types::CONTINUOUS_ARCHIVING,
            "True",
            Duration::from_secs(300),
        )
        .await?;
        eprintln!(
            "ContinuousArchiving=True {:.0} s after Ready",
            started.elapsed().as_secs_f64()
        );
        s.create(&manifests::backup("first", &s.namespace, "db")?)
            .await?;
        let backup = backup_completed(&s, "first").await?;
        let st = backup.status.context("no Backup status")?;
        ensure!(st.backup_label.is_some(), "no backupLabel: {st:?}");
        Ok(())
    }
);

// A restore to a time past the archived WAL cannot finish: the Cluster says so with a
// condition that names the cause, instead of "waiting for instance 1 to become ready".
scenario!(failed_restore_is_reported, |s: Scope| async move {
    let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    options.pvc_repository = Some("2Gi".to_owned());
    let (_, image) = ready_cluster(&s, "db", &options).await?;
    let rw = superuser("db", ServiceKind::ReadWrite);
    s.sql(
        &image,
        &rw,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1);",
    )
    .await?;
    s.create(&manifests::backup("first", &s.namespace, "db")?)
        .await?;
    backup_completed(&s, "first").await?;
    archive_current_wal(&s, &image, "db").await?;
    // An hour ahead of the source's clock: no archived WAL reaches it.
    let target = s
        .sql(
            &image,
            &rw,
            r#"SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#,
        )
        .await?;
    let target = single_value(&target)?.to_owned();
    let mut restore = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    restore.pvc_repository = Some("2Gi".to_owned());
    restore.restore = Some(("db".to_owned(), manifests::REPOSITORY.to_owned(), target));
    s.create(&manifests::cluster("restored", &s.namespace, &restore)?)
        .await?;
    let api = s.api::<Cluster>();
    let message = wait_for(
        s.e2e.settings.timeout(READY),
        "Cluster restored Ready=False BootstrapFailed",
        || {
            let api = api.clone();
            async move {
                let st = api.get("restored").await?.status.unwrap_or_default();
                let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
                Ok(match ready {
                    Some(c) if c.reason == tusk_api::cluster::reasons::BOOTSTRAP_FAILED => {
                        Poll::Ready(c.message.clone())
                    }
                    _ => Poll::Pending(tusk_e2e::k8s::describe_conditions(&st.conditions)),
                })
            }
        },
    )
    .await?;
    ensure!(
        message.contains("recovery ended before configured recovery target was reached"),
        "the condition does not name the cause: {message}"
    );
    ensure!(
        message.contains("spec.bootstrap.restore.target"),
        "the condition does not say what to change: {message}"
    );
    eprintln!("reported: {message}");
    Ok(())
});

// Storage auto-grow: filling the data volume past the threshold expands the PVC without a
// restart. Needs a StorageClass that allows expansion (kind's default does not).
#[tokio::test]
async fn storage_grows_when_nearly_full() {
    let Some(e2e) = setup().await else { return };
    let Some(class) = e2e.settings.expandable_storage_class.clone() else {
        eprintln!(
            "skipped: TUSK_E2E_EXPANDABLE_STORAGE_CLASS is not set (kind's `standard` class cannot expand volumes)"
        );
        return;
    };
    Scope::run(&e2e, "storage_grows_when_nearly_full", move |s: Scope| async move {
        let sc = Api::<StorageClass>::all(s.e2e.client.clone()).get(&class).await?;
        ensure!(sc.allow_volume_expansion == Some(true), "StorageClass {class} does not allow volume expansion");
        let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
        options.storage_class = Some(class.clone());
        options.auto_grow = Some((50, 50, "3Gi".to_owned()));
        let (_, image) = ready_cluster(&s, "db", &options).await?;
        // Unlogged: ~600 MB of table without as much WAL beside it on the same volume.
        s.sql(
            &image,
            &superuser("db", ServiceKind::ReadWrite),
            "CREATE UNLOGGED TABLE fill AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 500000) g;",
        )
        .await?;
        let pvcs = s.api::<PersistentVolumeClaim>();
        let before_pods: Vec<String> = pods(&s, "db").await?.iter().filter_map(|p| p.uid()).collect();
        wait_for(s.e2e.settings.timeout(READY), "the data volume to grow past 1Gi", || {
            let pvcs = pvcs.clone();
            async move {
                let pvc = pvcs.get("data-db-1-0").await?;
                let requested = pvc.spec.and_then(|sp| sp.resources).and_then(|r| r.requests).and_then(|r| r.get("storage").cloned());
                let capacity = pvc.status.and_then(|st| st.capacity).and_then(|c| c.get("storage").cloned());
                Ok(match (&requested, &capacity) {
                    (Some(r), Some(c)) if r.0 != "1Gi" && c.0 != "1Gi" => Poll::Ready(()),
                    _ => Poll::Pending(format!("requested {requested:?}, capacity {capacity:?}")),
                })
            }
        })
        .await?;
        let after_pods: Vec<String> = pods(&s, "db").await?.iter().filter_map(|p| p.uid()).collect();
        ensure!(before_pods == after_pods, "the instance restarted to grow its volume");
        ensure!(count_rows(&s, &image, "db", "fill").await? == 500_000);
        s.wait_ready::<Cluster>("db", READY).await?;
        Ok(())
    })
    .await
    .unwrap();
}

/// The metrics of every tusk operator pod, fetched from inside the cluster on the port named
/// `metrics` (the chart's `metrics.port`).
async fn operator_metrics(
    s: &Scope,
    image: &str,
) -> anyhow::Result<Vec<std::collections::BTreeMap<String, f64>>> {
    let ns = &s.e2e.settings.operator_namespace;
    let pods = Api::<Pod>::namespaced(s.e2e.client.clone(), ns)
        .list(&ListParams::default().labels("app.kubernetes.io/name=tusk"))
        .await?
        .items;
    let running: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Running"))
        .collect();
    ensure!(!running.is_empty(), "no running tusk operator pod in {ns}");
    let mut all = Vec::new();
    for pod in running {
        let port = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("metrics"))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .with_context(|| format!("pod {} has no port named metrics", pod.name_any()))?;
        all.push(s.pod_metrics(pod, port, image).await?);
    }
    Ok(all)
}

/// The value of the first series of `name` (any labels).
fn metric(samples: &std::collections::BTreeMap<String, f64>, name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(series, _)| *series == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| *v)
}

// The exporter sidecar serves tusk's queries from the mounted ConfigMap: the primary reports
// itself primary, archiving is on (a repository is configured), sizes and connections are
// there, and postgres_exporter loaded the queries file without error. The operator's own
// metrics count the Cluster among its managed objects.
scenario!(exporter_serves_tusk_queries, |s: Scope| async move {
    let mut options = ClusterOptions::small(s.e2e.settings.postgres_version, 1);
    options.pvc_repository = Some("2Gi".to_owned());
    let (_, image) = ready_cluster(&s, "db", &options).await?;
    let primary = status(&s, "db")
        .await?
        .current_primary
        .context("no primary")?;
    let pod = pod_of_instance(&s, "db", &primary).await?;
    let samples = wait_for(
        s.e2e.settings.timeout(Duration::from_secs(180)),
        "the exporter to serve tusk's queries",
        || async {
            let samples = s
                .pod_metrics(&pod, tusk_api::names::EXPORTER_PORT, &image)
                .await?;
            Ok(match metric(&samples, "tusk_pg_role_primary") {
                Some(_) => Poll::Ready(samples),
                None => Poll::Pending(format!(
                    "pg_up {:?}, {} series",
                    metric(&samples, "pg_up"),
                    samples.len()
                )),
            })
        },
    )
    .await?;
    ensure!(metric(&samples, "pg_up") == Some(1.0), "pg_up");
    ensure!(metric(&samples, "tusk_pg_role_primary") == Some(1.0));
    ensure!(metric(&samples, "tusk_pg_archiver_enabled") == Some(1.0));
    ensure!(metric(&samples, "tusk_pg_connections_max").is_some_and(|v| v > 0.0));
    ensure!(
        samples
            .keys()
            .any(|k| k.starts_with("tusk_pg_database_size_bytes{")
                && k.contains("database=\"postgres\"")),
        "no size for database postgres"
    );
    ensure!(
        metric(&samples, "pg_exporter_user_queries_load_error") == Some(0.0),
        "postgres_exporter could not load the queries file"
    );
    // The operator's own /metrics (port `metrics` of its pods): the replica that reconciles
    // Clusters counts this one among the objects it manages.
    let operator = operator_metrics(&s, &image).await?;
    let managed = operator
        .iter()
        .filter_map(|samples| samples.get("tusk_managed_objects{controller=\"cluster\"}"))
        .fold(0.0_f64, |max, v| max.max(*v));
    ensure!(
        managed >= 1.0,
        "no operator pod counts a managed Cluster: {operator:?}"
    );
    Ok(())
});
