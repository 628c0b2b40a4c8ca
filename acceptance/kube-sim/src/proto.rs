//! Just enough of Kubernetes' protobuf wire format to accept the request bodies kubectl's typed
//! commands send (`kubectl create namespace|configmap|secret|serviceaccount|token`,
//! `kubectl auth can-i`): the `k8s\0` + `runtime.Unknown` envelope and a few kinds, decoded into
//! the JSON the rest of the server works with. Other kinds are refused with 415.

use base64::Engine;
use serde_json::{json, Map, Value};

/// One decoded protobuf field.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// All fields of a message, in order.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos += 8;
                Field::Fixed
            }
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            5 => {
                pos += 4;
                Field::Fixed
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    (pos == buf.len()).then_some(out)
}

fn string(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

fn b64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

/// Decode a message with `f(field number, field) -> Option<(json key, value)>`; repeated keys
/// listed in `repeated` collect into arrays, map entries (`maps`) into objects.
struct Spec<'s> {
    scalars: &'s [(u64, &'s str, Kind)],
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    RepeatedStr,
    MapStr,
    MapBytes,
    Meta,
    Msg(&'static Spec<'static>),
    RepeatedMsg(&'static Spec<'static>),
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut k = String::new();
    let mut v = if bytes_value { b64(&[]) } else { json!("") };
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = String::from_utf8_lossy(x).into_owned(),
            (2, Field::Bytes(x)) => v = if bytes_value { b64(x) } else { string(x) },
            _ => {}
        }
    }
    Some((k, v))
}

fn decode(spec: &Spec<'_>, buf: &[u8]) -> Option<Value> {
    let mut out = Map::new();
    for (n, f) in fields(buf)? {
        let Some((_, name, kind)) = spec.scalars.iter().find(|(num, _, _)| *num == n) else {
            continue;
        };
        let name = name.to_string();
        match (kind, f) {
            // proto3 sends unset strings as empty ones.
            (Kind::Str, Field::Bytes(b)) if !b.is_empty() => {
                out.insert(name, string(b));
            }
            (Kind::Bool, Field::Varint(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Int, Field::Varint(v)) => {
                out.insert(name, json!(v as i64));
            }
            (Kind::RepeatedStr, Field::Bytes(b)) => {
                let a = out.entry(name).or_insert_with(|| json!([]));
                a.as_array_mut()?.push(string(b));
            }
            (Kind::MapStr | Kind::MapBytes, Field::Bytes(b)) => {
                let (k, v) = map_entry(b, matches!(kind, Kind::MapBytes))?;
                out.entry(name).or_insert_with(|| json!({}))[&k] = v;
            }
            (Kind::Meta, Field::Bytes(b)) => {
                out.insert(name, decode(&META, b)?);
            }
            (Kind::Msg(s), Field::Bytes(b)) => {
                out.insert(name, decode(s, b)?);
            }
            (Kind::RepeatedMsg(s), Field::Bytes(b)) => {
                let item = decode(s, b)?;
                let a = out.entry(name).or_insert_with(|| json!([]));
                a.as_array_mut()?.push(item);
            }
            _ => {}
        }
    }
    Some(Value::Object(out))
}

static OWNER_REF: Spec<'static> = Spec {
    scalars: &[
        (1, "kind", Kind::Str),
        (3, "name", Kind::Str),
        (4, "uid", Kind::Str),
        (5, "apiVersion", Kind::Str),
        (6, "controller", Kind::Bool),
        (7, "blockOwnerDeletion", Kind::Bool),
    ],
};

static META: Spec<'static> = Spec {
    scalars: &[
        (1, "name", Kind::Str),
        (2, "generateName", Kind::Str),
        (3, "namespace", Kind::Str),
        (6, "resourceVersion", Kind::Str),
        (11, "labels", Kind::MapStr),
        (12, "annotations", Kind::MapStr),
        (13, "ownerReferences", Kind::RepeatedMsg(&OWNER_REF)),
        (14, "finalizers", Kind::RepeatedStr),
    ],
};

static NAMESPACE_SPEC: Spec<'static> = Spec {
    scalars: &[(1, "finalizers", Kind::RepeatedStr)],
};
static NAMESPACE: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (2, "spec", Kind::Msg(&NAMESPACE_SPEC)),
    ],
};
static CONFIGMAP: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (2, "data", Kind::MapStr),
        (3, "binaryData", Kind::MapBytes),
        (4, "immutable", Kind::Bool),
    ],
};
static SECRET: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (2, "data", Kind::MapBytes),
        (3, "type", Kind::Str),
        (4, "stringData", Kind::MapStr),
        (5, "immutable", Kind::Bool),
    ],
};
static SERVICE_ACCOUNT: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (4, "automountServiceAccountToken", Kind::Bool),
    ],
};
static BOUND_REF: Spec<'static> = Spec {
    scalars: &[
        (1, "kind", Kind::Str),
        (2, "apiVersion", Kind::Str),
        (3, "name", Kind::Str),
        (4, "uid", Kind::Str),
    ],
};
static TOKEN_REQUEST_SPEC: Spec<'static> = Spec {
    scalars: &[
        (1, "audiences", Kind::RepeatedStr),
        (3, "boundObjectRef", Kind::Msg(&BOUND_REF)),
        (4, "expirationSeconds", Kind::Int),
    ],
};
static TOKEN_REQUEST: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (2, "spec", Kind::Msg(&TOKEN_REQUEST_SPEC)),
    ],
};
static RESOURCE_ATTRIBUTES: Spec<'static> = Spec {
    scalars: &[
        (1, "namespace", Kind::Str),
        (2, "verb", Kind::Str),
        (3, "group", Kind::Str),
        (4, "version", Kind::Str),
        (5, "resource", Kind::Str),
        (6, "subresource", Kind::Str),
        (7, "name", Kind::Str),
    ],
};
static NON_RESOURCE_ATTRIBUTES: Spec<'static> = Spec {
    scalars: &[(1, "path", Kind::Str), (2, "verb", Kind::Str)],
};
static SSAR_SPEC: Spec<'static> = Spec {
    scalars: &[
        (1, "resourceAttributes", Kind::Msg(&RESOURCE_ATTRIBUTES)),
        (
            2,
            "nonResourceAttributes",
            Kind::Msg(&NON_RESOURCE_ATTRIBUTES),
        ),
    ],
};
static SSAR: Spec<'static> = Spec {
    scalars: &[
        (1, "metadata", Kind::Meta),
        (2, "spec", Kind::Msg(&SSAR_SPEC)),
    ],
};

/// Kinds accepted as protobuf bodies.
pub const SUPPORTED: &str =
    "Namespace, ConfigMap, Secret, ServiceAccount, TokenRequest, SelfSubjectAccessReview";

/// Decode a `application/vnd.kubernetes.protobuf` body into JSON, or explain why not.
pub fn decode_body(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body without the k8s envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest).ok_or("malformed protobuf envelope")? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (m, g) in fields(tm).ok_or("malformed TypeMeta")? {
                    match (m, g) {
                        (1, Field::Bytes(b)) => api_version = String::from_utf8_lossy(b).into(),
                        (2, Field::Bytes(b)) => kind = String::from_utf8_lossy(b).into(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let spec = match kind.as_str() {
        "Namespace" => &NAMESPACE,
        "ConfigMap" => &CONFIGMAP,
        "Secret" => &SECRET,
        "ServiceAccount" => &SERVICE_ACCOUNT,
        "TokenRequest" => &TOKEN_REQUEST,
        "SelfSubjectAccessReview" => &SSAR,
        other => {
            return Err(format!(
                "kube-sim decodes protobuf bodies only for {SUPPORTED}, not {other}; send JSON (e.g. kubectl create -f / apply)"
            ))
        }
    };
    let mut v = decode(spec, raw).ok_or_else(|| format!("malformed protobuf {kind}"))?;
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(n: u64, wire: u64) -> u8 {
        ((n << 3) | wire) as u8
    }

    fn bytes(n: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![tag(n, 2), b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let mut labels = bytes(1, b"app");
        labels.extend(bytes(2, b"web"));
        let mut meta = bytes(1, b"cfg");
        meta.extend(bytes(11, &labels));
        let mut entry = bytes(1, b"k");
        entry.extend(bytes(2, b"v"));
        let mut cm = bytes(1, &meta);
        cm.extend(bytes(2, &entry));
        let mut tm = bytes(1, b"v1");
        tm.extend(bytes(2, b"ConfigMap"));
        let mut body = b"k8s\0".to_vec();
        body.extend(bytes(1, &tm));
        body.extend(bytes(2, &cm));
        let v = decode_body(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn refuses_other_kinds() {
        let mut tm = bytes(1, b"apps/v1");
        tm.extend(bytes(2, b"Deployment"));
        let mut body = b"k8s\0".to_vec();
        body.extend(bytes(1, &tm));
        assert!(decode_body(&body).unwrap_err().contains("Deployment"));
    }
}
