//! `kubectl tusk`: what a person reaches for in an incident, for the objects tusk's controllers
//! own. Every command goes through the Kubernetes API only (no pod network access from the
//! laptop): reads of the custom resources and their status, and the annotations and objects
//! the controllers act on.
//!
//! ```text
//!  main.rs      flags → connect (kubeconfig, context, namespace) → run(command) → exit code
//!  status.rs    gather: Cluster + Backups, schedules, upgrades, users, bindings → Report
//!  render.rs    Report → one screen of text (colours only on a terminal); json/yaml as is
//!  actions.rs   switchover, restart (annotations), backup (a Backup object),
//!               rotate-password (annotation): each asks, waits for the controller's
//!               answer, prints it
//!  psql.rs      psql in the primary's (or a replica's) postgres container via kubectl exec
//!  report.rs    the support bundle: status, the Cluster and its children, related objects,
//!               events, operator log lines, Patroni's view; Secrets as key names only
//!  wait.rs      polling with a timeout, progress printed as it changes
//! ```
//!
//! Exit codes ([`Exit`]): 0 done (or the Cluster is Ready), 1 error (not found, API refused),
//! 2 usage, 3 timed out waiting, 4 the operation failed or the Cluster is not Ready.

#![forbid(unsafe_code)]

pub mod actions;
pub mod connect;
pub mod psql;
pub mod render;
pub mod report;
pub mod status;
pub mod wait;

use std::io::Write;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// `kubectl tusk`: status, switchover, backups and password rotation for tusk's PostgreSQL
/// clusters.
#[derive(Debug, Parser)]
#[command(name = "kubectl-tusk", bin_name = "kubectl tusk", version)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// The namespace of the object (default: the context's namespace, else `default`).
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A Cluster on one screen: conditions, instances (role, timeline, lag), storage,
    /// archiving, backups and schedules, upgrades, and the users and bindings on it. Exits 4
    /// when the Cluster is not Ready.
    Status {
        /// The Cluster's name.
        cluster: String,
        /// Output format: text for people, json or yaml for scripts.
        #[arg(short, long, value_enum, default_value_t = Format::Text)]
        output: Format,
    },
    /// Asks the Cluster controller to switch the primary over (annotation
    /// `tusk.dev/switchover`) and waits until it has.
    Switchover {
        /// The Cluster's name.
        cluster: String,
        /// The instance to promote (`<cluster>-<n>`); default: the healthiest replica.
        #[arg(long, value_name = "INSTANCE")]
        to: Option<String>,
        /// How long to wait for the new primary.
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Restarts every instance of a Cluster through its controller (annotation
    /// `tusk.dev/restart`): replicas one at a time, then a switchover and the old primary, as
    /// a rolling update does; or, given an INSTANCE, only that one (annotation
    /// `tusk.dev/restart-instance`; a primary hands over to a replica first). Waits until
    /// the restarted instances are ready.
    Restart {
        /// The Cluster's name.
        cluster: String,
        /// Restart only this instance (`<cluster>-<n>`).
        instance: Option<String>,
        /// How long to wait for the rolling restart.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Takes a backup: creates a Backup of the Cluster and, with `--wait`, follows it to the
    /// end.
    Backup {
        /// The Cluster's name.
        cluster: String,
        /// The backup type.
        #[arg(long = "type", value_enum, default_value_t = BackupKind::Full)]
        kind: BackupKind,
        /// The Backup's name (default: `<cluster>-<type>-<UTC time>`).
        #[arg(long)]
        name: Option<String>,
        /// Wait until the backup completed or failed, printing its progress.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Opens psql in the primary's `postgres` container (with `--replica`, a ready
    /// replica's) through `kubectl exec`, as the superuser over the Unix socket; arguments
    /// after `--` go to psql. Needs `create` on pods/exec.
    Psql {
        /// The Cluster's name.
        cluster: String,
        /// Connect to a ready replica instead of the primary.
        #[arg(long)]
        replica: bool,
        /// Arguments for psql (after `--`), e.g. `-- -d app -c 'select 1'`.
        #[arg(last = true, value_name = "PSQL ARGS")]
        args: Vec<String>,
    },
    /// Writes a support bundle (zip): status, the Cluster and every child, Backups, users and
    /// bindings, events, the operator's log lines about the Cluster and Patroni's view.
    /// Secrets appear with key names only; no Secret value is in the file.
    Report {
        /// The Cluster's name.
        cluster: String,
        /// The zip file to write.
        #[arg(short, long, value_name = "FILE.zip")]
        output: std::path::PathBuf,
        /// The namespace the operator runs in (its log lines are read there).
        #[arg(long, default_value = "tusk-system", value_name = "NAMESPACE")]
        operator_namespace: String,
        /// How many of each operator pod's last log lines are searched for the Cluster.
        #[arg(long, default_value_t = 5000)]
        log_lines: i64,
    },
    /// Rotates a PostgresUser's password now (annotation `tusk.dev/rotate-password`) and waits
    /// until the controller has changed it. Applications get the new password from the
    /// user's Secret.
    RotatePassword {
        /// The PostgresUser's name.
        user: String,
        /// How long to wait for the rotation.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

/// Output of data commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// `--type` of `backup`, in pgBackRest's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackupKind {
    Full,
    Diff,
    Incr,
}

impl BackupKind {
    /// The Backup's `spec.type`.
    pub fn backup_type(self) -> tusk_api::backup::BackupType {
        use tusk_api::backup::BackupType;
        match self {
            BackupKind::Full => BackupType::Full,
            BackupKind::Diff => BackupType::Differential,
            BackupKind::Incr => BackupType::Incremental,
        }
    }
}

/// How a command ended; the process exits with its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done, or the Cluster is Ready.
    Ok = 0,
    /// The command could not run: object not found, API refused, bad kubeconfig.
    Error = 1,
    /// The wait ran out before the controller answered.
    TimedOut = 3,
    /// The controller answered with a failure, or the Cluster is not Ready.
    Failed = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Where a command writes and whether it may colour.
pub struct Terminal<'a> {
    pub out: &'a mut (dyn Write + Send),
    pub colour: bool,
}

impl std::fmt::Debug for Terminal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("colour", &self.colour)
            .finish_non_exhaustive()
    }
}

impl Terminal<'_> {
    /// Writes one line and flushes, so progress shows as it happens.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.out, "{text}")?;
        self.out.flush()?;
        Ok(())
    }
}

/// Runs `command` in `namespace`; `kubectl` is what `psql` passes on to kubectl.
pub async fn run(
    command: Command,
    client: kube::Client,
    namespace: &str,
    kubectl: &psql::KubectlFlags,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    match command {
        Command::Psql {
            cluster,
            replica,
            args,
        } => psql::psql(&client, namespace, &cluster, replica, &args, kubectl).await,
        Command::Status { cluster, output } => {
            let report = status::gather(&client, namespace, &cluster).await?;
            let text = match output {
                Format::Text => render::text(&report, terminal.colour),
                Format::Json => serde_json::to_string_pretty(&report)? + "\n",
                Format::Yaml => serde_yaml_ng::to_string(&report)?,
            };
            write!(terminal.out, "{text}")?;
            Ok(if report.is_ready() {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        Command::Switchover {
            cluster,
            to,
            timeout,
        } => {
            actions::switchover(
                &client,
                namespace,
                &cluster,
                to.as_deref(),
                timeout,
                terminal,
            )
            .await
        }
        Command::Restart {
            cluster,
            instance,
            timeout,
        } => {
            actions::restart(
                &client,
                namespace,
                &cluster,
                instance.as_deref(),
                timeout,
                terminal,
            )
            .await
        }
        Command::Backup {
            cluster,
            kind,
            name,
            wait,
            timeout,
        } => {
            let request = actions::BackupRequest {
                cluster: &cluster,
                kind,
                name: name.as_deref(),
                wait: wait.then_some(timeout),
            };
            actions::backup(&client, namespace, &request, terminal).await
        }
        Command::Report {
            cluster,
            output,
            operator_namespace,
            log_lines,
        } => {
            let request = report::ReportRequest {
                cluster: &cluster,
                output: &output,
                operator_namespace: &operator_namespace,
                log_lines,
            };
            report::report(&client, namespace, &request, terminal).await
        }
        Command::RotatePassword { user, timeout } => {
            actions::rotate_password(&client, namespace, &user, timeout, terminal).await
        }
    }
}

/// The `K` named `name` in `namespace`; an error that names it when it does not exist.
pub async fn get_named<K>(client: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    use anyhow::Context as _;
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    kube::Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .with_context(|| format!("reading {kind} {namespace}/{name}"))?
        .with_context(|| format!("{kind} {namespace}/{name} not found"))
}

/// Parses `90s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => value,
        "m" => value.saturating_mul(60),
        "h" => value.saturating_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    if seconds == 0 {
        return Err("the timeout must be longer than 0s".to_owned());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_in_seconds_minutes_hours() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("s, m or h"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn every_command_has_help() {
        let mut command = Cli::command();
        command.build();
        for sub in command.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some(),
                    "{} {} has no help",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_like_kubectl() {
        let cli = Cli::try_parse_from([
            "kubectl-tusk",
            "status",
            "db",
            "-n",
            "shop",
            "--context",
            "prod",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.context.as_deref(), Some("prod"));
        assert!(matches!(
            cli.command,
            Command::Status {
                output: Format::Json,
                ..
            }
        ));
        let usage =
            Cli::try_parse_from(["kubectl-tusk", "backup", "db", "--type", "weekly"]).unwrap_err();
        assert_eq!(usage.exit_code(), 2);
    }
}
