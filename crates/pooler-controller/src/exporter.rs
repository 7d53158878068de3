//! PgBouncer's admin console in Prometheus text format, for the metrics sidecar
//! (`tusk-operator pgbouncer-exporter`, port 9127) in every Pooler pod.
//!
//! ```text
//!   console (database pgbouncer, simple query protocol)
//!     SHOW VERSION, CONFIG, DATABASES, STATS, POOLS, LISTS ──► observe ──► Observed (rows)
//!                                                                  render ──► text 0.0.4
//! ```
//!
//! The names are those of the prometheus-community pgbouncer_exporter, so dashboards made
//! for it fit. Times PgBouncer counts in microseconds are seconds here. Labels are only
//! `database` and `user` (and `version` on `pgbouncer_version_info`): never a pod, host or
//! object name.
//!
//! Two kinds of rows are left out:
//!
//! - PgBouncer's own `pgbouncer` database (the admin console). The only traffic it sees is
//!   admin sessions — this exporter's `SHOW`s above all — so its counters would put the
//!   scrape rate into every "queries per second" panel, and it has no server connections to
//!   pool. No application database can have that name: PgBouncer answers it itself.
//! - Databases no client ever logged in to. The Pooler's `[databases]` entry is `*`, and
//!   PgBouncer creates an entry for whatever database name a client asks for *before*
//!   authenticating it, and keeps it in `SHOW STATS` and `SHOW POOLS` after the login failed,
//!   until `autodb_idle_timeout` (measured with PgBouncer 1.18); while the login waits, the
//!   name is in `SHOW DATABASES` too. Exported, any unauthenticated client could grow the
//!   label set at will. What such a login leaves behind is a pool of a user of the auth file
//!   ([`AUTH_ROLE`], which runs the `auth_query` in that database, or [`ADMIN_ROLE`] when the
//!   client claimed to be it, password unchecked); a user PgBouncer has to look up gets a
//!   pool only when the lookup found it, which needs the database to exist. So a database
//!   gets series only when a pool of it belongs to a user that is not in the auth file, or
//!   `SHOW STATS` counted a transaction or query in it (a database whose entry PgBouncer
//!   freed after it went idle keeps its counters) — and at most [`MAX_DATABASES`] of them.
//!   How many PgBouncer showed beyond those is `pgbouncer_exporter_omitted_databases`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use tokio_postgres::{Client, Error, SimpleQueryMessage};

use crate::auth::{ADMIN_ROLE, AUTH_ROLE};

use Kind::{Counter, Gauge};
use Value::{Column, EitherColumn, Micros, SecondsAndMicros};

/// PgBouncer's admin console database, left out of every per-database metric.
pub const ADMIN_DATABASE: &str = "pgbouncer";

/// At most this many databases get series in one scrape; a Pooler serves a Cluster's
/// databases, which are far fewer.
pub const MAX_DATABASES: usize = 200;

/// The content type of [`render`]'s output (Prometheus text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One row of a `SHOW` command, by column name; NULL columns are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row(BTreeMap<String, String>);

impl Row {
    /// The column's text, `None` when it is NULL or not there.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.0.get(column).map(String::as_str)
    }

    fn number(&self, column: &str) -> Option<f64> {
        self.get(column)?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Row {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Row(iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }
}

/// What the admin console showed in one scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `SHOW VERSION`, e.g. `PgBouncer 1.18.0`.
    pub version: Option<String>,
    /// `SHOW CONFIG` (`key`, `value`, …).
    pub config: Vec<Row>,
    pub databases: Vec<Row>,
    pub stats: Vec<Row>,
    pub pools: Vec<Row>,
    /// `SHOW LISTS` (`list`, `items`).
    pub lists: Vec<Row>,
}

/// Runs the `SHOW` commands on an admin console connection.
pub async fn observe(console: &Client) -> Result<Observed, Error> {
    let version = rows(console, "SHOW VERSION")
        .await?
        .into_iter()
        .find_map(|row| row.get("version").map(str::to_owned));
    Ok(Observed {
        version,
        config: rows(console, "SHOW CONFIG").await?,
        databases: rows(console, "SHOW DATABASES").await?,
        stats: rows(console, "SHOW STATS").await?,
        pools: rows(console, "SHOW POOLS").await?,
        lists: rows(console, "SHOW LISTS").await?,
    })
}

/// [`observe`] then [`render`]: the body of one `/metrics` answer.
pub async fn scrape(console: &Client) -> Result<String, Error> {
    Ok(render(&observe(console).await?))
}

async fn rows(console: &Client, command: &str) -> Result<Vec<Row>, Error> {
    Ok(console
        .simple_query(command)
        .await?
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                row.columns()
                    .iter()
                    .enumerate()
                    // A value that is not UTF-8 is left out (a label row without its
                    // `database` is then skipped); `get` would panic on it.
                    .filter_map(|(i, column)| {
                        let value = row.try_get(i).ok().flatten()?;
                        Some((column.name().to_owned(), value.to_owned()))
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a sample's value is read from a row.
#[derive(Clone, Copy, Debug)]
enum Value {
    /// The column as it is.
    Column(&'static str),
    /// A column counting microseconds, as seconds.
    Micros(&'static str),
    /// Whole seconds in one column plus the microseconds in another (`maxwait`,
    /// `maxwait_us`).
    SecondsAndMicros(&'static str, &'static str),
    /// The first column present of two (a column a later PgBouncer renamed).
    EitherColumn(&'static str, &'static str),
}

impl Value {
    fn read(self, row: &Row) -> Option<f64> {
        match self {
            Value::Column(column) => row.number(column),
            Value::Micros(column) => row.number(column).map(|us| us / 1_000_000.0),
            Value::SecondsAndMicros(seconds, micros) => {
                Some(row.number(seconds)? + row.number(micros).unwrap_or(0.0) / 1_000_000.0)
            }
            Value::EitherColumn(first, second) => row.number(first).or_else(|| row.number(second)),
        }
    }
}

/// One metric family drawn from the rows of one `SHOW` command.
#[derive(Debug)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: Value,
}

const fn family(name: &'static str, kind: Kind, help: &'static str, value: Value) -> Family {
    Family {
        name,
        kind,
        help,
        value,
    }
}

/// `SHOW STATS`, label `database`.
const STATS: &[Family] = &[
    family(
        "pgbouncer_stats_sql_transactions_pooled_total",
        Counter,
        "Transactions pooled (in session mode: sessions).",
        Column("total_xact_count"),
    ),
    family(
        "pgbouncer_stats_queries_pooled_total",
        Counter,
        "Queries pooled.",
        Column("total_query_count"),
    ),
    family(
        "pgbouncer_stats_received_bytes_total",
        Counter,
        "Bytes of network traffic received from clients.",
        Column("total_received"),
    ),
    family(
        "pgbouncer_stats_sent_bytes_total",
        Counter,
        "Bytes of network traffic sent to clients.",
        Column("total_sent"),
    ),
    family(
        "pgbouncer_stats_server_in_transaction_seconds_total",
        Counter,
        "Seconds server connections spent in a transaction, idle in transaction included.",
        Micros("total_xact_time"),
    ),
    family(
        "pgbouncer_stats_queries_duration_seconds_total",
        Counter,
        "Seconds server connections spent executing queries.",
        Micros("total_query_time"),
    ),
    family(
        "pgbouncer_stats_client_wait_seconds_total",
        Counter,
        "Seconds clients spent waiting for a server connection.",
        Micros("total_wait_time"),
    ),
];

/// `SHOW POOLS`, labels `database`, `user`.
const POOLS: &[Family] = &[
    family(
        "pgbouncer_pools_client_active_connections",
        Gauge,
        "Client connections linked to a server connection or idle, able to run queries.",
        Column("cl_active"),
    ),
    family(
        "pgbouncer_pools_client_waiting_connections",
        Gauge,
        "Client connections that sent a query and wait for a server connection.",
        Column("cl_waiting"),
    ),
    family(
        "pgbouncer_pools_client_active_cancel_connections",
        Gauge,
        "Client connections that forwarded a cancel request to the server.",
        Column("cl_active_cancel_req"),
    ),
    family(
        "pgbouncer_pools_client_waiting_cancel_connections",
        Gauge,
        "Client connections whose cancel request waits to be forwarded.",
        Column("cl_waiting_cancel_req"),
    ),
    family(
        "pgbouncer_pools_server_active_connections",
        Gauge,
        "Server connections linked to a client.",
        Column("sv_active"),
    ),
    family(
        "pgbouncer_pools_server_active_cancel_connections",
        Gauge,
        "Server connections forwarding a cancel request.",
        Column("sv_active_cancel"),
    ),
    family(
        "pgbouncer_pools_server_being_canceled_connections",
        Gauge,
        "Server connections whose query a cancel request is stopping.",
        Column("sv_being_canceled"),
    ),
    family(
        "pgbouncer_pools_server_idle_connections",
        Gauge,
        "Server connections idle and ready for a client.",
        Column("sv_idle"),
    ),
    family(
        "pgbouncer_pools_server_used_connections",
        Gauge,
        "Server connections idle longer than server_check_delay, to be checked before use.",
        Column("sv_used"),
    ),
    family(
        "pgbouncer_pools_server_testing_connections",
        Gauge,
        "Server connections running server_reset_query or server_check_query.",
        Column("sv_tested"),
    ),
    family(
        "pgbouncer_pools_server_login_connections",
        Gauge,
        "Server connections logging in.",
        Column("sv_login"),
    ),
    family(
        "pgbouncer_pools_client_maxwait_seconds",
        Gauge,
        "Seconds the oldest waiting client has waited for a server connection.",
        SecondsAndMicros("maxwait", "maxwait_us"),
    ),
];

/// `SHOW DATABASES`, label `database` (the `name` column: the name clients ask for).
const DATABASES: &[Family] = &[
    family(
        "pgbouncer_databases_pool_size",
        Gauge,
        "Server connections a pool of the database may open.",
        Column("pool_size"),
    ),
    family(
        "pgbouncer_databases_min_pool_size",
        Gauge,
        "Server connections a pool of the database keeps open at least.",
        Column("min_pool_size"),
    ),
    family(
        "pgbouncer_databases_reserve_pool",
        Gauge,
        "Extra server connections a pool may open when clients wait.",
        EitherColumn("reserve_pool", "reserve_pool_size"),
    ),
    family(
        "pgbouncer_databases_max_connections",
        Gauge,
        "Server connections the database may open over all its pools (0: no limit).",
        Column("max_connections"),
    ),
    family(
        "pgbouncer_databases_current_connections",
        Gauge,
        "Server connections the database has open over all its pools.",
        Column("current_connections"),
    ),
    family(
        "pgbouncer_databases_paused",
        Gauge,
        "1 while the database is paused (PAUSE db).",
        Column("paused"),
    ),
    family(
        "pgbouncer_databases_disabled",
        Gauge,
        "1 while the database is disabled (DISABLE db).",
        Column("disabled"),
    ),
];

/// `SHOW LISTS`: the `items` of the row whose `list` is the first name.
const LISTS: &[(&str, &str, &str)] = &[
    (
        "databases",
        "pgbouncer_databases",
        "Databases PgBouncer holds.",
    ),
    ("users", "pgbouncer_users", "Users PgBouncer holds."),
    (
        "pools",
        "pgbouncer_pools",
        "Pools (database and user pairs).",
    ),
    (
        "free_clients",
        "pgbouncer_free_clients",
        "Client connection slots allocated and unused.",
    ),
    (
        "used_clients",
        "pgbouncer_used_clients",
        "Client connections, this exporter's included.",
    ),
    (
        "login_clients",
        "pgbouncer_login_clients",
        "Client connections logging in.",
    ),
    (
        "free_servers",
        "pgbouncer_free_servers",
        "Server connection slots allocated and unused.",
    ),
    (
        "used_servers",
        "pgbouncer_used_servers",
        "Server connections.",
    ),
    (
        "dns_names",
        "pgbouncer_cached_dns_names",
        "Host names in the DNS cache.",
    ),
    (
        "dns_zones",
        "pgbouncer_cached_dns_zones",
        "DNS zones in the cache.",
    ),
    (
        "dns_queries",
        "pgbouncer_in_flight_dns_queries",
        "DNS queries in flight.",
    ),
];

/// `SHOW CONFIG`: the `value` of the row whose `key` is the first name.
const CONFIG: &[(&str, &str, &str)] = &[
    (
        "max_client_conn",
        "pgbouncer_config_max_client_connections",
        "Client connections PgBouncer accepts (max_client_conn).",
    ),
    (
        "max_user_connections",
        "pgbouncer_config_max_user_connections",
        "Server connections per user over all its pools (max_user_connections, 0: no limit).",
    ),
    (
        "max_db_connections",
        "pgbouncer_config_max_db_connections",
        "Server connections per database over all its pools (max_db_connections, 0: no limit).",
    ),
];

const UP: &str = "pgbouncer_up";
const UP_HELP: &str = "1 when the last scrape of PgBouncer's admin console succeeded.";
const VERSION: &str = "pgbouncer_version_info";
const OMITTED: &str = "pgbouncer_exporter_omitted_databases";

/// Every metric family name [`render`] can produce, for checking dashboards against.
pub fn metric_names() -> Vec<&'static str> {
    let mut names = vec![UP, VERSION, OMITTED];
    for families in [STATS, POOLS, DATABASES] {
        names.extend(families.iter().map(|f| f.name));
    }
    names.extend(LISTS.iter().chain(CONFIG).map(|(_, name, _)| *name));
    names
}

/// The answer when the admin console could not be reached or failed: `pgbouncer_up 0`.
pub fn render_down() -> String {
    let mut out = String::new();
    header(&mut out, UP, Gauge, UP_HELP);
    out.push_str("pgbouncer_up 0\n");
    out
}

/// The exposition of one successful scrape.
pub fn render(observed: &Observed) -> String {
    let mut out = String::with_capacity(8 * 1024);
    header(&mut out, UP, Gauge, UP_HELP);
    out.push_str("pgbouncer_up 1\n");
    if let Some(version) = observed.version.as_deref().and_then(version_number) {
        header(
            &mut out,
            VERSION,
            Gauge,
            "PgBouncer's version, in the label; always 1.",
        );
        let _ = writeln!(out, "{VERSION}{{version=\"{}\"}} 1", escape(version));
    }
    for (name, help, value) in by_key(&observed.config, "key", "value", CONFIG)
        .into_iter()
        .chain(by_key(&observed.lists, "list", "items", LISTS))
    {
        header(&mut out, name, Gauge, help);
        let _ = writeln!(out, "{name} {value}");
    }

    let (exported, omitted) = exported_databases(observed);
    let databases: Vec<(Vec<(&str, &str)>, &Row)> = observed
        .databases
        .iter()
        .filter_map(|row| {
            let database = row.get("name")?;
            exported
                .contains(database)
                .then(|| (vec![("database", database)], row))
        })
        .collect();
    let stats: Vec<(Vec<(&str, &str)>, &Row)> = observed
        .stats
        .iter()
        .filter_map(|row| {
            let database = row.get("database")?;
            exported
                .contains(database)
                .then(|| (vec![("database", database)], row))
        })
        .collect();
    let pools: Vec<(Vec<(&str, &str)>, &Row)> = observed
        .pools
        .iter()
        .filter_map(|row| {
            let database = row.get("database")?;
            let user = row.get("user")?;
            exported
                .contains(database)
                .then(|| (vec![("database", database), ("user", user)], row))
        })
        .collect();
    for (families, rows) in [(STATS, &stats), (POOLS, &pools), (DATABASES, &databases)] {
        for family in families {
            write_family(&mut out, family, rows);
        }
    }
    header(
        &mut out,
        OMITTED,
        Gauge,
        "Databases PgBouncer showed that got no series: never used (a name a client asked for without logging in) or beyond the exporter's limit.",
    );
    let _ = writeln!(out, "{OMITTED} {omitted}");
    out
}

/// The named values of a key/value listing (`SHOW CONFIG`, `SHOW LISTS`) that `table` maps
/// to metrics, as (metric, help, value).
fn by_key(
    rows: &[Row],
    key: &str,
    value: &str,
    table: &[(&str, &'static str, &'static str)],
) -> Vec<(&'static str, &'static str, f64)> {
    table
        .iter()
        .filter_map(|(wanted, name, help)| {
            let row = rows.iter().find(|row| row.get(key) == Some(*wanted))?;
            Some((*name, *help, row.number(value)?))
        })
        .collect()
}

/// The databases that get series, and how many others PgBouncer showed (see the module
/// documentation): those with a pool of a user that is not in the auth file, then those with
/// a counted transaction or query, up to [`MAX_DATABASES`].
fn exported_databases(observed: &Observed) -> (BTreeSet<&str>, usize) {
    let logged_in = observed
        .pools
        .iter()
        .filter(|row| {
            row.get("user")
                .is_some_and(|user| user != AUTH_ROLE && user != ADMIN_ROLE)
        })
        .filter_map(|row| row.get("database"));
    let queried = observed.stats.iter().filter_map(|row| {
        let used = ["total_xact_count", "total_query_count"]
            .iter()
            .any(|c| row.number(c).is_some_and(|n| n > 0.0));
        used.then(|| row.get("database")).flatten()
    });
    let mut exported = BTreeSet::new();
    for database in logged_in.chain(queried) {
        if database != ADMIN_DATABASE && exported.len() < MAX_DATABASES {
            exported.insert(database);
        }
    }
    let shown: BTreeSet<&str> = observed
        .stats
        .iter()
        .chain(&observed.pools)
        .filter_map(|r| r.get("database"))
        .chain(observed.databases.iter().filter_map(|r| r.get("name")))
        .filter(|d| *d != ADMIN_DATABASE)
        .collect();
    let omitted = shown.difference(&exported).count();
    (exported, omitted)
}

fn write_family(out: &mut String, family: &Family, rows: &[(Vec<(&str, &str)>, &Row)]) {
    let mut samples = rows
        .iter()
        .filter_map(|(labels, row)| Some((labels, family.value.read(row)?)))
        .peekable();
    if samples.peek().is_none() {
        return;
    }
    header(out, family.name, family.kind, family.help);
    for (labels, value) in samples {
        out.push_str(family.name);
        out.push('{');
        for (i, (label, text)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape(text));
        }
        let _ = writeln!(out, "}} {value}");
    }
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.name());
}

/// `PgBouncer 1.18.0` → `1.18.0`.
fn version_number(text: &str) -> Option<&str> {
    text.trim()
        .strip_prefix("PgBouncer")
        .unwrap_or(text)
        .split_whitespace()
        .next()
}

/// A label value as the exposition format wants it: backslash, double quote and line feed
/// escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs.iter().copied().collect()
    }

    fn columns(names: &str, values: &str) -> Row {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(_, v)| *v != "NULL")
            .collect()
    }

    const STATS_COLUMNS: &str = "database total_xact_count total_query_count total_received total_sent total_xact_time total_query_time total_wait_time avg_xact_count avg_query_count avg_recv avg_sent avg_xact_time avg_query_time avg_wait_time";
    const POOLS_COLUMNS: &str = "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait maxwait_us pool_mode";
    const DATABASES_COLUMNS: &str = "name host port database force_user pool_size min_pool_size reserve_pool pool_mode max_connections current_connections paused disabled";

    /// Rows as PgBouncer 1.18 shows them (column names and order measured), after ten
    /// transactions of `shop` on `app`, a failed login to a database that does not exist and
    /// one still waiting; `fresh` has a client that logged in and ran nothing yet.
    fn observed() -> Observed {
        Observed {
            version: Some("PgBouncer 1.18.0".to_owned()),
            config: vec![
                row(&[("key", "listen_port"), ("value", "5432")]),
                row(&[("key", "max_client_conn"), ("value", "1000")]),
                row(&[("key", "max_db_connections"), ("value", "0")]),
                row(&[("key", "max_user_connections"), ("value", "0")]),
            ],
            databases: vec![
                columns(
                    DATABASES_COLUMNS,
                    "app db-rw.shop.svc 5432 app NULL 20 0 0 NULL 0 2 0 0",
                ),
                columns(
                    DATABASES_COLUMNS,
                    "fresh db-rw.shop.svc 5432 fresh NULL 20 0 0 NULL 0 1 0 0",
                ),
                columns(
                    DATABASES_COLUMNS,
                    "inflight db-rw.shop.svc 5432 inflight NULL 20 0 0 NULL 0 0 0 0",
                ),
                columns(
                    DATABASES_COLUMNS,
                    "pgbouncer NULL 5432 pgbouncer pgbouncer 2 0 0 statement 0 0 0 0",
                ),
            ],
            stats: vec![
                columns(
                    STATS_COLUMNS,
                    "app 10 12 140 957 4563 4563 36439 0 0 0 0 0 0 0",
                ),
                columns(STATS_COLUMNS, "fresh 0 0 0 0 0 0 0 0 0 0 0 0 0 0"),
                columns(STATS_COLUMNS, "inflight 0 0 0 0 0 0 0 0 0 0 0 0 0 0"),
                columns(STATS_COLUMNS, "nosuchdb 0 0 0 0 0 0 0 0 0 0 0 0 0 0"),
                columns(STATS_COLUMNS, "pgbouncer 7 7 0 0 0 0 0 0 0 0 0 0 0 0"),
                // An application database whose entry PgBouncer freed after it went idle:
                // not in SHOW DATABASES, but its counters stay.
                columns(
                    STATS_COLUMNS,
                    "reports 3 3 42 420 1500000 1250000 2 0 0 0 0 0 0 0",
                ),
            ],
            pools: vec![
                columns(
                    POOLS_COLUMNS,
                    "app shop 1 2 0 0 1 0 0 0 1 0 0 3 250000 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "app tusk_pooler 0 0 0 0 0 0 0 0 1 0 0 0 0 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "fresh shop 1 0 0 0 0 0 0 0 0 0 0 0 0 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "fresh tusk_pooler 0 0 0 0 0 0 0 1 0 0 0 0 0 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "inflight tusk_pooler 0 1 0 0 0 0 0 0 0 0 1 2 0 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "nosuchdb tusk_pooler 0 0 0 0 0 0 0 0 0 0 0 0 0 transaction",
                ),
                // A client claimed to be the admin user, with a wrong password.
                columns(
                    POOLS_COLUMNS,
                    "nosuchdb2 tusk_pooler_admin 0 0 0 0 0 0 0 0 0 0 0 0 0 transaction",
                ),
                columns(
                    POOLS_COLUMNS,
                    "pgbouncer pgbouncer 1 0 0 0 0 0 0 0 0 0 0 0 0 statement",
                ),
                columns(
                    POOLS_COLUMNS,
                    "reports shop 0 0 0 0 0 0 0 0 0 0 0 0 0 transaction",
                ),
            ],
            lists: [
                ("databases", "2"),
                ("users", "3"),
                ("pools", "5"),
                ("free_clients", "48"),
                ("used_clients", "2"),
                ("login_clients", "0"),
                ("free_servers", "48"),
                ("used_servers", "2"),
                ("dns_names", "0"),
                ("dns_zones", "0"),
                ("dns_queries", "0"),
                ("dns_pending", "0"),
            ]
            .iter()
            .map(|(list, items)| row(&[("list", list), ("items", items)]))
            .collect(),
        }
    }

    #[test]
    fn pgbouncer_1_18_rows_render_as_prometheus_text() {
        insta::assert_snapshot!("pgbouncer_1_18", render(&observed()));
    }

    #[test]
    fn microseconds_become_seconds_and_maxwait_adds_its_microseconds() {
        let text = render(&observed());
        for line in [
            "pgbouncer_stats_queries_duration_seconds_total{database=\"app\"} 0.004563",
            "pgbouncer_stats_client_wait_seconds_total{database=\"app\"} 0.036439",
            "pgbouncer_stats_server_in_transaction_seconds_total{database=\"reports\"} 1.5",
            "pgbouncer_pools_client_maxwait_seconds{database=\"app\",user=\"shop\"} 3.25",
            "pgbouncer_stats_queries_pooled_total{database=\"app\"} 12",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_admin_database_and_names_nobody_logged_in_to_get_no_series() {
        let text = render(&observed());
        assert!(!text.contains("database=\"pgbouncer\""), "{text}");
        assert!(!text.contains("nosuchdb"), "{text}");
        assert!(!text.contains("tusk_pooler_admin"), "{text}");
        assert!(!text.contains("inflight"), "a login still waiting: {text}");
        assert!(
            text.contains(
                "pgbouncer_pools_client_active_connections{database=\"fresh\",user=\"shop\"} 1"
            ),
            "a logged-in client that ran nothing yet: {text}"
        );
        assert!(
            text.contains("pgbouncer_stats_queries_pooled_total{database=\"reports\"} 3"),
            "a used database PgBouncer freed keeps its counters: {text}"
        );
        assert!(
            text.contains(
                "pgbouncer_pools_client_active_connections{database=\"reports\",user=\"shop\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "pgbouncer_exporter_omitted_databases 3"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut observed = observed();
        observed
            .stats
            .push(columns(STATS_COLUMNS, "x 1 1 0 0 0 0 0 0 0 0 0 0 0 0"));
        observed
            .stats
            .last_mut()
            .unwrap()
            .0
            .insert("database".to_owned(), "we\"ird\\name\nnext".to_owned());
        let text = render(&observed);
        assert!(
            text.contains(
                "pgbouncer_stats_queries_pooled_total{database=\"we\\\"ird\\\\name\\nnext\"} 1\n"
            ),
            "{text}"
        );
        // Every sample line is one line: no raw line feed inside a label value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.ends_with(|c: char| c.is_ascii_digit()),
                "broken line {line:?}"
            );
        }
    }

    #[test]
    fn at_most_max_databases_get_series_and_the_rest_are_counted() {
        let mut observed = observed();
        for i in 0..MAX_DATABASES + 50 {
            observed.pools.push(columns(
                POOLS_COLUMNS,
                &format!("flood{i:04} shop 0 0 0 0 0 0 0 0 0 0 1 0 0 transaction"),
            ));
        }
        let text = render(&observed);
        let databases: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_once("database=\"")?.1.split_once('"'))
            .map(|(database, _)| database)
            .collect();
        assert_eq!(databases.len(), MAX_DATABASES);
        assert!(databases.contains("app") && databases.contains("reports"));
        assert!(
            text.lines().any(|l| l
                // nosuchdb, nosuchdb2, inflight, and the 53 flood names beyond app, fresh,
                // reports and the first 197.
                == "pgbouncer_exporter_omitted_databases 56"),
            "{text}"
        );
    }

    #[test]
    fn columns_a_version_lacks_are_left_out_and_renamed_ones_read() {
        // PgBouncer 1.24 calls reserve_pool reserve_pool_size.
        let observed = Observed {
            databases: vec![row(&[
                ("name", "app"),
                ("pool_size", "20"),
                ("reserve_pool_size", "5"),
            ])],
            pools: vec![row(&[
                ("database", "app"),
                ("user", "shop"),
                ("cl_active", "1"),
            ])],
            ..Observed::default()
        };
        let text = render(&observed);
        assert!(text.contains("pgbouncer_databases_reserve_pool{database=\"app\"} 5\n"));
        assert!(!text.contains("pgbouncer_databases_paused"), "{text}");
        assert!(!text.contains("pgbouncer_stats_"), "{text}");
        assert!(!text.contains("pgbouncer_version_info"), "{text}");
    }

    #[test]
    fn a_failed_scrape_says_down_only() {
        assert_eq!(
            render_down(),
            "# HELP pgbouncer_up 1 when the last scrape of PgBouncer's admin console succeeded.\n# TYPE pgbouncer_up gauge\npgbouncer_up 0\n"
        );
    }

    #[test]
    fn every_rendered_family_is_listed_and_has_help_and_type() {
        let text = render(&observed());
        let names = metric_names();
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().unwrap();
                assert!(names.contains(&name), "{name} not in metric_names()");
                typed.push(name);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(typed.last(), Some(&name), "{line} outside its family");
            }
        }
        let unique: BTreeSet<&&str> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "a name twice");
        for name in &names {
            assert!(name.starts_with("pgbouncer_"));
        }
    }
}
