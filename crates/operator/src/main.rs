//! `tusk-operator`: the one binary of tusk.
//!
//! ```text
//! tusk-operator run     run the chosen controllers against the current Kubernetes cluster
//! tusk-operator render  print the child objects the controllers would apply, offline
//! tusk-operator crds    print the CustomResourceDefinitions (the same generation as crds/)
//! ```
//!
//! Controllers live in their own crates and meet only through `tusk-api`; this binary selects
//! them, wires logging, and turns every failure into one readable line and a non-zero exit.

#![forbid(unsafe_code)]

mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Runs tusk's controllers, renders what they would create, and prints tusk's CRDs.
#[derive(Debug, Parser)]
#[command(name = "tusk-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run controllers against the cluster in the current kubeconfig (or in-cluster config).
    Run(RunArgs),
    /// Print, as multi-document YAML, the objects the controllers would apply for the given
    /// resources, without contacting a cluster.
    Render(RenderArgs),
    /// Print tusk's CustomResourceDefinitions as multi-document YAML.
    Crds,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Controllers to run, comma separated, or `all`.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    controllers: Vec<ControllerName>,

    /// Namespaces to watch (repeatable). Default: all namespaces.
    #[arg(long = "namespace", value_name = "NS")]
    namespaces: Vec<String>,

    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,

    /// Hold a coordination.k8s.io Lease so only one replica reconciles at a time.
    #[arg(long, default_value_t = false)]
    leader_election: bool,

    /// Log filter, in RUST_LOG syntax (`info`, `tusk=debug,kube=warn`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// YAML files holding tusk resources (`-` for standard input). Multi-document files are
    /// fine.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    files: Vec<String>,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Render(args) => render::render_files(&args.files, &mut std::io::stdout().lock()),
        Command::Crds => print_crds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `tusk-operator crds | head` closes the pipe early; that is not a failure.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, the whole causal chain, no backtrace.
            eprintln!("tusk-operator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn print_crds() -> anyhow::Result<()> {
    let mut out = String::new();
    for crd in tusk_api::crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(&args.log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect().await?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the Kubernetes API server: {e}"))?;
        tracing::info!(
            server = %version.git_version,
            controllers = ?args.controllers,
            namespaces = ?args.namespaces,
            metrics_addr = %args.metrics_addr,
            leader_election = args.leader_election,
            "connected to Kubernetes"
        );
        let selected = selected_controllers(&args.controllers);
        anyhow::bail!(
            "no controller is built into this tusk-operator yet (asked for: {}); \
             the controllers arrive one per release, see README.md",
            selected.join(", ")
        )
    })
}

fn selected_controllers(names: &[ControllerName]) -> Vec<&'static str> {
    const ALL: [&str; 6] = [
        "cluster", "user", "binding", "backup", "schedule", "upgrade",
    ];
    if names.contains(&ControllerName::All) {
        return ALL.to_vec();
    }
    let mut selected: Vec<&'static str> = names
        .iter()
        .map(|name| match name {
            ControllerName::All | ControllerName::Cluster => "cluster",
            ControllerName::User => "user",
            ControllerName::Binding => "binding",
            ControllerName::Backup => "backup",
            ControllerName::Schedule => "schedule",
            ControllerName::Upgrade => "upgrade",
        })
        .collect();
    selected.sort_unstable();
    selected.dedup();
    selected
}

/// A client for the current kubeconfig or the in-cluster service account, with an error that
/// says what was tried.
async fn connect() -> anyhow::Result<kube::Client> {
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
    fn all_selects_every_controller() {
        assert_eq!(selected_controllers(&[ControllerName::All]).len(), 6);
        assert_eq!(
            selected_controllers(&[
                ControllerName::User,
                ControllerName::Cluster,
                ControllerName::User
            ]),
            vec!["cluster", "user"]
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
