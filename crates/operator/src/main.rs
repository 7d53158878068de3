//! `tusk-operator`: the one binary of tusk.
//!
//! ```text
//! tusk-operator run     run the chosen controllers against the current Kubernetes cluster
//! tusk-operator render  print the child objects the controllers would apply, offline
//! tusk-operator crds    print the CustomResourceDefinitions (the same generation as crds/)
//! tusk-operator pgbouncer-exporter   a Pooler pod's metrics sidecar (PgBouncer's SHOW output)
//! ```
//!
//! Controllers live in their own crates and meet only through `tusk-api`; this binary selects
//! them, wires logging, and turns every failure into one readable line and a non-zero exit.
//! The process's own plumbing around them — leader election, the probe and metrics endpoint,
//! waiting for CRDs — is this package's library (`lib.rs`), so its tests can reach it.

#![forbid(unsafe_code)]

mod controllers;
mod exporter;
mod render;
mod run;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs tusk's controllers, renders what they would create, and prints tusk's CRDs.
#[derive(Debug, Parser)]
#[command(name = "tusk-operator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; the size of the `run` arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run controllers against the cluster in the current kubeconfig (or in-cluster config).
    Run(run::RunArgs),
    /// Print, as multi-document YAML, the objects the controllers would apply for the given
    /// resources, without contacting a cluster.
    Render(RenderArgs),
    /// Print tusk's CustomResourceDefinitions as multi-document YAML.
    Crds,
    /// Serve PgBouncer's statistics as Prometheus metrics: the metrics sidecar of a Pooler
    /// pod.
    ///
    /// Logs in to PgBouncer's admin console over TLS (verify-full) as --user, with the
    /// password from the environment variable TUSK_PGBOUNCER_PASSWORD (never a flag), and
    /// answers /metrics with what SHOW STATS, POOLS, DATABASES, LISTS and CONFIG say — or
    /// pgbouncer_up 0 while PgBouncer cannot be reached. /healthz answers 200 while the
    /// process serves.
    PgbouncerExporter(exporter::PgbouncerExporterArgs),
}

#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// YAML files holding tusk resources (`-` for standard input). Multi-document files are
    /// fine.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    files: Vec<String>,
}

fn main() -> ExitCode {
    install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Render(args) => render::render_files(&args.files, &mut std::io::stdout().lock()),
        Command::Crds => print_crds(),
        Command::PgbouncerExporter(args) => exporter::run(args),
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

/// Makes rustls' `ring` provider the process default before any TLS client is built. rustls
/// picks a default by itself only when exactly one provider is compiled in, and which ones are
/// depends on how the binary was built: a `cargo build` or `cargo test` at the workspace root
/// unifies features across every member, test-only dependencies bring in aws-lc-rs beside
/// ring, and kube's client would then panic at its first request. Choosing explicitly makes
/// the binary behave the same however it was built.
fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
