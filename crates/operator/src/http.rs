//! `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! `/healthz` answers 200 while the process runs (the liveness probe). `/readyz` answers 200
//! once the operator is connected and its controllers are started, else 503 with the reason
//! (the readiness probe). A follower replica waiting for the leader Lease is ready: it is
//! healthy and will take over when the leader goes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use tusk_runtime::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Readiness, shared between the endpoint and whoever knows the state.
#[derive(Clone, Debug)]
pub struct Readiness {
    not_ready_because: Arc<Mutex<Option<String>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            not_ready_because: Arc::new(Mutex::new(Some("starting".to_owned()))),
        }
    }
}

impl Readiness {
    pub fn set_ready(&self) {
        *self.lock() = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.lock() = Some(reason.into());
    }

    /// `None` when ready, else why not.
    pub fn not_ready_because(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.not_ready_because
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Binds `addr`; the returned listener is served by [`serve`]. Binding first lets the caller
/// fail fast (port in use) and learn the port when `addr` asks for port 0.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Metrics, readiness: Readiness) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        "/readyz" => match readiness.not_ready_because() {
            None => text(StatusCode::OK, "ok\n".to_owned()),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

/// A plain-text response (also the pgbouncer-exporter's).
pub(crate) fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The address a bound listener serves on.
pub fn local_addr(listener: &TcpListener) -> std::io::Result<SocketAddr> {
    listener.local_addr()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tusk_runtime::ControllerKind;

    /// One plain HTTP/1.1 GET: status, head and body (shared with the exporter's tests).
    pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn endpoints_serve_metrics_health_and_readiness() {
        let metrics = Metrics::new();
        metrics.controller(ControllerKind::Cluster);
        let readiness = Readiness::default();
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = local_addr(&listener).unwrap();
        let server = tokio::spawn(serve(listener, metrics, readiness.clone()));

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(
            body.contains("tusk_reconcile_total{controller=\"cluster\",result=\"success\"} 0"),
            "{body}"
        );
        assert!(body.trim_end().ends_with("# EOF"));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("starting"));
        readiness.set_ready();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);
        server.abort();
    }
}
