//! `tusk-operator pgbouncer-exporter`: the metrics sidecar of a Pooler pod. It serves
//! PgBouncer's admin console as Prometheus text, rendered by
//! [`tusk_pooler_controller::exporter`].
//!
//! ```text
//!   Prometheus ──GET /metrics──► sidecar :9127 ──TLS verify-full, tusk_pooler_admin──►
//!                                  PgBouncer 127.0.0.1:5432, database pgbouncer: SHOW …
//!   kubelet ────GET /healthz───► 200 while the process serves
//! ```
//!
//! One admin connection, opened by the first scrape and reused while it lives; scrapes
//! take turns on it. When PgBouncer cannot be reached or a `SHOW` fails, `/metrics` still
//! answers 200 with `pgbouncer_up 0`, the connection is dropped, and the next scrape opens a
//! new one. The CA file is read at every connection, so a rotated CA is picked up without a
//! restart. The password never reaches a log line, an error or a metric.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};

use crate::http::text;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tusk_pooler_controller::exporter;
use tusk_runtime::postgres::{ConnectError, PrimaryTarget};

/// The port the sidecar listens on (the prometheus-community exporter's).
pub const DEFAULT_PORT: u16 = 9127;

/// The environment variable holding the admin console user's password.
pub const PASSWORD_ENV: &str = "TUSK_PGBOUNCER_PASSWORD";

/// What PgBouncer shows as the exporter's `application_name`.
const APPLICATION_NAME: &str = "tusk-pgbouncer-exporter";

/// How long one scrape (connecting included) may take: under Prometheus' default scrape
/// timeout of 10 s, so that a hung PgBouncer yields `pgbouncer_up 0` rather than a failed
/// scrape.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(8);

/// The admin console connection and how to open it again.
#[derive(Debug)]
pub struct Scraper {
    /// Where PgBouncer is and as whom to log in; `ca_pem` is filled from `ca_file` at each
    /// connection.
    target: PrimaryTarget,
    ca_file: PathBuf,
    /// `address:port (certificate name)`, for log lines.
    endpoint: String,
    console: Mutex<Option<Client>>,
}

/// Why a scrape failed. The texts carry no password: connection errors name the host and
/// what failed, server errors are PgBouncer's messages.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to PgBouncer's admin console: {}", chain(.0))]
    Connect(ConnectError),
    #[error("the admin console failed: {}", chain(.0))]
    Show(tokio_postgres::Error),
    #[error("no answer within {} s", SCRAPE_TIMEOUT.as_secs())]
    Timeout,
}

/// An error and its sources on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Scraper {
    /// A scraper logging in as `target.user`; the connection is opened by the first scrape.
    pub fn new(target: PrimaryTarget, ca_file: PathBuf) -> Self {
        let address = target
            .address
            .map_or_else(|| target.host.clone(), |ip| ip.to_string());
        let endpoint = format!("{address}:{} ({})", target.port, target.host);
        Self {
            target,
            ca_file,
            endpoint,
            console: Mutex::new(None),
        }
    }

    /// The body of one `/metrics` answer: the rendering, or `pgbouncer_up 0` (and a warning
    /// in the log) when the admin console could not answer.
    pub async fn metrics(&self) -> String {
        let mut console = self.console.lock().await;
        let result = tokio::time::timeout(SCRAPE_TIMEOUT, self.scrape(&mut console))
            .await
            .unwrap_or(Err(ScrapeError::Timeout));
        match result {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(
                    %error,
                    pgbouncer = %self.endpoint,
                    user = %self.target.user,
                    "scraping PgBouncer failed; answering pgbouncer_up 0"
                );
                exporter::render_down()
            }
        }
    }

    /// Reuses the open connection, or opens one; keeps it only when the scrape succeeded.
    async fn scrape(&self, console: &mut Option<Client>) -> Result<String, ScrapeError> {
        let client = match console.take().filter(|client| !client.is_closed()) {
            Some(client) => client,
            None => self.connect().await?,
        };
        let text = exporter::scrape(&client).await.map_err(ScrapeError::Show)?;
        *console = Some(client);
        Ok(text)
    }

    async fn connect(&self) -> Result<Client, ScrapeError> {
        let ca_pem =
            tokio::fs::read(&self.ca_file)
                .await
                .map_err(|source| ScrapeError::CaFile {
                    path: self.ca_file.clone(),
                    source,
                })?;
        let target = PrimaryTarget {
            ca_pem: Some(ca_pem),
            ..self.target.clone()
        };
        let client = target
            .connect(exporter::ADMIN_DATABASE, APPLICATION_NAME)
            .await
            .map_err(ScrapeError::Connect)?;
        tracing::info!(
            pgbouncer = %self.endpoint,
            user = %target.user,
            "connected to PgBouncer's admin console"
        );
        Ok(client)
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, scraper: Arc<Scraper>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                continue;
            }
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let scraper = scraper.clone();
                async move { Ok::<_, Infallible>(respond(&request, &scraper).await) }
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

async fn respond(request: &Request<Incoming>, scraper: &Scraper) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, scraper.metrics().await);
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(exporter::CONTENT_TYPE),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    use crate::http::tests::get;

    /// A PgBouncer that is not there: a port nothing listens on, a CA file that is missing.
    fn unreachable(password: &str) -> Scraper {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Scraper::new(
            PrimaryTarget {
                host: "db-pooler.shop.svc".to_owned(),
                port,
                address: Some(IpAddr::from([127, 0, 0, 1])),
                ca_pem: None,
                user: "tusk_pooler_admin".to_owned(),
                password: password.to_owned(),
            },
            PathBuf::from("/nonexistent/ca.crt"),
        )
    }

    #[tokio::test]
    async fn an_unreachable_pgbouncer_is_reported_as_down_with_status_200() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(unreachable("s3cret-admin"))));

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("\npgbouncer_up 0\n"), "{body}");
        assert!(!body.contains("s3cret-admin"));
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);
        server.abort();
    }

    #[tokio::test]
    async fn errors_name_what_failed_but_not_the_password() {
        let scraper = unreachable("s3cret-admin");
        let mut console = None;
        let error = scraper.scrape(&mut console).await.unwrap_err().to_string();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");
        assert!(!error.contains("s3cret-admin"), "{error}");
        assert!(console.is_none());
        assert!(!format!("{scraper:?}").contains("s3cret-admin"));

        // With a usable CA the connection itself fails: nothing listens.
        let tls = tusk_testkit::ServerTls::for_host("db-pooler.shop.svc", None).unwrap();
        let ca_file = tls.dir.path().join("ca.crt");
        std::fs::write(&ca_file, &tls.ca_pem).unwrap();
        let scraper = Scraper {
            ca_file,
            ..unreachable("s3cret-admin")
        };
        let error = scraper.scrape(&mut console).await.unwrap_err().to_string();
        assert!(
            error.starts_with("cannot connect to PgBouncer's admin console: "),
            "{error}"
        );
        assert!(!error.contains("s3cret-admin"), "{error}");
        assert!(console.is_none());
    }
}
