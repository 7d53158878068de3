//! `tusk-operator pgbouncer-exporter`: flags to a [`Scraper`], then serve until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tusk_operator::pgbouncer_exporter::{self, PASSWORD_ENV, Scraper};
use tusk_pooler_controller::auth::ADMIN_ROLE;
use tusk_runtime::postgres::{PrimaryTarget, RustlsConnector};

use crate::run::{LogFormat, init_logging, shutdown_signal};

/// The flags (the subcommand's help is its variant's doc in main.rs). The password is not
/// one: it comes from [`PASSWORD_ENV`] only.
#[derive(Debug, clap::Args)]
pub(crate) struct PgbouncerExporterArgs {
    /// Address of the /metrics and /healthz endpoint.
    #[arg(long, default_value_t = SocketAddr::from(([0, 0, 0, 0], pgbouncer_exporter::DEFAULT_PORT)), value_name = "ADDR")]
    listen: SocketAddr,

    /// IP address PgBouncer listens on (in a Pooler pod, the loopback).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pgbouncer_host: IpAddr,

    /// PgBouncer's port.
    #[arg(long, default_value_t = 5432, value_name = "PORT")]
    pgbouncer_port: u16,

    /// The admin console user (one of PgBouncer's admin_users or stats_users).
    #[arg(long, default_value = ADMIN_ROLE, value_name = "NAME")]
    user: String,

    /// The host name PgBouncer's certificate carries, checked as with sslmode=verify-full
    /// (in a Pooler pod: <pooler>.<namespace>.svc).
    #[arg(long, value_name = "NAME")]
    server_name: String,

    /// PEM file of the CA that issued PgBouncer's certificate; read again at every
    /// connection.
    #[arg(long, value_name = "FILE")]
    ca_file: PathBuf,

    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_name = "FILTER")]
    log: String,

    /// Log format: json, text, or auto (text on a terminal, else JSON).
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    log_format: LogFormat,
}

pub(crate) fn run(args: PgbouncerExporterArgs) -> anyhow::Result<()> {
    init_logging(&args.log, args.log_format)?;
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(password) if !password.is_empty() => password,
        _ => bail!(
            "{PASSWORD_ENV} is not set: the admin console user's password comes from the environment only"
        ),
    };
    // Fail at start, not at the first scrape, when the CA file is unusable.
    let ca_pem = std::fs::read(&args.ca_file)
        .with_context(|| format!("cannot read the CA file {}", args.ca_file.display()))?;
    RustlsConnector::new(&ca_pem)
        .with_context(|| format!("the CA file {} is not usable", args.ca_file.display()))?;
    let target = PrimaryTarget {
        host: args.server_name,
        port: args.pgbouncer_port,
        address: Some(args.pgbouncer_host),
        ca_pem: None,
        user: args.user,
        password,
    };
    // One thread: a scrape is a handful of small queries on one connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {} for metrics", args.listen))?;
        tracing::info!(
            listen = %args.listen,
            pgbouncer = %format_args!("{}:{}", args.pgbouncer_host, target.port),
            server_name = %target.host,
            user = %target.user,
            "serving PgBouncer metrics"
        );
        let scraper = Arc::new(Scraper::new(target, args.ca_file));
        tokio::select! {
            () = pgbouncer_exporter::serve(listener, scraper) => Ok(()),
            () = shutdown_signal() => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    })
}
