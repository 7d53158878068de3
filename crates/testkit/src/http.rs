//! A plain-HTTP request over loopback, enough for etcd's and Patroni's REST APIs without
//! an HTTP client dependency.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status and body of an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

/// Sends one HTTP/1.0 request (the server closes the connection after answering) and reads
/// the response; a JSON `body` is sent with `Content-Type: application/json`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<HttpResponse> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer in 30 s"))?
        .with_context(|| format!("{method} http://{addr}{path}"))?;
    parse_response(&String::from_utf8_lossy(&response))
        .with_context(|| format!("{method} http://{addr}{path}"))
}

fn parse_response(response: &str) -> Result<HttpResponse> {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("incomplete HTTP response: {response:?}");
    };
    let status_line = head.lines().next().unwrap_or_default();
    let Some(status) = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
    else {
        bail!("malformed HTTP status line: {status_line:?}");
    };
    Ok(HttpResponse {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_status_and_body_are_split() -> Result<()> {
        let response = parse_response(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\"}",
        )?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"health\":\"true\"}");
        Ok(())
    }

    #[test]
    fn truncated_response_is_an_error() {
        assert!(parse_response("HTTP/1.1 200 OK\r\nContent-Length: 4").is_err());
        assert!(parse_response("garbage\r\n\r\n").is_err());
    }
}
