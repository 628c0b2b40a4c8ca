//! Exec credential plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`, ...), run by us
//! rather than by kube-rs: kube-rs runs a plugin several times while building one client, and
//! a 30-cluster apply should run each plugin once per cluster. The token is cached per client
//! and the plugin runs again only when the token is about to expire.

use std::future::Future;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};

use time::OffsetDateTime;
use tower::buffer::Buffer;
use tower::{BoxError, Layer, Service};

use super::connection::Exec;

/// Refresh a token this long before it expires.
const EARLY_REFRESH: time::Duration = time::Duration::seconds(60);

/// What a plugin printed.
pub enum Credential {
    Token {
        token: String,
        expires: Option<OffsetDateTime>,
    },
    /// A client certificate and key (PEM); used for the TLS identity.
    Certificate { cert_pem: String, key_pem: String },
}

/// Runs the plugin once and parses its `ExecCredential`. Errors never include the output.
pub fn run(exec: &Exec) -> Result<Credential, String> {
    let info = serde_json::json!({
        "apiVersion": exec.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    let out = Command::new(&exec.command)
        .args(&exec.args)
        .envs(&exec.env)
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the exec plugin {:?}: {e}", exec.command))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        return Err(format!(
            "the exec plugin {:?} failed ({}): {first}",
            exec.command, out.status
        ));
    }
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "the exec plugin {:?} did not print an ExecCredential: {e}",
            exec.command
        )
    })?;
    let status = &cred["status"];
    if let (Some(cert), Some(key)) = (
        status["clientCertificateData"].as_str(),
        status["clientKeyData"].as_str(),
    ) {
        return Ok(Credential::Certificate {
            cert_pem: cert.into(),
            key_pem: key.into(),
        });
    }
    let token = status["token"].as_str().ok_or_else(|| {
        format!(
            "the exec plugin {:?} returned neither a token nor a client certificate",
            exec.command
        )
    })?;
    let expires = status["expirationTimestamp"].as_str().and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    Ok(Credential::Token {
        token: token.into(),
        expires,
    })
}

/// A plugin token shared by every request of one client, refreshed before it expires.
pub struct TokenSource {
    exec: Exec,
    current: tokio::sync::Mutex<(String, Option<OffsetDateTime>)>,
}

impl TokenSource {
    pub fn new(exec: Exec, token: String, expires: Option<OffsetDateTime>) -> Self {
        Self {
            exec,
            current: tokio::sync::Mutex::new((token, expires)),
        }
    }

    async fn token(&self) -> Result<String, BoxError> {
        let mut current = self.current.lock().await;
        let due = current
            .1
            .is_some_and(|e| OffsetDateTime::now_utc() + EARLY_REFRESH >= e);
        if due {
            let exec = self.exec.clone();
            match tokio::task::spawn_blocking(move || run(&exec)).await? {
                Ok(Credential::Token { token, expires }) => *current = (token, expires),
                Ok(Credential::Certificate { .. }) => {
                    return Err(
                        "the exec plugin switched from a token to a client certificate".into(),
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(current.0.clone())
    }
}

/// Adds `Authorization: Bearer <plugin token>` to every request.
#[derive(Clone)]
pub struct ExecAuthLayer(pub Arc<TokenSource>);

type Req = http::Request<kube::client::Body>;

impl<S> Layer<S> for ExecAuthLayer
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + Sync,
{
    type Service = ExecAuth<S::Future>;
    fn layer(&self, inner: S) -> Self::Service {
        // A buffer makes the (boxed, uncloneable) inner stack shareable across requests that
        // first await the token.
        ExecAuth {
            inner: Buffer::new(inner, 64),
            source: self.0.clone(),
        }
    }
}

pub struct ExecAuth<F> {
    inner: Buffer<Req, F>,
    source: Arc<TokenSource>,
}

impl<F: Send + 'static> Clone for ExecAuth<F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            source: self.source.clone(),
        }
    }
}

impl<F, T, E> Service<Req> for ExecAuth<F>
where
    F: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
    T: Send + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        // The ready handle is the one polled; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        Box::pin(async move {
            let token = source.token().await?;
            let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            req.headers_mut().insert(http::header::AUTHORIZATION, value);
            inner.call(req).await
        })
    }
}
