//! The Pooler's status from what a pass saw: pure, so every combination is a unit test.
//!
//! ```text
//!   Ready        True Available  ── Cluster Ready, spec.instances pods ready and current,
//!                                   every pod runs the settings, not paused
//!                False ClusterNotReady | Paused | Pausing | RollingOut | InstancesUnavailable
//!                      | ReloadPending                          (first that applies)
//!   Progressing  True RollingOut | ReloadPending | Pausing      False AsExpected
//!   Degraded     True ClusterNotReady | InstancesUnavailable     False AsExpected
//! ```
//!
//! Messages say what is going on and, when a person has to act, what to do. They are built
//! only from what was observed, so an unchanged Pooler gets an identical status (no write).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tusk_api::Pooler;
use tusk_api::condition::{DesiredCondition, find_condition, set_condition, types};
use tusk_api::pooler::{PoolerStatus, reasons};

use crate::config::POOLER_PORT;
use crate::pods::PodsSummary;
use crate::secrets::pooler_host;

/// What the status is made from.
#[derive(Debug)]
pub struct View<'a> {
    pub cluster_ready: bool,
    pub deployment: Option<&'a Deployment>,
    pub pods: &'a PodsSummary,
}

/// The rollout as the Deployment reports it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rollout {
    /// The Deployment controller has seen the current template.
    observed: bool,
    replicas: i32,
    updated: i32,
    ready: i32,
}

impl Rollout {
    fn of(deployment: Option<&Deployment>) -> Self {
        let Some(deployment) = deployment else {
            return Rollout::default();
        };
        let status = deployment.status.clone().unwrap_or_default();
        Rollout {
            observed: status.observed_generation.is_some()
                && status.observed_generation == deployment.metadata.generation,
            replicas: status.replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            ready: status.ready_replicas.unwrap_or(0),
        }
    }

    /// Every pod runs the current template and no old pod is left.
    fn complete(&self, instances: i32) -> bool {
        self.observed && self.updated == instances && self.replicas == instances
    }
}

/// The status `pooler` should have after a pass that saw `view`.
pub fn desired_status(pooler: &Pooler, view: &View<'_>, now: Time) -> PoolerStatus {
    let mut status = pooler.status.clone().unwrap_or_default();
    let generation = pooler.metadata.generation;
    let instances = pooler.spec.instances;
    let rollout = Rollout::of(view.deployment);
    let pods = view.pods;
    let paused = pooler.spec.paused;

    let pending = pending_message(pods);
    let rolling = (!rollout.complete(instances)).then(|| {
        format!(
            "{} of {instances} PgBouncer pods run the current spec ({} ready)",
            rollout.updated.min(instances).max(0),
            rollout.ready
        )
    });
    let pausing = (paused && pods.paused.len() < pods.reached || !pods.pausing.is_empty())
        .then(|| {
            format!(
                "PAUSE sent; {} of {} pods paused, the rest wait for queries (in session mode: sessions) to finish",
                pods.paused.len(),
                pods.reached
            )
        });
    let short = rollout.ready < instances;
    let unavailable = format!(
        "{} of {instances} PgBouncer pods ready; see `kubectl describe pod -l tusk.dev/pooler={}`",
        rollout.ready.max(0),
        pooler.name_any()
    );

    let ready = if !view.cluster_ready {
        DesiredCondition::ready(
            false,
            reasons::CLUSTER_NOT_READY,
            format!(
                "Cluster {:?} is not Ready; PgBouncer keeps running and reconnects when it is",
                pooler.spec.cluster.name
            ),
        )
    } else if paused && pausing.is_none() {
        DesiredCondition::ready(
            false,
            reasons::PAUSED,
            "spec.paused is true: PgBouncer holds new queries until it is set to false",
        )
    } else if let Some(message) = &pausing {
        DesiredCondition::ready(false, reasons::PAUSING, message.clone())
    } else if let Some(message) = &rolling {
        DesiredCondition::ready(false, reasons::ROLLING_OUT, message.clone())
    } else if short {
        DesiredCondition::ready(false, reasons::INSTANCES_UNAVAILABLE, unavailable.clone())
    } else if let Some(message) = &pending {
        DesiredCondition::ready(false, reasons::RELOAD_PENDING, message.clone())
    } else {
        DesiredCondition::ready(
            true,
            reasons::AVAILABLE,
            format!(
                "{instances} PgBouncer pods serve {}:{POOLER_PORT}",
                service_host(pooler)
            ),
        )
    };
    let progressing = match (&rolling, &pending, &pausing) {
        (Some(message), _, _) => {
            DesiredCondition::new(types::PROGRESSING, true, reasons::ROLLING_OUT, message)
        }
        (None, Some(message), _) => {
            DesiredCondition::new(types::PROGRESSING, true, reasons::RELOAD_PENDING, message)
        }
        (None, None, Some(message)) => {
            DesiredCondition::new(types::PROGRESSING, true, reasons::PAUSING, message)
        }
        (None, None, None) => DesiredCondition::new(
            types::PROGRESSING,
            false,
            reasons::AS_EXPECTED,
            "nothing under way",
        ),
    };
    let degraded = if short {
        DesiredCondition::new(
            types::DEGRADED,
            true,
            reasons::INSTANCES_UNAVAILABLE,
            unavailable,
        )
    } else if !view.cluster_ready {
        DesiredCondition::new(
            types::DEGRADED,
            true,
            reasons::CLUSTER_NOT_READY,
            format!("Cluster {:?} is not Ready", pooler.spec.cluster.name),
        )
    } else {
        DesiredCondition::new(
            types::DEGRADED,
            false,
            reasons::AS_EXPECTED,
            "every pod ready",
        )
    };
    for condition in [ready, progressing, degraded] {
        set_condition(&mut status.conditions, condition, generation, now.clone());
    }
    status.observed_generation = generation;
    status.ready_instances = rollout.ready.max(0);
    status.service = Some(format!("{}:{POOLER_PORT}", service_host(pooler)));
    status
}

fn service_host(pooler: &Pooler) -> String {
    pooler_host(&pooler.name_any(), &pooler.namespace().unwrap_or_default())
}

/// Settings pods do not run, and consoles that did not answer, as one message.
fn pending_message(pods: &PodsSummary) -> Option<String> {
    let mut parts: Vec<String> = pods
        .pending
        .iter()
        .map(|(pod, keys)| {
            format!(
                "{pod} runs an older {} (PgBouncer changes it only on restart: `kubectl rollout restart deployment/<pooler>` applies it)",
                keys.join(", ")
            )
        })
        .collect();
    parts.extend(
        pods.unreachable
            .iter()
            .map(|(pod, problem)| format!("{pod}: {problem}")),
    );
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Whether nothing is under way, so the next look can wait for the requeue interval.
pub fn settled(status: &PoolerStatus) -> bool {
    find_condition(&status.conditions, types::PROGRESSING)
        .is_none_or(|condition| condition.status != "True")
}

/// Whether the last status said the pods were paused or pausing (so a `spec.paused: false`
/// must send RESUME).
pub fn was_paused(pooler: &Pooler) -> bool {
    pooler.status.as_ref().is_some_and(|status| {
        find_condition(&status.conditions, types::READY).is_some_and(|ready| {
            ready.reason == reasons::PAUSED || ready.reason == reasons::PAUSING
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn pooler(extra: &str) -> Pooler {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: db-pooler, namespace: shop, generation: 3}}\nspec:\n  cluster: {{name: db}}\n  instances: 2\n{extra}"
        ))
        .unwrap()
    }

    fn deployment(replicas: i32, updated: i32, ready: i32) -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.generation = Some(5);
        deployment.status = Some(DeploymentStatus {
            observed_generation: Some(5),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            ..DeploymentStatus::default()
        });
        deployment
    }

    fn time() -> Time {
        Time(jiff::Timestamp::UNIX_EPOCH)
    }

    fn reason<'a>(status: &'a PoolerStatus, type_: &str) -> (&'a str, &'a str) {
        let condition = find_condition(&status.conditions, type_).unwrap();
        (condition.status.as_str(), condition.reason.as_str())
    }

    fn summary(reached: usize) -> PodsSummary {
        PodsSummary {
            reached,
            ..PodsSummary::default()
        }
    }

    #[test]
    fn every_pod_ready_and_current_is_available() {
        let deployment = deployment(2, 2, 2);
        let pods = summary(2);
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let status = desired_status(&pooler(""), &view, time());
        assert_eq!(reason(&status, "Ready"), ("True", "Available"));
        assert_eq!(reason(&status, "Progressing"), ("False", "AsExpected"));
        assert_eq!(reason(&status, "Degraded"), ("False", "AsExpected"));
        assert_eq!(status.ready_instances, 2);
        assert_eq!(status.service.as_deref(), Some("db-pooler.shop.svc:5432"));
        assert_eq!(status.observed_generation, Some(3));
        assert!(settled(&status));
    }

    #[test]
    fn an_unchanged_view_gives_an_identical_status() {
        let deployment = deployment(2, 2, 2);
        let pods = summary(2);
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let mut pooler = pooler("");
        let first = desired_status(&pooler, &view, time());
        pooler.status = Some(first.clone());
        let later = Time(jiff::Timestamp::from_second(3600).unwrap());
        assert_eq!(desired_status(&pooler, &view, later), first);
    }

    #[test]
    fn a_rollout_is_progressing_and_a_missing_pod_is_degraded() {
        let deployment = deployment(3, 1, 1);
        let pods = summary(1);
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let status = desired_status(&pooler(""), &view, time());
        assert_eq!(reason(&status, "Ready"), ("False", "RollingOut"));
        assert_eq!(reason(&status, "Progressing"), ("True", "RollingOut"));
        assert_eq!(
            reason(&status, "Degraded"),
            ("True", "InstancesUnavailable")
        );
        assert!(!settled(&status));
    }

    #[test]
    fn a_setting_only_a_restart_applies_is_named() {
        let deployment = deployment(2, 2, 2);
        let mut pods = summary(2);
        pods.pending
            .insert("db-pooler-abc".into(), vec!["listen_backlog".into()]);
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let status = desired_status(&pooler(""), &view, time());
        assert_eq!(reason(&status, "Ready"), ("False", "ReloadPending"));
        let ready = find_condition(&status.conditions, "Ready").unwrap();
        assert!(ready.message.contains("db-pooler-abc"), "{}", ready.message);
        assert!(
            ready.message.contains("listen_backlog"),
            "{}",
            ready.message
        );
        assert!(
            ready.message.contains("rollout restart"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn paused_pods_are_not_ready_and_resume_follows() {
        let deployment = deployment(2, 2, 2);
        let mut pods = summary(2);
        pods.paused = ["a".to_owned(), "b".to_owned()].into();
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let mut paused = pooler("  paused: true\n");
        let status = desired_status(&paused, &view, time());
        assert_eq!(reason(&status, "Ready"), ("False", "Paused"));
        assert!(settled(&status));
        paused.status = Some(status);
        assert!(was_paused(&paused));

        let mut pods = summary(2);
        pods.paused = ["a".to_owned()].into();
        pods.pausing = ["b".to_owned()].into();
        let view = View {
            cluster_ready: true,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let status = desired_status(&pooler("  paused: true\n"), &view, time());
        assert_eq!(reason(&status, "Ready"), ("False", "Pausing"));
        assert_eq!(reason(&status, "Progressing"), ("True", "Pausing"));
    }

    #[test]
    fn a_cluster_that_is_not_ready_degrades_a_running_pooler() {
        let deployment = deployment(2, 2, 2);
        let pods = summary(2);
        let view = View {
            cluster_ready: false,
            deployment: Some(&deployment),
            pods: &pods,
        };
        let status = desired_status(&pooler(""), &view, time());
        assert_eq!(reason(&status, "Ready"), ("False", "ClusterNotReady"));
        assert_eq!(reason(&status, "Degraded"), ("True", "ClusterNotReady"));
        assert!(!was_paused(&pooler("")));
    }
}
