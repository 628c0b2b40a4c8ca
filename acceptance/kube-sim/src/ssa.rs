//! Server-side apply and managed fields (simplified).
//!
//! Field ownership is tracked per manager as a set of leaf paths in FieldsV1 notation
//! (`f:spec`, `k:{"name":"c"}` for keyed list items, `v:"x"` for set items). A leaf is a scalar, an
//! atomic list (a list without a merge key, owned as a whole) or an empty map. Conflicts are
//! reported when another manager owns exactly the same leaf path with a different value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::patch::{is_set_list, list_merge_key};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Top-level metadata fields that are never owned.
const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Leaf paths of an object with their values.
pub fn leaves(obj: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    if let Some(mm) = v.as_object() {
                        for (mk, mv) in mm {
                            if IGNORED_META.contains(&mk.as_str()) {
                                continue;
                            }
                            walk(
                                mk,
                                mv,
                                vec!["f:metadata".into(), format!("f:{mk}")],
                                &mut out,
                            );
                        }
                    }
                }
                _ => walk(k, v, vec![format!("f:{k}")], &mut out),
            }
        }
    }
    out
}

fn walk(field: &str, v: &Value, path: Path, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(k, x, p, out);
            }
        }
        Value::Array(items) => {
            if let Some(key) = list_merge_key(field, items) {
                for item in items {
                    let id = json!({ key: item.get(key).cloned().unwrap_or(Value::Null) });
                    let mut p = path.clone();
                    p.push(format!("k:{id}"));
                    if let Some(m) = item.as_object() {
                        for (k, x) in m {
                            let mut pp = p.clone();
                            pp.push(format!("f:{k}"));
                            walk(k, x, pp, out);
                        }
                    }
                }
            } else if is_set_list(field) && !items.is_empty() {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p, item.clone());
                }
            } else {
                out.insert(path, v.clone());
            }
        }
        _ => {
            out.insert(path, v.clone());
        }
    }
}

/// The value at a FieldsV1 path, if present.
fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut field = "";
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
            field = f;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).ok()?;
            let (kf, kv) = id.as_object()?.iter().next()?;
            cur = cur.as_array()?.iter().find(|i| i.get(kf) == Some(kv))?;
        } else if let Some(v) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        }
    }
    let _ = field;
    Some(cur)
}

/// Remove the field at `path` (a key field of a keyed item removes the whole item).
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    // Key field of a keyed list item: remove the item itself.
    if let (Some(item_seg), Some(f)) = (parent.last(), last.strip_prefix("f:")) {
        if let Some(k) = item_seg.strip_prefix("k:") {
            if let Ok(id) = serde_json::from_str::<Value>(k) {
                if id.get(f).is_some() {
                    let list_path = &parent[..parent.len() - 1];
                    if let Some(Value::Array(a)) = value_at_mut(obj, list_path) {
                        a.retain(|i| i.get(f) != id.get(f));
                    }
                    return;
                }
            }
        }
    }
    match value_at_mut(obj, parent) {
        Some(Value::Object(m)) => {
            if let Some(f) = last.strip_prefix("f:") {
                m.remove(f);
            }
        }
        Some(Value::Array(a)) => {
            if let Some(v) = last.strip_prefix("v:") {
                if let Ok(want) = serde_json::from_str::<Value>(v) {
                    a.retain(|i| *i != want);
                }
            }
        }
        _ => {}
    }
}

fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).ok()?;
            let (kf, kv) = id.as_object()?.iter().next()?;
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| i.get(kf) == Some(kv))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Deep merge of an applied configuration into the live object.
fn merge_applied(field: &str, live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, v) in a {
                match l.get_mut(k) {
                    Some(cur) => merge_applied(k, cur, v),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            if let Some(key) = list_merge_key(field, a).or_else(|| list_merge_key(field, l)) {
                for item in a {
                    match l.iter_mut().find(|c| c.get(key) == item.get(key)) {
                        Some(cur) => merge_applied(field, cur, item),
                        None => l.push(item.clone()),
                    }
                }
            } else if is_set_list(field) {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            } else {
                *l = a.clone();
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// Readable path for conflict messages: `.spec.containers[name="c"].image`.
pub fn display_path(path: &[String]) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let inner: Vec<String> = id
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// One managedFields entry.
#[derive(Clone, Debug)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
    pub time: String,
}

pub fn read_managed(obj: &Value) -> Vec<Managed> {
    object::meta(obj)
        .get("managedFields")
        .and_then(Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let mut fields = FieldSet::new();
                    if let Some(f) = e.get("fieldsV1") {
                        fields_from_v1(f, &mut Vec::new(), &mut fields);
                    }
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Managed {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        fields,
                        time: s("time"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_from_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    let children: Vec<(&String, &Value)> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k.clone());
        fields_from_v1(child, prefix, out);
        prefix.pop();
    }
}

fn fields_to_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            if seg.starts_with("k:") {
                entry
                    .as_object_mut()
                    .expect("object")
                    .entry(".")
                    .or_insert(json!({}));
            }
            cur = entry.as_object_mut().expect("object");
        }
    }
    Value::Object(root)
}

pub fn write_managed(obj: &mut Value, entries: &[Managed]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_to_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    let m = object::meta_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

/// Server-side apply of `applied` (already without status for status-subresource kinds) onto
/// `live` (None: create). Returns the new object with managedFields updated.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
) -> ApiResult<Value> {
    let applied_leaves = leaves(applied);
    let applied_set: FieldSet = applied_leaves.keys().cloned().collect();
    let now = object::now_rfc3339();
    let Some(live) = live else {
        let mut obj = applied.clone();
        write_managed(
            &mut obj,
            &[Managed {
                manager: manager.into(),
                operation: "Apply".into(),
                api_version: api_version.into(),
                subresource: None,
                fields: applied_set,
                time: now,
            }],
        );
        return Ok(obj);
    };
    let mut managed = read_managed(live);
    // Conflicts: another manager owns a leaf we set to a different value.
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for (path, value) in &applied_leaves {
        if value_at(live, path) == Some(value) {
            continue;
        }
        for m in &managed {
            let same = m.manager == manager && m.operation == "Apply";
            if !same && m.subresource.is_none() && m.fields.contains(path) {
                conflicts.push((m.manager.clone(), display_path(path)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| {
                json!({"type": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": f})
            })
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, f)| format!("conflict with \"{m}\": {f}"))
            .collect();
        let msg = if lines.len() == 1 {
            format!("Apply failed with 1 conflict: {}", lines[0])
        } else {
            format!(
                "Apply failed with {} conflicts: {}",
                lines.len(),
                lines.join("\n")
            )
        };
        return Err(ApiError::new(409, "Conflict", msg).with_details(json!({
            "name": object::name(live),
            "kind": live.get("kind").cloned().unwrap_or(Value::Null),
            "causes": causes,
        })));
    }
    // Forced: other managers lose the applied leaves (also ones with equal values are shared).
    for m in managed.iter_mut() {
        if !(m.manager == manager && m.operation == "Apply") && m.subresource.is_none() {
            for (path, value) in &applied_leaves {
                if value_at(live, path) != Some(value) {
                    m.fields.remove(path);
                }
            }
        }
    }
    let previous: FieldSet = managed
        .iter()
        .find(|m| m.manager == manager && m.operation == "Apply")
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = managed
        .iter()
        .filter(|m| !(m.manager == manager && m.operation == "Apply"))
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let mut obj = live.clone();
    for path in previous.difference(&applied_set) {
        if !others.contains(path) {
            remove_at(&mut obj, path);
        }
    }
    merge_applied("", &mut obj, applied);
    managed.retain(|m| !(m.manager == manager && m.operation == "Apply"));
    managed.push(Managed {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        subresource: None,
        fields: applied_set,
        time: now,
    });
    write_managed(&mut obj, &managed);
    Ok(obj)
}

/// Record an imperative write (create/update/patch) by `manager`: it takes ownership of every leaf
/// it changed; leaves that disappeared are dropped from every manager.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let new_leaves = leaves(new);
    let old_leaves = old.map(leaves).unwrap_or_default();
    let mut managed = old.map(read_managed).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|(p, v)| old_leaves.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let gone: FieldSet = old_leaves
        .keys()
        .filter(|p| !new_leaves.contains_key(*p))
        .cloned()
        .collect();
    for m in managed.iter_mut() {
        m.fields.retain(|p| !gone.contains(p));
        if !(m.manager == manager && m.operation == "Update") {
            m.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        let now = object::now_rfc3339();
        match managed.iter_mut().find(|m| {
            m.manager == manager
                && m.operation == "Update"
                && m.subresource.as_deref() == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now;
            }
            None => managed.push(Managed {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource.map(str::to_string),
                fields: changed,
                time: now,
            }),
        }
    }
    write_managed(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data})
    }

    #[test]
    fn apply_conflicts_and_force() {
        let a = apply(None, &cm(json!({"x": "1"})), "a", false, "v1").unwrap();
        // Same value from another manager: shared, no conflict.
        let b = apply(Some(&a), &cm(json!({"x": "1", "y": "2"})), "b", false, "v1").unwrap();
        let err = apply(Some(&b), &cm(json!({"x": "3"})), "c", false, "v1").unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"a\""),
            "{}",
            err.message
        );
        assert!(err.message.contains(".data.x"), "{}", err.message);
        let forced = apply(Some(&b), &cm(json!({"x": "3"})), "c", true, "v1").unwrap();
        assert_eq!(forced["data"]["x"], "3");
        let managed = read_managed(&forced);
        let owner_x: Vec<&str> = managed
            .iter()
            .filter(|m| {
                m.fields
                    .contains(&vec!["f:data".to_string(), "f:x".to_string()])
            })
            .map(|m| m.manager.as_str())
            .collect();
        assert_eq!(owner_x, vec!["c"]);
    }

    #[test]
    fn apply_removes_fields_no_longer_applied() {
        let a = apply(None, &cm(json!({"x": "1", "y": "2"})), "a", false, "v1").unwrap();
        let a2 = apply(Some(&a), &cm(json!({"x": "1"})), "a", false, "v1").unwrap();
        assert_eq!(a2["data"], json!({"x": "1"}));
    }

    #[test]
    fn keyed_lists_merge_and_items_removed() {
        let dep = |cs: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": cs}}}});
        let a = apply(
            None,
            &dep(json!([{"name": "a", "image": "1"}])),
            "m1",
            false,
            "apps/v1",
        )
        .unwrap();
        let b = apply(
            Some(&a),
            &dep(json!([{"name": "b", "image": "2"}])),
            "m2",
            false,
            "apps/v1",
        )
        .unwrap();
        assert_eq!(
            b["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let c = apply(Some(&b), &dep(json!([])), "m2", false, "apps/v1").unwrap();
        let cs = c["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "a");
    }

    #[test]
    fn update_takes_ownership() {
        let a = apply(None, &cm(json!({"x": "1"})), "a", false, "v1").unwrap();
        let mut upd = a.clone();
        upd["data"]["x"] = json!("2");
        track_update(Some(&a), &mut upd, "kubectl-edit", "v1", None);
        let m = read_managed(&upd);
        assert!(m
            .iter()
            .any(|e| e.manager == "kubectl-edit" && e.operation == "Update"));
        assert!(!m.iter().any(|e| e.manager == "a"));
        // Now applying x again from "a" conflicts with kubectl-edit.
        let err = apply(Some(&upd), &cm(json!({"x": "1"})), "a", false, "v1").unwrap_err();
        assert!(err.message.contains("kubectl-edit"));
    }
}
