//! `cargo xtask test`: the one command that proves the workspace on a Debian machine —
//! install the real components, then fmt, clippy, the generated-file checks and every test.
//!
//! ```text
//!  install ─► fmt --check ─► clippy -D warnings ─► crds --check ─► docs --check
//!          ─► chart --check ─► cargo test
//! ```
//!
//! Each step prints a header and its time; the first failing step stops the run with a
//! non-zero exit. `.ci/run` runs this with `TUSK_REQUIRE_REAL=1`, so a test whose component
//! is missing fails instead of skipping.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::install;

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Skip `cargo xtask install` (the real components are already in place, or unwanted).
    #[arg(long)]
    no_install: bool,
    /// Cache directory for the PyPI and npm components [default: /var/cache/tusk as root,
    /// else $XDG_CACHE_HOME/tusk or ~/.cache/tusk].
    #[arg(long, env = "TUSK_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Arguments for `cargo test --workspace`, after `--`: e.g. `-- --no-fail-fast` or
    /// `-- -- --nocapture` (the second `--` passes on to the test binaries).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_test_args: Vec<OsString>,
}

/// One step of the run: a command, or (`None`) the installer, which runs in process.
struct Step {
    name: &'static str,
    command: Option<Command>,
}

impl Step {
    fn run(name: &'static str, command: Command) -> Self {
        Self {
            name,
            command: Some(command),
        }
    }
}

pub(crate) fn run(args: TestArgs) -> Result<()> {
    let root = workspace_root();
    let cache = args.cache_dir.unwrap_or_else(install::default_cache_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let xtask = std::env::current_exe().context("locating the xtask binary")?;

    let cargo_command = |args: &[&str]| {
        let mut command = Command::new(&cargo);
        command.args(args);
        command
    };
    let xtask_command = |args: &[&str]| {
        let mut command = Command::new(&xtask);
        command.args(args);
        command
    };
    let mut cargo_test = cargo_command(&["test", "--workspace"]);
    cargo_test.args(&args.cargo_test_args);

    let mut steps = Vec::new();
    if !args.no_install {
        steps.push(Step {
            name: "cargo xtask install",
            command: None,
        });
    }
    steps.extend([
        Step::run(
            "cargo fmt --all -- --check",
            cargo_command(&["fmt", "--all", "--", "--check"]),
        ),
        Step::run(
            "cargo clippy --workspace --all-targets -- -D warnings",
            cargo_command(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        Step::run(
            "cargo xtask crds --check",
            xtask_command(&["crds", "--check"]),
        ),
        Step::run(
            "cargo xtask docs --check",
            xtask_command(&["docs", "--check"]),
        ),
        Step::run(
            "cargo xtask chart --check",
            xtask_command(&["chart", "--check"]),
        ),
        Step::run("cargo test --workspace", cargo_test),
    ]);

    let started = Instant::now();
    let count = steps.len();
    let mut timings = Vec::new();
    for (index, step) in steps.into_iter().enumerate() {
        let step_started = Instant::now();
        let name = step.name;
        println!("\n==> [{}/{count}] {name}", index + 1);
        let outcome = match step.command {
            None => install::install(&cache, false),
            Some(mut command) => {
                command
                    .current_dir(&root)
                    .env("TUSK_CACHE_DIR", &cache)
                    .stdin(Stdio::null());
                run_step(command, name)
            }
        };
        let elapsed = step_started.elapsed();
        timings.push((name, elapsed));
        if let Err(error) = outcome {
            println!("==> FAILED: {name} after {}", seconds(elapsed));
            return Err(error);
        }
        println!("==> ok: {name} in {}", seconds(elapsed));
    }
    println!(
        "\n==> all {count} steps passed in {}",
        seconds(started.elapsed())
    );
    for (name, elapsed) in timings {
        println!("    {:>8}  {name}", seconds(elapsed));
    }
    Ok(())
}

fn run_step(mut command: Command, name: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

/// The directory holding the workspace `Cargo.toml`: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}
