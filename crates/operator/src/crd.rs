//! Waiting for tusk's CRDs before a controller starts.
//!
//! A controller started before its CRD is established would fail its first list and crash
//! loop. Instead the operator waits, says once in a clear log line which CRD it waits for and
//! how to install it, and starts the controller when the API server reports `Established`.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};

/// Whether `crd` reports the `Established` condition as `True`.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Waits until every named CRD (`clusters.tusk.dev`, ...) is established, polling every
/// `poll`. Logs once per CRD while it is missing, and again when it appears.
pub async fn wait_established(client: Client, names: Vec<String>, poll: Duration) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for name in &names {
        let mut warned = false;
        loop {
            match api.get_opt(name).await {
                Ok(Some(crd)) if is_established(&crd) => {
                    if warned {
                        tracing::info!(crd = %name, "CRD is established; starting");
                    }
                    break;
                }
                Ok(found) => {
                    if !warned {
                        let state = if found.is_some() {
                            "not established yet"
                        } else {
                            "not installed"
                        };
                        tracing::warn!(
                            crd = %name,
                            "waiting for CRD {name} ({state}); install the CRDs with `kubectl apply --server-side -f crds/` or the Helm chart"
                        );
                        warned = true;
                    }
                }
                Err(error) => {
                    if !warned {
                        tracing::warn!(crd = %name, %error, "cannot read CRD {name}; retrying");
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
    };

    #[test]
    fn established_needs_the_condition_true() {
        let mut crd = CustomResourceDefinition::default();
        assert!(!is_established(&crd));
        crd.status = Some(CustomResourceDefinitionStatus {
            conditions: Some(vec![CustomResourceDefinitionCondition {
                type_: "Established".into(),
                status: "False".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!is_established(&crd));
        if let Some(conditions) = crd.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions[0].status = "True".into();
        }
        assert!(is_established(&crd));
    }
}
