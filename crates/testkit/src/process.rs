//! Running real components: as an unprivileged user when the tests run as root, in their own
//! process group, and never outliving the test.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};

/// An unprivileged user a process runs as (PostgreSQL, Patroni and PgBouncer refuse root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl RunAs {
    /// Gives `path` (not recursively) to this user, so it can write there.
    pub fn chown(&self, path: &Path) -> Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to user {}", path.display(), self.user))
    }
}

/// Whether this process runs as root (effective uid 0).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command for `program` that runs as `run_as` (through `setpriv`) when given, with `/` as
/// working directory so an unreadable current directory cannot stop it.
pub fn command_as(program: &Path, run_as: Option<&RunAs>) -> Command {
    wrapped(program, run_as, false)
}

/// Like [`command_as`], for a process meant to run in the background under a
/// [`ChildProcess`]: the kernel kills it (`setpriv --pdeathsig KILL`) if the test process dies
/// without running its destructors, e.g. on Ctrl-C or a test-runner timeout.
pub fn daemon_command_as(program: &Path, run_as: Option<&RunAs>) -> Command {
    wrapped(program, run_as, true)
}

fn wrapped(program: &Path, run_as: Option<&RunAs>, die_with_parent: bool) -> Command {
    let mut command = if run_as.is_none() && !die_with_parent {
        Command::new(program)
    } else {
        let mut setpriv = Command::new("setpriv");
        if let Some(run_as) = run_as {
            setpriv
                .arg(format!("--reuid={}", run_as.uid))
                .arg(format!("--regid={}", run_as.gid))
                .arg("--init-groups");
        }
        if die_with_parent {
            setpriv.args(["--pdeathsig", "KILL"]);
        }
        setpriv.arg("--").arg(program);
        setpriv
    };
    command.current_dir("/");
    if let Some(run_as) = run_as {
        command
            .env("USER", &run_as.user)
            .env("LOGNAME", &run_as.user);
    }
    command
}

/// Runs `command` to completion without blocking the async runtime and returns its stdout;
/// a failure carries `what`, the exit status and both outputs.
pub async fn run_checked(command: Command, what: &str) -> Result<String> {
    let output = tokio::process::Command::from(command)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The contents of `path` from byte `offset` on; empty when it cannot be read.
pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
        && file.read_to_end(&mut bytes).is_err()
    {
        bytes.clear();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `count` lines of `text`, for quoting a log in an error.
pub(crate) fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// A free TCP port on 127.0.0.1, as the kernel picks it for a listener on port 0. Another
/// process may take it before it is used: callers retry a start that fails on a port clash.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether process `pid` exists and has not exited (a zombie waiting to be reaped counts as
/// exited: orphans go to PID 1, which in a container may never reap them).
pub fn is_process_alive(pid: u32) -> bool {
    process_stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X' | 'x'))
}

/// What `/proc/<pid>/stat` says of a process that benchmarks and tests look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    /// The parent's process id.
    pub parent: u32,
    /// CPU time (user + system) the process itself has used.
    pub own_cpu: Duration,
    /// CPU time (user + system) of the children it has waited for, and of theirs.
    pub reaped_children_cpu: Duration,
}

/// `/proc/<pid>/stat` of process `pid`, if it exists.
pub fn process_stat(pid: u32) -> Option<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, rustix::param::clock_ticks_per_second())
}

/// `pid (comm) state ppid … utime stime cutime cstime …` (proc(5)); the command name is in
/// parentheses and may itself hold spaces and parentheses, so the fields after the last `)`
/// are counted.
fn parse_stat(stat: &str, ticks_per_second: u64) -> Option<ProcessStat> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| -> Option<Duration> {
        let ticks: u64 = fields.get(index)?.parse().ok()?;
        Some(Duration::from_secs_f64(
            ticks as f64 / ticks_per_second as f64,
        ))
    };
    // After the name: state (field 3 of proc(5)) is index 0, so field N is index N - 3.
    Some(ProcessStat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        own_cpu: ticks(11)? + ticks(12)?,
        reaped_children_cpu: ticks(13)? + ticks(14)?,
    })
}

/// CPU time used so far by `root` and every process below it: those still running, and those
/// that exited and were waited for inside the tree (a PostgreSQL server's backends, say, which
/// its postmaster reaps). Each process counts once, so the difference of two readings is what
/// the tree used in between. `None` once `root` is gone.
pub fn tree_cpu_time(root: u32) -> Option<Duration> {
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok());
        if let Some(pid) = pid
            && let Some(stat) = process_stat(pid)
        {
            processes.push((pid, stat));
        }
    }
    tree_cpu_of(root, &processes)
}

fn tree_cpu_of(root: u32, processes: &[(u32, ProcessStat)]) -> Option<Duration> {
    processes.iter().find(|(pid, _)| *pid == root)?;
    let mut tree = vec![root];
    let mut total = Duration::ZERO;
    while let Some(pid) = tree.pop() {
        for (child, stat) in processes {
            if *child == pid {
                total += stat.own_cpu + stat.reaped_children_cpu;
            } else if stat.parent == pid {
                tree.push(*child);
            }
        }
    }
    Some(total)
}

/// A spawned process in its own process group that is killed, group and all, when dropped.
///
/// A watcher thread spawns the process and waits for it, so it is reaped as soon as it exits,
/// and the parent-death signal set by [`daemon_command_as`] fires only when the whole test
/// process is gone (the kernel sends it when the *thread* that forked exits).
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    pid: u32,
    exit: Arc<ExitState>,
    watcher: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct ExitState {
    status: Mutex<Option<ExitStatus>>,
    changed: Condvar,
}

impl ChildProcess {
    /// Spawns `command` in a new process group; `name` appears in messages.
    pub fn spawn(name: impl Into<String>, mut command: Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;

        let name = name.into();
        command.process_group(0);
        let exit = Arc::new(ExitState::default());
        let (started_tx, started_rx) = mpsc::channel();
        let watcher_exit = Arc::clone(&exit);
        let watcher = std::thread::Builder::new()
            .name(format!("watch-{name}"))
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(child.id()));
                if let Ok(status) = child.wait() {
                    *watcher_exit
                        .status
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(status);
                    watcher_exit.changed.notify_all();
                }
            })
            .context("starting a watcher thread")?;
        let pid = started_rx
            .recv()
            .context("the watcher thread ended before starting the process")?
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name,
            pid,
            exit,
            watcher: Some(watcher),
        })
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self
            .exit
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` for the process to exit, blocking the thread.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut status = self
            .exit
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while status.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            status = self
                .exit
                .changed
                .wait_timeout(status, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *status
    }

    /// Waits up to `timeout` for the process to exit without blocking the async runtime.
    pub async fn wait_timeout_async(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `signal` to the process group; a group that is gone is not an error.
    pub fn signal_group(&self, signal: Signal) -> Result<()> {
        self.send(signal, rustix::process::kill_process_group)
    }

    /// Sends `signal` to the process alone, as the kubelet signals a container's PID 1; a
    /// process that is gone is not an error.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.send(signal, rustix::process::kill_process)
    }

    fn send(&self, signal: Signal, kill: fn(Pid, Signal) -> rustix::io::Result<()>) -> Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .with_context(|| format!("{} has an invalid pid {}", self.name, self.pid))?;
        match kill(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(error) => {
                Err(error).with_context(|| format!("signalling {} (pid {})", self.name, self.pid))
            }
        }
    }

    /// Kills the process group and waits for the process to be reaped.
    pub fn kill(&mut self) {
        // Failing to signal leaves nothing better to do than wait: the process may have just
        // exited, and the watcher reaps it either way.
        let _ = self.signal_group(Signal::KILL);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_command_name() {
        // The name holds a space and a parenthesis, as a process may set it to anything.
        let line = "4242 (postgres: a) b) S 4200 4242 4242 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0 99 0 0\n";
        assert_eq!(
            parse_stat(line, 100),
            Some(ProcessStat {
                state: 'S',
                parent: 4200,
                own_cpu: Duration::from_millis(3_000),
                reaped_children_cpu: Duration::from_millis(500),
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1 2", 100), None);
    }

    #[test]
    fn a_tree_counts_its_processes_once_and_nothing_outside_it() {
        let stat = |parent, own_ms, reaped_ms| ProcessStat {
            state: 'S',
            parent,
            own_cpu: Duration::from_millis(own_ms),
            reaped_children_cpu: Duration::from_millis(reaped_ms),
        };
        let processes = [
            (1, stat(0, 5_000, 9_000)),
            (10, stat(1, 100, 700)),
            (11, stat(10, 20, 0)),
            (12, stat(11, 3, 0)),
            (20, stat(1, 40, 0)),
        ];
        assert_eq!(
            tree_cpu_of(10, &processes),
            Some(Duration::from_millis(823))
        );
        assert_eq!(tree_cpu_of(12, &processes), Some(Duration::from_millis(3)));
        assert_eq!(tree_cpu_of(99, &processes), None);
    }

    #[test]
    fn this_process_is_found_in_proc() {
        let stat = process_stat(std::process::id()).expect("/proc/self/stat");
        assert_eq!(stat.parent, std::os::unix::process::parent_id());
        assert!(is_process_alive(std::process::id()));
        let tree = tree_cpu_time(std::process::id()).expect("this process is running");
        assert!(tree >= stat.own_cpu);
    }

    #[test]
    fn dropping_a_child_kills_its_whole_group() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pid_file = dir.path().join("grandchild.pid");
        let mut command = daemon_command_as(Path::new("/bin/sh"), None);
        command
            .args(["-c", "sleep 300 & echo $! > \"$0\"; wait"])
            .arg(&pid_file);
        let child = ChildProcess::spawn("sh", command)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            if let Ok(pid) = std::fs::read_to_string(&pid_file)
                && pid.ends_with('\n')
            {
                break pid.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "the shell never started sleep");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(child.exit_status().is_none());
        assert!(child.wait_timeout(Duration::from_millis(20)).is_none());
        let pid = child.pid();
        drop(child);
        for gone in [pid, grandchild.parse()?] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_process_alive(gone) {
                assert!(
                    Instant::now() < deadline,
                    "process {gone} survived the drop"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    #[test]
    fn exit_status_is_seen_without_waiting_on_the_child() -> Result<()> {
        let child = ChildProcess::spawn("true", Command::new("true"))?;
        let status = child.wait_timeout(Duration::from_secs(10));
        assert!(status.is_some_and(|status| status.success()));
        assert!(child.signal_group(Signal::KILL).is_ok());
        Ok(())
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error() {
        let result = ChildProcess::spawn("nothing", Command::new("/nonexistent/program"));
        assert!(result.is_err());
    }

    #[test]
    fn last_lines_keeps_the_end_of_a_log() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn free_ports_are_loopback_ports_nobody_holds() -> Result<()> {
        let port = free_port()?;
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        Ok(())
    }
}
