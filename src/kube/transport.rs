//! The HTTP client under each cluster's `kube::Client`. kube-rs speaks HTTP/1.1 only, so every
//! request sent while others to the same API server are in flight opened a TLS connection of
//! its own: about 90 per 10-cluster apply, each costing the TCP and TLS round trips on a real
//! network. Here the client offers HTTP/2 as well, as client-go does, and the requests to one
//! API server share a connection where the server takes it. The upgrades of exec and
//! port-forward cannot ride HTTP/2 and keep a client that offers HTTP/1.1 alone.

use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt, DynBody};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

type Connector = TimeoutConnector<HttpsConnector<HttpConnector>>;

/// kube-rs's boxed client stack (its `GenericService`, which it does not export).
pub type Stack =
    tower::util::BoxService<http::Request<Body>, http::Response<Box<DynBody>>, BoxError>;

/// What kube-rs's `ClientBuilder` builds for `config`, over a client that offers HTTP/2. None
/// where kube-rs's own client stays: a proxy, or plain HTTP.
pub fn service(config: &kube::Config) -> Result<Option<Stack>, kube::Error> {
    if config.proxy_url.is_some() || config.cluster_url.scheme_str() != Some("https") {
        return Ok(None);
    }
    // What kube-rs does before its own TLS setup: the process-wide crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let router = Router {
        any: client(config, true)?,
        http1: client(config, false)?,
    };
    // The layers of kube-rs's stack, outermost first (its tracing layer aside).
    let stack = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(router)
        .map_response(|response: http::Response<hyper::body::Incoming>| {
            response.map(|body| Box::new(body.map_err(BoxError::from)) as Box<DynBody>)
        })
        .boxed();
    Ok(Some(stack))
}

/// A pooled client to the API server: ALPN `h2` and `http/1.1` (the server picks), or
/// `http/1.1` alone. Timeouts as kube-rs sets them.
fn client(config: &kube::Config, http2: bool) -> Result<Client<Connector, Body>, kube::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let mut https = HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_only();
    if let Some(name) = &config.tls_server_name {
        let fixed = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e))
        })?;
        https = https.with_server_name_resolver(FixedServerNameResolver::new(fixed));
    }
    let https = if http2 {
        https.enable_all_versions().wrap_connector(tcp)
    } else {
        https.enable_http1().wrap_connector(tcp)
    };
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// Sends an upgrade (exec, attach, port-forward) over HTTP/1.1, everything else over the client
/// that offers HTTP/2.
#[derive(Clone)]
struct Router {
    any: Client<Connector, Body>,
    http1: Client<Connector, Body>,
}

impl Service<http::Request<Body>> for Router {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.headers().contains_key(http::header::UPGRADE) {
            self.http1.request(request)
        } else {
            self.any.request(request)
        }
    }
}
