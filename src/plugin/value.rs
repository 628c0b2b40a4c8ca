//! Terraform values as the plugin protocol carries them: msgpack (and JSON for raw state),
//! decoded against the schema's type so lists, sets and objects are told apart, with Known,
//! Null and Unknown at every level.

use std::collections::BTreeMap;
use std::fmt;

use super::diag::AttributePath;

/// A cty type, as far as this provider's schemas use them.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

impl Type {
    /// The compact JSON type constraint Terraform expects in `Schema.Attribute.type`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::List(t) => json!(["list", t.to_json()]),
            Type::Set(t) => json!(["set", t.to_json()]),
            Type::Map(t) => json!(["map", t.to_json()]),
            Type::Object(attrs) => {
                let fields: serde_json::Map<String, serde_json::Value> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                json!(["object", fields])
            }
        }
    }

    /// A short human name for error messages ("string", "list of string", ...).
    pub fn describe(&self) -> String {
        match self {
            Type::String => "string".into(),
            Type::Number => "number".into(),
            Type::Bool => "bool".into(),
            Type::List(t) => format!("list of {}", t.describe()),
            Type::Set(t) => format!("set of {}", t.describe()),
            Type::Map(t) => format!("map of {}", t.describe()),
            Type::Object(_) => "object".into(),
        }
    }
}

/// A Terraform number. Terraform numbers are arbitrary precision; values that fit neither i64
/// nor f64 are kept as their decimal string.
#[derive(Clone, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Float(f64),
    Big(String),
}

impl Number {
    /// The value as an i64 when it is a whole number in range.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Number::Int(i) => Some(*i),
            Number::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            Number::Float(_) => None,
            Number::Big(s) => s.parse().ok(),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x}"),
            Number::Big(s) => f.write_str(s),
        }
    }
}

/// A value. Lists, sets and tuples share `List`; maps and objects share `Map`: the schema type
/// says which one is meant whenever it matters (encoding).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// Not known until apply. Any msgpack extension decodes to this (refinements are dropped).
    Unknown,
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

static NULL: Value = Value::Null;

impl Value {
    /// An object value from `(name, value)` pairs.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// True when neither this value nor anything inside it is unknown.
    pub fn is_wholly_known(&self) -> bool {
        match self {
            Value::Unknown => false,
            Value::List(items) => items.iter().all(Value::is_wholly_known),
            Value::Map(fields) => fields.values().all(Value::is_wholly_known),
            _ => true,
        }
    }

    /// The attribute or map element `key`; Null when absent or when this is not a map.
    pub fn get(&self, key: &str) -> &Value {
        match self {
            Value::Map(fields) => fields.get(key).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    /// Sets attribute `key` on an object (turning a null into an empty object first).
    pub fn set(&mut self, key: &str, value: Value) {
        if !matches!(self, Value::Map(_)) {
            *self = Value::Map(BTreeMap::new());
        }
        if let Value::Map(fields) = self {
            fields.insert(key.to_string(), value);
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The value with every unknown replaced by null: a partial state handed back with an
    /// error must be wholly known.
    pub fn known_or_null(&self) -> Value {
        match self {
            Value::Unknown => Value::Null,
            Value::List(items) => Value::List(items.iter().map(Value::known_or_null).collect()),
            Value::Map(fields) => Value::Map(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.known_or_null()))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(fields) => Some(fields),
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Number(Number::Int(i))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A value that does not fit its type, with where it was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at {path})")]
pub struct ValueError {
    pub path: AttributePath,
    pub message: String,
}

fn mismatch(path: &AttributePath, ty: &Type, found: &str) -> ValueError {
    ValueError {
        path: path.clone(),
        message: format!("expected {}, found {found}", ty.describe()),
    }
}

/// Checks that `value` has the shape of `ty` (null and unknown fit anywhere; objects may omit
/// attributes, which encode as null, but never carry one the type lacks).
pub fn conforms(value: &Value, ty: &Type) -> Result<(), ValueError> {
    conforms_at(value, ty, &mut AttributePath::root())
}

fn conforms_at(value: &Value, ty: &Type, path: &mut AttributePath) -> Result<(), ValueError> {
    match (value, ty) {
        (Value::Null | Value::Unknown, _)
        | (Value::String(_), Type::String)
        | (Value::Bool(_), Type::Bool)
        | (Value::Number(_), Type::Number) => Ok(()),
        (Value::List(items), Type::List(elem) | Type::Set(elem)) => {
            for (i, item) in items.iter().enumerate() {
                path.push_index(i as i64);
                let r = conforms_at(item, elem, path);
                path.pop();
                r?;
            }
            Ok(())
        }
        (Value::Map(fields), Type::Map(elem)) => {
            for (k, v) in fields {
                path.push_key(k);
                let r = conforms_at(v, elem, path);
                path.pop();
                r?;
            }
            Ok(())
        }
        (Value::Map(fields), Type::Object(attrs)) => {
            for (k, v) in fields {
                let Some(attr_ty) = attrs.get(k) else {
                    return Err(ValueError {
                        path: path.clone(),
                        message: format!("unexpected attribute {k:?}"),
                    });
                };
                path.push_attr(k);
                let r = conforms_at(v, attr_ty, path);
                path.pop();
                r?;
            }
            Ok(())
        }
        (other, _) => Err(mismatch(path, ty, kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Unknown => "unknown",
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::List(_) => "list",
        Value::Map(_) => "map",
    }
}

// ---------------------------------------------------------------------------------------------
// msgpack

/// Decodes a msgpack DynamicValue against `ty`.
pub fn from_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, ValueError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut reader = bytes;
    let raw = rmpv::decode::read_value(&mut reader).map_err(|e| ValueError {
        path: AttributePath::root(),
        message: format!("invalid msgpack: {e}"),
    })?;
    decode_mp(raw, ty, &mut AttributePath::root())
}

fn decode_mp(raw: rmpv::Value, ty: &Type, path: &mut AttributePath) -> Result<Value, ValueError> {
    use rmpv::Value as M;
    match raw {
        M::Nil => return Ok(Value::Null),
        M::Ext(_, _) => return Ok(Value::Unknown),
        _ => {}
    }
    match ty {
        Type::String => match raw {
            M::String(s) => s
                .into_str()
                .map(Value::String)
                .ok_or_else(|| mismatch(path, ty, "invalid UTF-8")),
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
        Type::Bool => match raw {
            M::Boolean(b) => Ok(Value::Bool(b)),
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
        Type::Number => match raw {
            M::Integer(i) => match i.as_i64() {
                Some(i) => Ok(Value::Number(Number::Int(i))),
                None => Ok(Value::Number(Number::Big(i.to_string()))),
            },
            M::F32(f) => Ok(Value::Number(Number::Float(f64::from(f)))),
            M::F64(f) => Ok(Value::Number(Number::Float(f))),
            M::String(s) => {
                let s = s.into_str().unwrap_or_default();
                parse_number(&s).ok_or_else(|| mismatch(path, ty, "a string that is not a number"))
            }
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
        Type::List(elem) | Type::Set(elem) => match raw {
            M::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    path.push_index(i as i64);
                    let v = decode_mp(item, elem, path);
                    path.pop();
                    out.push(v?);
                }
                Ok(Value::List(out))
            }
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
        Type::Map(elem) => match raw {
            M::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let key = key_mp(k, path)?;
                    path.push_key(&key);
                    let v = decode_mp(v, elem, path);
                    path.pop();
                    out.insert(key, v?);
                }
                Ok(Value::Map(out))
            }
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
        Type::Object(attrs) => match raw {
            M::Map(entries) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    let key = key_mp(k, path)?;
                    // Attributes the current schema no longer has are dropped (state upgrade).
                    let Some(attr_ty) = attrs.get(&key) else {
                        continue;
                    };
                    path.push_attr(&key);
                    let v = decode_mp(v, attr_ty, path);
                    path.pop();
                    out.insert(key, v?);
                }
                for name in attrs.keys() {
                    out.entry(name.clone()).or_insert(Value::Null);
                }
                Ok(Value::Map(out))
            }
            other => Err(mismatch(path, ty, kind_mp(&other))),
        },
    }
}

fn key_mp(k: rmpv::Value, path: &AttributePath) -> Result<String, ValueError> {
    match k {
        rmpv::Value::String(s) => s.into_str().ok_or_else(|| ValueError {
            path: path.clone(),
            message: "map key is not valid UTF-8".into(),
        }),
        other => Err(ValueError {
            path: path.clone(),
            message: format!("map key must be a string, found {}", kind_mp(&other)),
        }),
    }
}

fn kind_mp(v: &rmpv::Value) -> &'static str {
    use rmpv::Value as M;
    match v {
        M::Nil => "null",
        M::Boolean(_) => "bool",
        M::Integer(_) | M::F32(_) | M::F64(_) => "number",
        M::String(_) => "string",
        M::Binary(_) => "binary",
        M::Array(_) => "list",
        M::Map(_) => "map",
        M::Ext(_, _) => "unknown",
    }
}

fn parse_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::Number(Number::Int(i)));
    }
    let f: f64 = s.parse().ok()?;
    if f.is_finite() && format!("{f}") == s {
        Some(Value::Number(Number::Float(f)))
    } else {
        // Keep precision Terraform gave us rather than rounding through f64.
        Some(Value::Number(Number::Big(s.to_string())))
    }
}

/// Encodes `value` as msgpack for `ty`. Objects always carry every attribute of their type
/// (missing ones as null), as Terraform requires.
pub fn to_msgpack(value: &Value, ty: &Type) -> Vec<u8> {
    let mut out = Vec::new();
    let raw = encode_mp(value, ty);
    rmpv::encode::write_value(&mut out, &raw).expect("writing to a Vec cannot fail");
    out
}

fn encode_mp(value: &Value, ty: &Type) -> rmpv::Value {
    use rmpv::Value as M;
    match (value, ty) {
        (Value::Unknown, _) => M::Ext(0, vec![0]),
        (Value::Null, _) => M::Nil,
        (Value::Bool(b), _) => M::Boolean(*b),
        (Value::Number(Number::Int(i)), _) => M::from(*i),
        (Value::Number(Number::Float(f)), _) => M::F64(*f),
        (Value::Number(Number::Big(s)), _) => M::from(s.as_str()),
        (Value::String(s), _) => M::from(s.as_str()),
        (Value::List(items), Type::List(elem) | Type::Set(elem)) => {
            M::Array(items.iter().map(|v| encode_mp(v, elem)).collect())
        }
        (Value::Map(fields), Type::Map(elem)) => M::Map(
            fields
                .iter()
                .map(|(k, v)| (M::from(k.as_str()), encode_mp(v, elem)))
                .collect(),
        ),
        (Value::Map(fields), Type::Object(attrs)) => M::Map(
            attrs
                .iter()
                .map(|(k, t)| {
                    let v = fields.get(k).unwrap_or(&NULL);
                    (M::from(k.as_str()), encode_mp(v, t))
                })
                .collect(),
        ),
        // A shape that does not match the schema is a provider bug; null is the least harmful
        // answer and Terraform will report the inconsistency with the attribute's name.
        _ => M::Nil,
    }
}

// ---------------------------------------------------------------------------------------------
// JSON (raw state in UpgradeResourceState)

/// Decodes a JSON raw state against `ty` (the *current* schema; unknown attributes are dropped).
pub fn from_json(json: &serde_json::Value, ty: &Type) -> Result<Value, ValueError> {
    decode_json(json, ty, &mut AttributePath::root())
}

fn decode_json(
    json: &serde_json::Value,
    ty: &Type,
    path: &mut AttributePath,
) -> Result<Value, ValueError> {
    use serde_json::Value as J;
    if json.is_null() {
        return Ok(Value::Null);
    }
    match (ty, json) {
        (Type::String, J::String(s)) => Ok(Value::String(s.clone())),
        (Type::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
        (Type::Number, J::Number(n)) => Ok(Value::Number(if let Some(i) = n.as_i64() {
            Number::Int(i)
        } else if let Some(f) = n.as_f64() {
            Number::Float(f)
        } else {
            Number::Big(n.to_string())
        })),
        (Type::Number, J::String(s)) => {
            parse_number(s).ok_or_else(|| mismatch(path, ty, "a string that is not a number"))
        }
        (Type::List(elem) | Type::Set(elem), J::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push_index(i as i64);
                let v = decode_json(item, elem, path);
                path.pop();
                out.push(v?);
            }
            Ok(Value::List(out))
        }
        (Type::Map(elem), J::Object(entries)) => {
            let mut out = BTreeMap::new();
            for (k, v) in entries {
                path.push_key(k);
                let v = decode_json(v, elem, path);
                path.pop();
                out.insert(k.clone(), v?);
            }
            Ok(Value::Map(out))
        }
        (Type::Object(attrs), J::Object(entries)) => {
            let mut out = BTreeMap::new();
            for (name, attr_ty) in attrs {
                let v = match entries.get(name) {
                    Some(v) => {
                        path.push_attr(name);
                        let v = decode_json(v, attr_ty, path);
                        path.pop();
                        v?
                    }
                    None => Value::Null,
                };
                out.insert(name.clone(), v);
            }
            Ok(Value::Map(out))
        }
        (_, other) => Err(mismatch(path, ty, kind_json(other))),
    }
}

fn kind_json(v: &serde_json::Value) -> &'static str {
    use serde_json::Value as J;
    match v {
        J::Null => "null",
        J::Bool(_) => "bool",
        J::Number(_) => "number",
        J::String(_) => "string",
        J::Array(_) => "list",
        J::Object(_) => "object",
    }
}

/// Converts a known value to JSON (used to hand raw state to upgraders and in tests).
/// Unknown values have no JSON form and become null.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Unknown | Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Number(Number::Int(i)) => J::from(*i),
        Value::Number(Number::Float(f)) => J::from(*f),
        Value::Number(Number::Big(s)) => J::String(s.clone()),
        Value::String(s) => J::String(s.clone()),
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(fields) => J::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj_type() -> Type {
        Type::Object(BTreeMap::from([
            ("name".to_string(), Type::String),
            ("count".to_string(), Type::Number),
            ("tags".to_string(), Type::Map(Box::new(Type::String))),
            ("ports".to_string(), Type::List(Box::new(Type::Number))),
            ("on".to_string(), Type::Bool),
        ]))
    }

    fn mp(v: rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    #[test]
    fn round_trips_every_kind_and_fills_missing_attributes() {
        let v = Value::object([
            ("name", Value::from("a")),
            ("count", Value::from(3)),
            (
                "tags",
                Value::object([("k", Value::from("v")), ("u", Value::Unknown)]),
            ),
        ]);
        let bytes = to_msgpack(&v, &obj_type());
        let back = from_msgpack(&bytes, &obj_type()).unwrap();
        assert_eq!(back.get("name"), &Value::from("a"));
        assert_eq!(back.get("count").as_i64(), Some(3));
        assert!(back.get("tags").get("u").is_unknown());
        // Attributes absent from the Rust value are present (null) on the wire.
        let raw = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
        let keys: Vec<_> = raw
            .as_map()
            .unwrap()
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["count", "name", "on", "ports", "tags"]);
        assert!(back.get("ports").is_null());
    }

    #[test]
    fn any_extension_is_unknown_including_refinements() {
        // cty's refined unknown: ext code 12 with a payload map.
        let bytes = mp(rmpv::Value::Map(vec![(
            "name".into(),
            rmpv::Value::Ext(12, vec![0x81, 0x01, 0xc2]),
        )]));
        let v = from_msgpack(&bytes, &obj_type()).unwrap();
        assert!(v.get("name").is_unknown());
        assert!(!v.is_wholly_known());
        // Unknown is written as ext 0.
        let out = to_msgpack(&Value::Unknown, &Type::String);
        assert_eq!(out[0], 0xd4);
        assert_eq!(out[1], 0);
    }

    #[test]
    fn numbers_arrive_as_int_float_or_string() {
        let t = Type::Number;
        assert_eq!(
            from_msgpack(&mp(rmpv::Value::from(7)), &t)
                .unwrap()
                .as_i64(),
            Some(7)
        );
        assert_eq!(
            from_msgpack(&mp(rmpv::Value::F64(2.0)), &t)
                .unwrap()
                .as_i64(),
            Some(2)
        );
        assert_eq!(
            from_msgpack(&mp(rmpv::Value::F64(2.5)), &t).unwrap(),
            Value::Number(Number::Float(2.5))
        );
        assert_eq!(
            from_msgpack(&mp(rmpv::Value::from("12")), &t)
                .unwrap()
                .as_i64(),
            Some(12)
        );
        let big = "123456789012345678901234567890";
        assert_eq!(
            from_msgpack(&mp(rmpv::Value::from(big)), &t).unwrap(),
            Value::Number(Number::Big(big.into()))
        );
    }

    #[test]
    fn decode_errors_carry_the_attribute_path() {
        let bytes = mp(rmpv::Value::Map(vec![(
            "ports".into(),
            rmpv::Value::Array(vec![rmpv::Value::from(1), rmpv::Value::from(true)]),
        )]));
        let err = from_msgpack(&bytes, &obj_type()).unwrap_err();
        assert_eq!(err.path.to_string(), "ports[1]");
        assert!(err.message.contains("expected number, found bool"));
    }

    #[test]
    fn json_raw_state_drops_removed_attributes_and_adds_new_ones() {
        let json = serde_json::json!({"name": "x", "gone": 1, "count": 5});
        let v = from_json(&json, &obj_type()).unwrap();
        assert_eq!(v.get("name").as_str(), Some("x"));
        assert!(v.as_map().unwrap().get("gone").is_none());
        assert!(v.as_map().unwrap().contains_key("tags"));
        assert_eq!(to_json(&v)["count"], 5);
    }

    #[test]
    fn type_json_matches_terraform_constraints() {
        assert_eq!(
            Type::List(Box::new(Type::String)).to_json().to_string(),
            r#"["list","string"]"#
        );
        assert_eq!(
            Type::Object(BTreeMap::from([("a".into(), Type::Bool)]))
                .to_json()
                .to_string(),
            r#"["object",{"a":"bool"}]"#
        );
    }
}
