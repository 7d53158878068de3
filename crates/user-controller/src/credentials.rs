//! The credentials Secret `<cluster>-<user>-credentials` and which password it holds.
//!
//! The Secret is the source of truth for the password: PostgreSQL is always brought to the
//! password the Secret holds, never the other way round. That fixes the rotation order:
//!
//! 1. a new password is generated (annotation or interval) and written to the Secret;
//! 2. in the same reconcile, right after, the role's verifier is set to it;
//! 3. apps read the Secret again (a mounted Secret is refreshed by the kubelet; environment
//!    variables need a restart) and reconnect. Sessions already open keep working: PostgreSQL
//!    checks a password only when a session starts.
//!
//! So the only valid password is never one that exists nowhere but in the operator's memory:
//! if step 2 fails (or the operator dies between the steps), the next pass finds the role's
//! verifier differing from the Secret and sets it — the rotation completes instead of being
//! lost, and an app that already read the new Secret gets in as soon as it does.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::ObjectMeta;
use tusk_api::PostgresUser;
use tusk_api::labels::cluster_child_labels;
use tusk_api::names::{self, keys};

/// `app.kubernetes.io/component` of credentials Secrets; the controller watches only these.
pub const COMPONENT: &str = "user-credentials";
/// When the password in the Secret was set (RFC 3339); rotation intervals count from it.
pub const PASSWORD_CHANGED_AT_ANNOTATION: &str = "tusk.dev/password-changed-at";
/// The last `tusk.dev/rotate-password` request this password answers.
pub const ROTATION_HANDLED_ANNOTATION: &str = "tusk.dev/rotation-request-handled";
/// The `sslmode` clients use: the server is TLS-only and its certificate names the host.
pub const SSLMODE: &str = "verify-full";

/// Keys of the credentials Secret besides `username` and `password`.
pub mod secret_keys {
    pub const HOST: &str = "host";
    pub const PORT: &str = "port";
    pub const DBNAME: &str = "dbname";
    pub const URI: &str = "uri";
    pub const JDBC_URL: &str = "jdbc-url";
    pub const SSLMODE: &str = "sslmode";
}

/// Where the password comes from this pass.
#[derive(Clone, Copy)]
pub enum PasswordInput<'a> {
    /// tusk generates and rotates it.
    Generated,
    /// The user's Secret (`spec.password.secret`) holds it.
    Supplied(&'a str),
}

impl std::fmt::Debug for PasswordInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordInput::Generated => f.write_str("Generated"),
            PasswordInput::Supplied(_) => f.write_str("Supplied(<redacted>)"),
        }
    }
}

/// The password for this pass and its bookkeeping.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordDecision {
    pub password: String,
    /// When it was set.
    pub changed_at: jiff::Timestamp,
    /// The rotation request it answers (recorded in the Secret and in status).
    pub handled_request: Option<String>,
    /// Whether it replaces a previous password (a rotation, or a changed supplied password).
    pub rotated: bool,
}

impl std::fmt::Debug for PasswordDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordDecision")
            .field("password", &"<redacted>")
            .field("changed_at", &self.changed_at)
            .field("handled_request", &self.handled_request)
            .field("rotated", &self.rotated)
            .finish()
    }
}

impl PasswordDecision {
    /// When a generated password is due for rotation, with `interval` set.
    pub fn next_rotation(&self, interval: Option<Duration>) -> Option<jiff::Timestamp> {
        let interval = jiff::SignedDuration::try_from(interval?).ok()?;
        self.changed_at.checked_add(interval).ok()
    }
}

/// What the existing credentials Secret says.
fn existing_password(secret: Option<&Secret>) -> Option<&str> {
    let bytes = secret?.data.as_ref()?.get(keys::PASSWORD)?;
    std::str::from_utf8(&bytes.0).ok().filter(|p| !p.is_empty())
}

fn annotation<'a>(secret: Option<&'a Secret>, key: &str) -> Option<&'a str> {
    secret?
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Decides the password: the existing one unless a rotation is asked for (`request`, the
/// marker of the `tusk.dev/rotate-password` annotation, differs from the one the Secret
/// answers) or due (`interval` since it was set), or a supplied password differs.
pub fn decide_password<E>(
    existing: Option<&Secret>,
    input: PasswordInput<'_>,
    request: Option<String>,
    interval: Option<Duration>,
    now: jiff::Timestamp,
    generate: impl FnOnce() -> Result<String, E>,
) -> Result<PasswordDecision, E> {
    let current = existing_password(existing);
    let changed_at = annotation(existing, PASSWORD_CHANGED_AT_ANNOTATION)
        .and_then(|text| text.parse::<jiff::Timestamp>().ok());
    let handled = annotation(existing, ROTATION_HANDLED_ANNOTATION).map(str::to_owned);
    let decision = match (input, current) {
        (PasswordInput::Supplied(supplied), Some(current)) if supplied == current => {
            PasswordDecision {
                password: current.to_owned(),
                changed_at: changed_at.unwrap_or(now),
                handled_request: handled,
                rotated: false,
            }
        }
        (PasswordInput::Supplied(supplied), current) => PasswordDecision {
            password: supplied.to_owned(),
            changed_at: now,
            handled_request: handled,
            rotated: current.is_some(),
        },
        (PasswordInput::Generated, None) => PasswordDecision {
            password: generate()?,
            changed_at: now,
            // A fresh password answers any request made so far.
            handled_request: request.or(handled),
            rotated: false,
        },
        (PasswordInput::Generated, Some(current)) => {
            let requested = request.is_some() && request != handled;
            let due = match (
                interval.and_then(|i| jiff::SignedDuration::try_from(i).ok()),
                changed_at,
            ) {
                (Some(interval), Some(at)) => {
                    at.checked_add(interval).is_ok_and(|next| next <= now)
                }
                _ => false,
            };
            if requested || due {
                PasswordDecision {
                    password: generate()?,
                    changed_at: now,
                    handled_request: request.or(handled),
                    rotated: true,
                }
            } else {
                PasswordDecision {
                    password: current.to_owned(),
                    changed_at: changed_at.unwrap_or(now),
                    handled_request: handled,
                    rotated: false,
                }
            }
        }
    };
    Ok(decision)
}

/// The database named in the Secret: the first the role owns, else the first it is granted,
/// else `postgres`.
pub fn default_database(user: &PostgresUser) -> &str {
    user.spec
        .databases
        .first()
        .map(|d| d.name.as_str())
        .or_else(|| user.spec.grants.first().map(|g| g.database.as_str()))
        .unwrap_or("postgres")
}

/// The credentials Secret for `user` holding `decision`'s password, owned by `user`.
/// `ca_pem` (the Cluster's CA) is added as `ca.crt` so clients can verify the server.
pub fn desired_secret(
    user: &PostgresUser,
    role: &str,
    decision: &PasswordDecision,
    ca_pem: Option<&[u8]>,
) -> Option<Secret> {
    let namespace = user.metadata.namespace.as_deref()?;
    let object = user.metadata.name.as_deref()?;
    let cluster = user.spec.cluster.name.as_str();
    let host = names::read_write_host(cluster, namespace);
    let port = names::POSTGRES_PORT;
    let database = default_database(user);
    let password = decision.password.as_str();
    let uri = format!(
        "postgresql://{}:{}@{host}:{port}/{}?sslmode={SSLMODE}",
        percent_encode(role),
        percent_encode(password),
        percent_encode(database)
    );
    let jdbc = format!(
        "jdbc:postgresql://{host}:{port}/{}?user={}&password={}&sslmode={SSLMODE}",
        percent_encode(database),
        percent_encode(role),
        percent_encode(password)
    );
    let mut data: BTreeMap<String, ByteString> = [
        (keys::USERNAME, role.to_owned()),
        (keys::PASSWORD, password.to_owned()),
        (secret_keys::HOST, host.clone()),
        (secret_keys::PORT, port.to_string()),
        (secret_keys::DBNAME, database.to_owned()),
        (secret_keys::URI, uri),
        (secret_keys::JDBC_URL, jdbc),
        (secret_keys::SSLMODE, SSLMODE.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
    .collect();
    if let Some(ca) = ca_pem {
        data.insert(keys::CA_CERT.to_owned(), ByteString(ca.to_vec()));
    }
    let mut annotations = BTreeMap::from([(
        PASSWORD_CHANGED_AT_ANNOTATION.to_owned(),
        decision.changed_at.to_string(),
    )]);
    if let Some(request) = &decision.handled_request {
        annotations.insert(ROTATION_HANDLED_ANNOTATION.to_owned(), request.clone());
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(names::user_credentials_secret(cluster, object)),
            namespace: Some(namespace.to_owned()),
            labels: Some(cluster_child_labels(cluster, COMPONENT)),
            annotations: Some(annotations),
            owner_references: Some(vec![user.controller_owner_ref(&())?]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

/// Annotation `tusk-operator render` puts on the Secret it prints.
pub const RENDER_NOTE_ANNOTATION: &str = "tusk.dev/render-note";

/// The credentials Secret as `tusk-operator render` shows it, offline: every field the
/// controller sets, with the password (and the values derived from it) and the CA as
/// placeholders in `stringData` — never a real secret. The SQL is not rendered: it is planned
/// against the live catalog at reconcile time.
pub fn rendered_secret(user: &PostgresUser) -> Option<Secret> {
    let mut user = user.clone();
    user.metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned());
    user.metadata
        .uid
        .get_or_insert_with(|| "<assigned-by-the-api-server>".to_owned());
    let role = user.role_name()?.to_owned();
    let placeholder = match &user.spec.password.secret {
        Some(reference) => format!("<from Secret {} key {}>", reference.name, reference.key),
        None => "<generated>".to_owned(),
    };
    let decision = PasswordDecision {
        password: placeholder.clone(),
        changed_at: jiff::Timestamp::UNIX_EPOCH,
        handled_request: None,
        rotated: false,
    };
    let mut secret = desired_secret(&user, &role, &decision, None)?;
    let encoded = percent_encode(&placeholder);
    let string_data = secret
        .data
        .take()?
        .into_iter()
        .map(|(key, value)| {
            let text = String::from_utf8_lossy(&value.0).replace(&encoded, &placeholder);
            (key, text)
        })
        .chain([(
            keys::CA_CERT.to_owned(),
            "<ca.crt of the Cluster's CA Secret>".to_owned(),
        )])
        .collect();
    secret.string_data = Some(string_data);
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(
        PASSWORD_CHANGED_AT_ANNOTATION.to_owned(),
        "<when the password is set>".to_owned(),
    );
    annotations.insert(
        RENDER_NOTE_ANNOTATION.to_owned(),
        format!(
            "placeholders stand for secret values; the role {role:?}, its databases and grants are applied by SQL planned against the live catalog of Cluster {} at reconcile time, so no SQL is rendered",
            user.spec.cluster.name
        ),
    );
    Some(secret)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for URI user info, paths
/// and query values.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> PostgresUser {
        let mut user: PostgresUser = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: shop, namespace: db, uid: u-1}
spec:
  cluster: {name: db}
  databases: [{name: shop}]
",
        )
        .unwrap();
        user.metadata.uid = Some("u-1".into());
        user
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    fn secret_with(password: &str, changed_at: i64, handled: Option<&str>) -> Secret {
        let decision = PasswordDecision {
            password: password.into(),
            changed_at: at(changed_at),
            handled_request: handled.map(str::to_owned),
            rotated: false,
        };
        desired_secret(&user(), "shop", &decision, None).unwrap()
    }

    fn never() -> Result<String, ()> {
        panic!("no password should be generated")
    }

    #[test]
    fn secret_holds_every_connection_detail_and_is_owned() {
        let decision = PasswordDecision {
            password: "p@ss:word/".into(),
            changed_at: at(100),
            handled_request: None,
            rotated: false,
        };
        let secret = desired_secret(&user(), "shop user", &decision, Some(b"PEM")).unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some("db-shop-credentials"));
        let data = secret.data.unwrap();
        let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
        assert_eq!(text("username"), "shop user");
        assert_eq!(text("password"), "p@ss:word/");
        assert_eq!(text("host"), "db-rw.db.svc");
        assert_eq!(text("port"), "5432");
        assert_eq!(text("dbname"), "shop");
        assert_eq!(text("sslmode"), "verify-full");
        assert_eq!(text("ca.crt"), "PEM");
        assert_eq!(
            text("uri"),
            "postgresql://shop%20user:p%40ss%3Aword%2F@db-rw.db.svc:5432/shop?sslmode=verify-full"
        );
        assert_eq!(
            text("jdbc-url"),
            "jdbc:postgresql://db-rw.db.svc:5432/shop?user=shop%20user&password=p%40ss%3Aword%2F&sslmode=verify-full"
        );
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "PostgresUser");
        assert_eq!(owner.uid, "u-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(
            secret.metadata.labels.unwrap()["app.kubernetes.io/component"],
            COMPONENT
        );
    }

    #[test]
    fn first_pass_generates_and_answers_any_pending_request() {
        let decision = decide_password::<()>(
            None,
            PasswordInput::Generated,
            Some("r1".into()),
            None,
            at(5),
            || Ok("new".into()),
        )
        .unwrap();
        assert_eq!(decision.password, "new");
        assert_eq!(decision.handled_request.as_deref(), Some("r1"));
        assert!(!decision.rotated);
    }

    #[test]
    fn existing_password_is_kept_without_request_or_due_interval() {
        let secret = secret_with("old", 100, Some("r1"));
        let decision = decide_password(
            Some(&secret),
            PasswordInput::Generated,
            Some("r1".into()),
            Some(Duration::from_secs(3600)),
            at(200),
            never,
        )
        .unwrap();
        assert_eq!(decision.password, "old");
        assert_eq!(decision.changed_at, at(100));
        assert!(!decision.rotated);
    }

    #[test]
    fn new_annotation_value_rotates_once() {
        let secret = secret_with("old", 100, Some("r1"));
        let decision = decide_password::<()>(
            Some(&secret),
            PasswordInput::Generated,
            Some("r2".into()),
            None,
            at(200),
            || Ok("new".into()),
        )
        .unwrap();
        assert_eq!(decision.password, "new");
        assert!(decision.rotated);
        assert_eq!(decision.handled_request.as_deref(), Some("r2"));
        assert_eq!(decision.changed_at, at(200));
    }

    #[test]
    fn interval_rotates_when_due() {
        let secret = secret_with("old", 100, None);
        let interval = Some(Duration::from_secs(3600));
        let early = decide_password(
            Some(&secret),
            PasswordInput::Generated,
            None,
            interval,
            at(3699),
            never,
        )
        .unwrap();
        assert_eq!(early.password, "old");
        assert_eq!(early.next_rotation(interval), Some(at(3700)));
        let due = decide_password::<()>(
            Some(&secret),
            PasswordInput::Generated,
            None,
            interval,
            at(3700),
            || Ok("new".into()),
        )
        .unwrap();
        assert!(due.rotated);
        assert_eq!(due.password, "new");
    }

    #[test]
    fn supplied_password_is_honoured_and_a_change_counts_as_rotation() {
        let secret = secret_with("old", 100, None);
        let same = decide_password(
            Some(&secret),
            PasswordInput::Supplied("old"),
            None,
            None,
            at(500),
            never,
        )
        .unwrap();
        assert!(!same.rotated);
        assert_eq!(same.changed_at, at(100));
        let changed = decide_password(
            Some(&secret),
            PasswordInput::Supplied("new"),
            None,
            None,
            at(500),
            never,
        )
        .unwrap();
        assert!(changed.rotated);
        assert_eq!(changed.password, "new");
        assert_eq!(changed.changed_at, at(500));
    }

    #[test]
    fn rendered_secret_shows_placeholders_never_a_password() {
        let mut user = user();
        user.metadata.uid = None;
        let secret = rendered_secret(&user).unwrap();
        assert!(secret.data.is_none());
        let data = secret.string_data.unwrap();
        assert_eq!(data["password"], "<generated>");
        assert_eq!(
            data["uri"],
            "postgresql://shop:<generated>@db-rw.db.svc:5432/shop?sslmode=verify-full"
        );
        assert_eq!(data["username"], "shop");
        assert!(data["ca.crt"].starts_with('<'));
        let note = &secret.metadata.annotations.unwrap()[RENDER_NOTE_ANNOTATION];
        assert!(note.contains("live catalog"), "{note}");
    }

    #[test]
    fn decision_debug_hides_the_password() {
        let secret = secret_with("hunter2-secret", 100, None);
        let decision = decide_password(
            Some(&secret),
            PasswordInput::Generated,
            None,
            None,
            at(1),
            never,
        )
        .unwrap();
        assert!(!format!("{decision:?}").contains("hunter2"));
        assert!(!format!("{:?}", PasswordInput::Supplied("hunter2")).contains("hunter2"));
    }
}
