//! What a real control plane does that the in-memory API does not, modelled in front of it.
//!
//! ```text
//!  code under test ──► PvcProtection ──► kube-fake-client
//!                       DELETE pvc in use → kept, Terminating (deletionTimestamp + finalizer)
//!                       GET/LIST pvc      → Terminating ones shown as such
//!                       release()         → the pvc-protection controller's pass
//!  code under test ──► PodLogs ──► kube-fake-client
//!                       GET pods/<pod>/log → the text set for it (tailLines, previous)
//! ```
//!
//! `kubernetes.io/pvc-protection`: kube-controller-manager puts this finalizer on every claim
//! and removes it only when no pod that is not yet finished uses the claim. A claim deleted
//! while in use therefore stays, Terminating, for as long as the pod runs — a StatefulSet pod
//! re-created on a deleted claim keeps it Terminating for ever. The in-memory API deletes at
//! once, which let such a deadlock through to a real cluster.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use kube::client::Body;

/// The finalizer kube-controller-manager adds to every claim.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

/// The owner reference a built-in controller puts on what it creates (the StatefulSet
/// controller on its pods, the Job controller on a Job's pod): `controller` and
/// `blockOwnerDeletion` set. tusk tells an instance's pod from a Job's pod by it.
pub fn controller_reference(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A Secret `namespace/name` holding `data` (key, bytes), as a test starts from.
pub fn secret(
    namespace: &str,
    name: &str,
    data: &[(&str, &[u8])],
) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), k8s_openapi::ByteString(value.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// When the model marks a claim deleted (any fixed time does: nothing compares it).
const DELETED_AT: &str = "2000-01-01T00:00:00Z";

/// A kube client that behaves like a real API server with kube-controller-manager's
/// pvc-protection controller for PersistentVolumeClaims. Cheap to clone.
#[derive(Clone)]
pub struct PvcProtection {
    inner: kube::Client,
    client: kube::Client,
    /// (namespace, name) of claims deleted while in use.
    terminating: Arc<Mutex<BTreeSet<(String, String)>>>,
}

impl std::fmt::Debug for PvcProtection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PvcProtection")
            .field("terminating", &self.terminating())
            .finish_non_exhaustive()
    }
}

impl PvcProtection {
    /// Puts the model in front of `inner` (an in-memory API client).
    pub fn new(inner: kube::Client) -> Self {
        let terminating: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
        let service = {
            let inner = inner.clone();
            let terminating = terminating.clone();
            tower::service_fn(move |request: http::Request<Body>| {
                let inner = inner.clone();
                let terminating = terminating.clone();
                async move { handle(inner, terminating, request).await }
            })
        };
        let client = kube::Client::new(service, "default");
        Self {
            inner,
            client,
            terminating,
        }
    }

    /// The client to hand to the code under test (and to the test's own calls).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Claims that are Terminating, as `namespace/name`.
    pub fn terminating(&self) -> Vec<String> {
        lock(&self.terminating)
            .iter()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect()
    }

    /// One pass of the pvc-protection controller: a Terminating claim that no running pod
    /// uses any more is deleted for real.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let claims: Vec<(String, String)> = lock(&self.terminating).iter().cloned().collect();
        for (namespace, name) in claims {
            if claim_in_use(&self.inner, &namespace, &name).await? {
                continue;
            }
            Api::<PersistentVolumeClaim>::namespaced(self.inner.clone(), &namespace)
                .delete(&name, &DeleteParams::default())
                .await?;
            lock(&self.terminating).remove(&(namespace, name));
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `(namespace, Some(name))` of a request on PersistentVolumeClaims of the core API.
fn claim_request(path: &str) -> Option<(String, Option<String>)> {
    let rest = path
        .split('?')
        .next()?
        .strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let namespace = parts.next()?.to_owned();
    if parts.next()? != "persistentvolumeclaims" {
        return None;
    }
    let name = parts.next().map(str::to_owned);
    // A subresource (`/status`) passes through untouched.
    if parts.next().is_some() {
        return None;
    }
    Some((namespace, name))
}

async fn handle(
    inner: kube::Client,
    terminating: Arc<Mutex<BTreeSet<(String, String)>>>,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, kube::Error> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some((namespace, name)) = claim_request(&path) else {
        return inner.send(request).await;
    };
    let method = request.method().clone();
    if method == http::Method::DELETE
        && let Some(name) = &name
    {
        let key = (namespace.clone(), name.clone());
        let already = lock(&terminating).contains(&key);
        if already || claim_in_use(&inner, &namespace, name).await? {
            lock(&terminating).insert(key);
            // As the API server answers a delete that a finalizer holds: 200 with the object.
            let claim = Api::<PersistentVolumeClaim>::namespaced(inner.clone(), &namespace)
                .get(name)
                .await?;
            let mut value = serde_json::to_value(claim).map_err(kube::Error::SerdeError)?;
            mark_terminating(&mut value);
            return respond(&value);
        }
        return inner.send(request).await;
    }
    let response = inner.send(request).await?;
    if method != http::Method::GET || !response.status().is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = body.collect_bytes().await?;
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(http::Response::from_parts(parts, Body::from(bytes)));
    };
    let set = lock(&terminating).clone();
    let is_terminating = |object: &serde_json::Value| {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        set.contains(&(namespace.clone(), name.to_owned()))
    };
    if let Some(items) = value.get_mut("items").and_then(|i| i.as_array_mut()) {
        for item in items.iter_mut().filter(|item| is_terminating(item)) {
            mark_terminating(item);
        }
    } else if is_terminating(&value) {
        mark_terminating(&mut value);
    }
    let body = serde_json::to_vec(&value).map_err(kube::Error::SerdeError)?;
    Ok(http::Response::from_parts(parts, Body::from(body)))
}

fn mark_terminating(object: &mut serde_json::Value) {
    object["metadata"]["deletionTimestamp"] = DELETED_AT.into();
    object["metadata"]["finalizers"] = serde_json::json!([PVC_PROTECTION_FINALIZER]);
}

fn respond(value: &serde_json::Value) -> Result<http::Response<Body>, kube::Error> {
    let body = serde_json::to_vec(value).map_err(kube::Error::SerdeError)?;
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(kube::Error::HttpError)
}

/// Whether a pod that has not finished mounts the claim (what pvc-protection waits for).
async fn claim_in_use(
    client: &kube::Client,
    namespace: &str,
    claim: &str,
) -> Result<bool, kube::Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    Ok(pods.items.iter().any(|pod| {
        let finished = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Succeeded" || phase == "Failed");
        !finished
            && pod
                .spec
                .iter()
                .flat_map(|spec| spec.volumes.iter().flatten())
                .any(|volume| {
                    volume
                        .persistent_volume_claim
                        .as_ref()
                        .is_some_and(|source| source.claim_name == claim)
                })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_claim_requests_are_modelled() {
        assert_eq!(
            claim_request("/api/v1/namespaces/db/persistentvolumeclaims/data-db-2-0"),
            Some(("db".into(), Some("data-db-2-0".into())))
        );
        assert_eq!(
            claim_request("/api/v1/namespaces/db/persistentvolumeclaims?labelSelector=a%3Db"),
            Some(("db".into(), None))
        );
        assert_eq!(
            claim_request("/api/v1/namespaces/db/persistentvolumeclaims/x/status"),
            None
        );
        assert_eq!(claim_request("/api/v1/namespaces/db/pods/x"), None);
    }
}

/// The kubelet's side of `GET pods/<name>/log`, which the in-memory API does not serve (it
/// answers with the pod object). Logs are set per `(namespace, pod, container)` and served
/// as text, honouring `tailLines`; `previous=true` serves what was set as the previous run's
/// log and, like the kubelet, answers 400 when there is none. Cheap to clone.
#[derive(Clone)]
pub struct PodLogs {
    client: kube::Client,
    /// (namespace, pod, container, previous) → log text.
    logs: Arc<Mutex<Logs>>,
}

impl std::fmt::Debug for PodLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodLogs").finish_non_exhaustive()
    }
}

impl PodLogs {
    /// Puts the model in front of `inner`.
    pub fn new(inner: kube::Client) -> Self {
        let logs: Arc<Mutex<Logs>> = Arc::default();
        let service = {
            let logs = logs.clone();
            tower::service_fn(move |request: http::Request<Body>| {
                let inner = inner.clone();
                let logs = logs.clone();
                async move {
                    match log_request(request.uri()) {
                        Some((key, tail)) => serve_log(&logs, key, tail),
                        None => inner.send(request).await,
                    }
                }
            })
        };
        Self {
            client: kube::Client::new(service, "default"),
            logs,
        }
    }

    /// The client to hand to the code under test.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Sets the log of a container's current run (`previous: false`) or previous one.
    pub fn set(&self, namespace: &str, pod: &str, container: &str, previous: bool, log: &str) {
        lock(&self.logs).insert(
            (
                namespace.to_owned(),
                pod.to_owned(),
                container.to_owned(),
                previous,
            ),
            log.to_owned(),
        );
    }
}

type LogKey = (String, String, String, bool);
type Logs = std::collections::BTreeMap<LogKey, String>;

/// `((namespace, pod, container, previous), tailLines)` of a `GET .../pods/<pod>/log`.
fn log_request(uri: &http::Uri) -> Option<(LogKey, Option<usize>)> {
    let rest = uri.path().strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let namespace = parts.next()?.to_owned();
    if parts.next()? != "pods" {
        return None;
    }
    let pod = parts.next()?.to_owned();
    if parts.next()? != "log" {
        return None;
    }
    let mut container = String::new();
    let mut previous = false;
    let mut tail = None;
    for pair in uri.query().unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("container", value)) => value.clone_into(&mut container),
            Some(("previous", value)) => previous = value == "true",
            Some(("tailLines", value)) => tail = value.parse().ok(),
            _ => {}
        }
    }
    Some(((namespace, pod, container, previous), tail))
}

fn serve_log(
    logs: &Mutex<Logs>,
    key: LogKey,
    tail: Option<usize>,
) -> Result<http::Response<Body>, kube::Error> {
    let Some(log) = lock(logs).get(&key).cloned() else {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
            "reason": "BadRequest",
            "message": format!("previous terminated container \"{}\" in pod \"{}\" not found", key.2, key.1),
        });
        let body = serde_json::to_vec(&status).map_err(kube::Error::SerdeError)?;
        return http::Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(kube::Error::HttpError);
    };
    let lines: Vec<&str> = log.lines().collect();
    let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let text = lines[from..].join("\n");
    http::Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(Body::from(text.into_bytes()))
        .map_err(kube::Error::HttpError)
}
