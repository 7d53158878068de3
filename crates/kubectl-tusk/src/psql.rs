//! `psql CLUSTER [--replica] [-- ARGS]`: an interactive psql inside the instance's `postgres`
//! container, through `kubectl exec` (so kubectl's own flags, terminal handling and
//! authentication apply). psql connects over the container's Unix socket as the superuser with
//! the password the container already has in its environment: no credential reaches this
//! machine. Needs `create` on pods/exec.

use anyhow::Context as _;
use tusk_api::Cluster;
use tusk_api::cluster::InstanceRole;
use tusk_api::names::{INSTANCE_CONTAINER, SOCKET_DIR, SUPERUSER_PASSWORD_ENV};
use tusk_api::user::SUPERUSER_ROLE;

use crate::Exit;

/// kubectl's connection flags, passed on as given.
#[derive(Clone, Debug, Default)]
pub struct KubectlFlags {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
}

/// The instance to connect to: the primary, or with `replica` a ready replica.
pub fn pick_instance(cluster: &Cluster, replica: bool) -> Result<String, String> {
    let status = cluster.status.clone().unwrap_or_default();
    if replica {
        status
            .instances
            .iter()
            .find(|i| i.role == InstanceRole::Replica && i.ready)
            .map(|i| i.name.clone())
            .ok_or_else(|| "the Cluster has no ready replica".to_owned())
    } else {
        status
            .current_primary
            .ok_or_else(|| "the Cluster has no primary".to_owned())
    }
}

/// The kubectl arguments that run psql in `pod`.
pub fn kubectl_args(
    flags: &KubectlFlags,
    namespace: &str,
    pod: &str,
    interactive: bool,
    psql_args: &[String],
) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(path) = &flags.kubeconfig {
        args.push(format!("--kubeconfig={}", path.display()));
    }
    if let Some(context) = &flags.context {
        args.push(format!("--context={context}"));
    }
    args.extend([
        "exec".to_owned(),
        if interactive { "-it" } else { "-i" }.to_owned(),
        format!("--namespace={namespace}"),
        pod.to_owned(),
        format!("--container={INSTANCE_CONTAINER}"),
        "--".to_owned(),
        "sh".to_owned(),
        "-c".to_owned(),
        format!(
            "PGPASSWORD=\"${SUPERUSER_PASSWORD_ENV}\" exec psql -h {SOCKET_DIR} -U {SUPERUSER_ROLE} \"$@\""
        ),
        "psql".to_owned(),
    ]);
    args.extend(psql_args.iter().cloned());
    args
}

/// Runs psql through kubectl and returns its outcome: 0 → Ok, anything else → Failed.
pub async fn psql(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    replica: bool,
    psql_args: &[String],
    flags: &KubectlFlags,
) -> anyhow::Result<Exit> {
    use std::io::IsTerminal as _;
    let cluster_object = crate::get_named::<Cluster>(client, namespace, cluster).await?;
    let instance = pick_instance(&cluster_object, replica)
        .map_err(|why| anyhow::anyhow!("Cluster {namespace}/{cluster}: {why}"))?;
    let pod = tusk_api::names::statefulset_pod(&instance);
    let interactive = std::io::stdin().is_terminal();
    let status = tokio::process::Command::new("kubectl")
        .args(kubectl_args(flags, namespace, &pod, interactive, psql_args))
        .status()
        .await
        .context("cannot run kubectl (it must be on PATH)")?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop}
spec: {postgresVersion: 15, instances: 3, storage: {size: 1Gi}}
status:
  currentPrimary: db-2
  instances:
  - {name: db-1, role: Replica, ready: false}
  - {name: db-2, role: Primary, ready: true}
  - {name: db-3, role: Replica, ready: true}
",
        )
        .unwrap()
    }

    #[test]
    fn the_primary_or_a_ready_replica() {
        assert_eq!(pick_instance(&cluster(), false).unwrap(), "db-2");
        assert_eq!(pick_instance(&cluster(), true).unwrap(), "db-3");
        let mut lonely = cluster();
        lonely
            .status
            .as_mut()
            .unwrap()
            .instances
            .retain(|i| i.name == "db-2");
        assert_eq!(
            pick_instance(&lonely, true).unwrap_err(),
            "the Cluster has no ready replica"
        );
    }

    #[test]
    fn psql_runs_in_the_postgres_container_with_the_users_arguments() {
        let flags = KubectlFlags {
            kubeconfig: Some("/tmp/kc".into()),
            context: Some("prod".to_owned()),
        };
        let args = kubectl_args(
            &flags,
            "shop",
            "db-2-0",
            true,
            &["-c".into(), "select 1".into()],
        );
        assert_eq!(
            args[..8],
            [
                "--kubeconfig=/tmp/kc",
                "--context=prod",
                "exec",
                "-it",
                "--namespace=shop",
                "db-2-0",
                "--container=postgres",
                "--"
            ]
        );
        assert!(
            args[10].contains("exec psql -h /var/run/postgresql"),
            "{}",
            args[10]
        );
        assert!(
            !args
                .iter()
                .any(|a| a.contains("PGPASSWORD=") && !a.contains("$PATRONI"))
        );
        assert_eq!(args[11..], ["psql", "-c", "select 1"]);
        let piped = kubectl_args(&KubectlFlags::default(), "shop", "db-2-0", false, &[]);
        assert_eq!(piped[..2], ["exec", "-i"]);
    }
}
