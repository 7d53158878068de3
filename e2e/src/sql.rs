//! SQL the way an application runs it: a Job in the cluster running `psql` over TLS
//! (`sslmode=verify-full` against the Cluster's CA), with the output framed by markers and
//! parsed here.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tusk_api::names;

/// The field separator psql is told to use (ASCII unit separator), so values with `|`, tabs
/// or spaces parse back exactly. Rows end with a newline (values holding line breaks are not
/// supported; the scenarios do not select any).
const FIELD_SEPARATOR: char = '\u{1f}';
const BEGIN: &str = "__TUSK_E2E_SQL_BEGIN__";
const END: &str = "__TUSK_E2E_SQL_END__";

/// Label on every Job the suite runs, so a scenario can find them.
pub const JOB_LABEL: &str = "tusk.dev/e2e-sql";

/// The container of every Job the suite runs (its log is the result).
pub const CONTAINER: &str = "run";

/// Which credentials and which Service the Job connects with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    /// The Cluster's superuser through one of its Services, verifying the server against the
    /// Cluster's CA (`<cluster>-ca`, key `ca.crt`).
    Superuser {
        cluster: String,
        service: ServiceKind,
        database: String,
    },
    /// A Secret with `uri` and `ca.crt` keys: a ServiceBinding's Secret or a PostgresUser's
    /// credentials Secret — exactly what an application mounts.
    Secret { name: String },
}

/// The Cluster Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// `-rw`: the primary.
    ReadWrite,
    /// `-ro`: replicas only.
    ReadOnly,
}

impl ServiceKind {
    pub fn service_name(self, cluster: &str) -> String {
        match self {
            ServiceKind::ReadWrite => names::read_write_service(cluster),
            ServiceKind::ReadOnly => names::read_only_service(cluster),
        }
    }
}

/// The shell the Job runs: psql reads the statements from `$TUSK_SQL` one by one (so
/// `CREATE DATABASE` works), writes rows to a file, and the file is printed between markers
/// so server notices on stderr cannot be mistaken for rows.
fn script(connection: &Connection) -> String {
    let target = match connection {
        Connection::Superuser { .. } => String::new(),
        Connection::Secret { .. } => "\"$(cat /conn/uri)\"".to_owned(),
    };
    format!(
        "printf '%s\\n' \"$TUSK_SQL\" | psql {target} -X -q -A -t -v ON_ERROR_STOP=1 \
         -F $'\\x1f' -o /tmp/out -f -\n\
         echo {BEGIN}\ncat /tmp/out\necho {END}\n"
    )
}

/// A Job running `sql` once; `image` must carry psql (the instance image does).
pub fn psql_job(
    name: &str,
    namespace: &str,
    image: &str,
    connection: &Connection,
    sql: &str,
) -> Job {
    let mut vars = vec![env("TUSK_SQL", sql), env("PGCONNECT_TIMEOUT", "10")];
    let mut mounts = vec![VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    match connection {
        Connection::Superuser {
            cluster,
            service,
            database,
        } => {
            vars.extend([
                env(
                    "PGHOST",
                    &format!("{}.{namespace}.svc", service.service_name(cluster)),
                ),
                env("PGPORT", &names::POSTGRES_PORT.to_string()),
                env("PGDATABASE", database),
                env("PGSSLMODE", "verify-full"),
                env("PGSSLROOTCERT", "/ca/ca.crt"),
                secret_env(
                    "PGUSER",
                    &names::superuser_secret(cluster),
                    names::keys::USERNAME,
                ),
                secret_env(
                    "PGPASSWORD",
                    &names::superuser_secret(cluster),
                    names::keys::PASSWORD,
                ),
            ]);
            mounts.push(read_only_mount("ca", "/ca"));
            volumes.push(secret_volume(
                "ca",
                &names::ca_secret(cluster),
                Some(names::keys::CA_CERT),
            ));
        }
        Connection::Secret { name } => {
            vars.push(env("PGSSLROOTCERT", "/conn/ca.crt"));
            mounts.push(read_only_mount("conn", "/conn"));
            volumes.push(secret_volume("conn", name, None));
        }
    }
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec![
            "bash".to_owned(),
            "-ec".to_owned(),
            script(connection),
        ]),
        env: Some(vars),
        volume_mounts: Some(mounts),
        ..restricted_container()
    };
    job(name, namespace, container, volumes)
}

/// A Job that fetches `url` (an exporter's `/metrics`) from inside the cluster with the
/// image's Python (Patroni's interpreter) and prints the body between the markers.
pub fn metrics_job(name: &str, namespace: &str, image: &str, url: &str) -> Job {
    let script = format!(
        "import sys, urllib.request\n\
         body = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()\n\
         print('{BEGIN}')\nprint(body)\nprint('{END}')\n"
    );
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec![
            "python3".to_owned(),
            "-c".to_owned(),
            script,
            url.to_owned(),
        ]),
        ..restricted_container()
    };
    job(name, namespace, container, Vec::new())
}

fn restricted_container() -> Container {
    Container {
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The Job around `container`: one attempt, bounded, cleaned up, a restricted pod.
fn job(name: &str, namespace: &str, container: Container, volumes: Vec<Volume>) -> Job {
    let labels = BTreeMap::from([(JOB_LABEL.to_owned(), "true".to_owned())]);
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(120),
            ttl_seconds_after_finished: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(26),
                        run_as_group: Some(26),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn secret_volume(name: &str, secret: &str, only_key: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: only_key.map(|key| {
                vec![KeyToPath {
                    key: key.to_owned(),
                    path: key.to_owned(),
                    mode: None,
                }]
            }),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// What a Job printed between the markers. Errors when they are missing (the command failed
/// before printing): the message carries the log's last lines.
pub fn framed_output(log: &str) -> anyhow::Result<&str> {
    let body = log
        .split_once(BEGIN)
        .and_then(|(_, rest)| rest.rsplit_once(END))
        .map(|(body, _)| body);
    match body {
        Some(body) => Ok(body),
        None => {
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!("the command did not finish: {}", tail.join(" | "))
        }
    }
}

/// The rows a psql Job printed, each a list of column values.
pub fn parse_rows(log: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let body = framed_output(log)?;
    Ok(body
        .lines()
        .filter(|record| !record.is_empty())
        .map(|record| record.split(FIELD_SEPARATOR).map(str::to_owned).collect())
        .collect())
}

/// Samples of a Prometheus text exposition: series (name and labels as printed) → value.
/// Comments and lines without a number are skipped.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            // Label values may hold spaces: the value follows the closing brace, if any.
            let (series, rest) = match line.rfind('}') {
                Some(end) => line.split_at(end + 1),
                None => line.split_once(' ')?,
            };
            let value = rest.split_whitespace().next()?.parse().ok()?;
            Some((series.trim().to_owned(), value))
        })
        .collect()
}

/// The single value of a one-row, one-column result.
pub fn single_value(rows: &[Vec<String>]) -> anyhow::Result<&str> {
    match rows {
        [row] => match row.as_slice() {
            [value] => Ok(value),
            _ => anyhow::bail!("expected one column, got {row:?}"),
        },
        _ => anyhow::bail!("expected one row, got {} rows: {rows:?}", rows.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &str) -> String {
        format!("NOTICE:  relation exists, skipping\n{BEGIN}\n{body}\n{END}\n")
    }

    #[test]
    fn rows_and_columns_parse_back_exactly() {
        let log = framed("1\u{1f}a|b c\n2\u{1f}\t x ");
        assert_eq!(
            parse_rows(&log).unwrap(),
            vec![
                vec!["1".to_owned(), "a|b c".to_owned()],
                vec!["2".to_owned(), "\t x ".to_owned()],
            ]
        );
    }

    #[test]
    fn results_of_several_statements_follow_each_other() {
        // psql ends every result set with a newline; statements without rows print nothing.
        let log = framed("t\n170004\n");
        assert_eq!(
            parse_rows(&log).unwrap(),
            vec![vec!["t".to_owned()], vec!["170004".to_owned()]]
        );
    }

    #[test]
    fn no_rows_is_an_empty_result() {
        assert!(parse_rows(&framed("")).unwrap().is_empty());
    }

    #[test]
    fn a_failed_psql_reports_its_error() {
        let log = "psql: error: connection to server failed: certificate verify failed\n";
        assert!(framed_output(log).is_err());
        let error = parse_rows(log).unwrap_err().to_string();
        assert!(error.contains("certificate verify failed"), "{error}");
    }

    #[test]
    fn single_value_wants_exactly_one_cell() {
        assert_eq!(single_value(&[vec!["42".to_owned()]]).unwrap(), "42");
        assert!(single_value(&[]).is_err());
        assert!(single_value(&[vec!["1".to_owned(), "2".to_owned()]]).is_err());
    }

    #[test]
    fn superuser_job_verifies_the_server_with_the_cluster_ca() {
        let job = psql_job(
            "sql-1",
            "e2e",
            "ghcr.io/tusk-operator/postgres:17",
            &Connection::Superuser {
                cluster: "db".to_owned(),
                service: ServiceKind::ReadWrite,
                database: "postgres".to_owned(),
            },
            "SELECT 1",
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(value("PGHOST").as_deref(), Some("db-rw.e2e.svc"));
        assert_eq!(value("PGSSLMODE").as_deref(), Some("verify-full"));
        let password = env.iter().find(|e| e.name == "PGPASSWORD").unwrap();
        assert_eq!(
            password
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "db-superuser"
        );
        let ca = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "ca")
            .unwrap();
        let secret = ca.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("db-ca"));
        assert_eq!(secret.items.unwrap()[0].key, "ca.crt", "never the CA key");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
    }

    #[test]
    fn secret_job_connects_with_the_uri_an_app_gets() {
        let connection = Connection::Secret {
            name: "orders-api-db".to_owned(),
        };
        let job = psql_job("sql-2", "shop", "img", &connection, "SELECT 1");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let command = pod.containers[0].command.clone().unwrap();
        assert!(
            command[2].contains("psql \"$(cat /conn/uri)\""),
            "{command:?}"
        );
        assert!(command[2].contains("ON_ERROR_STOP=1"));
        let conn = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "conn")
            .unwrap();
        assert_eq!(
            conn.secret.unwrap().secret_name.as_deref(),
            Some("orders-api-db")
        );
    }

    #[test]
    fn metrics_text_parses_into_series_and_values() {
        let text = "# HELP pg_up up\n# TYPE pg_up gauge\npg_up 1\n\
            tusk_pg_database_size_bytes{database=\"my db\",server=\"/run:5432\"} 7.6e+06\n\
            tusk_pg_backup_last_age_seconds NaN\n\
            tusk_reconcile_total{controller=\"cluster\"} 3 1700000000000\n\
            garbage\n";
        let m = parse_metrics(text);
        assert_eq!(m["pg_up"], 1.0);
        assert_eq!(
            m["tusk_pg_database_size_bytes{database=\"my db\",server=\"/run:5432\"}"],
            7.6e6
        );
        assert!(m["tusk_pg_backup_last_age_seconds"].is_nan());
        assert_eq!(m["tusk_reconcile_total{controller=\"cluster\"}"], 3.0);
        assert_eq!(m.len(), 4, "{m:?}");
    }

    #[test]
    fn metrics_job_fetches_from_inside_the_cluster() {
        let job = metrics_job("m-1", "e2e", "img", "http://10.0.0.7:9187/metrics");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let command = pod.containers[0].command.clone().unwrap();
        assert_eq!(command[0], "python3");
        assert_eq!(command[3], "http://10.0.0.7:9187/metrics");
        assert_eq!(pod.containers[0].name, CONTAINER);
        assert!(pod.volumes.is_none());
    }
}
