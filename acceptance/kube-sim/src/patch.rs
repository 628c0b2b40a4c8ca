//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and a simplified strategic merge patch.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// Key used to merge items of a list field, by field name and item shape (shared with
/// server-side apply). `None` = the list is atomic.
pub fn list_merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    let key = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "webhooks"
        | "versions" => "name",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

/// Scalar lists merged as sets.
pub fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Strategic merge patch, simplified: merge-patch semantics, except that lists of objects with a
/// known merge key (containers by name, ports by port, ...) are merged item by item, items can
/// carry `$patch: delete`, maps can carry `$patch: replace`, and `finalizers` merge as a set.
/// Other `$` directives are ignored.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut clean = patch.clone();
                strip_directives(&mut clean);
                *target = clean;
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if k.starts_with('$') {
                    continue;
                }
                if v.is_null() {
                    t.remove(k);
                    continue;
                }
                match (t.get_mut(k), v) {
                    (Some(Value::Array(cur)), Value::Array(items)) => {
                        if let Some(key) =
                            list_merge_key(k, items).or_else(|| list_merge_key(k, cur))
                        {
                            merge_keyed_list(cur, items, key);
                        } else if is_set_list(k) {
                            for i in items {
                                if !cur.contains(i) {
                                    cur.push(i.clone());
                                }
                            }
                        } else {
                            let mut clean = v.clone();
                            strip_directives(&mut clean);
                            t.insert(k.clone(), clean);
                        }
                    }
                    (Some(cur), _) => strategic_merge(cur, v),
                    (None, _) => {
                        let mut clean = v.clone();
                        strip_directives(&mut clean);
                        if let Value::Array(a) = &mut clean {
                            a.retain(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"));
                        }
                        t.insert(k.clone(), clean);
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn merge_keyed_list(cur: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let pos = cur.iter().position(|c| c.get(key) == id);
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut cur[i], item),
            (None, false) => {
                let mut clean = item.clone();
                strip_directives(&mut clean);
                cur.push(clean);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for x in m.values_mut() {
                strip_directives(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(p: &str) -> ApiResult<Vec<String>> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {p:?}")))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, segs: &[String]) -> ApiResult<&'a mut Value> {
    let mut cur = doc;
    for s in segs {
        cur = match cur {
            Value::Object(m) => m.get_mut(s).ok_or_else(|| {
                ApiError::invalid("", "", "", format!("doc is missing path: {s}"))
            })?,
            Value::Array(a) => {
                let i: usize = s.parse().map_err(|_| {
                    ApiError::invalid("", "", "", format!("invalid array index {s}"))
                })?;
                a.get_mut(i).ok_or_else(|| {
                    ApiError::invalid("", "", "", format!("array index {i} out of bounds"))
                })?
            }
            _ => {
                return Err(ApiError::invalid(
                    "",
                    "",
                    "",
                    format!("doc is missing path: {s}"),
                ))
            }
        };
    }
    Ok(cur)
}

fn get_at(doc: &Value, segs: &[String]) -> Option<Value> {
    let mut cur = doc;
    for s in segs {
        cur = match cur {
            Value::Object(m) => m.get(s)?,
            Value::Array(a) => a.get(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur.clone())
}

fn add_at(doc: &mut Value, segs: &[String], value: Value) -> ApiResult<()> {
    let Some((last, parent)) = segs.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| {
                    ApiError::invalid("", "", "", format!("invalid array index {last}"))
                })?;
                if i > a.len() {
                    return Err(ApiError::invalid(
                        "",
                        "",
                        "",
                        format!("array index {i} out of bounds"),
                    ));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(ApiError::invalid("", "", "", "cannot add to a scalar")),
    }
    Ok(())
}

fn remove_at(doc: &mut Value, segs: &[String]) -> ApiResult<Value> {
    let Some((last, parent)) = segs.split_last() else {
        return Err(ApiError::invalid(
            "",
            "",
            "",
            "cannot remove the document root",
        ));
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| {
            ApiError::invalid(
                "",
                "",
                "",
                format!("unable to remove nonexistent key: {last}"),
            )
        }),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| {
                ApiError::invalid("", "", "", format!("invalid array index {last}"))
            })?;
            if i >= a.len() {
                return Err(ApiError::invalid(
                    "",
                    "",
                    "",
                    format!("array index {i} out of bounds"),
                ));
            }
            Ok(a.remove(i))
        }
        _ => Err(ApiError::invalid("", "", "", "cannot remove from a scalar")),
    }
}

/// Apply an RFC 6902 patch document.
pub fn json_patch(doc: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = split_pointer(op.get("path").and_then(Value::as_str).unwrap_or(""))?;
        match kind {
            "add" => add_at(doc, &path, op.get("value").cloned().unwrap_or(Value::Null))?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                remove_at(doc, &path)?;
                add_at(doc, &path, op.get("value").cloned().unwrap_or(Value::Null))?;
            }
            "move" | "copy" => {
                let from = split_pointer(op.get("from").and_then(Value::as_str).unwrap_or(""))?;
                let v = if kind == "move" {
                    remove_at(doc, &from)?
                } else {
                    get_at(doc, &from)
                        .ok_or_else(|| ApiError::invalid("", "", "", "copy from a missing path"))?
                };
                add_at(doc, &path, v)?;
            }
            "test" => {
                if get_at(doc, &path).as_ref() != op.get("value") {
                    return Err(ApiError::invalid("", "", "", "testing value failed"));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown json patch op {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": {"b": [1, 2]}, "c": 1});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/c", "value": 2},
                {"op": "add", "path": "/a/x~1y", "value": true},
                {"op": "test", "path": "/c", "value": 2},
                {"op": "move", "from": "/c", "path": "/d"}
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"b": [1, 2, 3], "x/y": true}, "d": 2}));
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/d", "value": 9}])).is_err());
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut d = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "args": ["1"]}});
        strategic_merge(
            &mut d,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}], "args": ["2"]}}),
        );
        assert_eq!(
            d,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}], "args": ["2"]}})
        );
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut d = json!({"a": 1, "b": {"c": 2}});
        merge_patch(&mut d, &json!({"a": null, "b": {"d": 3}}));
        assert_eq!(d, json!({"b": {"c": 2, "d": 3}}));
    }
}
