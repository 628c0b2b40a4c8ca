//! Makes a `Retry-After` header reach the retry policy. kube-rs turns an error response into a
//! `Status` from its body alone and drops the headers, and a real kube-apiserver's overload
//! answer (max-in-flight, API priority and fairness) is a plain-text 429 whose only hint is
//! `Retry-After: N`. This layer, sitting right above the HTTP connection, rewrites such a 429 or
//! 503 into a `Status` carrying `details.retryAfterSeconds`, which `retry::classify` reads.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::client::DynBody;
use serde_json::{json, Value};
use tower::{BoxError, Layer, Service};

type Req = http::Request<kube::client::Body>;
type Resp = http::Response<Box<DynBody>>;

/// How much of a non-JSON error body is kept as the `Status` message.
const MAX_MESSAGE: usize = 512;

/// Carries `Retry-After` into the `Status` body of 429 and 503 responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryAfterLayer;

impl<S> Layer<S> for RetryAfterLayer {
    type Service = RetryAfter<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RetryAfter { inner }
    }
}

pub struct RetryAfter<S> {
    inner: S,
}

impl<S> Service<Req> for RetryAfter<S>
where
    S: Service<Req, Response = Resp>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move { carry(fut.await.map_err(Into::into)?).await })
    }
}

/// The delay a 429/503 response asks for, in whole seconds (the delta-seconds form; the
/// apiserver never sends the HTTP-date form). `None` for other responses or no usable header.
pub fn retry_after_seconds(status: StatusCode, headers: &http::HeaderMap) -> Option<u32> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|s| *s > 0)
}

async fn carry(res: Resp) -> Result<Resp, BoxError> {
    let Some(seconds) = retry_after_seconds(res.status(), res.headers()) else {
        return Ok(res);
    };
    let (mut parts, body) = res.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let rewritten = status_with_retry_after(parts.status, &bytes, seconds);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body: Box<DynBody> = Box::new(
        Full::new(Bytes::from(rewritten))
            .map_err(|never: Infallible| -> BoxError { match never {} }),
    );
    Ok(http::Response::from_parts(parts, body))
}

/// The error body as a `Status` JSON with `details.retryAfterSeconds`: a `Status` body keeps
/// everything it says (and a retryAfterSeconds of its own); any other body becomes the
/// message of a new `Status`.
pub fn status_with_retry_after(code: StatusCode, body: &[u8], seconds: u32) -> Vec<u8> {
    let parsed = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(|v| v["kind"] == "Status");
    let mut status = parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            code.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.chars().take(MAX_MESSAGE).collect()
        };
        let reason = match code {
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "Unknown",
        };
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        })
    });
    if !status["details"].is_object() {
        status["details"] = json!({});
    }
    let has_own = status["details"]["retryAfterSeconds"]
        .as_u64()
        .is_some_and(|s| s > 0);
    if !has_own {
        status["details"]["retryAfterSeconds"] = seconds.into();
    }
    serde_json::to_vec(&status).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use tower::ServiceExt;

    fn parse(bytes: &[u8]) -> Status {
        serde_json::from_slice(bytes).expect("a Status")
    }

    #[test]
    fn plain_text_overload_becomes_a_status_with_retry_after() {
        let s = parse(&status_with_retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            b"Too many requests, please try again later.\n",
            3,
        ));
        assert_eq!(s.code, 429);
        assert_eq!(s.reason, "TooManyRequests");
        assert_eq!(s.message, "Too many requests, please try again later.");
        assert_eq!(s.details.map(|d| d.retry_after_seconds), Some(3));
    }

    #[test]
    fn a_status_body_keeps_its_fields_and_its_own_retry_after() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"busy","reason":"ServiceUnavailable","code":503,"details":{"name":"x"}}"#;
        let s = parse(&status_with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            body,
            2,
        ));
        assert_eq!((s.code, s.message.as_str()), (503, "busy"));
        let d = s.details.unwrap();
        assert_eq!((d.name.as_str(), d.retry_after_seconds), ("x", 2));

        let own = br#"{"kind":"Status","code":429,"message":"m","reason":"TooManyRequests","details":{"retryAfterSeconds":7}}"#;
        let s = parse(&status_with_retry_after(
            StatusCode::TOO_MANY_REQUESTS,
            own,
            1,
        ));
        assert_eq!(s.details.unwrap().retry_after_seconds, 7);
    }

    #[test]
    fn only_429_and_503_with_delta_seconds_count() {
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            h
        };
        let many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(retry_after_seconds(many, &headers("5")), Some(5));
        assert_eq!(
            retry_after_seconds(StatusCode::SERVICE_UNAVAILABLE, &headers(" 2 ")),
            Some(2)
        );
        assert_eq!(retry_after_seconds(many, &headers("0")), None);
        assert_eq!(
            retry_after_seconds(many, &headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(retry_after_seconds(many, &http::HeaderMap::new()), None);
        assert_eq!(
            retry_after_seconds(StatusCode::INTERNAL_SERVER_ERROR, &headers("5")),
            None
        );
    }

    fn response(code: u16, headers: &[(&str, &str)], body: &'static str) -> Resp {
        let mut b = http::Response::builder().status(code);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let body: Box<DynBody> = Box::new(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|never: Infallible| -> BoxError { match never {} }),
        );
        b.body(body).unwrap()
    }

    async fn through_layer(res: Resp) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut slot = Some(res);
        let inner = tower::service_fn(move |_req: Req| {
            let res = slot.take().expect("called once");
            async move { Ok::<_, Infallible>(res) }
        });
        let svc = RetryAfterLayer.layer(inner);
        let out = svc
            .oneshot(http::Request::new(kube::client::Body::empty()))
            .await
            .unwrap();
        let (parts, body) = out.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    #[tokio::test]
    async fn the_layer_rewrites_only_what_carries_retry_after() {
        let (code, headers, body) = through_layer(response(
            429,
            &[
                ("retry-after", "4"),
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", "43"),
            ],
            "Too many requests, please try again later.\n",
        ))
        .await;
        assert_eq!(code, 429);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(parse(&body).details.unwrap().retry_after_seconds, 4);

        // No header, or a success: passed through untouched.
        let (_, _, body) = through_layer(response(429, &[], "slow down")).await;
        assert_eq!(&body[..], b"slow down");
        let (_, _, body) = through_layer(response(200, &[("retry-after", "4")], "{}")).await;
        assert_eq!(&body[..], b"{}");
    }
}
