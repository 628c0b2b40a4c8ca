//! Terraform values as the plugin protocol carries them: msgpack (and JSON for raw state),
//! decoded against the schema's type so lists, sets and objects are told apart, with Known,
//! Null and Unknown at every level.

use std::collections::BTreeMap;
use std::fmt;

use super::diag::{AttributePath, Step};

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

/// Decodes a msgpack DynamicValue against `ty`. The bytes must hold exactly one value; objects
/// may only carry attributes of their type (missing ones decode as null); map keys are unique.
pub fn from_msgpack(bytes: &[u8], ty: &Type) -> Result<Value, ValueError> {
    let mut reader = MsgpackReader { bytes, pos: 0 };
    let decoded = reader.value(ty).and_then(|v| {
        let rest = bytes.len() - reader.pos;
        if rest == 0 {
            Ok(v)
        } else {
            Err(ValueError {
                path: AttributePath::root(),
                message: format!(
                    "invalid msgpack: {rest} unexpected bytes after the value (from byte {})",
                    reader.pos
                ),
            })
        }
    });
    decoded.map_err(|mut e| {
        // Say so when the bytes are JSON text: a client that put JSON in the msgpack field.
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
            e.path = AttributePath::root();
            e.message = "the msgpack field holds JSON text; values in it must be msgpack".into();
        }
        e
    })
}

/// True when `bytes` are exactly one well-formed msgpack value (for error hints only).
pub fn is_msgpack(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    rmpv::decode::read_value(&mut rest).is_ok() && rest.is_empty()
}

/// The head of one msgpack value: its marker with the scalar or length that follows it.
/// Strings borrow from the input; binary and extension payloads are skipped.
enum Head<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin,
    Array(usize),
    Map(usize),
    /// Any extension: cty encodes unknown values (refined or not) as one.
    Ext,
}

impl Head<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Head::Nil => "null",
            Head::Bool(_) => "bool",
            Head::Int(_) | Head::Uint(_) | Head::F32(_) | Head::F64(_) => "number",
            Head::Str(_) => "string",
            Head::Bin => "binary",
            Head::Array(_) => "list",
            Head::Map(_) => "map",
            Head::Ext => "unknown",
        }
    }
}

/// A msgpack decoder driven by the expected type: no intermediate tree, recursion bounded by
/// the type's depth (never by the input), and no allocation sized by an untrusted length.
struct MsgpackReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> MsgpackReader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let available = (self.bytes.len() - self.pos) as u64;
        if n > available {
            return Err(format!(
                "invalid msgpack: the value ends early ({n} bytes expected at byte {}, {available} left)",
                self.pos
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// A big-endian unsigned integer of `width` bytes (1, 2, 4 or 8).
    fn uint(&mut self, width: u64) -> Result<u64, String> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn head(&mut self) -> Result<Head<'a>, String> {
        let at = self.pos;
        let m = self.take(1)?[0];
        Ok(match m {
            0x00..=0x7f => Head::Int(i64::from(m)),
            0x80..=0x8f => Head::Map(usize::from(m & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(m & 0x0f)),
            0xa0..=0xbf => Head::Str(self.take(u64::from(m & 0x1f))?),
            0xc0 => Head::Nil,
            0xc1 => return Err(format!("invalid msgpack: byte 0xc1 at {at} is never used")),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let len = self.uint(1 << (m - 0xc4))?;
                self.take(len)?;
                Head::Bin
            }
            0xc7..=0xc9 => {
                let len = self.uint(1 << (m - 0xc7))?;
                self.take(1 + len)?; // type byte, payload
                Head::Ext
            }
            0xca => Head::F32(f32::from_bits(self.uint(4)? as u32)),
            0xcb => Head::F64(f64::from_bits(self.uint(8)?)),
            0xcc..=0xcf => Head::Uint(self.uint(1 << (m - 0xcc))?),
            0xd0 => Head::Int(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Head::Int(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Head::Int(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Head::Int(self.uint(8)? as i64),
            0xd4..=0xd8 => {
                self.take(1 + (1 << (m - 0xd4)))?; // type byte, fixed payload
                Head::Ext
            }
            0xd9..=0xdb => {
                let len = self.uint(1 << (m - 0xd9))?;
                Head::Str(self.take(len)?)
            }
            0xdc => Head::Array(self.uint(2)? as usize),
            0xdd => Head::Array(self.uint(4)? as usize),
            0xde => Head::Map(self.uint(2)? as usize),
            0xdf => Head::Map(self.uint(4)? as usize),
            0xe0..=0xff => Head::Int(i64::from(m as i8)),
        })
    }

    /// Room for at most `len` items: each takes at least one byte, so a claimed length larger
    /// than the input cannot make us allocate more than the input's size.
    fn capacity(&self, len: usize) -> usize {
        len.min(self.bytes.len() - self.pos)
    }

    /// Decodes one value of `ty`. Errors carry the path below this value; each level puts its
    /// own step in front while returning, so a value that decodes allocates no path at all.
    fn value(&mut self, ty: &Type) -> Result<Value, ValueError> {
        let root = AttributePath::root();
        let at = |message: String| ValueError {
            path: AttributePath::root(),
            message,
        };
        let head = self.head().map_err(at)?;
        match (head, ty) {
            (Head::Nil, _) => Ok(Value::Null),
            (Head::Ext, _) => Ok(Value::Unknown),
            (Head::Str(s), Type::String) => std::str::from_utf8(s)
                .map(|s| Value::String(s.to_string()))
                .map_err(|_| mismatch(&root, ty, "invalid UTF-8")),
            (Head::Bool(b), Type::Bool) => Ok(Value::Bool(b)),
            (Head::Int(i), Type::Number) => Ok(Value::Number(Number::Int(i))),
            (Head::Uint(u), Type::Number) => Ok(Value::Number(match i64::try_from(u) {
                Ok(i) => Number::Int(i),
                Err(_) => Number::Big(u.to_string()),
            })),
            (Head::F32(f), Type::Number) => finite(f64::from(f)),
            (Head::F64(f), Type::Number) => finite(f),
            (Head::Str(s), Type::Number) => std::str::from_utf8(s)
                .ok()
                .and_then(parse_number)
                .ok_or_else(|| mismatch(&root, ty, "a string that is not a number")),
            (Head::Array(len), Type::List(elem) | Type::Set(elem)) => {
                let mut out = Vec::with_capacity(self.capacity(len));
                for i in 0..len {
                    let v = self
                        .value(elem)
                        .map_err(|e| e.under(Step::Index(i as i64)))?;
                    out.push(v);
                }
                Ok(Value::List(out))
            }
            (Head::Map(len), Type::Map(elem)) => {
                let mut out = BTreeMap::new();
                for _ in 0..len {
                    let key = self.key()?;
                    let v = match self.value(elem) {
                        Ok(v) => v,
                        Err(e) => return Err(e.under(Step::Key(key))),
                    };
                    if let Some(key) = insert_new(&mut out, key, v) {
                        return Err(at("a map key appears twice".into()).under(Step::Key(key)));
                    }
                }
                Ok(Value::Map(out))
            }
            (Head::Map(len), Type::Object(attrs)) => {
                let mut out = BTreeMap::new();
                for _ in 0..len {
                    let key = self.key()?;
                    let Some(attr_ty) = attrs.get(&key) else {
                        return Err(at(format!(
                            "unsupported attribute {key:?}: the schema has no such attribute"
                        )));
                    };
                    let v = match self.value(attr_ty) {
                        Ok(v) => v,
                        Err(e) => return Err(e.under(Step::Attr(key))),
                    };
                    if let Some(key) = insert_new(&mut out, key, v) {
                        return Err(at(format!("attribute {key:?} appears twice")));
                    }
                }
                if out.len() < attrs.len() {
                    for name in attrs.keys() {
                        if !out.contains_key(name) {
                            out.insert(name.clone(), Value::Null);
                        }
                    }
                }
                Ok(Value::Map(out))
            }
            (head, _) => Err(mismatch(&root, ty, head.kind())),
        }
    }

    fn key(&mut self) -> Result<String, ValueError> {
        let err = |message: String| ValueError {
            path: AttributePath::root(),
            message,
        };
        match self.head().map_err(err)? {
            Head::Str(s) => std::str::from_utf8(s)
                .map(str::to_string)
                .map_err(|_| err("map key is not valid UTF-8".into())),
            other => Err(err(format!(
                "map key must be a string, found {}",
                other.kind()
            ))),
        }
    }
}

/// Inserts `key` unless present; gives the key back when it was already there.
fn insert_new(map: &mut BTreeMap<String, Value>, key: String, v: Value) -> Option<String> {
    match map.entry(key) {
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(v);
            None
        }
        std::collections::btree_map::Entry::Occupied(e) => Some(e.key().clone()),
    }
}

impl ValueError {
    /// The same error seen from one level up: `step` goes in front of the path.
    fn under(mut self, step: Step) -> Self {
        self.path.0.insert(0, step);
        self
    }
}

/// Terraform numbers are finite: NaN and infinities have no cty form.
fn finite(f: f64) -> Result<Value, ValueError> {
    if f.is_finite() {
        Ok(Value::Number(Number::Float(f)))
    } else {
        Err(mismatch(
            &AttributePath::root(),
            &Type::Number,
            "a float that is not finite",
        ))
    }
}

/// A number written as decimal text (how cty sends numbers that fit neither i64 nor f64):
/// `-?digits[.digits][e[+-]digits]`, nothing else (no NaN, infinities, hex or spaces).
fn parse_number(s: &str) -> Option<Value> {
    if !is_decimal(s) {
        return None;
    }
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

fn is_decimal(s: &str) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|b| b.is_ascii_digit()).count()
    }
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let whole = digits(&b[i..]);
    if whole == 0 {
        return false;
    }
    i += whole;
    if b.get(i) == Some(&b'.') {
        let frac = digits(&b[i + 1..]);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = digits(&b[i..]);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == b.len()
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

/// Decodes a JSON raw state against `ty` (the *current* schema). Attributes the schema no
/// longer has are dropped, as terraform-plugin-framework does with raw state
/// (`IgnoreUndefinedAttributes`): state written before an attribute was removed still loads.
pub fn from_json(json: &serde_json::Value, ty: &Type) -> Result<Value, ValueError> {
    JsonDecoder { strict: false }.decode(json, ty, &mut AttributePath::root())
}

/// Decodes the JSON form of a DynamicValue against `ty`: like msgpack, an attribute unknown to
/// the schema is an error.
pub fn from_dynamic_json(json: &serde_json::Value, ty: &Type) -> Result<Value, ValueError> {
    JsonDecoder { strict: true }.decode(json, ty, &mut AttributePath::root())
}

/// Parses and decodes the bytes of a DynamicValue's `json` field.
pub fn from_json_bytes(bytes: &[u8], ty: &Type) -> Result<Value, ValueError> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| ValueError {
        path: AttributePath::root(),
        message: if is_msgpack(bytes) {
            "the json field holds msgpack; values in it must be JSON text".to_string()
        } else {
            format!("invalid JSON: {e}")
        },
    })?;
    from_dynamic_json(&json, ty)
}

struct JsonDecoder {
    /// Refuse attributes the object type lacks (else drop them).
    strict: bool,
}

impl JsonDecoder {
    fn decode(
        &self,
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
            } else if let Some(u) = n.as_u64() {
                Number::Big(u.to_string())
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
                    let v = self.decode(item, elem, path);
                    path.pop();
                    out.push(v?);
                }
                Ok(Value::List(out))
            }
            (Type::Map(elem), J::Object(entries)) => {
                let mut out = BTreeMap::new();
                for (k, v) in entries {
                    path.push_key(k);
                    let v = self.decode(v, elem, path);
                    path.pop();
                    out.insert(k.clone(), v?);
                }
                Ok(Value::Map(out))
            }
            (Type::Object(attrs), J::Object(entries)) => {
                if self.strict {
                    if let Some(k) = entries.keys().find(|k| !attrs.contains_key(*k)) {
                        return Err(ValueError {
                            path: path.clone(),
                            message: format!(
                                "unsupported attribute {k:?}: the schema has no such attribute"
                            ),
                        });
                    }
                }
                let mut out = BTreeMap::new();
                for (name, attr_ty) in attrs {
                    let v = match entries.get(name) {
                        Some(v) => {
                            path.push_attr(name);
                            let v = self.decode(v, attr_ty, path);
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
    fn invalid_truncated_and_trailing_bytes_are_refused() {
        let ty = obj_type();
        let good = to_msgpack(&Value::object([("name", Value::from("a"))]), &ty);
        let mut trailing = good.clone();
        trailing.push(0xc0);
        let cases: [(&[u8], &str); 5] = [
            (&[], "ends early"),
            (&[0xc1], "0xc1"),
            (&good[..good.len() - 1], "ends early"),
            (&trailing, "1 unexpected bytes after the value"),
            // A map claiming 2^32-1 entries with none present fails without allocating them.
            (&[0xdf, 0xff, 0xff, 0xff, 0xff], "ends early"),
        ];
        for (bytes, want) in cases {
            let err = from_msgpack(bytes, &ty).unwrap_err();
            assert!(err.message.contains(want), "{bytes:02x?}: {err}");
        }
        assert!(from_msgpack(&good, &ty).is_ok());
    }

    #[test]
    fn json_in_the_msgpack_field_and_msgpack_in_the_json_field_are_named() {
        let ty = obj_type();
        let err = from_msgpack(br#"{"name": "a"}"#, &ty).unwrap_err();
        assert!(err.message.contains("holds JSON text"), "{err}");
        let packed = to_msgpack(&Value::object([("name", Value::from("a"))]), &ty);
        let err = from_json_bytes(&packed, &ty).unwrap_err();
        assert!(err.message.contains("holds msgpack"), "{err}");
        let err = from_json_bytes(br#"{"name": "a"} x"#, &ty).unwrap_err();
        assert!(err.message.contains("invalid JSON"), "{err}");
        // The JSON form itself is accepted.
        let v = from_json_bytes(br#"{"name": "a", "count": 2}"#, &ty).unwrap();
        assert_eq!(v.get("count").as_i64(), Some(2));
    }

    #[test]
    fn unknown_attributes_and_repeated_keys_are_refused() {
        let ty = obj_type();
        let extra = mp(rmpv::Value::Map(vec![(
            "gone".into(),
            rmpv::Value::from(1),
        )]));
        let err = from_msgpack(&extra, &ty).unwrap_err();
        assert!(
            err.message.contains(r#"unsupported attribute "gone""#),
            "{err}"
        );
        let nested = mp(rmpv::Value::Map(vec![(
            "tags".into(),
            rmpv::Value::Map(vec![("k".into(), "a".into()), ("k".into(), "b".into())]),
        )]));
        let err = from_msgpack(&nested, &ty).unwrap_err();
        assert_eq!(err.path.to_string(), r#"tags["k"]"#);
        assert!(err.message.contains("appears twice"), "{err}");
        let err = from_json_bytes(br#"{"gone": 1}"#, &ty).unwrap_err();
        assert!(
            err.message.contains(r#"unsupported attribute "gone""#),
            "{err}"
        );
        // Map keys must be strings.
        let bad_key = mp(rmpv::Value::Map(vec![(1.into(), "a".into())]));
        let err = from_msgpack(&bad_key, &ty).unwrap_err();
        assert!(err.message.contains("map key must be a string"), "{err}");
    }

    #[test]
    fn numbers_are_finite_decimals() {
        let t = Type::Number;
        for text in [
            "NaN",
            "inf",
            "-infinity",
            "0x10",
            " 1",
            "1.",
            ".5",
            "1e",
            "+1",
            "",
        ] {
            let err = from_msgpack(&mp(rmpv::Value::from(text)), &t).unwrap_err();
            assert!(err.message.contains("not a number"), "{text:?}: {err}");
        }
        for f in [f64::NAN, f64::INFINITY] {
            let err = from_msgpack(&mp(rmpv::Value::F64(f)), &t).unwrap_err();
            assert!(err.message.contains("not finite"), "{err}");
        }
        for (text, want) in [
            ("-12", Number::Int(-12)),
            ("2.5", Number::Float(2.5)),
            ("1e400", Number::Big("1e400".into())),
            (
                "18446744073709551616",
                Number::Big("18446744073709551616".into()),
            ),
        ] {
            let got = from_msgpack(&mp(rmpv::Value::from(text)), &t).unwrap();
            assert_eq!(got, Value::Number(want), "{text}");
        }
        // Unsigned 64-bit integers beyond i64 keep their digits.
        let got = from_msgpack(&mp(rmpv::Value::from(u64::MAX)), &t).unwrap();
        assert_eq!(got, Value::Number(Number::Big(u64::MAX.to_string())));
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

/// Property tests: the decoders never panic on any input, and every value of a schema type
/// decodes back to exactly what was encoded.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_type() -> impl Strategy<Value = Type> {
        let leaf = prop_oneof![Just(Type::String), Just(Type::Number), Just(Type::Bool)];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|t| Type::List(Box::new(t))),
                inner.clone().prop_map(|t| Type::Set(Box::new(t))),
                inner.clone().prop_map(|t| Type::Map(Box::new(t))),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 1..5).prop_map(Type::Object),
            ]
        })
    }

    /// Numbers in the form the decoder produces: i64, finite f64, or decimal text that fits
    /// neither (what cty sends as a string).
    fn arb_number() -> impl Strategy<Value = Number> {
        prop_oneof![
            any::<i64>().prop_map(Number::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Number::Float),
            "-?[1-9][0-9]{19,40}(\\.[0-9]{1,30})?".prop_map(|s| match parse_number(&s) {
                Some(Value::Number(n)) => n,
                _ => unreachable!("a decimal"),
            }),
        ]
    }

    /// Known values of `ty`, with null and (when `unknowns`) unknown at any level.
    fn arb_value(ty: &Type, unknowns: bool) -> BoxedStrategy<Value> {
        let known: BoxedStrategy<Value> = match ty {
            Type::String => any::<String>().prop_map(Value::String).boxed(),
            Type::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Type::Number => arb_number().prop_map(Value::Number).boxed(),
            Type::List(elem) | Type::Set(elem) => {
                proptest::collection::vec(arb_value(elem, unknowns), 0..4)
                    .prop_map(Value::List)
                    .boxed()
            }
            Type::Map(elem) => {
                proptest::collection::btree_map(any::<String>(), arb_value(elem, unknowns), 0..4)
                    .prop_map(Value::Map)
                    .boxed()
            }
            Type::Object(attrs) => {
                let fields: Vec<_> = attrs
                    .iter()
                    .map(|(name, t)| (Just(name.clone()), arb_value(t, unknowns)))
                    .collect();
                fields
                    .prop_map(|f| Value::Map(f.into_iter().collect()))
                    .boxed()
            }
        };
        if unknowns {
            prop_oneof![1 => Just(Value::Null), 1 => Just(Value::Unknown), 6 => known].boxed()
        } else {
            prop_oneof![1 => Just(Value::Null), 6 => known].boxed()
        }
    }

    fn typed_value(unknowns: bool) -> impl Strategy<Value = (Type, Value)> {
        arb_type().prop_flat_map(move |t| {
            let v = arb_value(&t, unknowns);
            (Just(t), v)
        })
    }

    proptest! {
        #[test]
        fn msgpack_round_trips_exactly((ty, v) in typed_value(true)) {
            let bytes = to_msgpack(&v, &ty);
            prop_assert_eq!(from_msgpack(&bytes, &ty), Ok(v));
        }

        #[test]
        fn json_round_trips_known_values_exactly((ty, v) in typed_value(false)) {
            let bytes = serde_json::to_vec(&to_json(&v)).unwrap();
            prop_assert_eq!(from_json_bytes(&bytes, &ty), Ok(v));
        }

        #[test]
        fn arbitrary_bytes_never_panic(ty in arb_type(), bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = from_msgpack(&bytes, &ty);
            let _ = from_json_bytes(&bytes, &ty);
        }

        /// Valid encodings with one byte changed, cut short or extended reach deeper into the
        /// decoder than random bytes do.
        #[test]
        fn damaged_encodings_never_panic(
            (ty, v) in typed_value(true),
            at in any::<proptest::sample::Index>(),
            byte in any::<u8>(),
            how in 0..3u8,
        ) {
            let mut bytes = to_msgpack(&v, &ty);
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
            if let Ok(decoded) = from_msgpack(&bytes, &ty) {
                // Whatever decodes is a value of the type: it encodes and decodes again as is.
                let again = to_msgpack(&decoded, &ty);
                prop_assert_eq!(from_msgpack(&again, &ty), Ok(decoded));
            }
        }
    }
}
