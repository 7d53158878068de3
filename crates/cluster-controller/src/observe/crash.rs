//! Why an instance's `postgres` container keeps exiting, as the kubelet reports it: the restart
//! count, the exit code, the termination message — and the end of the previous run's log,
//! which the controller reads through the API (`pods/log`, `previous=true`).
//!
//! Two facts of real Patroni 3.0.2 shape this (measured in `tests/restore_patroni_real.rs`):
//! as a container's PID 1 Patroni runs its work in a child and exits 0 whatever happened, so
//! an exit after a restart counts as a failure even with code 0 (Patroni never ends by itself
//! when all is well); and after "Failed to bootstrap cluster" its Python traceback alone fills
//! most of the 2 KiB of log the kubelet keeps as termination message, so PostgreSQL's `FATAL`
//! line (about 40 lines up) is found in the log, [`LOG_TAIL_LINES`] long, not in the message.
//!
//! Only lines that say what went wrong (`FATAL`, `PANIC`, `ERROR`, Patroni's own failure) are
//! kept, each cut short, and any line that mentions a password or a secret is dropped: the
//! cause ends up in the Cluster's status and events.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};

/// The container tusk reads: Patroni and PostgreSQL.
const CONTAINER: &str = tusk_api::names::INSTANCE_CONTAINER;
/// How much of the previous run's log is read for the cause.
pub const LOG_TAIL_LINES: i64 = 200;
/// At most this many telling lines, the last ones, are quoted.
const MAX_LINES: usize = 3;
/// A quoted line is cut at this many bytes.
const MAX_LINE_BYTES: usize = 240;

/// An instance whose `postgres` container exited by itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crash {
    /// How often the kubelet has restarted the container.
    pub restarts: i32,
    pub exit_code: i32,
    /// The telling lines of the previous run's log or, when that could not be read, of the
    /// termination message; oldest first, joined by " | ".
    pub cause: Option<String>,
}

impl Crash {
    /// "exited with code 1 after 3 restarts: FATAL: ..." for a condition message.
    pub fn describe(&self) -> String {
        let restarts = match self.restarts {
            0 => String::new(),
            1 => " after 1 restart".to_owned(),
            n => format!(" after {n} restarts"),
        };
        match &self.cause {
            Some(cause) => format!("exited with code {}{restarts}: {cause}", self.exit_code),
            None => format!(
                "exited with code {}{restarts} (no error in its termination message)",
                self.exit_code
            ),
        }
    }
}

/// The pod's `postgres` container's last failure, if it failed: the current state when it is
/// terminated (waiting to be restarted), otherwise the last state the kubelet keeps while it
/// runs again or backs off (`CrashLoopBackOff`). An exit with an error code counts; so does
/// any exit once the kubelet has restarted the container (Patroni as PID 1 exits 0 even when
/// it gave up). A pod being deleted has not crashed.
pub fn of_pod(pod: &Pod) -> Option<Crash> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == CONTAINER)?;
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let failed = |t: &&ContainerStateTerminated| t.exit_code != 0 || status.restart_count > 0;
    let terminated = current.filter(failed).or(last.filter(failed))?;
    Some(Crash {
        restarts: status.restart_count,
        exit_code: terminated.exit_code,
        cause: terminated.message.as_deref().and_then(cause),
    })
}

/// The lines of a termination message that say what went wrong, the last [`MAX_LINES`].
pub fn cause(message: &str) -> Option<String> {
    let telling: Vec<String> = message
        .lines()
        .map(str::trim)
        .filter(|line| is_telling(line) && !mentions_a_secret(line))
        .map(shorten)
        .collect();
    let mut last: Vec<String> = Vec::new();
    for line in telling.into_iter().rev() {
        if !last.contains(&line) {
            last.push(line);
        }
        if last.len() == MAX_LINES {
            break;
        }
    }
    last.reverse();
    (!last.is_empty()).then(|| last.join(" | "))
}

/// Lines logged on the way to a failure that never are its cause: PostgreSQL turning clients
/// (Patroni's own health checks among them) away while it starts or stops, and Patroni's
/// "postmaster is not running" once it has stopped.
const ROUTINE: [&str; 4] = [
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "postmaster is not running",
];

fn is_telling(line: &str) -> bool {
    // A traceback's `raise ...` line repeats the exception line that follows it.
    if line.starts_with("raise ") || ROUTINE.iter().any(|routine| line.contains(routine)) {
        return false;
    }
    [
        "FATAL:",
        "PANIC:",
        "ERROR:",
        "Failed to bootstrap",
        "PatroniFatalException",
    ]
    .iter()
    .any(|marker| line.contains(marker))
}

fn mentions_a_secret(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    ["password", "passphrase", "secret", "key="]
        .iter()
        .any(|word| lower.contains(word))
}

/// Drops the timestamp and process prefix PostgreSQL and Patroni put before the message, and
/// cuts the rest at [`MAX_LINE_BYTES`].
fn shorten(line: &str) -> String {
    let from = ["FATAL:", "PANIC:", "ERROR:"]
        .iter()
        .filter_map(|marker| line.find(marker))
        .min()
        .unwrap_or(0);
    let text = &line[from..];
    if text.len() <= MAX_LINE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    use super::*;

    /// The end of a `postgres` container's log after a restore to a time past the archived WAL
    /// (Patroni 3.0.2, PostgreSQL 15, pgBackRest 2.45), shortened from a real run.
    const FAILED_RESTORE: &str = "\
2026-11-30 10:01:02,003 INFO: Running custom bootstrap script: pgbackrest --stanza=db restore --type=time
2026-11-30 10:01:09.120 UTC [61] LOG:  starting point-in-time recovery to 2026-11-30 12:00:00+00
2026-11-30 10:01:09.200 UTC [63] FATAL:  the database system is starting up
2026-11-30 10:01:09.310 UTC [61] LOG:  restored log file \"000000010000000000000004\" from archive
2026-11-30 10:01:09.512 UTC [61] LOG:  redo done at 0/4000100 system usage: CPU: user: 0.00 s
2026-11-30 10:01:09.513 UTC [61] FATAL:  recovery ended before configured recovery target was reached
2026-11-30 10:01:09.520 UTC [60] LOG:  startup process (PID 61) exited with exit code 1
2026-11-30 10:01:09.900 ERROR: postmaster is not running
2026-11-30 10:01:10,004 INFO: removing initialize key after failed attempt to bootstrap the cluster
2026-11-30 10:01:10,051 INFO: renaming data directory to /pgdata/pg15.failed
Traceback (most recent call last):
  File \"/usr/lib/python3/dist-packages/patroni/ha.py\", line 1476, in cancel_initialization
    raise PatroniFatalException('Failed to bootstrap cluster')
patroni.exceptions.PatroniFatalException: 'Failed to bootstrap cluster'";

    fn pod(status: ContainerStatus) -> Pod {
        Pod {
            status: Some(PodStatus {
                container_statuses: Some(vec![status]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn terminated(exit_code: i32, message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.to_owned()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    #[test]
    fn patroni_as_pid_1_exits_0_and_a_restarted_container_still_counts() {
        let restarted = ContainerStatus {
            name: "postgres".into(),
            restart_count: 2,
            last_state: Some(terminated(0, "")),
            ..ContainerStatus::default()
        };
        let crash = of_pod(&pod(restarted)).unwrap();
        assert_eq!((crash.exit_code, crash.cause.clone()), (0, None));
        assert!(
            crash
                .describe()
                .contains("exited with code 0 after 2 restarts")
        );
        let mut deleted = pod(ContainerStatus {
            name: "postgres".into(),
            restart_count: 2,
            state: Some(terminated(0, "")),
            ..ContainerStatus::default()
        });
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            of_pod(&deleted),
            None,
            "a pod being deleted stops on purpose"
        );
    }

    #[test]
    fn a_failed_restore_is_told_by_postgresql_and_patroni() {
        let cause = cause(FAILED_RESTORE).unwrap();
        assert_eq!(
            cause,
            "FATAL:  recovery ended before configured recovery target was reached | \
             patroni.exceptions.PatroniFatalException: 'Failed to bootstrap cluster'"
        );
    }

    #[test]
    fn crash_loop_back_off_keeps_the_last_termination() {
        // What the kubelet reports between restarts: waiting, with the last state terminated.
        let status = ContainerStatus {
            name: "postgres".into(),
            restart_count: 4,
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    ..ContainerStateWaiting::default()
                }),
                ..ContainerState::default()
            }),
            last_state: Some(terminated(1, FAILED_RESTORE)),
            ..ContainerStatus::default()
        };
        let crash = of_pod(&pod(status)).unwrap();
        assert_eq!((crash.restarts, crash.exit_code), (4, 1));
        assert!(crash.describe().starts_with(
            "exited with code 1 after 4 restarts: FATAL:  recovery ended before configured recovery target"
        ));
    }

    #[test]
    fn a_terminated_container_counts_and_a_clean_exit_does_not() {
        let failing = ContainerStatus {
            name: "postgres".into(),
            state: Some(terminated(2, "FATAL:  could not open file")),
            ..ContainerStatus::default()
        };
        assert_eq!(of_pod(&pod(failing)).unwrap().exit_code, 2);
        let clean = ContainerStatus {
            name: "postgres".into(),
            state: Some(terminated(0, "")),
            ..ContainerStatus::default()
        };
        assert_eq!(of_pod(&pod(clean)), None);
        let other_container = ContainerStatus {
            name: "exporter".into(),
            state: Some(terminated(1, "FATAL: x")),
            ..ContainerStatus::default()
        };
        assert_eq!(of_pod(&pod(other_container)), None);
    }

    #[test]
    fn lines_that_mention_secrets_are_left_out_and_long_lines_cut() {
        let message = format!(
            "FATAL:  password authentication failed for user \"postgres\"\nERROR: {}\n",
            "x".repeat(1000)
        );
        let quoted = cause(&message).unwrap();
        assert!(!quoted.contains("password"), "{quoted}");
        assert!(quoted.len() <= MAX_LINE_BYTES + 3, "{}", quoted.len());
        assert_eq!(cause("LOG: all fine\n"), None);
        assert_eq!(cause(""), None);
    }
}
