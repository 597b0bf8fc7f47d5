//! The two plain HTTP requests a client makes to an OpenEnv server: `GET /health` before use and
//! `GET /metadata` for the environment's name and description.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

/// `GET http://{authority}{path}`, returning the body of a 2xx answer. Errors are sentences naming
/// what failed; the whole exchange is bounded by `timeout` and the body by `max_bytes`.
pub async fn get(
    authority: &str,
    path: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let url = format!("http://{authority}{path}");
    match tokio::time::timeout(timeout, get_inner(authority, path, max_bytes)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
    }
}

async fn get_inner(authority: &str, path: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(body.to_vec())
}
