//! The HTTPS server of one cluster: TLS accept loop and the request pipeline (control endpoint,
//! counters, faults, authentication, authorization, dispatch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Request, Route};
use crate::cluster::Cluster;
use crate::control;
use crate::error::ApiError;
use crate::http::{self, Resp};

type BoxError = std::io::Error;

/// Bind 127.0.0.1:0 and serve until the cluster's shutdown token fires.
pub async fn start(cluster: Arc<Cluster>) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let _ = cluster.addr.set(addr);
    let acceptor = TlsAcceptor::from(Arc::new(cluster.pki.server_config(true)?));
    let acceptor_http1 = TlsAcceptor::from(Arc::new(cluster.pki.server_config(false)?));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cluster.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((tcp, _)) = accepted else { continue };
            let _ = tcp.set_nodelay(true);
            let settings = cluster.settings();
            let acceptor = if settings.http2 {
                acceptor.clone()
            } else {
                acceptor_http1.clone()
            };
            let cluster = cluster.clone();
            tokio::spawn(async move {
                // The handshakes' round trips on a network (see Settings::connect_latency_ms).
                if settings.connect_latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(settings.connect_latency_ms)).await;
                }
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let session = tls.get_ref().1;
                let conn = Arc::new(Conn {
                    cert: session
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.as_ref().to_vec()),
                    http2: session.alpn_protocol() == Some(b"h2"),
                    counted: AtomicBool::new(false),
                });
                let shutdown = cluster.shutdown.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let cluster = cluster.clone();
                    let conn = conn.clone();
                    async move { serve(cluster, req, conn).await }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    });
    Ok(())
}

/// One accepted TLS connection.
struct Conn {
    /// The client certificate presented, DER.
    cert: Option<Vec<u8>>,
    /// Negotiated HTTP/2 (ALPN `h2`).
    http2: bool,
    /// Counted in the connection counters (at its first API request).
    counted: AtomicBool,
}

fn bearer(req: &hyper::Request<Incoming>) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_string())
}

async fn serve(
    cluster: Arc<Cluster>,
    mut req: hyper::Request<Incoming>,
    conn: Arc<Conn>,
) -> Result<Resp, BoxError> {
    let cert = conn.cert.as_deref();
    let websocket = crate::wsstream::Handshake::from_request(&mut req);
    let token = bearer(&req);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = api::parse_query(req.uri().query());
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let header = |k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };

    if path == "/_sim" || path.starts_with("/_sim/") {
        if token.as_deref() != Some(cluster.auth.control_token.as_str()) {
            return Ok(http::error(&ApiError::unauthorized()));
        }
        let (code, v) = control::handle(&cluster, &method, &path, &body);
        return Ok(http::json(code, &v));
    }

    let request = Request {
        method,
        path,
        query,
        raw_query,
        content_type,
        user_agent,
        body,
        websocket,
    };
    let route = api::route(&cluster, &request);
    let (verb, label) = match &route {
        Ok(Route::Resource(t)) => (t.verb, Some(t.resource_label())),
        _ => ("get", None),
    };
    {
        let mut counters = cluster.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !conn.counted.swap(true, Ordering::Relaxed) {
            counters.count_connection(conn.http2);
        }
        counters.count(verb, label.as_deref(), &request.path);
    }

    let mut fault = control::faults_for(&cluster, &request.path, verb);
    control::chaos_for(&cluster, &mut fault);
    if fault.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    if fault.hold {
        cluster.holds.wait().await;
    }
    if fault.drop {
        return Err(std::io::Error::other("kube-sim: injected connection drop"));
    }
    if let Some(code) = fault.status {
        if fault.plain_text {
            let message = ApiError::plain_text_message(code);
            return Ok(http::plain_error(code, &message, fault.retry_after_s));
        }
        return Ok(http::error(&ApiError::injected(code, fault.retry_after_s)));
    }

    let started = std::time::Instant::now();
    let resp = match respond(&cluster, &request, route, token.as_deref(), cert).await {
        Ok(r) => r,
        Err(e) => http::error(&e),
    };
    if log_requests() {
        eprintln!(
            "kube-sim[{}] {} {}{} -> {} ({:.1} ms)",
            cluster.name,
            request.method,
            request.path,
            if request.query.is_empty() { "" } else { "?..." },
            resp.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(resp)
}

/// `KUBE_SIM_LOG=1` logs every API request (not its body) to stderr.
fn log_requests() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("KUBE_SIM_LOG").is_ok_and(|v| !v.is_empty() && v != "0"))
}

async fn respond(
    cluster: &Arc<Cluster>,
    req: &Request,
    route: Result<Route, ApiError>,
    token: Option<&str>,
    cert: Option<&[u8]>,
) -> Result<Resp, ApiError> {
    let public = matches!(
        req.path.as_str(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    );
    let who = match cluster.auth.authenticate(token, cert, &cluster.store) {
        Ok(w) => Some(w),
        Err(e) if !public => return Err(e),
        Err(_) => None,
    };
    match route? {
        Route::NonResource => Ok(api::non_resource(cluster, req)),
        Route::Resource(t) => {
            let who = who.ok_or_else(ApiError::unauthorized)?;
            let label = t.resource_label();
            cluster
                .auth
                .authorize(&who, &api::attributes(&t, &label), &cluster.store)?;
            api::handle(cluster, req, &t, &who).await
        }
    }
}
