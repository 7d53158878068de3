//! A change of Patroni's dynamic configuration (DCS) the spec asks for, and what it means.

use crate::error::Error;
use tusk_api::Cluster;

/// A change of Patroni's dynamic configuration (DCS), applied with `PATCH /config`: Patroni
/// reloads every member; parameters that need a restart make members report
/// `pending_restart`, which the rollout planner then works through.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigChange {
    /// The merge patch (only keys tusk renders; removed parameters as `null`).
    pub patch: serde_json::Value,
    /// Which parameters changed and which of them need a restart.
    pub parameters: crate::plan::patroni::ParameterChangePlan,
}

impl ConfigChange {
    /// What changed, for the event: parameter names only (values may be long).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let reloaded: Vec<&str> = self
            .parameters
            .changed
            .iter()
            .filter(|name| !self.parameters.restart.contains(name))
            .map(String::as_str)
            .collect();
        if !reloaded.is_empty() {
            parts.push(format!("reloaded {}", reloaded.join(", ")));
        }
        if self.parameters.needs_restart() {
            parts.push(format!(
                "{} need a restart (instances restart one at a time, replicas first)",
                self.parameters.restart.join(", ")
            ));
        }
        // Everything else the patch touches: Patroni timings, replication, pg_hba, ...
        let mut other: Vec<String> = Vec::new();
        if let Some(patch) = self.patch.as_object() {
            for (key, value) in patch {
                match (key.as_str(), value.as_object()) {
                    ("postgresql", Some(section)) => other.extend(
                        section
                            .keys()
                            .filter(|k| *k != "parameters")
                            .map(|k| format!("postgresql.{k}")),
                    ),
                    _ => other.push(key.clone()),
                }
            }
        }
        if !other.is_empty() {
            parts.push(format!("updated {}", other.join(", ")));
        }
        parts.join("; ")
    }
}

/// The change that brings Patroni's dynamic configuration (`observed`, from `GET /config`) to
/// what `cluster` renders; `None` when it already matches.
pub fn config_change(
    cluster: &Cluster,
    observed: &serde_json::Value,
) -> Result<Option<ConfigChange>, Error> {
    let desired =
        crate::plan::patroni::dynamic_config(cluster).map_err(|e| Error::Patroni(e.to_string()))?;
    let patch = crate::plan::patroni::dynamic_config_patch(observed, &desired)
        .map_err(|e| Error::Patroni(e.to_string()))?;
    Ok(patch.map(|patch| ConfigChange {
        patch,
        parameters: crate::plan::patroni::plan_parameter_change(
            &crate::plan::patroni::observed_parameters(observed),
            &desired.postgresql.parameters,
            cluster.spec.postgres_version,
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(parameters: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db}}\nspec:\n  postgresVersion: 17\n  instances: 3\n  storage: {{size: 1Gi}}\n  postgresql: {{parameters: {parameters}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_dcs_in_step_needs_no_change_and_a_change_names_what_restarts() {
        let before = cluster("{work_mem: 8MB}");
        let dcs =
            serde_json::to_value(crate::plan::patroni::dynamic_config(&before).unwrap()).unwrap();
        assert_eq!(config_change(&before, &dcs).unwrap(), None);

        let mut after = cluster("{work_mem: 16MB, shared_buffers: 1GB}");
        after.spec.high_availability.ttl_seconds += 10;
        let change = config_change(&after, &dcs).unwrap().unwrap();
        assert_eq!(change.parameters.changed, ["shared_buffers", "work_mem"]);
        assert_eq!(change.parameters.restart, ["shared_buffers"]);
        assert_eq!(
            change.summary(),
            "reloaded work_mem; shared_buffers need a restart (instances restart one at a time, replicas first); updated ttl"
        );
    }
}
