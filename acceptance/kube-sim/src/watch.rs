//! `?watch=true` streams: initial state, resume from a resourceVersion, selector transitions,
//! bookmarks, timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::api::{selectors, Request, Target};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Event, EventKind, ResKey};

struct Filter {
    key: ResKey,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| object::namespace(obj) == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// The event type this watch sees for a store event (selector transitions become
    /// ADDED/DELETED), or None.
    fn translate(&self, ev: &Event) -> Option<&'static str> {
        if ev.res != self.key {
            return None;
        }
        let now = self.matches(&ev.obj);
        match ev.kind {
            EventKind::Added => now.then_some("ADDED"),
            EventKind::Deleted => now.then_some("DELETED"),
            EventKind::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

fn line(kind: &str, info: &ResourceInfo, obj: &Value) -> Bytes {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": o})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let mut v = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {
        "kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}}))
    .unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

pub async fn serve(cluster: Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let (labels, fields) = selectors(req)?;
    let filter = Filter {
        key: t.info.key(),
        ns: (!t.ns.is_empty()).then(|| t.ns.clone()),
        labels,
        fields,
    };
    let rv_param = req.q("resourceVersion").unwrap_or("");
    let send_initial = req.q("sendInitialEvents") == Some("true");
    let bookmarks = req.q("allowWatchBookmarks") == Some("true");
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let initial = send_initial || rv_param.is_empty() || rv_param == "0";
    let (initial_objs, sub) = if initial {
        let (items, list_rv) = cluster.store.list(&filter.key, filter.ns.as_deref());
        (items, cluster.store.subscribe(Some(list_rv))?)
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}")))?;
        match cluster.store.subscribe(Some(rv)) {
            Ok(sub) => (Vec::new(), sub),
            Err(e) => return Ok(error_stream(&e)),
        }
    };
    let start_rv = if initial {
        sub.backlog.first().map(|e| e.rv - 1).unwrap_or(sub.rv)
    } else {
        rv_param.parse().unwrap_or(0)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let info = t.info.clone();
    let interval = Duration::from_millis(cluster.settings().bookmark_interval_ms.max(50));
    let shutdown = cluster.shutdown.clone();
    tokio::spawn(async move {
        let mut last_rv = start_rv;
        for obj in initial_objs.iter().filter(|o| filter.matches(o)) {
            if tx.send(line("ADDED", &info, obj)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(&info, last_rv, true)).await.is_err() {
            return;
        }
        for ev in &sub.backlog {
            last_rv = ev.rv;
            if let Some(kind) = filter.translate(ev) {
                if tx.send(line(kind, &info, &ev.obj)).await.is_err() {
                    return;
                }
            }
        }
        let mut rx = sub.rx;
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = expired => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(bookmark(&info, last_rv, false)).await.is_err() {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(kind) = filter.translate(&ev) {
                            if tx.send(line(kind, &info, &ev.obj)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::gone("watch fell behind; please re-list").status_body();
                        let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": err})).unwrap_or_default();
                        v.push(b'\n');
                        let _ = tx.send(Bytes::from(v)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    Ok(http::streaming(rx))
}

/// A watch that reports one ERROR event (e.g. 410 Expired) and ends, like the real server.
fn error_stream(e: &ApiError) -> Resp {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let mut v = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status_body()}))
        .unwrap_or_default();
    v.push(b'\n');
    let _ = tx.try_send(Bytes::from(v));
    http::streaming(rx)
}
