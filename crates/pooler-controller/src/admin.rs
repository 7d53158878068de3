//! PgBouncer's admin console (database `pgbouncer`, user [`crate::auth::ADMIN_ROLE`]), which
//! the controller uses on every pod: `SHOW CONFIG` to see whether the pod runs the Pooler's
//! settings, `RELOAD` (and `SET` for what the kubelet has not refreshed in the mounted file
//! yet) when it does not, `PAUSE`/`RESUME` for `spec.paused`.
//!
//! The console speaks only the simple query protocol, so everything here is `simple_query`.
//! PgBouncer 1.18 does not show a global `PAUSE` in `SHOW DATABASES` (its `paused` column is
//! per database), so whether a pod is paused is what the controller last sent it.

use std::collections::BTreeMap;

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

/// Whether `error` is PgBouncer saying a `PAUSE` was already sent.
pub fn is_already_paused(error: &Error) -> bool {
    console_message(error).is_some_and(|message| message.contains("already"))
}

/// Whether `error` is PgBouncer saying there is nothing to `RESUME`.
pub fn is_not_paused(error: &Error) -> bool {
    console_message(error).is_some_and(|message| message.contains("not paused"))
}

fn console_message(error: &Error) -> Option<&str> {
    error.as_db_error().map(|db| db.message())
}

/// Server connections in use (`sv_active`, summed over `SHOW POOLS`): while a pause is under
/// way, what it waits for.
pub async fn server_connections_in_use(console: &Client) -> Result<u64, Error> {
    Ok(console
        .simple_query("SHOW POOLS")
        .await?
        .iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get("sv_active")?.parse::<u64>().ok(),
            _ => None,
        })
        .sum())
}

/// One row of `SHOW CONFIG`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shown {
    pub value: String,
    /// Whether `SET` can change it at run time (else only a restart does).
    pub changeable: bool,
}

/// Every setting PgBouncer runs with, by name.
pub async fn show_config(console: &Client) -> Result<BTreeMap<String, Shown>, Error> {
    Ok(console
        .simple_query("SHOW CONFIG")
        .await?
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some((
                row.get("key")?.to_owned(),
                Shown {
                    value: row.get("value").unwrap_or_default().to_owned(),
                    changeable: row.get("changeable") == Some("yes"),
                },
            )),
            _ => None,
        })
        .collect())
}

/// The settings of `desired` that PgBouncer does not run with (absent, or another value).
pub fn pending_settings<'a>(
    desired: &'a [(String, String)],
    shown: &BTreeMap<String, Shown>,
) -> Vec<&'a str> {
    desired
        .iter()
        .filter(|(key, want)| {
            !shown
                .get(key)
                .is_some_and(|shown| same_value(want, &shown.value))
        })
        .map(|(key, _)| key.as_str())
        .collect()
}

/// Whether `SHOW CONFIG`'s `shown` is the setting `want` as written in `pgbouncer.ini`: the same
/// text (ignoring case and surrounding blanks), or the same number.
pub fn same_value(want: &str, shown: &str) -> bool {
    let (want, shown) = (want.trim(), shown.trim());
    want.eq_ignore_ascii_case(shown)
        || matches!(
            (want.parse::<f64>(), shown.parse::<f64>()),
            (Ok(a), Ok(b)) if a == b
        )
}

/// Whether `SET` can carry `value` safely: one line of plain characters (anything else waits
/// for `RELOAD` to read it from the file).
pub fn settable(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " _.,:/-=@".contains(c))
}

/// Sets `key` to `value` in the running PgBouncer (not in its file). `key` is a PgBouncer
/// setting name (`^[a-z][a-z0-9_]*$`) and `value` passes [`settable`]; anything else is refused
/// here without sending.
pub async fn set(console: &Client, key: &str, value: &str) -> Result<bool, Error> {
    let name_ok = key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !name_ok || !settable(value) {
        return Ok(false);
    }
    console
        .simple_query(&format!("SET {key} = '{value}'"))
        .await
        .map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(pairs: &[(&str, &str)]) -> BTreeMap<String, Shown> {
        pairs
            .iter()
            .map(|(key, value)| {
                (
                    (*key).to_owned(),
                    Shown {
                        value: (*value).to_owned(),
                        changeable: true,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn only_settings_that_differ_are_pending() {
        let desired = vec![
            ("pool_mode".to_owned(), "transaction".to_owned()),
            ("default_pool_size".to_owned(), "20".to_owned()),
            ("server_lifetime".to_owned(), "3600".to_owned()),
            ("application_name_add_host".to_owned(), "1".to_owned()),
        ];
        let running = shown(&[
            ("pool_mode", "TRANSACTION"),
            ("default_pool_size", "5"),
            ("server_lifetime", "3600.0"),
        ]);
        assert_eq!(
            pending_settings(&desired, &running),
            ["default_pool_size", "application_name_add_host"]
        );
    }

    #[test]
    fn set_refuses_what_it_cannot_quote() {
        assert!(settable("extra_float_digits,search_path"));
        assert!(!settable("x'; SHUTDOWN; --"));
        assert!(!settable("a\nb"));
    }
}
