//! Response helpers and the streaming body used by watches.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Resp = hyper::Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json(code: u16, v: &Value) -> Resp {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(full(serde_json::to_vec(v).unwrap_or_default()))
        .expect("response")
}

/// Pre-serialized JSON.
pub fn json_bytes(code: u16, body: Vec<u8>) -> Resp {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(full(body))
        .expect("response")
}

pub fn text(code: u16, s: String) -> Resp {
    hyper::Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(full(s))
        .expect("response")
}

pub fn error(e: &ApiError) -> Resp {
    let mut b = hyper::Response::builder()
        .status(e.code)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private");
    if let Some(s) = e.retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(full(
        serde_json::to_vec(&e.status_body()).unwrap_or_default(),
    ))
    .expect("response")
}

/// An error answered as Go's `http.Error` does (kube-apiserver's overload filters): a text body
/// ending in a newline, `Retry-After` the only hint — no `Status`.
pub fn plain_error(code: u16, message: &str, retry_after: Option<u64>) -> Resp {
    let mut b = hyper::Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(full(format!("{message}\n"))).expect("response")
}

/// A body fed from a channel: each message is one chunk (one watch event line).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub fn streaming(rx: mpsc::Receiver<Bytes>) -> Resp {
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(ChannelBody(rx).boxed())
        .expect("response")
}
