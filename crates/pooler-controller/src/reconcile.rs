//! One reconcile of a Pooler: observe → plan → apply → status.
//!
//! ```text
//!  apply:   spec usable? ─no─► Ready=False InvalidSpec (waits for a change of the Pooler)
//!           Cluster there? ─no─► Ready=False ClusterNotFound (woken by the Cluster's watch)
//!           Cluster Ready? ─no, nothing set up yet─► Ready=False ClusterNotReady
//!           │              ─no, PgBouncer running─► keep it (skip the SQL), Degraded
//!           ├─ 1. Secrets <cluster>-pooler-role, <pooler>-auth, <pooler>-tls (secrets.rs)
//!           ├─ 2. on the primary: role tusk_pooler, lookup() in every database (auth.rs)
//!           ├─ 3. ConfigMap, Service, PodDisruptionBudget, Deployment (children.rs)
//!           ├─ 4. every ready pod (pods.rs): settings == spec? else RELOAD, then SET;
//!           │     PAUSE / RESUME for spec.paused
//!           └─ status (status.rs): Ready, Progressing, Degraded, readyInstances, service
//!  cleanup: the last Pooler of a Cluster drops the lookup functions and tusk_pooler
//! ```
//!
//! Each write is skipped when the object (or role, function, setting) already matches, so a
//! pass over an unchanged Pooler sends reads only: the Kubernetes GETs, one catalog read per
//! database and one `SHOW CONFIG` per pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tusk_api::condition::{DesiredCondition, is_ready, set_condition};
use tusk_api::names;
use tusk_api::pooler::PoolerStatus;
use tusk_api::{Cluster, Pooler};
use tusk_runtime::Context;
use tusk_runtime::apply::{self, Outcome};
use tusk_runtime::postgres::{PrimaryTarget, target_for_cluster};
use tusk_runtime::scram::generate_password;

use crate::auth;
use crate::children::{self, tls_secret};
use crate::error::Error;
use crate::pods::{self, PodsSummary};
use crate::secrets::{self, ADMIN_PASSWORD_KEY, AUTH_PASSWORD_KEY};
use crate::status::{self, View};

/// How soon a Pooler is looked at again while something is under way (a rollout, a reload
/// the kubelet has not delivered yet, a pause).
pub const SETTLE_INTERVAL: Duration = Duration::from_secs(10);

/// The database the controller opens first on the primary.
const MAINTENANCE_DATABASE: &str = "postgres";

/// What every reconcile shares.
pub struct State {
    pub ctx: Context,
    /// Connect here instead of the Cluster's `-rw` Service (tests, a port-forward); TLS still
    /// verifies the Service's host name.
    pub primary_address: Option<SocketAddr>,
    /// Reach every pod's admin console here instead of the pod's IP (tests); TLS still
    /// verifies `<pooler>.<namespace>.svc`.
    pub console_address: Option<SocketAddr>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("ctx", &self.ctx)
            .field("primary_address", &self.primary_address)
            .field("console_address", &self.console_address)
            .finish()
    }
}

impl State {
    /// The state for `ctx`, reaching the Cluster and the pods where cluster DNS says.
    pub fn new(ctx: Context) -> Self {
        Self {
            ctx,
            primary_address: None,
            console_address: None,
        }
    }
}

/// Reconciles one Pooler (the controller's reconcile function).
pub async fn reconcile(pooler: Arc<Pooler>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.ctx.metrics.reconcile_timer();
    let namespace = namespace_of(&pooler).map_err(|e| *e)?;
    let api: Api<Pooler> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let finalizer_name = state.ctx.kind.finalizer();
    finalizer(&api, &finalizer_name, pooler, |event| async {
        match event {
            FinalizerEvent::Apply(pooler) => apply_pooler(&pooler, &state).await,
            FinalizerEvent::Cleanup(pooler) => cleanup_pooler(&pooler, &state).await,
        }
    })
    .await
    .map_err(crate::error::from_finalizer)
}

/// The controller's error policy: the runtime's, which records the metric and backs off.
pub fn error_policy(pooler: Arc<Pooler>, error: &Error, state: Arc<State>) -> Action {
    tusk_runtime::error_policy(pooler.as_ref(), error, &state.ctx)
}

/// The Pooler's namespace (a namespaced object always has one; the error is for the types).
fn namespace_of(pooler: &Pooler) -> Result<String, Box<Error>> {
    pooler
        .namespace()
        .ok_or_else(|| Box::new(Error::InvalidSpec("the Pooler has no namespace".to_owned())))
}

async fn apply_pooler(pooler: &Pooler, state: &State) -> Result<Action, Error> {
    match converge(pooler, state).await {
        Ok(converged) => {
            let view = View {
                cluster_ready: converged.cluster_ready,
                deployment: converged.deployment.as_ref(),
                pods: &converged.pods,
            };
            let status = status::desired_status(pooler, &view, now());
            publish_changes(pooler, state, &converged).await;
            write_status(pooler, state, &status).await?;
            let action = state.ctx.requeue(pooler);
            Ok(if status::settled(&status) {
                action
            } else {
                Action::requeue(SETTLE_INTERVAL)
            })
        }
        Err(error) => {
            report_failure(pooler, state, &error).await;
            Err(error)
        }
    }
}

/// What a successful pass found and did.
struct Converged {
    cluster_ready: bool,
    deployment: Option<Deployment>,
    pods: PodsSummary,
    issued_certificate: Option<&'static str>,
    auth_statements: usize,
}

/// The Pooler's observed children and Secrets, fetched once per pass.
struct Observed {
    role_secret: Option<Secret>,
    auth_secret: Option<Secret>,
    tls_secret: Option<Secret>,
    config_map: Option<ConfigMap>,
    service: Option<Service>,
    budget: Option<PodDisruptionBudget>,
    deployment: Option<Deployment>,
}

async fn converge(pooler: &Pooler, state: &State) -> Result<Converged, Error> {
    validate(pooler).map_err(|e| *e)?;
    let namespace = namespace_of(pooler).map_err(|e| *e)?;
    let name = pooler.name_any();
    let client = state.ctx.client.clone();
    let cluster_name = pooler.spec.cluster.name.clone();

    // Observe: the Cluster, its CA, what exists of ours.
    let cluster = Api::<Cluster>::namespaced(client.clone(), &namespace)
        .get_opt(&cluster_name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| Error::ClusterNotFound(cluster_name.clone()))?;
    let cluster_ready = cluster.metadata.deletion_timestamp.is_none()
        && cluster
            .status
            .as_ref()
            .is_some_and(|status| is_ready(&status.conditions, cluster.metadata.generation));
    let observed = observe(&client, &namespace, pooler, &cluster).await?;
    if !cluster_ready && observed.deployment.is_none() {
        return Err(Error::ClusterNotReady(cluster_name));
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let ca_name = cluster
        .spec
        .tls
        .ca_secret
        .as_ref()
        .map_or_else(|| names::ca_secret(&cluster_name), |s| s.name.clone());
    let ca_secret = secrets
        .get_opt(&ca_name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| Error::CaUnavailable {
            secret: ca_name.clone(),
            problem: "it does not exist".to_owned(),
        })?;
    let ca =
        tusk_certificates::load_ca(&ca_secret, &ca_name).map_err(|error| Error::CaUnavailable {
            secret: ca_name.clone(),
            problem: error.to_string(),
        })?;

    // Plan and apply the Secrets.
    let field_manager = state.ctx.field_manager();
    let role_password = match secrets::text(observed.role_secret.as_ref(), AUTH_PASSWORD_KEY) {
        Some(password) => password.to_owned(),
        None => generate_password().map_err(Error::Random)?,
    };
    let admin_password = match secrets::text(observed.auth_secret.as_ref(), ADMIN_PASSWORD_KEY) {
        Some(password) => password.to_owned(),
        None => generate_password().map_err(Error::Random)?,
    };
    let certified = secrets::certificate(
        pooler,
        &namespace,
        &ca,
        observed.tls_secret.as_ref(),
        jiff::Timestamp::now(),
    )?;
    let issued_certificate = match certified.status {
        tusk_certificates::CertificateStatus::Issued(reason) => Some(reason.as_str()),
        tusk_certificates::CertificateStatus::Reused => None,
    };
    let ca_pem = ca.certified.certificate_pem.clone();
    apply::ensure(
        &secrets,
        field_manager,
        secrets::desired_cluster_auth_secret(&cluster, &role_password),
        observed.role_secret.as_ref(),
    )
    .await?;
    apply::ensure(
        &secrets,
        field_manager,
        secrets::desired_auth_secret(
            pooler,
            &role_password,
            &admin_password,
            observed.auth_secret.as_ref(),
        ),
        observed.auth_secret.as_ref(),
    )
    .await?;
    apply::ensure(
        &secrets,
        field_manager,
        secrets::desired_tls_secret(pooler, &certified, &ca_pem),
        observed.tls_secret.as_ref(),
    )
    .await?;

    // The auth role and lookup function, while the primary is there to take them.
    let auth_statements = if cluster_ready {
        ensure_auth(state, &cluster, &role_password).await?
    } else {
        0
    };

    // The children.
    apply::ensure(
        &Api::namespaced(client.clone(), &namespace),
        field_manager,
        children::desired_config_map(pooler, &namespace),
        observed.config_map.as_ref(),
    )
    .await?;
    apply::ensure(
        &Api::namespaced(client.clone(), &namespace),
        field_manager,
        children::desired_service(pooler),
        observed.service.as_ref(),
    )
    .await?;
    apply::ensure(
        &Api::namespaced(client.clone(), &namespace),
        field_manager,
        children::desired_pod_disruption_budget(pooler),
        observed.budget.as_ref(),
    )
    .await?;
    let desired_deployment = children::desired_deployment(
        pooler,
        &children::PodInputs {
            image: &state.ctx.config.pgbouncer_image,
            server_ca_secret: &ca_name,
            exporter_image: state.ctx.config.pooler_exporter_image.as_deref(),
            certificate_pem: &certified.certificate_pem,
        },
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = match apply::ensure(
        &deployments,
        field_manager,
        desired_deployment,
        observed.deployment.as_ref(),
    )
    .await?
    {
        Outcome::Unchanged => observed.deployment,
        Outcome::Applied => deployments.get_opt(&name).await.map_err(Error::Kube)?,
    };

    // The pods: settings and pause state.
    let pods = match &deployment {
        Some(deployment) => {
            let console = pods::Console {
                host: secrets::pooler_host(&name, &namespace),
                ca_pem: ca_pem.into_bytes(),
                password: admin_password,
                address: state.console_address,
            };
            let resume = status::was_paused(pooler);
            pods::sync(&client, pooler, deployment, &console, resume).await?
        }
        None => PodsSummary::default(),
    };
    Ok(Converged {
        cluster_ready,
        deployment,
        pods,
        issued_certificate,
        auth_statements,
    })
}

/// Refuses what the schema should have refused (objects stored before a rule existed, or
/// written around it), before anything is applied.
fn validate(pooler: &Pooler) -> Result<(), Box<Error>> {
    let name = pooler.name_any();
    if name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(Box::new(Error::InvalidSpec(format!(
            "the Pooler's name {name:?} must be a DNS label (at most 63 lowercase letters, digits and '-', starting with a letter): it names the Service clients connect to; recreate the Pooler under such a name"
        ))));
    }
    let forbidden = pooler.spec.pgbouncer.forbidden_parameters();
    if !forbidden.is_empty() {
        return Err(Box::new(Error::InvalidSpec(format!(
            "spec.pgbouncer.parameters sets {} which tusk controls: remove them or use the matching field",
            forbidden.join(", ")
        ))));
    }
    Ok(())
}

async fn observe(
    client: &kube::Client,
    namespace: &str,
    pooler: &Pooler,
    cluster: &Cluster,
) -> Result<Observed, Error> {
    let name = pooler.name_any();
    let uid = pooler.uid();
    let cluster_uid = cluster.uid();
    let role_secret = get_owned::<Secret>(
        client,
        namespace,
        &secrets::cluster_auth_secret(&cluster.name_any()),
        cluster_uid.as_deref(),
        false,
    )
    .await?;
    let get = |object: String| {
        let uid = uid.clone();
        async move { get_owned::<Secret>(client, namespace, &object, uid.as_deref(), true).await }
    };
    let auth_secret = get(children::auth_secret(&name)).await?;
    let tls_secret = get(tls_secret(&name)).await?;
    Ok(Observed {
        role_secret,
        auth_secret,
        tls_secret,
        config_map: get_owned(client, namespace, &name, uid.as_deref(), true).await?,
        service: get_owned(client, namespace, &name, uid.as_deref(), true).await?,
        budget: get_owned(client, namespace, &name, uid.as_deref(), true).await?,
        deployment: get_owned(client, namespace, &name, uid.as_deref(), true).await?,
    })
}

/// The object `name` of kind `K`, refused when it exists and `owner_uid` is not among its
/// owners (as controller, when `controller`): tusk never takes over another's object.
async fn get_owned<K>(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    owner_uid: Option<&str>,
    controller: bool,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(object) = api.get_opt(name).await.map_err(Error::Kube)? else {
        return Ok(None);
    };
    let owned = object.owner_references().iter().any(|owner| {
        Some(owner.uid.as_str()) == owner_uid && (!controller || owner.controller == Some(true))
    });
    if owned {
        Ok(Some(object))
    } else {
        Err(Error::NameConflict {
            kind: kind_name::<K>(),
            name: name.to_owned(),
        })
    }
}

fn kind_name<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "Secret" => "Secret",
        "ConfigMap" => "ConfigMap",
        "Service" => "Service",
        "Deployment" => "Deployment",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        _ => "object",
    }
}

/// The primary of `cluster`, through [`State::primary_address`] when set.
async fn primary(state: &State, cluster: &Cluster) -> Result<PrimaryTarget, Error> {
    let mut target = target_for_cluster(&state.ctx.client, cluster)
        .await
        .map_err(|source| Error::Target {
            cluster: cluster.name_any(),
            source: Box::new(source),
        })?;
    if let Some(address) = state.primary_address {
        target.address = Some(address.ip());
        target.port = address.port();
    }
    Ok(target)
}

/// Role tusk_pooler and the lookup function in every database; returns how many statements
/// were written (0 in a steady state).
async fn ensure_auth(state: &State, cluster: &Cluster, password: &str) -> Result<usize, Error> {
    let target = primary(state, cluster).await?;
    let connect = |database: String| {
        let target = target.clone();
        async move {
            target
                .connect(&database, state.ctx.field_manager())
                .await
                .map_err(|source| Error::Connect {
                    cluster: cluster.name_any(),
                    source,
                })
        }
    };
    let superuser = connect(MAINTENANCE_DATABASE.to_owned()).await?;
    let mut written = auth::ensure_role(&superuser, password)
        .await
        .map_err(Error::sql("creating or updating role tusk_pooler"))?
        .len();
    let databases: Vec<String> = superuser
        .query(auth::DATABASES_QUERY, &[])
        .await
        .map_err(Error::sql("listing databases"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for database in databases {
        let client = if database == MAINTENANCE_DATABASE {
            None
        } else {
            Some(connect(database).await?)
        };
        written += auth::ensure_lookup(client.as_ref().unwrap_or(&superuser))
            .await
            .map_err(Error::sql("creating or updating tusk_pooler.lookup"))?
            .len();
    }
    Ok(written)
}

/// Events for what a pass changed.
async fn publish_changes(pooler: &Pooler, state: &State, converged: &Converged) {
    let recorder = &state.ctx.recorder;
    if let Some(reason) = converged.issued_certificate {
        let note = format!(
            "issued PgBouncer's certificate for {} from the Cluster's CA ({reason})",
            secrets::pooler_host(&pooler.name_any(), &pooler.namespace().unwrap_or_default())
        );
        tusk_runtime::events::publish(
            recorder,
            pooler,
            EventType::Normal,
            "CertificateIssued",
            &note,
        )
        .await;
    }
    if converged.auth_statements > 0 {
        let note = format!(
            "brought role tusk_pooler and its lookup function up to date ({} statements)",
            converged.auth_statements
        );
        tusk_runtime::events::publish(recorder, pooler, EventType::Normal, "AuthUpdated", &note)
            .await;
    }
    for (pod, settings) in &converged.pods.applied {
        let note = format!("{pod} now runs {} without a restart", settings.join(", "));
        tusk_runtime::events::publish(
            recorder,
            pooler,
            EventType::Normal,
            "SettingsApplied",
            &note,
        )
        .await;
    }
}

async fn write_status(pooler: &Pooler, state: &State, status: &PoolerStatus) -> Result<(), Error> {
    let api: Api<Pooler> = Api::namespaced(
        state.ctx.client.clone(),
        &namespace_of(pooler).map_err(|e| *e)?,
    );
    apply::ensure_status(
        &api,
        state.ctx.field_manager(),
        &pooler.name_any(),
        status,
        pooler.status.as_ref(),
    )
    .await?;
    Ok(())
}

/// Writes `Ready=False` with the error's reason and message (best effort: the error itself is
/// what the controller acts on). Progressing and Degraded keep what the last pass saw.
async fn report_failure(pooler: &Pooler, state: &State, error: &Error) {
    let mut status = pooler.status.clone().unwrap_or_default();
    let generation = pooler.metadata.generation;
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(false, error.reason(), error.to_string()),
        generation,
        now(),
    );
    status.observed_generation = generation;
    if let Err(write_error) = write_status(pooler, state, &status).await {
        tracing::warn!(
            name = %pooler.name_any(),
            error = %write_error,
            "cannot write the Pooler's status"
        );
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// The last Pooler of a Cluster takes tusk's auth role and lookup functions with it; the
/// children go by garbage collection (they are owned by the Pooler).
async fn cleanup_pooler(pooler: &Pooler, state: &State) -> Result<Action, Error> {
    let namespace = namespace_of(pooler).map_err(|e| *e)?;
    let client = state.ctx.client.clone();
    let cluster_name = &pooler.spec.cluster.name;
    let others = Api::<Pooler>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?
        .items
        .into_iter()
        .any(|other| {
            other.uid() != pooler.uid()
                && other.metadata.deletion_timestamp.is_none()
                && &other.spec.cluster.name == cluster_name
        });
    if others {
        return Ok(Action::await_change());
    }
    let Some(cluster) = Api::<Cluster>::namespaced(client.clone(), &namespace)
        .get_opt(cluster_name)
        .await
        .map_err(Error::Kube)?
        .filter(|cluster| cluster.metadata.deletion_timestamp.is_none())
    else {
        // The Cluster and its databases are gone or going; nothing to drop.
        return Ok(Action::await_change());
    };
    let ready = cluster
        .status
        .as_ref()
        .is_some_and(|status| is_ready(&status.conditions, cluster.metadata.generation));
    if !ready {
        return Err(Error::ClusterNotReady(cluster_name.clone()));
    }
    let target = primary(state, &cluster).await?;
    let connect = |database: &str| {
        let target = target.clone();
        let database = database.to_owned();
        async move {
            target
                .connect(&database, state.ctx.field_manager())
                .await
                .map_err(|source| Error::Connect {
                    cluster: cluster_name.clone(),
                    source,
                })
        }
    };
    let superuser = connect(MAINTENANCE_DATABASE).await?;
    let databases: Vec<String> = superuser
        .query(auth::DATABASES_QUERY, &[])
        .await
        .map_err(Error::sql("listing databases"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for database in &databases {
        let client = connect(database).await?;
        auth::drop_lookup(&client)
            .await
            .map_err(Error::sql("dropping schema tusk_pooler"))?;
    }
    auth::drop_role(&superuser)
        .await
        .map_err(Error::sql("dropping role tusk_pooler"))?;
    let secrets: Api<Secret> = Api::namespaced(client, &namespace);
    match secrets
        .delete(
            &secrets::cluster_auth_secret(cluster_name),
            &Default::default(),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(Error::Kube(error)),
    }
    tusk_runtime::events::publish(
        &state.ctx.recorder,
        pooler,
        EventType::Normal,
        "AuthRemoved",
        &format!(
            "the last Pooler of Cluster {cluster_name:?} is gone: dropped role tusk_pooler and its lookup function in {} databases",
            databases.len()
        ),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooler(name: &str, parameters: &str) -> Pooler {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  cluster: {{name: db}}\n  pgbouncer:\n    parameters: {parameters}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_pooler_setting_what_tusk_controls_is_refused_before_anything_is_applied() {
        let error = validate(&pooler("db-pooler", "{auth_type: trust}")).unwrap_err();
        assert_eq!(error.reason(), "InvalidSpec");
        assert!(error.to_string().contains("auth_type"), "{error}");
        assert!(error.is_permanent());
        assert!(validate(&pooler("db-pooler", "{server_lifetime: '3600'}")).is_ok());
    }

    #[test]
    fn a_pooler_name_that_cannot_name_a_service_is_refused() {
        let error = validate(&pooler("db.pooler", "{}")).unwrap_err();
        assert!(error.to_string().contains("DNS label"), "{error}");
    }
}
