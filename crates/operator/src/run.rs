//! `tusk-operator run`: the long-running operator.
//!
//! Order of start-up, each step visible in `/readyz` while it is pending:
//!
//! 1. serve `/metrics`, `/healthz`, `/readyz` (so probes and the startup benchmark see the
//!    process before any cluster work);
//! 2. connect to Kubernetes (kubeconfig or in-cluster) — a clear one-line error if impossible;
//! 3. wait for the selected controllers' CRDs to be established;
//! 4. with `--leader-election`, wait for the Lease (a follower is ready: it is healthy and
//!    takes over when the leader goes);
//! 5. run the controllers until SIGTERM (release the Lease, exit 0) or until leadership is
//!    lost (exit non-zero at once, so the pod restarts as a follower).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use tusk_operator::http::Readiness;
use tusk_operator::leader::{Elector, LeaseConfig};
use tusk_runtime::{Context, ControllerKind, Metrics, OperatorConfig};

use crate::controllers;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Controllers to run, comma separated: cluster, user, binding, backup, schedule, upgrade,
    /// or all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    controllers: Vec<ControllerName>,

    /// Namespace to watch (repeatable). Default: all namespaces.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,

    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    metrics_addr: SocketAddr,

    /// Hold a coordination.k8s.io Lease so that only one replica reconciles at a time. Turn
    /// on whenever more than one replica runs.
    #[arg(long)]
    leader_election: bool,

    /// Name of the Lease; replicas that must exclude each other share it.
    #[arg(long, default_value = "tusk-operator", value_name = "NAME")]
    leader_election_lease: String,

    /// Namespace of the Lease. Default: the operator's own (POD_NAMESPACE), else tusk-system.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "tusk-system",
        value_name = "NS"
    )]
    leader_election_namespace: String,

    /// This replica's identity for the Lease and events. Default: the pod name (HOSTNAME).
    #[arg(
        long,
        env = "HOSTNAME",
        default_value = "tusk-operator",
        value_name = "ID"
    )]
    identity: String,

    /// Seconds between checks of an unchanged object (drift inside PostgreSQL raises no watch
    /// event, so this bounds how long drift can last).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    requeue_seconds: u64,

    /// The PostgreSQL instance image; `{major}` is replaced by each Cluster's major version.
    #[arg(long, env = "TUSK_POSTGRES_IMAGE", default_value = tusk_runtime::context::DEFAULT_POSTGRES_IMAGE, value_name = "IMAGE")]
    postgres_image: String,

    /// The postgres_exporter image for the metrics sidecar.
    #[arg(long, env = "TUSK_EXPORTER_IMAGE", default_value = tusk_runtime::context::DEFAULT_EXPORTER_IMAGE, value_name = "IMAGE")]
    exporter_image: String,

    /// The PgBouncer image of Poolers' pods.
    #[arg(long, env = "TUSK_PGBOUNCER_IMAGE", default_value = tusk_runtime::context::DEFAULT_PGBOUNCER_IMAGE, value_name = "IMAGE")]
    pgbouncer_image: String,

    /// The image of each Pooler pod's metrics sidecar, which runs `tusk-operator
    /// pgbouncer-exporter`: this operator's own image (the chart sets it). Unset: no sidecar.
    #[arg(long, env = "TUSK_POOLER_EXPORTER_IMAGE", value_name = "IMAGE")]
    pooler_exporter_image: Option<String>,

    /// Log filter, in RUST_LOG syntax (`info`, `tusk=debug,kube=warn`).
    #[arg(long, env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    log: String,

    /// Log format: json, text, or auto (text on a terminal, else JSON).
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    log_format: LogFormat,
}

/// The controllers `--controllers` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ControllerName {
    All,
    Cluster,
    User,
    Binding,
    Backup,
    Schedule,
    Upgrade,
    Pooler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Auto,
    Json,
    Text,
}

fn selected(names: &[ControllerName]) -> BTreeSet<ControllerKind> {
    names
        .iter()
        .flat_map(|name| match name {
            ControllerName::All => ControllerKind::ALL.to_vec(),
            ControllerName::Cluster => vec![ControllerKind::Cluster],
            ControllerName::User => vec![ControllerKind::User],
            ControllerName::Binding => vec![ControllerKind::Binding],
            ControllerName::Backup => vec![ControllerKind::Backup],
            ControllerName::Schedule => vec![ControllerKind::Schedule],
            ControllerName::Upgrade => vec![ControllerKind::Upgrade],
            ControllerName::Pooler => vec![ControllerKind::Pooler],
        })
        .collect()
}

pub(crate) fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args.log, args.log_format)?;
    let kinds = selected(&args.controllers);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(operate(args, kinds))
}

async fn operate(args: RunArgs, kinds: BTreeSet<ControllerKind>) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let listener = tusk_operator::http::bind(args.metrics_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for metrics and probes",
                args.metrics_addr
            )
        })?;
    tokio::spawn(tusk_operator::http::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
    ));

    readiness.set_not_ready("connecting to Kubernetes");
    let client = connect().await?;
    let version = client
        .apiserver_version()
        .await
        .context("cannot reach the Kubernetes API server")?;
    tracing::info!(server = %version.git_version, controllers = ?kinds, "connected to Kubernetes");
    // `all` means every controller this binary carries; naming one that is not built is an
    // error, so a typo or a too-old image is noticed rather than silently idle.
    let all = args.controllers.contains(&ControllerName::All);
    let missing: Vec<&str> = kinds
        .iter()
        .filter(|k| controllers::runner(**k).is_none())
        .map(|k| k.name())
        .collect();
    if !missing.is_empty() && !all {
        bail!(
            "not implemented yet: the {} controller{} {} not built into this tusk-operator (see README.md for what works today)",
            missing.join(", "),
            if missing.len() == 1 { "" } else { "s" },
            if missing.len() == 1 { "is" } else { "are" },
        );
    }
    if !missing.is_empty() {
        tracing::info!(not_built = ?missing, "running every controller this build carries");
    }
    let kinds: BTreeSet<ControllerKind> = kinds
        .into_iter()
        .filter(|k| controllers::runner(*k).is_some())
        .collect();

    let crds: Vec<String> = kinds.iter().map(|k| controllers::crd_name(*k)).collect();
    readiness.set_not_ready(format!("waiting for CRDs {}", crds.join(", ")));
    tusk_operator::crd::wait_established(client.clone(), crds, Duration::from_secs(5)).await;

    let elector = args.leader_election.then(|| {
        Elector::new(
            client.clone(),
            LeaseConfig::new(
                &args.leader_election_lease,
                &args.leader_election_namespace,
                &args.identity,
            ),
        )
        .with_metrics(metrics.clone())
    });
    readiness.set_ready();
    if let Some(elector) = &elector {
        elector.acquire().await;
    } else {
        metrics.set_leader(true);
    }

    let config = Arc::new(OperatorConfig {
        namespaces: args.namespaces.iter().cloned().collect(),
        requeue_interval: Duration::from_secs(args.requeue_seconds),
        instance: args.identity.clone(),
        postgres_image: args.postgres_image.clone(),
        exporter_image: args.exporter_image.clone(),
        pgbouncer_image: args.pgbouncer_image.clone(),
        pooler_exporter_image: args.pooler_exporter_image.clone(),
        ..OperatorConfig::default()
    });
    let mut running = tokio::task::JoinSet::new();
    for kind in &kinds {
        if let Some(runner) = controllers::runner(*kind) {
            let ctx = Context::new(client.clone(), *kind, config.clone(), &metrics);
            tracing::info!(controller = kind.name(), "starting controller");
            running.spawn(runner(ctx));
        }
    }

    let lost = async {
        match &elector {
            Some(elector) => Some(elector.keep_renewing().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        Some(lost) = lost => {
            running.abort_all();
            bail!("leadership lost, stopping so the pod restarts as a follower: {lost}");
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            running.abort_all();
            if let Some(elector) = &elector
                && let Err(error) = elector.release().await
            {
                tracing::warn!(%error, "could not release the leader Lease; it will expire");
            }
            Ok(())
        }
        Some(ended) = running.join_next() => {
            bail!("a controller stopped unexpectedly: {ended:?}");
        }
    }
}

pub(crate) async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// A client for the current kubeconfig or the in-cluster service account, with an error that
/// says what was tried.
pub(crate) async fn connect() -> anyhow::Result<kube::Client> {
    let tried = match std::env::var_os("KUBECONFIG") {
        Some(path) => format!("KUBECONFIG={}", path.to_string_lossy()),
        None => {
            let home = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_default();
            format!(
                "kubeconfig {} and the in-cluster service account",
                home.join(".kube/config").display()
            )
        }
    };
    let config = kube::Config::infer()
        .await
        .map_err(|e| anyhow::anyhow!("no Kubernetes cluster configured (tried {tried}): {e}"))?;
    kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client (from {tried}): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_selects_every_controller_once() {
        assert_eq!(
            selected(&[ControllerName::All, ControllerName::User]).len(),
            7
        );
        assert_eq!(
            selected(&[
                ControllerName::User,
                ControllerName::Cluster,
                ControllerName::User
            ])
            .into_iter()
            .collect::<Vec<_>>(),
            vec![ControllerKind::Cluster, ControllerKind::User]
        );
    }
}
