//! The ServiceBinding controller: one application's connection to a Cluster — a PostgresUser
//! dedicated to the binding, and a Secret in the servicebinding.io layout in the binding's
//! namespace. A binding from another namespace than its Cluster's needs the Cluster's consent
//! (`spec.bindingPolicy`).
//!
//! ```text
//!  watches                                     reconcile (reconcile.rs)
//!  ServiceBinding ───────────────────────┐     observe: Cluster, consent (consent.rs)
//!  Secret (owned binding Secrets) ───────┤     apply:   PostgresUser (desired.rs, naming.rs)
//!  PostgresUser (labelled for a binding) ┼──►  wait:    Cluster Ready, PostgresUser Ready
//!  Secret (credentials of PostgresUsers) ┤     apply:   binding Secret from the credentials
//!  Cluster (→ bindings naming it) ───────┤              Secret and the Cluster's CA,
//!  Pooler (→ bindings naming it) ────────┤              host: the Pooler's or the Cluster's
//!  Namespace (labels, for selectors) ────┘     cleanup: finalizer (cross-namespace only)
//! ```
//!
//! Secrets, PostgresUsers and Poolers are watched as metadata only: the controller never keeps
//! Secret contents in memory; it reads the two Secrets a binding needs (and the Pooler it
//! names) when it reconciles it.
//!
//! Namespaces: with `--namespace` given, one controller runs per namespace for the bindings
//! there, each watching Clusters, PostgresUsers and Secrets in every watched namespace (so a
//! binding may name a Cluster in another watched namespace). Namespace labels are watched only
//! when all namespaces are; otherwise a label change reaches a binding on its next periodic
//! pass.

#![forbid(unsafe_code)]

pub mod consent;
pub mod desired;
pub mod error;
pub mod naming;
pub mod rbac;
pub mod reconcile;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tusk_api::labels::{BINDING_UID, COMPONENT, MANAGED_BY, MANAGER};
use tusk_api::names;
use tusk_api::{Cluster, Pooler, PostgresUser, ServiceBinding};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{error_policy, reconcile};

use crate::naming::BindingIdentity;

/// Runs the ServiceBinding controller until its watches end.
pub async fn run(ctx: Context) {
    let namespaces = ctx.config.watch_scopes();
    let ctx = Arc::new(ctx);
    futures::future::join_all(
        namespaces
            .iter()
            .map(|namespace| run_in(ctx.clone(), namespace.clone(), namespaces.clone())),
    )
    .await;
}

/// One watch of `K` (metadata only) per watched namespace, merged.
fn metadata_in<K>(
    client: &kube::Client,
    namespaces: &[Option<String>],
    config: &watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    futures::stream::select_all(namespaces.iter().map(|namespace| {
        watcher(
            api::<PartialObjectMeta<K>>(client, namespace.as_deref()),
            config.clone(),
        )
        .default_backoff()
        .touched_objects()
        .boxed()
    }))
}

/// One controller for the bindings in `namespace` (`None`: all namespaces).
async fn run_in(ctx: Arc<Context>, namespace: Option<String>, watched: Vec<Option<String>>) {
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store();
    let bindings = watcher(
        api::<ServiceBinding>(&client, namespace.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(tusk_runtime::store::prune)
    .reflect(writer)
    .touched_objects();
    let owned_secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, namespace.as_deref()),
        watcher::Config::default().labels(&naming::children_selector()),
    )
    .default_backoff()
    .touched_objects();
    let users = metadata_in::<PostgresUser>(
        &client,
        &watched,
        &watcher::Config::default().labels(BINDING_UID),
    );
    let credentials = metadata_in::<Secret>(
        &client,
        &watched,
        &watcher::Config::default().labels(&format!(
            "{COMPONENT}={},{MANAGED_BY}={MANAGER}",
            reconcile::CREDENTIALS_COMPONENT
        )),
    );
    let clusters = futures::stream::select_all(watched.iter().map(|namespace| {
        watcher(
            api::<Cluster>(&client, namespace.as_deref()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects()
        .boxed()
    }));
    // A Pooler created, deleted or pointed at another Cluster (or its pool mode changed).
    let poolers = metadata_in::<Pooler>(&client, &watched, &watcher::Config::default());
    let (by_credentials, by_cluster, by_pooler) = (reader.clone(), reader.clone(), reader.clone());
    let mut controller = Controller::for_stream(bindings, reader.clone())
        .owns_stream(owned_secrets)
        .watches_stream(users, |user| binding_of_user(&user))
        .watches_stream(credentials, move |secret| {
            bindings_of_credentials(&by_credentials.state(), &secret)
        })
        .watches_stream(clusters, move |cluster| {
            bindings_of_cluster(&by_cluster.state(), &cluster)
        })
        .watches_stream(poolers, move |pooler| {
            bindings_of_pooler(&by_pooler.state(), &pooler)
        });
    if watched == [None] {
        // Namespace labels feed bindingPolicy.namespaceSelector; only a ClusterRole can watch
        // them, which the chart grants when all namespaces are watched.
        let namespaces = watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .touched_objects();
        let by_namespace = reader.clone();
        controller = controller.watches_stream(namespaces, move |namespace| {
            bindings_in_namespace(&by_namespace.state(), &namespace)
        });
    }
    let _counted = ctx.metrics.follow_store(namespace.as_deref(), reader);
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The binding a PostgresUser was created for (from its labels).
pub fn binding_of_user(
    user: &PartialObjectMeta<PostgresUser>,
) -> Option<ObjectRef<ServiceBinding>> {
    let (namespace, name) = naming::binding_of(user.metadata.labels.as_ref())?;
    Some(ObjectRef::new(&name).within(&namespace))
}

/// The bindings whose PostgresUser's credentials Secret is `secret`: a rotated password is
/// copied to the binding Secret.
pub fn bindings_of_credentials(
    bindings: &[Arc<ServiceBinding>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<ServiceBinding>> {
    let (Some(namespace), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    bindings
        .iter()
        .filter(|binding| {
            let Some(identity) = identity_of(binding) else {
                return false;
            };
            binding.spec.cluster_namespace(&identity.namespace) == namespace
                && names::user_credentials_secret(&binding.spec.cluster.name, &identity.user_name())
                    == name
        })
        .map(|binding| ObjectRef::from_obj(binding.as_ref()))
        .collect()
}

/// The bindings naming `cluster`: its readiness, CA and consent policy reach them.
pub fn bindings_of_cluster(
    bindings: &[Arc<ServiceBinding>],
    cluster: &Cluster,
) -> Vec<ObjectRef<ServiceBinding>> {
    let (Some(namespace), Some(name)) = (
        cluster.metadata.namespace.as_deref(),
        cluster.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    bindings
        .iter()
        .filter(|binding| {
            binding.metadata.namespace.as_deref().is_some_and(|own| {
                binding.spec.cluster_namespace(own) == namespace
                    && binding.spec.cluster.name == name
            })
        })
        .map(|binding| ObjectRef::from_obj(binding.as_ref()))
        .collect()
}

/// The bindings connecting through `pooler` (named in their `spec.pooler`, in their
/// Cluster's namespace): its existence and its Cluster decide their Secret's host.
pub fn bindings_of_pooler(
    bindings: &[Arc<ServiceBinding>],
    pooler: &PartialObjectMeta<Pooler>,
) -> Vec<ObjectRef<ServiceBinding>> {
    let (Some(namespace), Some(name)) = (
        pooler.metadata.namespace.as_deref(),
        pooler.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    bindings
        .iter()
        .filter(|binding| {
            binding.metadata.namespace.as_deref().is_some_and(|own| {
                binding.spec.cluster_namespace(own) == namespace
                    && binding.spec.pooler_name() == Some(name)
            })
        })
        .map(|binding| ObjectRef::from_obj(binding.as_ref()))
        .collect()
}

/// The cross-namespace bindings in `namespace`: a label change may give or withdraw consent.
pub fn bindings_in_namespace(
    bindings: &[Arc<ServiceBinding>],
    namespace: &PartialObjectMeta<Namespace>,
) -> Vec<ObjectRef<ServiceBinding>> {
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Vec::new();
    };
    bindings
        .iter()
        .filter(|binding| {
            binding.metadata.namespace.as_deref() == Some(name)
                && binding.spec.is_cross_namespace(name)
        })
        .map(|binding| ObjectRef::from_obj(binding.as_ref()))
        .collect()
}

fn identity_of(binding: &ServiceBinding) -> Option<BindingIdentity> {
    Some(BindingIdentity {
        namespace: binding.metadata.namespace.clone()?,
        name: binding.metadata.name.clone()?,
        uid: binding.metadata.uid.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;
    use kube::core::PartialObjectMetaExt;

    fn binding(namespace: &str, name: &str, cluster: &str) -> Arc<ServiceBinding> {
        let mut binding: ServiceBinding = serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {{name: {name}, namespace: {namespace}, uid: uid-{name}}}
spec: {{cluster: {cluster}, database: shop}}
"
        ))
        .unwrap();
        binding.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(binding)
    }

    fn names_of(refs: Vec<ObjectRef<ServiceBinding>>) -> Vec<String> {
        let mut names: Vec<String> = refs
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    fn store() -> Vec<Arc<ServiceBinding>> {
        vec![
            binding("db", "orders", "{name: db}"),
            binding("shop", "storefront", "{name: db, namespace: db}"),
            binding("shop", "local", "{name: db}"),
            binding("db", "other", "{name: other}"),
        ]
    }

    fn pooled(namespace: &str, name: &str, cluster: &str, pooler: &str) -> Arc<ServiceBinding> {
        let mut binding = Arc::unwrap_or_clone(binding(namespace, name, cluster));
        binding.spec.pooler = Some(tusk_api::binding::BindingPoolerReference {
            name: pooler.to_owned(),
        });
        Arc::new(binding)
    }

    #[test]
    fn pooler_wakes_the_bindings_naming_it_in_their_clusters_namespace() {
        let mut store = store();
        store.extend([
            pooled("db", "direct-pooled", "{name: db}", "db-pooler"),
            pooled(
                "shop",
                "cross-pooled",
                "{name: db, namespace: db}",
                "db-pooler",
            ),
            pooled("shop", "own-namespace", "{name: db}", "db-pooler"),
            pooled("db", "other-pooler", "{name: db}", "reports-pooler"),
        ]);
        let mut pooler: PartialObjectMeta<Pooler> = ObjectMeta {
            namespace: Some("db".into()),
            name: Some("db-pooler".into()),
            ..ObjectMeta::default()
        }
        .into_response_partial();
        assert_eq!(
            names_of(bindings_of_pooler(&store, &pooler)),
            vec!["db/direct-pooled", "shop/cross-pooled"]
        );
        pooler.metadata.namespace = Some("shop".into());
        assert_eq!(
            names_of(bindings_of_pooler(&store, &pooler)),
            vec!["shop/own-namespace"]
        );
    }

    #[test]
    fn cluster_wakes_the_bindings_naming_it_in_any_namespace() {
        let cluster: Cluster = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db}
spec: {postgresVersion: 17, storage: {size: 1Gi}}
",
        )
        .unwrap();
        assert_eq!(
            names_of(bindings_of_cluster(&store(), &cluster)),
            vec!["db/orders", "shop/storefront"]
        );
    }

    #[test]
    fn credentials_secret_wakes_the_binding_whose_user_it_belongs_to() {
        let store = store();
        let storefront = identity_of(&store[1]).unwrap();
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.namespace = Some("db".into());
        secret.metadata.name = Some(names::user_credentials_secret(
            "db",
            &storefront.user_name(),
        ));
        assert_eq!(
            names_of(bindings_of_credentials(&store, &secret)),
            vec!["shop/storefront"]
        );
        secret.metadata.namespace = Some("shop".into());
        assert!(bindings_of_credentials(&store, &secret).is_empty());
    }

    #[test]
    fn user_labels_lead_back_to_the_binding() {
        let labels = BindingIdentity {
            namespace: "shop".into(),
            name: "storefront".into(),
            uid: "u".into(),
        }
        .user_labels("db");
        let user: PartialObjectMeta<PostgresUser> = ObjectMeta {
            labels: Some(labels),
            ..ObjectMeta::default()
        }
        .into_response_partial();
        let found = binding_of_user(&user).unwrap();
        assert_eq!(
            (found.namespace.as_deref(), found.name.as_str()),
            (Some("shop"), "storefront")
        );
        assert!(binding_of_user(&ObjectMeta::default().into_response_partial()).is_none());
    }

    #[test]
    fn namespace_change_wakes_only_its_cross_namespace_bindings() {
        let mut namespace = PartialObjectMeta::<Namespace>::default();
        namespace.metadata.name = Some("shop".into());
        assert_eq!(
            names_of(bindings_in_namespace(&store(), &namespace)),
            vec!["shop/storefront"]
        );
    }
}
