//! Kubernetes' websocket streaming protocols (`k8s.io/apiserver/pkg/util/wsstream`): the HTTP
//! upgrade handshake with subprotocol negotiation, and the channel framing shared by pod
//! port-forward (and later exec/attach): every message carries one channel number before its
//! payload — a leading byte in the binary protocols, a leading ASCII digit followed by base64 in
//! the base64 ones.

use std::sync::Mutex;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http::{self, Resp};

/// Binary channel protocol, version 4 (port-forward, exec with a JSON `Status` on the error
/// channel).
pub const V4_BINARY: &str = "v4.channel.k8s.io";
/// Base64 text variant of version 4.
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";
/// Version 5 adds a CLOSE signal (channel 255) for exec/attach stdin; port-forward does not
/// offer it.
pub const V5_BINARY: &str = "v5.channel.k8s.io";
/// The pre-v4 protocols (the error channel carries plain text).
pub const V1_BINARY: &str = "channel.k8s.io";
pub const V1_BASE64: &str = "base64.channel.k8s.io";
/// Channel 255 of v5: the client closes one of its streams (payload: the channel number).
pub const CLOSE_CHANNEL: u8 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Binary,
    Base64,
}

/// A subprotocol a handler accepts. The empty name is the legacy "no subprotocol" form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: &'static str,
    pub encoding: Encoding,
}

/// What port-forward accepts, as the kubelet's websocket port-forward does.
pub const PORT_FORWARD_PROTOCOLS: &[Protocol] = &[
    Protocol {
        name: "",
        encoding: Encoding::Binary,
    },
    Protocol {
        name: V4_BINARY,
        encoding: Encoding::Binary,
    },
    Protocol {
        name: V4_BASE64,
        encoding: Encoding::Base64,
    },
];

/// What the API server's stream translator accepts for exec (`TranslateStreamingWebsocketRequests`,
/// on by default since 1.30): a request offering v5 is served by the API server itself, which
/// speaks v5 only.
pub const EXEC_TRANSLATOR_PROTOCOLS: &[Protocol] = &[Protocol {
    name: V5_BINARY,
    encoding: Encoding::Binary,
}];

/// What the container runtime's streaming server (`k8s.io/kubelet/pkg/cri/streaming`) accepts
/// for exec when the API server proxies the websocket through unchanged.
pub const EXEC_KUBELET_PROTOCOLS: &[Protocol] = &[
    Protocol {
        name: "",
        encoding: Encoding::Binary,
    },
    Protocol {
        name: V1_BINARY,
        encoding: Encoding::Binary,
    },
    Protocol {
        name: V1_BASE64,
        encoding: Encoding::Base64,
    },
    Protocol {
        name: V4_BINARY,
        encoding: Encoding::Binary,
    },
    Protocol {
        name: V4_BASE64,
        encoding: Encoding::Base64,
    },
];

/// The client's websocket upgrade request, taken from the HTTP request before its body is read.
pub struct Handshake {
    key: String,
    /// Offered subprotocols, in the client's order.
    pub offered: Vec<String>,
    on_upgrade: Mutex<Option<OnUpgrade>>,
}

fn header_has_token(req: &hyper::Request<hyper::body::Incoming>, name: &str, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl Handshake {
    /// `Some` when the request asks for a websocket upgrade (RFC 6455 §4.2.1).
    pub fn from_request(req: &mut hyper::Request<hyper::body::Incoming>) -> Option<Handshake> {
        if req.method() != hyper::Method::GET
            || !header_has_token(req, "connection", "upgrade")
            || !header_has_token(req, "upgrade", "websocket")
        {
            return None;
        }
        let key = req
            .headers()
            .get("sec-websocket-key")?
            .to_str()
            .ok()?
            .to_string();
        // kube-rs sends one comma-separated header; browsers may repeat it.
        let offered = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let on_upgrade = hyper::upgrade::on(req);
        Some(Handshake {
            key,
            offered,
            on_upgrade: Mutex::new(Some(on_upgrade)),
        })
    }

    /// Accept the upgrade with `protocol`: the 101 answer, and the future websocket (ready once
    /// hyper hands over the connection).
    pub fn accept(
        &self,
        protocol: Protocol,
    ) -> Option<(Resp, impl std::future::Future<Output = Option<ChannelConn>>)> {
        let on_upgrade = self
            .on_upgrade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        let mut b = hyper::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header(
                "sec-websocket-accept",
                derive_accept_key(self.key.as_bytes()),
            );
        if !protocol.name.is_empty() {
            b = b.header("sec-websocket-protocol", protocol.name);
        }
        let resp = b.body(http::full(Bytes::new())).expect("101 response");
        let conn = async move {
            let upgraded = on_upgrade.await.ok()?;
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            Some(ChannelConn {
                ws,
                encoding: protocol.encoding,
            })
        };
        Some((resp, conn))
    }
}

/// The first subprotocol of the client's list that the handler supports (the client's
/// preference wins, as in wsstream's handshake); no offer means the legacy empty protocol.
pub fn negotiate(offered: &[String], supported: &[Protocol]) -> Option<Protocol> {
    if offered.is_empty() {
        return supported.iter().copied().find(|p| p.name.is_empty());
    }
    offered
        .iter()
        .find_map(|o| supported.iter().copied().find(|p| p.name == o))
}

/// One message on a channel.
pub fn encode(encoding: Encoding, channel: u8, data: &[u8]) -> Message {
    use base64::Engine;
    match encoding {
        Encoding::Binary => {
            let mut v = Vec::with_capacity(data.len() + 1);
            v.push(channel);
            v.extend_from_slice(data);
            Message::binary(v)
        }
        Encoding::Base64 => {
            let mut s = String::new();
            s.push(char::from(b'0' + channel));
            s.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
            Message::text(s)
        }
    }
}

/// The channel and payload of a received message; `None` for messages that carry no channel
/// data (pings, an empty frame, malformed base64).
pub fn decode(encoding: Encoding, msg: &Message) -> Option<(u8, Bytes)> {
    use base64::Engine;
    match (encoding, msg) {
        (Encoding::Binary, Message::Binary(b)) if !b.is_empty() => Some((b[0], b.slice(1..))),
        (Encoding::Base64, Message::Text(t)) if !t.is_empty() => {
            let s = t.as_str();
            let ch = s.as_bytes()[0].checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&s[1..])
                .ok()?;
            Some((ch, Bytes::from(data)))
        }
        _ => None,
    }
}

/// What the client sent.
pub enum Received {
    Data(u8, Bytes),
    Closed,
}

/// An upgraded connection speaking one channel encoding.
pub struct ChannelConn {
    ws: WebSocketStream<TokioIo<Upgraded>>,
    encoding: Encoding,
}

impl ChannelConn {
    pub async fn send(&mut self, channel: u8, data: &[u8]) -> bool {
        self.ws
            .send(encode(self.encoding, channel, data))
            .await
            .is_ok()
    }

    /// Next channel message; `Closed` on a close frame, an error or the end of the stream.
    pub async fn recv(&mut self) -> Received {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Received::Closed,
                Some(Ok(m)) => {
                    if let Some((ch, data)) = decode(self.encoding, &m) {
                        return Received::Data(ch, data);
                    }
                }
            }
        }
    }

    /// Close the websocket (normal closure).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Send the close frame and wait (at most `patience`) for the client to close too, as the
    /// API server's stream translator does so output still in flight is not cut off.
    pub async fn finish(&mut self, patience: std::time::Duration) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(patience, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order_and_knows_the_legacy_form() {
        let offered = vec![V5_BINARY.to_string(), V4_BINARY.to_string()];
        assert_eq!(
            negotiate(&offered, PORT_FORWARD_PROTOCOLS).map(|p| p.name),
            Some(V4_BINARY)
        );
        assert_eq!(
            negotiate(&[], PORT_FORWARD_PROTOCOLS).map(|p| p.name),
            Some("")
        );
        assert!(negotiate(&["chat".to_string()], PORT_FORWARD_PROTOCOLS).is_none());
        let b64 = vec![V4_BASE64.to_string(), V4_BINARY.to_string()];
        assert_eq!(
            negotiate(&b64, PORT_FORWARD_PROTOCOLS).map(|p| p.encoding),
            Some(Encoding::Base64)
        );
    }

    #[test]
    fn frames_round_trip_in_both_encodings() {
        for enc in [Encoding::Binary, Encoding::Base64] {
            let m = encode(enc, 3, &[0x96, 0x3a]);
            assert_eq!(
                decode(enc, &m),
                Some((3, Bytes::from_static(&[0x96, 0x3a])))
            );
        }
        // The port prefix kube-rs expects on a channel's first frame: little-endian u16.
        let m = encode(Encoding::Binary, 0, &15014u16.to_le_bytes());
        assert_eq!(m.into_data().as_ref(), &[0, 0xa6, 0x3a]);
        assert_eq!(decode(Encoding::Binary, &Message::binary(Vec::new())), None);
    }
}
