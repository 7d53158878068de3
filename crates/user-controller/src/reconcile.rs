//! One reconcile of a PostgresUser: observe → plan → apply → status.
//!
//! ```text
//!  apply:   Cluster Ready? ─no─► Ready=False ClusterNotFound/ClusterNotReady, retry
//!           │yes
//!           ├─ password: credentials Secret (source of truth) × rotation request/interval
//!           ├─ 1. credentials Secret applied (only if it differs)
//!           ├─ 2. role, comment, password verifier, databases (engine::sync_roles: one
//!           │     catalog read, SQL only for what differs)
//!           ├─ 3. grants per database (one read per database, SQL only for what differs)
//!           └─ status (only if it differs) and events for what changed
//!  cleanup: Retain ─► finalizer removed
//!           Drop ─► Cluster gone? finalizer removed, no SQL
//!                ─► NOLOGIN, end sessions, REASSIGN/DROP OWNED per database, DROP ROLE
//! ```
//!
//! A pass that finds nothing to change sends one catalog read per Cluster plus one per
//! granted database, and no write — to PostgreSQL or to the Kubernetes API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use tusk_api::condition::{DesiredCondition, is_ready, set_condition};
use tusk_api::labels::ROTATE_PASSWORD_ANNOTATION;
use tusk_api::names;
use tusk_api::user::{PostgresUserStatus, check_role_name, reasons, rotation_request_marker};
use tusk_api::{Cluster, PostgresUser};
use tusk_runtime::Context;
use tusk_runtime::apply;
use tusk_runtime::postgres::PrimaryTarget;

use crate::catalog::{ObservedRole, read_cluster, read_grants};
use crate::credentials::{PasswordDecision, PasswordInput, decide_password, desired_secret};
use crate::engine::{self, MAINTENANCE_DATABASE, RoleFailure, RoleRequest, sync_roles};
use crate::error::Error;
use crate::password::{PasswordChecks, generate_password};
use crate::plan::{
    Change, DesiredRole, Refusal, SpecProblem, desired_grants, grant_databases, has_marker,
    owner_marker, plan_drop, plan_grants,
};
use crate::primary::Connections;
use tusk_runtime::postgres::target_for_cluster;

/// What every reconcile shares: the runtime context, open connections per Cluster and the
/// remembered password checks.
pub struct State {
    pub ctx: Context,
    pub connections: Connections,
    pub checks: Arc<PasswordChecks>,
    /// Connect here instead of the Cluster's `-rw` Service (tests, benchmarks, a
    /// port-forward); TLS still verifies the Service's host name.
    pub primary_address: Option<SocketAddr>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("ctx", &self.ctx)
            .field("primary_address", &self.primary_address)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The state for `ctx`, connecting to each Cluster's `-rw` Service.
    pub fn new(ctx: Context) -> Self {
        Self {
            connections: Connections::new(ctx.field_manager()),
            checks: Arc::default(),
            primary_address: None,
            ctx,
        }
    }

    /// Sends every connection to `address` (the certificate is still checked against the
    /// `-rw` Service's name).
    pub fn with_primary_address(mut self, address: SocketAddr) -> Self {
        self.primary_address = Some(address);
        self
    }

    async fn target(&self, cluster: &Cluster) -> Result<PrimaryTarget, Error> {
        let mut target = target_for_cluster(&self.ctx.client, cluster)
            .await
            .map_err(|source| Error::Target {
                cluster: cluster.name_any(),
                source,
            })?;
        if let Some(address) = self.primary_address {
            target.address = Some(address.ip());
            target.port = address.port();
        }
        Ok(target)
    }
}

/// Reconciles one PostgresUser (the controller's reconcile function).
pub async fn reconcile(user: Arc<PostgresUser>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.ctx.metrics.reconcile_timer();
    let namespace = user
        .namespace()
        .ok_or(Error::Spec(SpecProblem::Metadata("namespace")))?;
    let api: Api<PostgresUser> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let finalizer_name = state.ctx.kind.finalizer();
    finalizer(&api, &finalizer_name, user, |event| async {
        match event {
            FinalizerEvent::Apply(user) => apply_user(&user, &state).await,
            FinalizerEvent::Cleanup(user) => cleanup_user(&user, &state).await,
        }
    })
    .await
    .map_err(crate::error::from_finalizer)
}

/// The controller's error policy: the runtime's, which records the metric and backs off.
pub fn error_policy(user: Arc<PostgresUser>, error: &Error, state: Arc<State>) -> Action {
    tusk_runtime::error_policy(user.as_ref(), error, &state.ctx)
}

/// What a successful apply found and did.
struct Applied {
    role: ObservedRole,
    decision: PasswordDecision,
    changes: Vec<Change>,
    grant_statements: usize,
    owned_databases: Vec<String>,
    secret_name: String,
}

async fn apply_user(user: &PostgresUser, state: &State) -> Result<Action, Error> {
    match converge(user, state).await {
        Ok(applied) => {
            publish_changes(user, state, &applied).await;
            let status = ready_status(user, &applied);
            write_status(user, state, &status).await?;
            let mut action = state.ctx.requeue(user);
            if let Some(next) = applied
                .decision
                .next_rotation(user.spec.password.rotation_interval())
                .filter(|_| user.spec.password.is_generated())
            {
                let until = next.duration_since(jiff::Timestamp::now());
                let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
                if until < state.ctx.config.requeue_interval {
                    action = Action::requeue(until.max(Duration::from_secs(1)));
                }
            }
            Ok(action)
        }
        Err(error) => {
            report_failure(user, state, &error).await;
            Err(error)
        }
    }
}

/// Brings the role, its Secret, databases and grants in line with the spec.
async fn converge(user: &PostgresUser, state: &State) -> Result<Applied, Error> {
    let desired = DesiredRole::from_user(user)?;
    let namespace = user.namespace().ok_or(SpecProblem::Metadata("namespace"))?;
    let object_name = user.name_any();
    let client = state.ctx.client.clone();
    let cluster_name = user.spec.cluster.name.clone();

    // Observe: the Cluster, its primary, the password.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &namespace);
    let cluster = clusters
        .get_opt(&cluster_name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| Error::ClusterNotFound(cluster_name.clone()))?;
    let cluster_ready = cluster
        .status
        .as_ref()
        .is_some_and(|status| is_ready(&status.conditions, cluster.metadata.generation));
    if cluster.metadata.deletion_timestamp.is_some() || !cluster_ready {
        return Err(Error::ClusterNotReady(cluster_name));
    }
    let cluster_key = cluster
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{cluster_name}"));
    let target = state.target(&cluster).await?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let supplied = match &user.spec.password.secret {
        Some(reference) => {
            Some(read_supplied_password(&secrets, &reference.name, &reference.key).await?)
        }
        None => None,
    };
    let secret_name = names::user_credentials_secret(&cluster_name, &object_name);
    let existing = secrets.get_opt(&secret_name).await.map_err(Error::Kube)?;
    let request = user
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ROTATE_PASSWORD_ANNOTATION))
        .map(|value| rotation_request_marker(value));
    let input = supplied
        .as_deref()
        .map_or(PasswordInput::Generated, PasswordInput::Supplied);
    let interval = user
        .spec
        .password
        .rotation_interval()
        .filter(|_| user.spec.password.is_generated());
    let decision = decide_password(
        existing.as_ref(),
        input,
        request,
        interval,
        whole_seconds(jiff::Timestamp::now()),
        generate_password,
    )
    .map_err(Error::Random)?;

    // Apply 1: the Secret first — it is the source of truth, so the password PostgreSQL is
    // about to get is never one that exists only in this process (credentials.rs).
    let secret = desired_secret(user, &desired.name, &decision, target.ca_pem.as_deref())
        .ok_or(SpecProblem::Metadata("uid"))?;
    apply::ensure(
        &secrets,
        state.ctx.field_manager(),
        secret,
        existing.as_ref(),
    )
    .await?;

    // Apply 2: role, comment, password, databases.
    let maintenance = state
        .connections
        .client(&cluster_key, &target, MAINTENANCE_DATABASE)
        .await
        .map_err(|source| Error::Connect {
            cluster: cluster_name.clone(),
            source,
        })?;
    let grants = desired_grants(user);
    let role_name = desired.name.clone();
    let spec_databases: Vec<String> = desired.databases.iter().map(|d| d.name.clone()).collect();
    let request = RoleRequest {
        desired,
        password: decision.password.clone(),
        other_databases: grants.keys().cloned().collect(),
    };
    let outcome = sync_roles(
        &[maintenance],
        &state.checks,
        &cluster_key,
        vec![request],
        1,
    )
    .await
    .map_err(Error::sql("reading the role catalog"))?
    .pop()
    .ok_or(SpecProblem::Metadata("name"))?;
    let applied = match outcome.result {
        Ok(applied) => applied,
        Err(RoleFailure::Refused(refusal)) => return Err(refusal.into()),
        Err(RoleFailure::Sql(source)) => {
            return Err(Error::Sql {
                step: "applying the role",
                source,
            });
        }
    };

    // Apply 3: grants, database by database.
    let mut grant_statements = 0;
    for database in grant_databases(&grants, Some(&applied.role)) {
        match applied.databases.get(&database) {
            None if grants.contains_key(&database) => {
                return Err(Refusal::DatabaseNotFound(database).into());
            }
            Some(observed) if !observed.allows_connections => continue,
            _ => {}
        }
        let client = state
            .connections
            .client(&cluster_key, &target, &database)
            .await
            .map_err(|source| Error::Connect {
                cluster: cluster_name.clone(),
                source,
            })?;
        let observed = read_grants(&client, &database, applied.role.oid)
            .await
            .map_err(Error::sql("reading grants"))?;
        let plan = plan_grants(&role_name, grants.get(&database), &observed)?;
        engine::execute(&client, &plan.statements)
            .await
            .map_err(Error::sql("applying grants"))?;
        grant_statements += plan.statements.len();
    }

    let owned_databases = spec_databases
        .into_iter()
        .filter(|name| {
            applied
                .databases
                .get(name)
                .is_some_and(|db| db.owner == role_name)
        })
        .collect();
    Ok(Applied {
        role: applied.role,
        decision,
        changes: applied.changes,
        grant_statements,
        owned_databases,
        secret_name,
    })
}

async fn read_supplied_password(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<String, Error> {
    let missing = || Error::PasswordSecretNotFound {
        name: name.to_owned(),
        key: key.to_owned(),
    };
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(missing)?;
    let bytes = secret
        .data
        .and_then(|mut data| data.remove(key))
        .ok_or_else(missing)?;
    String::from_utf8(bytes.0)
        .ok()
        .filter(|password| !password.is_empty())
        .ok_or_else(missing)
}

fn ready_status(user: &PostgresUser, applied: &Applied) -> PostgresUserStatus {
    let mut status = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    let previous_reason = status
        .conditions
        .iter()
        .find(|c| c.type_ == tusk_api::condition::types::READY && c.status == "True")
        .filter(|c| c.observed_generation == generation)
        .map(|c| c.reason.clone());
    let nothing_changed = applied.changes.is_empty() && applied.grant_statements == 0;
    let rotated = applied.decision.rotated
        || (nothing_changed && previous_reason.as_deref() == Some(reasons::PASSWORD_ROTATED));
    let role = &applied.role.name;
    let (reason, message) = if rotated {
        (
            reasons::PASSWORD_ROTATED,
            format!(
                "role {role:?} matches the spec; its password was changed at {} and is in Secret {}",
                applied.decision.changed_at, applied.secret_name
            ),
        )
    } else {
        (
            reasons::APPLIED,
            format!(
                "role {role:?} matches the spec; its credentials are in Secret {}",
                applied.secret_name
            ),
        )
    };
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(true, reason, message),
        generation,
        Time(jiff::Timestamp::now()),
    );
    status.observed_generation = generation;
    status.role_name = Some(role.clone());
    status.role_oid = Some(applied.role.oid);
    status.secret_name = Some(applied.secret_name.clone());
    status.last_password_rotation = Some(Time(applied.decision.changed_at));
    status.password_rotation_request = applied.decision.handled_request.clone();
    status.databases = applied.owned_databases.clone();
    status
}

async fn write_status(
    user: &PostgresUser,
    state: &State,
    status: &PostgresUserStatus,
) -> Result<(), Error> {
    let namespace = user.namespace().ok_or(SpecProblem::Metadata("namespace"))?;
    let api: Api<PostgresUser> = Api::namespaced(state.ctx.client.clone(), &namespace);
    apply::ensure_status(
        &api,
        state.ctx.field_manager(),
        &user.name_any(),
        status,
        user.status.as_ref(),
    )
    .await?;
    Ok(())
}

/// Writes `Ready=False` with the error's reason and message (best effort: the error itself
/// is what the controller acts on).
async fn report_failure(user: &PostgresUser, state: &State, error: &Error) {
    let mut status = user.status.clone().unwrap_or_default();
    let generation = user.metadata.generation;
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(false, error.reason(), error.to_string()),
        generation,
        Time(jiff::Timestamp::now()),
    );
    status.observed_generation = generation;
    if let Some(role) = user.role_name() {
        status.role_name = Some(role.to_owned());
    }
    if let Err(write_error) = write_status(user, state, &status).await {
        tracing::warn!(
            name = %user.name_any(),
            error = %write_error,
            "cannot write the PostgresUser's status"
        );
    }
}

/// Events for what a pass changed: created, password rotated, drift corrected, updated.
async fn publish_changes(user: &PostgresUser, state: &State, applied: &Applied) {
    let role = &applied.role.name;
    let spec_changed =
        user.status.as_ref().and_then(|s| s.observed_generation) != user.metadata.generation;
    let mut events = Vec::new();
    let created = applied.changes.contains(&Change::RoleCreated);
    if created {
        events.push((
            "RoleCreated",
            format!("created role {role:?} (OID {})", applied.role.oid),
        ));
    }
    for change in &applied.changes {
        if let Change::DatabaseCreated(database) = change {
            events.push((
                "DatabaseCreated",
                format!("created database {database:?} owned by {role:?}"),
            ));
        }
    }
    if applied.decision.rotated {
        events.push((
            "PasswordRotated",
            format!(
                "set a new password for role {role:?} and wrote it to Secret {}",
                applied.secret_name
            ),
        ));
    }
    let corrected: Vec<String> = applied
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::AttributesChanged(attributes) => Some(attributes.join(", ")),
            Change::CommentSet => Some("ownership comment".to_owned()),
            Change::PasswordSet if !applied.decision.rotated => Some("password".to_owned()),
            _ => None,
        })
        .chain(
            (applied.grant_statements > 0)
                .then(|| format!("grants ({} statements)", applied.grant_statements)),
        )
        .collect();
    if !created && !corrected.is_empty() {
        let (reason, verb) = if spec_changed {
            ("RoleUpdated", "applied the spec to")
        } else {
            ("DriftCorrected", "corrected out-of-band changes to")
        };
        events.push((
            reason,
            format!("{verb} role {role:?}: {}", corrected.join("; ")),
        ));
    }
    for (reason, note) in events {
        publish(user, state, EventType::Normal, reason, note).await;
    }
}

async fn publish(user: &PostgresUser, state: &State, type_: EventType, reason: &str, note: String) {
    tusk_runtime::events::publish(&state.ctx.recorder, user, type_, reason, &note).await;
}

async fn cleanup_user(user: &PostgresUser, state: &State) -> Result<Action, Error> {
    match drop_role(user, state).await {
        Ok(()) => Ok(Action::await_change()),
        Err(error) => {
            report_failure(user, state, &error).await;
            Err(error)
        }
    }
}

/// Deletion: drops the role under `spec.deletion.policy: Drop`, keeps it otherwise. Never
/// touches a role this object did not create, and needs no SQL when the Cluster is gone.
async fn drop_role(user: &PostgresUser, state: &State) -> Result<(), Error> {
    let Some(role_name) = user.role_name().filter(|r| check_role_name(r).is_ok()) else {
        return Ok(());
    };
    if !user.spec.deletion.drops_role() {
        publish(
            user,
            state,
            EventType::Normal,
            "RoleRetained",
            format!("kept role {role_name:?} (spec.deletion.policy: Retain)"),
        )
        .await;
        return Ok(());
    }
    let namespace = user.namespace().ok_or(SpecProblem::Metadata("namespace"))?;
    let cluster_name = user.spec.cluster.name.clone();
    let clusters: Api<Cluster> = Api::namespaced(state.ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(&cluster_name).await.map_err(Error::Kube)? else {
        // The Cluster and its data are gone: there is no role left to drop.
        return Ok(());
    };
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let ready = cluster
        .status
        .as_ref()
        .is_some_and(|status| is_ready(&status.conditions, cluster.metadata.generation));
    if !ready {
        return Err(Error::ClusterNotReady(cluster_name));
    }
    let cluster_key = cluster
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{namespace}/{cluster_name}"));
    let target = state.target(&cluster).await?;
    let connect = |database: String| {
        let target = &target;
        let cluster_key = &cluster_key;
        let cluster_name = &cluster_name;
        async move {
            state
                .connections
                .client(cluster_key, target, &database)
                .await
                .map_err(|source| Error::Connect {
                    cluster: cluster_name.clone(),
                    source,
                })
        }
    };
    let maintenance = connect(MAINTENANCE_DATABASE.to_owned()).await?;
    let catalog = read_cluster(&maintenance, &[role_name], &[])
        .await
        .map_err(Error::sql("reading the role catalog"))?;
    let Some(role) = catalog.roles.get(role_name) else {
        return Ok(());
    };
    let uid = user.uid().unwrap_or_default();
    let ours = role
        .comment
        .as_deref()
        .is_some_and(|c| has_marker(c, &owner_marker(&uid)))
        && user
            .status
            .as_ref()
            .and_then(|s| s.role_oid)
            .is_none_or(|oid| oid == role.oid);
    if !ours {
        publish(
            user,
            state,
            EventType::Warning,
            "RoleNotDropped",
            format!("role {role_name:?} was not created for this PostgresUser; left in place"),
        )
        .await;
        return Ok(());
    }
    let plan = plan_drop(
        role,
        &user.spec.deletion,
        &target.user,
        MAINTENANCE_DATABASE,
    )?;
    let blocked = |step: &str, error: tokio_postgres::Error| {
        Error::Refused(Refusal::DropBlocked(format!(
            "dropping role {role_name:?} failed while {step}: {}",
            db_message(&error)
        )))
    };
    engine::execute(&maintenance, &plan.prepare)
        .await
        .map_err(|e| blocked("disabling its login", e))?;
    if plan.terminate_sessions {
        engine::terminate_sessions(&maintenance, role_name)
            .await
            .map_err(|e| blocked("ending its sessions", e))?;
    }
    for (database, statements) in &plan.per_database {
        let client = connect(database.clone()).await?;
        engine::execute(&client, statements)
            .await
            .map_err(|e| blocked(&format!("handling its objects in database {database:?}"), e))?;
    }
    engine::execute(&maintenance, std::slice::from_ref(&plan.drop_role))
        .await
        .map_err(|e| blocked("dropping it", e))?;
    state.checks.forget(&cluster_key, role_name);
    publish(
        user,
        state,
        EventType::Normal,
        "RoleDropped",
        format!("dropped role {role_name:?}"),
    )
    .await;
    Ok(())
}

/// `time` without its fraction: Kubernetes keeps times to the second, so a finer one would
/// differ from what is read back and make every pass write the status again.
fn whole_seconds(time: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_second(time.as_second()).unwrap_or(time)
}

/// PostgreSQL's message (and detail) for a failed statement, or the client error.
fn db_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_owned(),
        },
        None => error.to_string(),
    }
}
