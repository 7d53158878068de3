//! The in-memory Kubernetes API as controller tests set it up: custom kinds registered with
//! their status subresource, the objects a test starts from, and a recording client in front.
//!
//! ```text
//!  ApiBuilder::new().kind::<Cluster>().object(cluster).build_recorded().await
//!    raw ───────────────────────────► kube-fake-client   setup and assertions (not recorded)
//!    recording ─► RecordingClient ─► raw                 handed to the code under test
//! ```
//!
//! A test that models more of the control plane (PVC protection, pod logs, Namespaces) takes
//! [`ApiBuilder::build`] and puts its layer between the recording client and the raw one.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube_fake_client::interceptor;
use serde::Serialize;

use crate::recording::RecordingClient;

/// Sets up the in-memory API.
pub struct ApiBuilder {
    inner: kube_fake_client::ClientBuilder,
}

impl std::fmt::Debug for ApiBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiBuilder").finish_non_exhaustive()
    }
}

impl Default for ApiBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiBuilder {
    /// An in-memory API serving the built-in kinds only.
    pub fn new() -> Self {
        Self {
            inner: kube_fake_client::ClientBuilder::new(),
        }
    }

    /// Serves the custom kind `K`, with a status subresource as its CRD declares: an update
    /// leaves status alone and a status update leaves the rest alone.
    pub fn kind<K>(mut self) -> Self
    where
        K: Resource<DynamicType = ()>,
    {
        self.inner = self
            .inner
            .with_resource::<K>()
            .with_status_subresource::<KindOf<K>>();
        self
    }

    /// Serves the custom kind `K` without a status subresource (status is written with the
    /// rest of the object).
    pub fn resource<K>(mut self) -> Self
    where
        K: Resource<DynamicType = ()>,
    {
        self.inner = self.inner.with_resource::<K>();
        self
    }

    /// Stores `object` before the test starts.
    pub fn object<K>(mut self, object: K) -> Self
    where
        K: Resource + Serialize,
    {
        self.inner = self.inner.with_object(object);
        self
    }

    /// Stores every object in `objects`.
    pub fn objects<K>(self, objects: impl IntoIterator<Item = K>) -> Self
    where
        K: Resource + Serialize,
    {
        objects
            .into_iter()
            .fold(self, |builder, object| builder.object(object))
    }

    /// Runs `funcs` on the in-memory API's requests (behaviour it lacks, such as graceful
    /// deletion).
    pub fn interceptors(mut self, funcs: interceptor::Funcs) -> Self {
        self.inner = self.inner.with_interceptor_funcs(funcs);
        self
    }

    /// A client of the in-memory API; wrap it in a [`RecordingClient`] (and any model of
    /// more control-plane behaviour) for the code under test.
    pub async fn build(self) -> kube_fake_client::Result<kube::Client> {
        self.inner.build().await
    }

    /// The in-memory API and a [`RecordingClient`] over it.
    pub async fn build_recorded(self) -> kube_fake_client::Result<(kube::Client, RecordingClient)> {
        let raw = self.build().await?;
        let recording = RecordingClient::new(raw.clone());
        Ok((raw, recording))
    }
}

/// An empty object of kind `K`: `with_status_subresource` only reads the kind and API version
/// of a `Default` value, which tusk's kinds (with required spec fields) do not have.
struct KindOf<K> {
    metadata: ObjectMeta,
    kind: PhantomData<fn() -> K>,
}

impl<K> Default for KindOf<K> {
    fn default() -> Self {
        Self {
            metadata: ObjectMeta::default(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for KindOf<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<K: Resource<DynamicType = ()>> Serialize for KindOf<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("apiVersion", &K::api_version(&()))?;
        map.serialize_entry("kind", &K::kind(&()))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn a_stand_in_serialises_as_its_kind() {
        let value = serde_json::to_value(KindOf::<ConfigMap>::default()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"})
        );
    }
}
