//! The object store of one cluster: objects by resource, namespace and name, a global
//! resourceVersion counter, an event history for watches and a broadcast of changes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};

/// A resource type independent of version: API group and plural name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    pub group: String,
    pub resource: String,
}

impl ResKey {
    pub fn new(group: &str, resource: &str) -> Self {
        ResKey {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as seen by watches and controllers.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub res: ResKey,
    pub rv: u64,
    pub obj: Arc<Value>,
    /// The previous state for Modified/Deleted.
    pub old: Option<Arc<Value>>,
}

type Bucket = BTreeMap<(String, String), Arc<Value>>;

struct Inner {
    rv: u64,
    objects: BTreeMap<ResKey, Bucket>,
    history: VecDeque<Arc<Event>>,
    /// resourceVersion of the oldest event that was dropped from history (0 = none dropped).
    compacted: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Event>>,
    history_cap: usize,
}

/// Result of a write.
pub struct Written {
    pub obj: Arc<Value>,
    pub created: bool,
    /// The object was removed (last finalizer gone on a deleting object).
    pub deleted: bool,
}

/// Start position for a watch.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub rv: u64,
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1 << 16);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
            }),
            tx,
            history_cap: 20_000,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe_raw(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, res: &ResKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(res)
            .and_then(|b| b.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a resource, optionally within one namespace, sorted by (namespace, name),
    /// plus the store's resourceVersion at the time of the list.
    pub fn list(&self, res: &ResKey, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let g = self.lock();
        let items = match g.objects.get(res) {
            None => Vec::new(),
            Some(b) => match ns {
                None => b.values().cloned().collect(),
                Some(ns) => b
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        (items, g.rv)
    }

    /// Every object of every resource.
    pub fn dump(&self) -> Vec<(ResKey, Arc<Value>)> {
        let g = self.lock();
        g.objects
            .iter()
            .flat_map(|(k, b)| b.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Resources with at least one object in namespace `ns`.
    pub fn namespaced_objects(&self, ns: &str) -> Vec<(ResKey, Arc<Value>)> {
        let g = self.lock();
        let mut out = Vec::new();
        for (k, b) in g.objects.iter() {
            for (_, v) in b
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
            {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }

    pub fn count(&self) -> usize {
        self.lock().objects.values().map(|b| b.len()).sum()
    }

    /// Subscribe to changes after `from_rv` (None: from now on).
    pub fn subscribe(&self, from_rv: Option<u64>) -> ApiResult<Subscription> {
        let g = self.lock();
        let rx = self.tx.subscribe();
        let mut backlog = Vec::new();
        if let Some(from) = from_rv {
            if from < g.compacted {
                return Err(ApiError::gone(format!(
                    "too old resource version: {} ({})",
                    from, g.compacted
                )));
            }
            let start = g.history.partition_point(|e| e.rv <= from);
            backlog.extend(g.history.iter().skip(start).cloned());
        }
        Ok(Subscription {
            backlog,
            rx,
            rv: g.rv,
        })
    }

    /// Read-modify-write of one object under the store lock. `f` sees the current object (if any)
    /// and returns the object to store (an unchanged one is a no-op). Handles creation stamping (uid, creationTimestamp, generation), immutable
    /// metadata, generation bumps, no-op detection and finalizer-driven removal.
    pub fn write<F>(
        &self,
        res: &ResKey,
        ns: &str,
        name: &str,
        dry_run: bool,
        f: F,
    ) -> ApiResult<Written>
    where
        F: FnOnce(Option<&Arc<Value>>) -> ApiResult<Value>,
    {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let current = g.objects.get(res).and_then(|b| b.get(&key)).cloned();
        let decision = f(current.as_ref())?;
        let mut obj = decision;
        object::strip_nulls(&mut obj);
        let next_rv = g.rv + 1;
        match &current {
            None => {
                let m = meta_mut(&mut obj);
                m.insert("name".into(), json!(name));
                if ns.is_empty() {
                    m.remove("namespace");
                } else {
                    m.insert("namespace".into(), json!(ns));
                }
                // Admission may have chosen the uid already (Jobs label their pods with it).
                if m.get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    m.insert("uid".into(), json!(object::new_uid()));
                }
                m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
                m.insert("generation".into(), json!(1));
                m.insert("resourceVersion".into(), json!(next_rv.to_string()));
                m.remove("deletionTimestamp");
                m.remove("selfLink");
            }
            Some(old) => {
                let om = object::meta(old);
                let m = meta_mut(&mut obj);
                for k in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    match om.get(k) {
                        Some(v) => {
                            m.insert(k.into(), v.clone());
                        }
                        None => {
                            m.remove(k);
                        }
                    }
                }
                let old_gen = om.get("generation").and_then(Value::as_i64).unwrap_or(1);
                m.insert("generation".into(), json!(old_gen));
                m.insert("resourceVersion".into(), json!(old_rv(old)));
                if same_ignoring_times(old, &obj) {
                    return Ok(Written {
                        obj: old.clone(),
                        created: false,
                        deleted: false,
                    });
                }
                if spec_changed(old, &obj) {
                    meta_mut(&mut obj).insert("generation".into(), json!(old_gen + 1));
                }
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(next_rv.to_string()));
            }
        }
        let remove =
            current.is_some() && object::is_deleting(&obj) && object::finalizers(&obj).is_empty();
        let obj = Arc::new(obj);
        if dry_run {
            return Ok(Written {
                obj,
                created: current.is_none(),
                deleted: remove,
            });
        }
        g.rv = next_rv;
        let kind = if remove {
            g.objects.get_mut(res).map(|b| b.remove(&key));
            EventKind::Deleted
        } else {
            g.objects
                .entry(res.clone())
                .or_default()
                .insert(key, obj.clone());
            if current.is_some() {
                EventKind::Modified
            } else {
                EventKind::Added
            }
        };
        self.emit(&mut g, kind, res, obj.clone(), current.clone());
        Ok(Written {
            obj,
            created: current.is_none(),
            deleted: remove,
        })
    }

    /// Delete: objects with finalizers get a deletionTimestamp, others are removed.
    pub fn delete(
        &self,
        res: &ResKey,
        ns: &str,
        name: &str,
        precondition: &Preconditions,
        dry_run: bool,
    ) -> ApiResult<Written> {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(current) = g.objects.get(res).and_then(|b| b.get(&key)).cloned() else {
            return Err(ApiError::not_found(&res.group, &res.resource, name));
        };
        if let Some(uid) = &precondition.uid {
            if object::uid(&current) != uid {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        uid,
                        object::uid(&current)
                    ),
                ));
            }
        }
        if let Some(rv) = &precondition.resource_version {
            if old_rv(&current) != *rv {
                return Err(ApiError::conflict(&res.group, &res.resource, name));
            }
        }
        let next_rv = g.rv + 1;
        let mut obj = (*current).clone();
        let remove = object::finalizers(&current).is_empty();
        if !remove {
            if object::is_deleting(&current) {
                return Ok(Written {
                    obj: current,
                    created: false,
                    deleted: false,
                });
            }
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(next_rv.to_string()));
        let obj = Arc::new(obj);
        if dry_run {
            return Ok(Written {
                obj,
                created: false,
                deleted: remove,
            });
        }
        g.rv = next_rv;
        let kind = if remove {
            g.objects.get_mut(res).map(|b| b.remove(&key));
            EventKind::Deleted
        } else {
            g.objects
                .entry(res.clone())
                .or_default()
                .insert(key, obj.clone());
            EventKind::Modified
        };
        self.emit(&mut g, kind, res, obj.clone(), Some(current));
        Ok(Written {
            obj,
            created: false,
            deleted: remove,
        })
    }

    /// Set `deletionTimestamp` (if not yet set) and let `f` adjust the object (namespace
    /// termination, whose finalizers live in `spec`).
    pub fn mark_deleting<F>(
        &self,
        res: &ResKey,
        ns: &str,
        name: &str,
        dry_run: bool,
        f: F,
    ) -> ApiResult<Arc<Value>>
    where
        F: FnOnce(&mut Value),
    {
        let mut g = self.lock();
        let key = (ns.to_string(), name.to_string());
        let Some(current) = g.objects.get(res).and_then(|b| b.get(&key)).cloned() else {
            return Err(ApiError::not_found(&res.group, &res.resource, name));
        };
        let mut obj = (*current).clone();
        if !object::is_deleting(&obj) {
            meta_mut(&mut obj).insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
        }
        f(&mut obj);
        if obj == *current {
            return Ok(current);
        }
        let next_rv = g.rv + 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(next_rv.to_string()));
        let obj = Arc::new(obj);
        if dry_run {
            return Ok(obj);
        }
        g.rv = next_rv;
        g.objects
            .entry(res.clone())
            .or_default()
            .insert(key, obj.clone());
        self.emit(&mut g, EventKind::Modified, res, obj.clone(), Some(current));
        Ok(obj)
    }

    /// Remove every object of a resource type (CRD deletion).
    pub fn purge_resource(&self, res: &ResKey) {
        let mut g = self.lock();
        let Some(bucket) = g.objects.remove(res) else {
            return;
        };
        for (_, obj) in bucket {
            g.rv += 1;
            let mut o = (*obj).clone();
            meta_mut(&mut o).insert("resourceVersion".into(), json!(g.rv.to_string()));
            self.emit(&mut g, EventKind::Deleted, res, Arc::new(o), Some(obj));
        }
    }

    fn emit(
        &self,
        g: &mut Inner,
        kind: EventKind,
        res: &ResKey,
        obj: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(Event {
            kind,
            res: res.clone(),
            rv: g.rv,
            obj,
            old,
        });
        g.history.push_back(ev.clone());
        while g.history.len() > self.history_cap {
            if let Some(e) = g.history.pop_front() {
                g.compacted = e.rv;
            }
        }
        let _ = self.tx.send(ev);
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

#[derive(Default, Debug)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn old_rv(obj: &Value) -> String {
    object::resource_version(obj).unwrap_or("").to_string()
}

/// Equal apart from managedFields timestamps.
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(mf) = v
            .get_mut("metadata")
            .and_then(|m| m.get_mut("managedFields"))
            .and_then(Value::as_array_mut)
        {
            for e in mf.iter_mut() {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Anything outside metadata and status changed (drives `metadata.generation`).
fn spec_changed(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a != b;
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
        .any(|k| a.get(k) != b.get(k))
}
