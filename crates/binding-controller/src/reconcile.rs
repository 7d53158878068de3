//! One reconcile of a ServiceBinding: observe → decide → apply → status.
//!
//! ```text
//!  deleting? ── finalizer ours ─► delete its PostgresUsers (by label) ─► remove finalizer
//!  cross-namespace and no finalizer yet ─► add it (before anything is created)
//!  Cluster exists? ──no──► Ready=False ClusterNotFound (nothing created, nothing removed)
//!  consent (bindingPolicy)? ──no──► revoke: delete its PostgresUsers and its Secret,
//!  │                                Ready=False NamespaceNotAllowed
//!  PostgresUser applied (only if it differs; never one labelled for another binding)
//!  spec.pooler set? ── Pooler missing ──► Ready=False PoolerNotFound
//!  │                └─ pools another Cluster ──► Ready=False PoolerClusterMismatch
//!  │                   (the Secret, if any, stays; the Pooler's readiness is not awaited)
//!  Cluster Ready? ──no──► Ready=False ClusterNotReady      (the Secret, if any, stays)
//!  PostgresUser Ready, password in PostgreSQL? ──no──► Ready=False UserNotReady
//!  credentials Secret + the Cluster's CA ──► binding Secret pointing at the Pooler's Service
//!  │                                         or the Cluster's -rw (refused if the name is
//!  │                                         taken by a Secret this binding does not own)
//!  └─► Ready=True Bound, status.binding.name; events on bind, rotate, revoke
//! ```
//!
//! A pass that finds everything in place sends only reads: no API write, no event.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tusk_api::binding::{BindingReference, ServiceBindingStatus, UserReference, reasons};
use tusk_api::condition::{DesiredCondition, find_condition, is_ready, set_condition, types};
use tusk_api::labels::BINDING_UID;
use tusk_api::names::{self, keys};
use tusk_api::{Cluster, Pooler, PostgresUser, ServiceBinding, ServiceBindingSpec};
use tusk_runtime::Context;
use tusk_runtime::apply::{self, Outcome};

use crate::consent::{Decision, decide};
use crate::desired::{
    Connection, desired_secret, desired_user, endpoint, is_owned_by, secret_text,
};
use crate::error::Error;
use crate::naming::BindingIdentity;

/// Annotation the PostgresUser controller puts on a credentials Secret: when the password in it
/// was set (RFC 3339). The contract between the two controllers (tested in the operator crate,
/// which depends on both): a password newer than the PostgresUser's
/// `status.lastPasswordRotation` is not in PostgreSQL yet.
pub const PASSWORD_CHANGED_AT_ANNOTATION: &str = "tusk.dev/password-changed-at";
/// `app.kubernetes.io/component` of the PostgresUser controller's credentials Secrets.
pub const CREDENTIALS_COMPONENT: &str = "user-credentials";

/// Reconciles one ServiceBinding (the controller's reconcile function).
pub async fn reconcile(binding: Arc<ServiceBinding>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let identity = identity(&binding).map_err(Error::Metadata)?;
    let finalizer = ctx.kind.finalizer();
    let finalizer_index = binding.finalizers().iter().position(|f| *f == finalizer);
    if binding.metadata.deletion_timestamp.is_some() {
        if let Some(index) = finalizer_index {
            let deleted = delete_users(&binding, &identity, &ctx).await?;
            if !deleted.is_empty() {
                let note = format!(
                    "deleted PostgresUser {} in namespace {:?}; its role is dropped",
                    deleted.join(", "),
                    binding.spec.cluster_namespace(&identity.namespace)
                );
                publish(&binding, &ctx, EventType::Normal, "Unbound", note).await;
            }
            remove_finalizer(&binding, &finalizer, index, &ctx).await?;
        }
        return Ok(Action::await_change());
    }
    if binding.spec.is_cross_namespace(&identity.namespace) && finalizer_index.is_none() {
        // Nothing is created in the Cluster's namespace before the finalizer that deletes it
        // is in place. The patch raises a watch event, which brings the next pass.
        add_finalizer(&binding, &finalizer, &ctx).await?;
        return Ok(Action::await_change());
    }
    let mut progress = Progress::default();
    match bind(&binding, &identity, &ctx, &mut progress).await {
        Ok(bound) => {
            publish_changes(&binding, &ctx, &progress, &bound).await;
            write_status(&binding, &ctx, &bound_status(&binding, &identity, &bound)).await?;
            Ok(ctx.requeue(binding.as_ref()))
        }
        Err(error) => {
            publish_failure(&binding, &ctx, &progress, &error).await;
            report_failure(&binding, &identity, &ctx, &progress, &error).await;
            Err(error)
        }
    }
}

/// The controller's error policy: the runtime's, which records the metric and backs off.
pub fn error_policy(binding: Arc<ServiceBinding>, error: &Error, ctx: Arc<Context>) -> Action {
    tusk_runtime::error_policy(binding.as_ref(), error, &ctx)
}

/// The binding's identity, or the metadata field it lacks.
fn identity(binding: &ServiceBinding) -> Result<BindingIdentity, &'static str> {
    Ok(BindingIdentity {
        namespace: binding.namespace().ok_or("namespace")?,
        name: binding.metadata.name.clone().ok_or("name")?,
        uid: binding.uid().ok_or("uid")?,
    })
}

/// What a pass did before it stopped, for status and events.
#[derive(Debug, Default)]
struct Progress {
    /// The PostgresUser applied this pass, and whether it was new or changed.
    user: Option<(UserReference, Outcome, bool)>,
    /// Revocation: PostgresUsers deleted, and whether the binding Secret was.
    revoked_users: Vec<String>,
    revoked_secret: Option<String>,
}

/// What changed in the binding Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecretChange {
    Created,
    Rotated,
    Updated,
    Unchanged,
}

/// A binding in place.
#[derive(Debug)]
struct Bound {
    user: UserReference,
    role: String,
    secret: String,
    change: SecretChange,
}

async fn bind(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<Bound, Error> {
    let client = ctx.client.clone();
    let spec = &binding.spec;
    let cluster_namespace = spec.cluster_namespace(&identity.namespace).to_owned();
    let cluster_name = spec.cluster.name.clone();

    // Observe: the Cluster, and whether it admits this namespace.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), &cluster_namespace);
    let cluster = clusters
        .get_opt(&cluster_name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| Error::ClusterNotFound {
            namespace: cluster_namespace.clone(),
            name: cluster_name.clone(),
        })?;
    if let Decision::Refused(message) = consent(&cluster, identity, ctx).await? {
        revoke(binding, identity, ctx, progress).await?;
        return Err(Error::NamespaceNotAllowed { message });
    }

    // Apply 1: the dedicated PostgresUser.
    let users: Api<PostgresUser> = Api::namespaced(client.clone(), &cluster_namespace);
    let user_name = identity.user_name();
    let existing = users.get_opt(&user_name).await.map_err(Error::Kube)?;
    if let Some(existing) = &existing {
        let owner = existing.labels().get(BINDING_UID);
        if owner != Some(&identity.uid) {
            return Err(Error::UserOwnedElsewhere {
                namespace: cluster_namespace,
                name: user_name,
            });
        }
    }
    let desired = desired_user(binding, identity).ok_or(Error::Metadata("uid"))?;
    let outcome = apply::ensure(&users, ctx.field_manager(), desired, existing.as_ref()).await?;
    let user_ref = UserReference {
        name: user_name.clone(),
        namespace: cluster_namespace.clone(),
    };
    progress.user = Some((user_ref.clone(), outcome, existing.is_none()));

    // Observe: the Pooler to connect through, if the binding names one.
    let pooler = observe_pooler(spec, &cluster_namespace, ctx).await?;
    let endpoint = endpoint(spec, &cluster_namespace, pooler.as_ref())?;

    // Wait: the Cluster Ready, the PostgresUser Ready for its current spec.
    if let Some(problem) = cluster_not_ready(&cluster) {
        return Err(Error::ClusterNotReady(problem));
    }
    let user = match (outcome, existing) {
        (Outcome::Unchanged, Some(user)) => user,
        // Just created or changed: its controller has not seen this spec yet. (The same
        // message as the next pass writes while it waits, so that pass writes nothing.)
        _ => {
            return Err(Error::UserNotReady(spec_not_applied(
                &user_name,
                &cluster_namespace,
            )));
        }
    };
    if let Some(problem) = user_not_ready(&user) {
        return Err(Error::UserNotReady(problem));
    }

    // Observe: the credentials (the PostgresUser's Secret) and the Cluster's CA.
    let cluster_secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster_namespace);
    let credentials_name = names::user_credentials_secret(&cluster_name, &user_name);
    let waiting_for_credentials = |detail: &str| {
        Error::UserNotReady(format!(
            "Secret {credentials_name:?} of PostgresUser {user_name:?} in namespace {cluster_namespace:?} {detail}; waiting for the PostgresUser controller"
        ))
    };
    let credentials = cluster_secrets
        .get_opt(&credentials_name)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| waiting_for_credentials("does not exist yet"))?;
    let (Some(username), Some(password)) = (
        secret_text(&credentials, keys::USERNAME),
        secret_text(&credentials, keys::PASSWORD),
    ) else {
        return Err(waiting_for_credentials("has no username or password"));
    };
    let ca_name = names::client_ca_secret(&cluster);
    let ca_pem = cluster_secrets
        .get_opt(&ca_name)
        .await
        .map_err(Error::Kube)?
        .and_then(|secret| secret.data?.remove(keys::CA_CERT))
        .map(|bytes| bytes.0)
        .filter(|pem| !pem.is_empty())
        .ok_or_else(|| {
            Error::ClusterNotReady(format!(
                "Secret {ca_name:?} in namespace {cluster_namespace:?} has no ca.crt (the Cluster's CA) yet; waiting for it"
            ))
        })?;

    // Apply 2: the binding Secret, never over one this binding does not own.
    let secrets: Api<Secret> = Api::namespaced(client, &identity.namespace);
    let secret_name = spec.secret_name(&identity.name).to_owned();
    let observed = secrets.get_opt(&secret_name).await.map_err(Error::Kube)?;
    if let Some(observed) = &observed
        && !is_owned_by(observed, &identity.uid)
    {
        return Err(Error::SecretConflict { name: secret_name });
    }
    if rotation_in_flight(&user, &credentials) {
        // The new password reaches PostgreSQL in a moment and the PostgresUser's status then
        // changes, which wakes this binding. Until then the Secret keeps the password that
        // works.
        return match observed {
            Some(_) => Ok(Bound {
                user: user_ref,
                role: username,
                secret: secret_name,
                change: SecretChange::Unchanged,
            }),
            None => Err(waiting_for_credentials(
                "holds a new password that PostgreSQL does not have yet",
            )),
        };
    }
    let connection = Connection::new(endpoint, &spec.database, username.clone(), password, ca_pem);
    let desired = desired_secret(binding, identity, &secret_name, &connection)
        .ok_or(Error::Metadata("uid"))?;
    let outcome = apply::ensure(&secrets, ctx.field_manager(), desired, observed.as_ref()).await?;
    let change = match (&observed, outcome) {
        (_, Outcome::Unchanged) => SecretChange::Unchanged,
        (None, Outcome::Applied) => SecretChange::Created,
        (Some(observed), Outcome::Applied) => {
            if secret_text(observed, keys::PASSWORD).as_deref()
                == Some(connection.password.as_str())
            {
                SecretChange::Updated
            } else {
                SecretChange::Rotated
            }
        }
    };
    Ok(Bound {
        user: user_ref,
        role: username,
        secret: secret_name,
        change,
    })
}

/// The Pooler `spec.pooler` names, in the Cluster's namespace; `None` when it names none or
/// that Pooler does not exist (read only when named).
async fn observe_pooler(
    spec: &ServiceBindingSpec,
    cluster_namespace: &str,
    ctx: &Context,
) -> Result<Option<Pooler>, Error> {
    let Some(name) = spec.pooler_name() else {
        return Ok(None);
    };
    let poolers: Api<Pooler> = Api::namespaced(ctx.client.clone(), cluster_namespace);
    poolers.get_opt(name).await.map_err(Error::Kube)
}

/// Consent, reading the binding namespace's labels only when the policy's selector needs them.
async fn consent(
    cluster: &Cluster,
    identity: &BindingIdentity,
    ctx: &Context,
) -> Result<Decision, Error> {
    match decide(cluster, &identity.namespace, None) {
        Decision::NeedsLabels => {
            let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
            let namespace = namespaces
                .get_metadata_opt(&identity.namespace)
                .await
                .map_err(|source| Error::NamespaceUnreadable {
                    namespace: identity.namespace.clone(),
                    source: Box::new(source),
                })?;
            let labels = namespace
                .and_then(|n| n.metadata.labels)
                .unwrap_or_default();
            Ok(decide(cluster, &identity.namespace, Some(&labels)))
        }
        decision => Ok(decision),
    }
}

/// Consent withdrawn (or never given): the binding's PostgresUsers go (their roles are dropped)
/// and so does its Secret.
async fn revoke(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    ctx: &Context,
    progress: &mut Progress,
) -> Result<(), Error> {
    progress.revoked_users = delete_users(binding, identity, ctx).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &identity.namespace);
    let name = binding.spec.secret_name(&identity.name);
    if let Some(secret) = secrets.get_opt(name).await.map_err(Error::Kube)?
        && is_owned_by(&secret, &identity.uid)
    {
        delete_ignoring_absent(&secrets, name).await?;
        progress.revoked_secret = Some(name.to_owned());
    }
    Ok(())
}

/// Deletes every PostgresUser labelled with this binding's UID (in the Cluster's namespace)
/// that is not already being deleted; returns their names.
async fn delete_users(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let namespace = binding.spec.cluster_namespace(&identity.namespace);
    let users: Api<PostgresUser> = Api::namespaced(ctx.client.clone(), namespace);
    let found = users
        .list(&ListParams::default().labels(&identity.user_selector()))
        .await
        .map_err(Error::Kube)?;
    let mut deleted = Vec::new();
    for user in found {
        if user.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = user.name_any();
        delete_ignoring_absent(&users, &name).await?;
        deleted.push(name);
    }
    Ok(deleted)
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(Error::Kube(error)),
    }
}

/// Why `cluster` cannot serve the binding now, if it cannot.
fn cluster_not_ready(cluster: &Cluster) -> Option<String> {
    let name = cluster.name_any();
    if cluster.metadata.deletion_timestamp.is_some() {
        return Some(format!("Cluster {name:?} is being deleted"));
    }
    let conditions = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if is_ready(conditions, cluster.metadata.generation) {
        return None;
    }
    Some(match find_condition(conditions, types::READY) {
        Some(ready) => format!(
            "Cluster {name:?} is not Ready ({}: {}); the binding waits for it",
            ready.reason, ready.message
        ),
        None => format!("Cluster {name:?} is not Ready yet; the binding waits for it"),
    })
}

/// Why `user` cannot hand out credentials now, if it cannot.
fn user_not_ready(user: &PostgresUser) -> Option<String> {
    let name = user.name_any();
    let namespace = user.namespace().unwrap_or_default();
    if user.metadata.deletion_timestamp.is_some() {
        return Some(format!(
            "PostgresUser {name:?} in namespace {namespace:?} is being deleted"
        ));
    }
    let conditions = user
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if is_ready(conditions, user.metadata.generation) {
        return None;
    }
    Some(match find_condition(conditions, types::READY) {
        Some(ready) if ready.observed_generation == user.metadata.generation => format!(
            "PostgresUser {name:?} in namespace {namespace:?} is not Ready ({}: {})",
            ready.reason, ready.message
        ),
        _ => spec_not_applied(&name, &namespace),
    })
}

fn spec_not_applied(name: &str, namespace: &str) -> String {
    format!(
        "PostgresUser {name:?} in namespace {namespace:?} has not applied its current spec yet; waiting for the PostgresUser controller"
    )
}

/// Whether the credentials Secret holds a password set after the one the PostgresUser reports
/// applied: the PostgresUser controller writes the Secret first, then PostgreSQL, then status.
fn rotation_in_flight(user: &PostgresUser, credentials: &Secret) -> bool {
    let changed_at = credentials
        .annotations()
        .get(PASSWORD_CHANGED_AT_ANNOTATION)
        .and_then(|text| text.parse::<jiff::Timestamp>().ok());
    let applied = user
        .status
        .as_ref()
        .and_then(|s| s.last_password_rotation.as_ref())
        .map(|time| time.0);
    match (changed_at, applied) {
        (Some(changed_at), Some(applied)) => changed_at > applied,
        _ => false,
    }
}

async fn add_finalizer(
    binding: &ServiceBinding,
    finalizer: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let ops = match &binding.metadata.finalizers {
        Some(current) => serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]),
        // `test` against null fails on a missing field in some implementations; the
        // resourceVersion guards the same race (someone else adding a finalizer first).
        None => serde_json::json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": binding.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]),
    };
    patch_finalizers(binding, ops, ctx).await
}

async fn remove_finalizer(
    binding: &ServiceBinding,
    finalizer: &str,
    index: usize,
    ctx: &Context,
) -> Result<(), Error> {
    let path = format!("/metadata/finalizers/{index}");
    let ops = serde_json::json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]);
    patch_finalizers(binding, ops, ctx).await
}

async fn patch_finalizers(
    binding: &ServiceBinding,
    ops: serde_json::Value,
    ctx: &Context,
) -> Result<(), Error> {
    let namespace = binding.namespace().ok_or(Error::Metadata("namespace"))?;
    let api: Api<ServiceBinding> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|_| Error::Metadata("finalizer"))?;
    api.patch(
        &binding.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map_err(Error::FinalizerPatch)?;
    Ok(())
}

fn bound_status(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    bound: &Bound,
) -> ServiceBindingStatus {
    let mut status = binding.status.clone().unwrap_or_default();
    let generation = binding.metadata.generation;
    let mut message = format!(
        "Secret {} holds the credentials of role {:?} (PostgresUser {} in namespace {:?}) for database {:?} with {} access",
        bound.secret,
        bound.role,
        bound.user.name,
        bound.user.namespace,
        binding.spec.database,
        binding.spec.access.as_str()
    );
    if let Some(pooler) = binding.spec.pooler_name() {
        message.push_str(&format!(", through Pooler {pooler:?}"));
    }
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(true, reasons::BOUND, message),
        generation,
        Time(jiff::Timestamp::now()),
    );
    status.observed_generation = generation;
    status.binding = Some(BindingReference {
        name: bound.secret.clone(),
    });
    status.user = Some(bound.user.clone());
    status.role_name = Some(identity.role_name());
    status
}

async fn write_status(
    binding: &ServiceBinding,
    ctx: &Context,
    status: &ServiceBindingStatus,
) -> Result<(), Error> {
    let namespace = binding.namespace().ok_or(Error::Metadata("namespace"))?;
    let api: Api<ServiceBinding> = Api::namespaced(ctx.client.clone(), &namespace);
    apply::ensure_status(
        &api,
        ctx.field_manager(),
        &binding.name_any(),
        status,
        binding.status.as_ref(),
    )
    .await?;
    Ok(())
}

/// `Ready=False` with the error's reason and message. `status.binding` is cleared when the
/// Secret is gone (revoked) or is not this binding's (conflict); `status.user` when the user
/// was revoked.
fn failure_status(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    progress: &Progress,
    error: &Error,
) -> ServiceBindingStatus {
    let mut status = binding.status.clone().unwrap_or_default();
    let generation = binding.metadata.generation;
    set_condition(
        &mut status.conditions,
        DesiredCondition::ready(false, error.reason(), error.to_string()),
        generation,
        Time(jiff::Timestamp::now()),
    );
    status.observed_generation = generation;
    match error {
        Error::NamespaceNotAllowed { .. } => {
            status.binding = None;
            status.user = None;
            status.role_name = None;
        }
        Error::SecretConflict { .. } => status.binding = None,
        _ => {}
    }
    if let Some((user, _, _)) = &progress.user {
        status.user = Some(user.clone());
        status.role_name = Some(identity.role_name());
    }
    status
}

/// Writes `Ready=False` with the error's reason and message (best effort: the error itself is
/// what the controller acts on). `status.binding` is cleared when the Secret is gone (revoked)
/// or is not this binding's (conflict).
async fn report_failure(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    ctx: &Context,
    progress: &Progress,
    error: &Error,
) {
    let status = failure_status(binding, identity, progress, error);
    if let Err(write_error) = write_status(binding, ctx, &status).await {
        tracing::warn!(
            namespace = %identity.namespace,
            name = %identity.name,
            error = %write_error,
            "cannot write the ServiceBinding's status"
        );
    }
}

/// Events for what a successful pass changed: the user created or updated, the Secret written
/// (bound), rotated or updated.
async fn publish_changes(
    binding: &ServiceBinding,
    ctx: &Context,
    progress: &Progress,
    bound: &Bound,
) {
    publish_user_change(binding, ctx, progress).await;
    let (reason, note) = match bound.change {
        SecretChange::Unchanged => return,
        SecretChange::Created => (
            "Bound",
            format!(
                "wrote Secret {} with the credentials of role {:?} (PostgresUser {} in namespace {:?})",
                bound.secret, bound.role, bound.user.name, bound.user.namespace
            ),
        ),
        SecretChange::Rotated => (
            "CredentialsRotated",
            format!(
                "the password of role {:?} changed; Secret {} holds the new one",
                bound.role, bound.secret
            ),
        ),
        SecretChange::Updated => (
            "SecretUpdated",
            format!("updated the connection details in Secret {}", bound.secret),
        ),
    };
    publish(binding, ctx, EventType::Normal, reason, note).await;
}

async fn publish_user_change(binding: &ServiceBinding, ctx: &Context, progress: &Progress) {
    let Some((user, Outcome::Applied, created)) = &progress.user else {
        return;
    };
    let (reason, verb) = if *created {
        ("UserCreated", "created")
    } else {
        ("UserUpdated", "applied the binding's access to")
    };
    let note = format!(
        "{verb} PostgresUser {} in namespace {:?} (access {} on database {:?})",
        user.name,
        user.namespace,
        binding.spec.access.as_str(),
        binding.spec.database
    );
    publish(binding, ctx, EventType::Normal, reason, note).await;
}

/// Events for a failed pass: a revocation (something was deleted), or a user applied on the
/// way to a wait.
async fn publish_failure(
    binding: &ServiceBinding,
    ctx: &Context,
    progress: &Progress,
    error: &Error,
) {
    publish_user_change(binding, ctx, progress).await;
    if progress.revoked_users.is_empty() && progress.revoked_secret.is_none() {
        return;
    }
    let mut removed: Vec<String> = progress
        .revoked_users
        .iter()
        .map(|user| format!("PostgresUser {user} (its role is dropped)"))
        .collect();
    if let Some(secret) = &progress.revoked_secret {
        removed.push(format!("Secret {secret}"));
    }
    let note = format!(
        "binding revoked ({}): deleted {}",
        error.reason(),
        removed.join(" and ")
    );
    publish(binding, ctx, EventType::Warning, "BindingRevoked", note).await;
}

async fn publish(
    binding: &ServiceBinding,
    ctx: &Context,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tusk_runtime::events::publish(&ctx.recorder, binding, type_, reason, &note).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use std::collections::BTreeMap;

    fn user_with_rotation(at: Option<i64>) -> PostgresUser {
        let mut user: PostgresUser = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: u, namespace: db, generation: 1}
spec: {cluster: {name: db}}
",
        )
        .unwrap();
        user.status = Some(tusk_api::PostgresUserStatus {
            last_password_rotation: at.map(|s| Time(jiff::Timestamp::from_second(s).unwrap())),
            ..Default::default()
        });
        user
    }

    fn credentials(changed_at: Option<i64>) -> Secret {
        let mut secret = Secret::default();
        if let Some(at) = changed_at {
            secret.metadata.annotations = Some(BTreeMap::from([(
                PASSWORD_CHANGED_AT_ANNOTATION.to_owned(),
                jiff::Timestamp::from_second(at).unwrap().to_string(),
            )]));
        }
        secret
    }

    #[test]
    fn a_password_newer_than_the_applied_one_is_in_flight() {
        assert!(rotation_in_flight(
            &user_with_rotation(Some(100)),
            &credentials(Some(200))
        ));
        assert!(!rotation_in_flight(
            &user_with_rotation(Some(200)),
            &credentials(Some(200))
        ));
        assert!(!rotation_in_flight(
            &user_with_rotation(None),
            &credentials(Some(200))
        ));
        assert!(!rotation_in_flight(
            &user_with_rotation(Some(100)),
            &credentials(None)
        ));
    }

    #[test]
    fn revocation_and_conflict_clear_what_no_longer_holds() {
        let mut binding: ServiceBinding = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: b, namespace: shop, uid: u, generation: 3}
spec: {cluster: {name: db, namespace: db}, database: shop}
",
        )
        .unwrap();
        binding.status = Some(ServiceBindingStatus {
            binding: Some(BindingReference { name: "b".into() }),
            user: Some(UserReference {
                name: "x".into(),
                namespace: "db".into(),
            }),
            role_name: Some("x".into()),
            ..Default::default()
        });
        let identity = BindingIdentity {
            namespace: "shop".into(),
            name: "b".into(),
            uid: "u".into(),
        };
        let progress = Progress::default();
        let revoked = failure_status(
            &binding,
            &identity,
            &progress,
            &Error::NamespaceNotAllowed {
                message: "no".into(),
            },
        );
        assert!(revoked.binding.is_none() && revoked.user.is_none() && revoked.role_name.is_none());
        assert_eq!(revoked.observed_generation, Some(3));
        assert_eq!(revoked.conditions[0].reason, "NamespaceNotAllowed");
        let conflict = failure_status(
            &binding,
            &identity,
            &progress,
            &Error::SecretConflict { name: "b".into() },
        );
        assert!(conflict.binding.is_none() && conflict.user.is_some());
        let waiting = failure_status(
            &binding,
            &identity,
            &progress,
            &Error::UserNotReady("later".into()),
        );
        assert_eq!(waiting.binding, binding.status.as_ref().unwrap().binding);
    }

    #[test]
    fn user_without_status_for_its_generation_is_not_ready() {
        let user = user_with_rotation(None);
        let problem = user_not_ready(&user).unwrap();
        assert!(
            problem.contains("not applied its current spec"),
            "{problem}"
        );
    }
}
