//! The backup container's script, run by a real POSIX shell with a stand-in `pgbackrest` on
//! PATH: the label is found in pgBackRest's output, the info JSON of that set reaches the
//! termination message and reads back into the Backup's status; a failure leaves the end of
//! the output and pgBackRest's exit code; an oversized report falls back to the label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use tusk_api::backup::BackupType;
use tusk_backup_controller::job::report_script_in;
use tusk_backup_controller::status::parse_report;

const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"17-1","max":"000000010000000000000004","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000004"},"backrest":{"format":5,"version":"2.54.0"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":31400000,"repository":{"delta":3940000,"size":3940000},"size":31400000},"label":"20261122-101500F_20261122-111500I","link":null,"lsn":{"start":"0/3000028","stop":"0/4000050"},"prior":"20261122-101500F","reference":["20261122-101500F","20261122-103000I"],"tablespace":null,"timestamp":{"start":1795342500,"stop":1795342510},"type":"incr"}],"cipher":"none","db":[{"id":1,"repo-key":1,"system-id":7440000000000000000,"version":"17"}],"name":"db","repo":[{"cipher":"none","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

/// Writes a stand-in `pgbackrest` that answers `backup` with `backup_output` and exit code
/// `backup_code`, and `info` with `info`.
fn stand_in(dir: &Path, backup_output: &str, backup_code: i32, info: &str) {
    std::fs::write(dir.join("backup.out"), backup_output).unwrap();
    std::fs::write(dir.join("info.json"), info).unwrap();
    let script = format!(
        "#!/bin/sh\nfor last; do :; done\nif [ \"$last\" = backup ]; then cat {dir}/backup.out; exit {backup_code}; fi\nif [ \"$last\" = info ]; then echo \"$*\" > {dir}/info.args; cat {dir}/info.json; exit 0; fi\nexit 99\n",
        dir = dir.display()
    );
    let path = dir.join("pgbackrest");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(dir: &Path) -> (i32, String, String) {
    let message = dir.join("termination-log");
    let script = report_script_in(
        1,
        &dir.display().to_string(),
        &message.display().to_string(),
    );
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("/bin/sh")
        .args(["-c", &script, "--"])
        .args(tusk_pgbackrest::backup_command(BackupType::Incremental, 1))
        .env("PATH", path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        std::fs::read_to_string(message).unwrap_or_default(),
    )
}

#[test]
fn success_reports_the_label_and_its_info() {
    let dir = tempfile::tempdir().unwrap();
    stand_in(
        dir.path(),
        "P00   INFO: backup command begin 2.54.0: --repo1-cipher-pass=<redacted> --stanza=db\nP00   INFO: new backup label = 20261122-101500F_20261122-111500I\nP00   INFO: backup command end: completed successfully\n",
        0,
        INFO,
    );
    let (code, stdout, message) = run(dir.path());
    assert_eq!(code, 0);
    assert!(
        stdout.contains("completed successfully"),
        "the log stays in the pod's output"
    );
    assert!(
        message.starts_with("label=20261122-101500F_20261122-111500I\n"),
        "{message}"
    );
    assert!(
        message.contains(r#""reference":[]"#),
        "dependency lists are cut: {message}"
    );
    let args = std::fs::read_to_string(dir.path().join("info.args")).unwrap();
    assert!(
        args.contains("--set=20261122-101500F_20261122-111500I"),
        "{args}"
    );
    assert!(
        args.contains("--repo=1") && args.contains("--output=json"),
        "{args}"
    );
    let report = parse_report(&message, 1);
    assert_eq!(report.note, None);
    let set = report.set.unwrap();
    assert_eq!(set.kind, BackupType::Incremental);
    assert_eq!(set.prior.as_deref(), Some("20261122-101500F"));
    assert!(message.len() < 4096);
}

#[test]
fn failure_reports_the_end_of_the_output_and_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let noise = "P00   INFO: working\n".repeat(400);
    stand_in(
        dir.path(),
        &format!("{noise}P00  ERROR: [056]: unable to find primary cluster - cannot proceed\n"),
        56,
        INFO,
    );
    let (code, _, message) = run(dir.path());
    assert_eq!(code, 56);
    assert!(message.ends_with("cannot proceed\n"), "{message}");
    assert!(message.len() <= 3500);
}

#[test]
fn oversized_info_falls_back_to_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let big = INFO.replace(r#""annotation":null,"#, "").replace(
        r#""cipher":"none","db""#,
        &format!(r#""cipher":"none","padding":"{}","db""#, "x".repeat(5000)),
    );
    stand_in(
        dir.path(),
        "P00   INFO: new backup label = 20261122-101500F\n",
        0,
        &big,
    );
    let (code, _, message) = run(dir.path());
    assert_eq!(code, 0);
    assert_eq!(message, "label=20261122-101500F");
    let report = parse_report(&message, 1);
    assert_eq!(report.label.as_deref(), Some("20261122-101500F"));
    assert!(report.note.is_some());
}
