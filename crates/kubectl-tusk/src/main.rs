//! `kubectl-tusk`: on PATH, kubectl runs it as `kubectl tusk`.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use kubectl_tusk::{Cli, Exit, Terminal, connect, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's TLS goes through rustls with the ring provider (the only one in the build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stdout = std::io::stdout();
    let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout;
    let mut terminal = Terminal {
        out: &mut out,
        colour,
    };
    let exit = async {
        let target = connect::connect(
            cli.kubeconfig.as_deref(),
            cli.context.as_deref(),
            cli.namespace.as_deref(),
        )
        .await?;
        let kubectl = kubectl_tusk::psql::KubectlFlags {
            kubeconfig: cli.kubeconfig.clone(),
            context: cli.context.clone(),
        };
        run(
            cli.command,
            target.client,
            &target.namespace,
            &kubectl,
            &mut terminal,
        )
        .await
    }
    .await;
    match exit {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Error.into()
        }
    }
}
