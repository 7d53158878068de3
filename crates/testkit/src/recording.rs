//! A client over the in-memory API that records every request as the API server's authorizer
//! would see it: (verb, group, resource, namespace, name). Controller tests assert on what was
//! written ([`RecordingClient::writes`]) and check every call against the chart's RBAC
//! (tusk-runtime's `rbac::disallowed_calls`, feature `test-support`).

use std::sync::{Arc, Mutex};

use kube::client::Body;

/// One request as the API server's authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

impl ApiCall {
    /// Derives the authorizer's view from an HTTP method and a request path with query.
    pub fn from_request(method: &str, path_and_query: &str) -> Option<Self> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        let resource = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        Some(ApiCall {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource,
            namespace,
            name: name.map(str::to_owned),
        })
    }
}

/// Records the API calls made through [`RecordingClient::client`].
#[derive(Clone)]
pub struct RecordingClient {
    client: kube::Client,
    calls: Arc<Mutex<Vec<ApiCall>>>,
}

impl std::fmt::Debug for RecordingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingClient")
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl RecordingClient {
    /// Wraps `inner` (for example a `kube_fake_client` client).
    pub fn new(inner: kube::Client) -> Self {
        let calls: Arc<Mutex<Vec<ApiCall>>> = Arc::default();
        let recorded = calls.clone();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let inner = inner.clone();
            let recorded = recorded.clone();
            async move {
                let path = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                if let Some(call) = ApiCall::from_request(request.method().as_str(), &path) {
                    recorded
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(call);
                }
                inner.send(request).await
            }
        });
        let client = kube::Client::new(service, "default");
        Self { client, calls }
    }

    /// The client to hand to the code under test.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Every call recorded so far.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls that write (everything but get, list and watch).
    pub fn writes(&self) -> Vec<ApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c.verb.as_str(), "get" | "list" | "watch"))
            .collect()
    }

    /// Forgets the calls recorded so far.
    pub fn clear(&self) {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_authorizer_verbs() {
        let call = |m, p| ApiCall::from_request(m, p).unwrap();
        assert_eq!(
            call(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/tusk/leases/tusk-operator"
            ),
            ApiCall {
                verb: "get".into(),
                group: "coordination.k8s.io".into(),
                resource: "leases".into(),
                namespace: Some("tusk".into()),
                name: Some("tusk-operator".into()),
            }
        );
        assert_eq!(
            call("GET", "/api/v1/namespaces/db/secrets?labelSelector=x").verb,
            "list"
        );
        assert_eq!(
            call(
                "GET",
                "/apis/tusk.dev/v1alpha1/clusters?watch=true&timeoutSeconds=290"
            )
            .verb,
            "watch"
        );
        assert_eq!(
            call(
                "PATCH",
                "/apis/tusk.dev/v1alpha1/namespaces/db/clusters/db/status?fieldManager=x"
            )
            .resource,
            "clusters/status"
        );
        assert_eq!(
            call("DELETE", "/api/v1/namespaces/db/pods").verb,
            "deletecollection"
        );
        assert_eq!(
            call(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/tusk/leases/l"
            )
            .verb,
            "update"
        );
        assert_eq!(call("GET", "/api/v1/namespaces/db").resource, "namespaces");
        assert!(ApiCall::from_request("GET", "/version").is_none());
    }
}
