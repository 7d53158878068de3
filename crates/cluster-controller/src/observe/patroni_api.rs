//! A small client for Patroni's REST API (port 8008 of each instance): the cluster view
//! (roles, lag, `pending_restart`), the dynamic configuration (`GET`/`PATCH /config`),
//! switchover and restart. Patroni owns promotion and restarts; tusk only asks.
//!
//! Unsafe requests (`PATCH`, `POST`) carry the REST API's basic-auth credentials
//! ([`Credentials`], from the `<cluster>-patroni-api` Secret); reads need none.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// One member in Patroni's `GET /cluster` answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Member {
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`, ...
    pub role: String,
    /// `running`, `streaming`, `stopped`, ...
    #[serde(default)]
    pub state: String,
    /// Bytes behind the leader; Patroni reports a number or the string `unknown`.
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
    #[serde(default)]
    pub timeline: Option<i64>,
    #[serde(default)]
    pub pending_restart: Option<bool>,
}

impl Member {
    /// Lag in bytes, when Patroni knows it.
    pub fn lag_bytes(&self) -> Option<i64> {
        self.lag.as_ref().and_then(serde_json::Value::as_i64)
    }

    /// A synchronous standby (`sync_standby`; Patroni 4's quorum mode: `quorum_standby`).
    pub fn is_sync_standby(&self) -> bool {
        matches!(self.role.as_str(), "sync_standby" | "quorum_standby")
    }

    pub fn is_leader(&self) -> bool {
        matches!(
            self.role.as_str(),
            "leader" | "master" | "primary" | "standby_leader"
        )
    }
}

/// Patroni's `GET /cluster` answer.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ClusterView {
    #[serde(default)]
    pub members: Vec<Member>,
}

/// Credentials for Patroni's unsafe endpoints (switchover, config).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);
/// `POST /restart` answers once PostgreSQL is back (or Patroni gave up), which takes as long
/// as a shutdown checkpoint plus recovery.
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// `GET /cluster` on the instance at `addr`.
pub async fn cluster(addr: SocketAddr) -> Result<ClusterView, String> {
    let (status, body) = request(addr, Method::GET, "/cluster", None, None, TIMEOUT).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /cluster answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET /cluster: unexpected answer: {e}"))
}

/// `POST /switchover` from `leader` to `candidate`, asked of the leader at `addr`.
pub async fn switchover(
    addr: SocketAddr,
    credentials: &Credentials,
    leader: &str,
    candidate: &str,
) -> Result<(), String> {
    let body = serde_json::json!({"leader": leader, "candidate": candidate}).to_string();
    let (status, answer) = request(
        addr,
        Method::POST,
        "/switchover",
        Some(body),
        Some(credentials),
        TIMEOUT,
    )
    .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "switchover from {leader} to {candidate} refused ({status}): {}",
            String::from_utf8_lossy(&answer).trim()
        ))
    }
}

/// `GET /config`: the dynamic configuration Patroni keeps in the DCS.
pub async fn config(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let (status, body) = request(addr, Method::GET, "/config", None, None, TIMEOUT).await?;
    if status != StatusCode::OK {
        return Err(format!("GET /config answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET /config: unexpected answer: {e}"))
}

/// `PATCH /config` with `patch` (JSON merge semantics; `null` deletes a key). Every member
/// picks the change up on its next HA loop and reloads PostgreSQL; parameters that need a
/// restart show up as `pending_restart` instead.
pub async fn patch_config(
    addr: SocketAddr,
    credentials: &Credentials,
    patch: &serde_json::Value,
) -> Result<(), String> {
    let (status, answer) = request(
        addr,
        Method::PATCH,
        "/config",
        Some(patch.to_string()),
        Some(credentials),
        TIMEOUT,
    )
    .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "PATCH /config refused ({status}): {}",
            String::from_utf8_lossy(&answer).trim()
        ))
    }
}

/// `POST /restart` of the member at `addr`: Patroni restarts its PostgreSQL (a replica stays
/// a replica; a leader keeps the leader lock) and answers when it is back.
pub async fn restart(addr: SocketAddr, credentials: &Credentials) -> Result<(), String> {
    let (status, answer) = request(
        addr,
        Method::POST,
        "/restart",
        Some("{}".to_owned()),
        Some(credentials),
        RESTART_TIMEOUT,
    )
    .await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!(
            "restart refused ({status}): {}",
            String::from_utf8_lossy(&answer).trim()
        ))
    }
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
    credentials: Option<&Credentials>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json");
        if let Some(credentials) = credentials {
            builder = builder.header("authorization", basic_auth(credentials));
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
}

fn basic_auth(credentials: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", credentials.username, credentials.password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_view_parses_patroni_output() {
        let view: ClusterView = serde_json::from_str(
            r#"{"members": [
                {"name": "db-1", "role": "leader", "state": "running", "timeline": 2},
                {"name": "db-2", "role": "replica", "state": "streaming", "lag": 0, "timeline": 2},
                {"name": "db-3", "role": "replica", "state": "starting", "lag": "unknown"}
            ]}"#,
        )
        .unwrap();
        assert!(view.members[0].is_leader());
        assert_eq!(view.members[1].lag_bytes(), Some(0));
        assert_eq!(view.members[2].lag_bytes(), None);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let credentials = Credentials {
            username: "patroni".into(),
            password: "s3cr3t-value".into(),
        };
        assert!(!format!("{credentials:?}").contains("s3cr3t"));
    }
}
