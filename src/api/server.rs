//! The HTTPS transport: a listener on its own thread running a small tokio runtime, TLS with
//! rustls, HTTP/1.1 keep-alive with hyper, and the limits that keep one client from starving
//! the others (connection cap, TLS handshake and header read timeouts, body size and body
//! read time). Each complete request is handed to [`App::handle`] on a blocking thread.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use super::ApiConfig;
use super::app::{App, Request, Response};
use super::error::ApiError;
use super::web;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request body may take to arrive once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for open connections to finish their current request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits one connection works under.
#[derive(Clone, Copy)]
struct Limits {
    max_body: usize,
    header_timeout: Duration,
    connection_lifetime: Duration,
}

/// Runs the accept loop until `stop` changes or its sender is dropped.
pub(super) async fn run(
    listener: std::net::TcpListener,
    tls: TlsAcceptor,
    app: Arc<App>,
    cfg: ApiConfig,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "api listener could not be registered");
            return;
        }
    };
    let limits = Limits {
        max_body: cfg.max_body_bytes,
        header_timeout: cfg.header_read_timeout,
        connection_lifetime: cfg.connection_lifetime,
    };
    let slots = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    loop {
        // Wait for a free connection slot first: past the cap, new clients wait in the
        // kernel's backlog instead of taking memory here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let (tls, app, stop) = (tls.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, peer, tls, app, limits, stop).await;
            drop(permit);
        });
    }
    tracing::info!("api server stopped accepting");
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    app: Arc<App>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };

    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(respond(app, peer, limits, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);

    tokio::select! {
        r = conn.as_mut() => {
            // A client that resets the connection after its last answer (qq does) ends here.
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "api connection ended");
            }
        }
        _ = tokio::time::sleep(limits.connection_lifetime) => {
            tracing::debug!(%peer, "api connection reached its lifetime limit");
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await;
        }
    }
}

fn json_response(resp: &Response, close: bool) -> hyper::Response<Full<Bytes>> {
    let body = match &resp.body {
        serde_json::Value::Null => Vec::new(),
        v => serde_json::to_vec(v).unwrap_or_default(),
    };
    let len = body.len();
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(resp.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(tag) = resp
        .etag
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        h.insert(hyper::header::ETAG, tag);
    }
    if close {
        h.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// A web page or asset of the dashboard, with its security headers.
fn page_response(page: &web::Asset, head: bool) -> hyper::Response<Full<Bytes>> {
    let body = if head { "" } else { page.body };
    let mut r = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(page.content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(page.body.len()));
    for (name, value) in web::SECURITY_HEADERS {
        h.insert(*name, HeaderValue::from_static(value));
    }
    r
}

fn header(req: &hyper::Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn respond(
    app: Arc<App>,
    peer: SocketAddr,
    limits: Limits,
    req: hyper::Request<Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let too_large = || {
        json_response(
            &Response::error(&ApiError::payload_too_large(limits.max_body)),
            true,
        )
    };

    // Refuse a declared oversized body before reading any of it.
    let declared = header(&req, CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large();
    }

    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if let Some(page) = web::asset(&method, &path) {
        return page_response(&page, method == "HEAD");
    }
    let authorization = header(&req, hyper::header::AUTHORIZATION);
    let if_match = header(&req, hyper::header::IF_MATCH);

    let limited = Limited::new(req.into_body(), limits.max_body);
    let body = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Zeroizing::new(collected.to_bytes().to_vec()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            let err = ApiError::bad_request(format!("Request body could not be read: {e}"));
            return json_response(&Response::error(&err), true);
        }
        Err(_) => {
            let err = ApiError::bad_request("Request body did not arrive in time");
            return json_response(&Response::error(&err), true);
        }
    };

    let request = Request {
        method,
        path,
        authorization,
        if_match,
        peer,
        body,
    };
    let answer = tokio::task::spawn_blocking(move || app.handle(&request)).await;
    match answer {
        Ok(resp) => json_response(&resp, false),
        Err(e) => {
            tracing::error!(error = %e, "api handler failed");
            json_response(
                &Response::error(&ApiError::internal("The request handler failed")),
                true,
            )
        }
    }
}

/// Binds `addr` without blocking the caller's runtime (if any).
pub(super) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}
