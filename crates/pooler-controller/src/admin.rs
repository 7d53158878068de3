//! PgBouncer's admin console (database `pgbouncer`, user [`crate::auth::ADMIN_ROLE`]), which
//! the controller will use on every pod: `RELOAD` after `pgbouncer.ini` or a certificate
//! changed, `PAUSE`/`RESUME` for `spec.paused`, `SHOW` for status and metrics.
//!
//! The console speaks only the simple query protocol, so everything here is `simple_query`.
//! PgBouncer 1.18 does not show a global `PAUSE` in `SHOW DATABASES` (its `paused` column is
//! per database), so whether a pod is paused is what the controller last sent it.

use tokio_postgres::{Client, Error, SimpleQueryMessage};

/// Re-reads `pgbouncer.ini` and the files it names; open client connections stay.
pub async fn reload(console: &Client) -> Result<(), Error> {
    console.simple_query("RELOAD").await.map(drop)
}

/// Waits for the queries in flight and hands out no server connection until [`resume`];
/// clients stay connected and their queries wait.
pub async fn pause(console: &Client) -> Result<(), Error> {
    console.simple_query("PAUSE").await.map(drop)
}

/// Ends a [`pause`].
pub async fn resume(console: &Client) -> Result<(), Error> {
    console.simple_query("RESUME").await.map(drop)
}

/// The current value of one setting (`SHOW CONFIG`), `None` when PgBouncer has no such
/// setting.
pub async fn setting(console: &Client, name: &str) -> Result<Option<String>, Error> {
    Ok(console
        .simple_query("SHOW CONFIG")
        .await?
        .into_iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) if row.get("key") == Some(name) => {
                row.get("value").map(str::to_owned)
            }
            _ => None,
        }))
}
