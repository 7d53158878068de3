//! Project automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! ```text
//!   crates/api ──► crds ──► crds/*.yaml, charts/tusk/crds/*.yaml
//!             └──► docs ──► docs/reference/*.md
//!   crates/runtime (rbac) ──► chart ──► charts/tusk/templates/_rules.tpl
//! ```
//!
//! `test` installs the real components the tests need (`install` does only that) and runs
//! the whole check: fmt, clippy, the generated-file checks and every test.
//!
//! Generated files are checked in; every generator takes `--check`, which regenerates in
//! memory and fails when the files on disk differ, so CI notices a type change whose
//! generated files were not refreshed.

#![forbid(unsafe_code)]

mod bench;
mod bench_backup;
mod bench_failover;
mod bench_pooler;
mod bench_upgrade;
mod bench_users;
mod chart;
mod crds;
mod docs;
mod install;
mod krew;
mod test;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "tusk project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the CustomResourceDefinitions to crds/ and charts/tusk/crds/.
    Crds(crds::CrdsArgs),
    /// Write the API reference (docs/reference/) from the CRD schemas.
    Docs(docs::DocsArgs),
    /// Run a benchmark and print its `name=value` figures (not part of CI).
    Bench(bench::BenchArgs),
    /// Write the Helm chart's RBAC rules from the Rust list of API calls; check the templates.
    Chart(chart::ChartArgs),
    /// Install missing real components, then run fmt, clippy, generated-file checks and tests.
    Test(test::TestArgs),
    /// Install the real components the tests use into the cache directory.
    Install(install::InstallArgs),
    /// Write the krew plugin manifest of a `kubectl tusk` release from its archives' checksums.
    Krew(krew::KrewArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Crds(args) => crds::run(&root, &args),
        Command::Docs(args) => docs::run(&root, &args),
        Command::Chart(args) => chart::run(&root, &args),
        Command::Bench(args) => bench::run(&root, &args),
        Command::Test(args) => test::run(args),
        Command::Install(args) => install::run(args),
        Command::Krew(args) => krew::run(&args),
    }
}

/// The directory holding the workspace `Cargo.toml`: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// The complete contents of one generated directory: every file with `extension` in `dir`
/// is generated, so a file not in `files` is stale and goes away.
#[derive(Debug)]
struct GeneratedFiles {
    dir: PathBuf,
    extension: &'static str,
    /// File name (relative to `dir`) to contents.
    files: BTreeMap<PathBuf, String>,
}

/// Writes every file whose contents changed and removes files the generator no longer makes.
fn write_generated(root: &Path, output: &GeneratedFiles) -> Result<()> {
    fs::create_dir_all(&output.dir)
        .with_context(|| format!("creating {}", output.dir.display()))?;
    for (name, contents) in &output.files {
        let path = output.dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(contents.as_str()) {
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", relative(root, &path).display());
        }
    }
    for extra in extra_files(output)? {
        fs::remove_file(&extra).with_context(|| format!("removing {}", extra.display()))?;
        println!("removed {}", relative(root, &extra).display());
    }
    Ok(())
}

/// Fails, naming every stale, missing or extra file, unless the disk matches `outputs`.
fn check_generated(root: &Path, outputs: &[GeneratedFiles], command: &str) -> Result<()> {
    let mut problems = Vec::new();
    for output in outputs {
        for (name, contents) in &output.files {
            let path = output.dir.join(name);
            match fs::read_to_string(&path) {
                Ok(on_disk) if on_disk == *contents => {}
                Ok(_) => problems.push(format!("stale:   {}", relative(root, &path).display())),
                Err(_) => problems.push(format!("missing: {}", relative(root, &path).display())),
            }
        }
        for extra in extra_files(output)? {
            problems.push(format!("extra:   {}", relative(root, &extra).display()));
        }
    }
    if problems.is_empty() {
        let count: usize = outputs.iter().map(|output| output.files.len()).sum();
        println!("{count} generated files are up to date");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!(
        "{} generated file(s) differ from what the code generates; run `{command}`",
        problems.len()
    )
}

/// Files in `output.dir` with the generated extension that the generator does not make.
fn extra_files(output: &GeneratedFiles) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(&output.dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", output.dir.display()));
        }
    };
    let mut extra = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let generated_kind = path.extension().is_some_and(|ext| ext == output.extension);
        let known = path
            .file_name()
            .is_some_and(|name| output.files.contains_key(Path::new(name)));
        if path.is_file() && generated_kind && !known {
            extra.push(path);
        }
    }
    extra.sort();
    Ok(extra)
}

fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}
