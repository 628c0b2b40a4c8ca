//! Schema builder. Descriptions are mandatory in spirit: the registry docs are generated from
//! them. Nested structure is expressed with blocks only — Terraform 1.0.x crashes on nested
//! attributes.

use std::collections::BTreeMap;

use super::diag::{AttributePath, Step};
use super::proto::tfplugin6 as pb;
use super::value::{Type, Value};

/// A resource (or provider) schema.
#[derive(Clone, Debug)]
pub struct Schema {
    /// Bumped whenever the stored state shape changes; drives UpgradeResourceState.
    pub version: i64,
    pub block: Block,
}

/// Attributes and nested blocks at one level.
#[derive(Clone, Debug, Default)]
pub struct Block {
    pub description: String,
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
    pub deprecated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    Computed,
    OptionalComputed,
}

/// One attribute, with the plan behaviour it needs.
#[derive(Clone, Debug)]
pub struct Attribute {
    pub name: String,
    pub ty: Type,
    pub description: String,
    pub mode: Mode,
    pub sensitive: bool,
    /// Changing it replaces the resource (the object cannot be changed in place).
    pub force_new: bool,
    /// Value planned when the configuration leaves it null (makes the attribute optional+computed).
    pub default: Option<Value>,
    /// Computed attribute that keeps its prior value on update instead of becoming unknown.
    pub stable: bool,
    pub deprecated: bool,
    /// Write-only (plugin protocol 6.8, Terraform ≥ 1.11): the value is in the configuration
    /// only, never in plan or state. The protocol layer nulls it in every state it returns and
    /// refuses a configuration setting it when the client did not announce support (older
    /// clients would store it as an ordinary attribute).
    pub write_only: bool,
    /// For a write-only attribute: the sibling attribute (stored in state) to use instead on
    /// clients without write-only support, named in the error those clients get.
    pub stored_alternative: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// `name { ... }` at most once; resources see an object or null. On the wire it is a list
    /// block with at most one element (see `Block::from_wire`): Terraform before 1.0.5 crashes
    /// rendering an update of a single-nested block that holds a sensitive value (a root CA key,
    /// a token), while list blocks render fine on every version.
    Single,
    List,
    Set,
}

/// A nested block such as `timeouts { ... }` or `root_ca { ... }`.
#[derive(Clone, Debug)]
pub struct NestedBlock {
    pub name: String,
    pub block: Block,
    pub nesting: Nesting,
    pub min_items: i64,
    pub max_items: i64,
    /// Adding, removing or changing the block replaces the resource.
    pub force_new: bool,
}

impl Attribute {
    fn new(name: &str, ty: Type, description: &str) -> Self {
        Self {
            name: name.to_string(),
            ty,
            description: description.to_string(),
            mode: Mode::Optional,
            sensitive: false,
            force_new: false,
            default: None,
            stable: false,
            deprecated: false,
            write_only: false,
            stored_alternative: None,
        }
    }

    pub fn string(name: &str, description: &str) -> Self {
        Self::new(name, Type::String, description)
    }

    pub fn number(name: &str, description: &str) -> Self {
        Self::new(name, Type::Number, description)
    }

    pub fn bool(name: &str, description: &str) -> Self {
        Self::new(name, Type::Bool, description)
    }

    pub fn string_list(name: &str, description: &str) -> Self {
        Self::new(name, Type::List(Box::new(Type::String)), description)
    }

    /// A map of string lists, e.g. a computed matrix keyed by name.
    pub fn string_list_map(name: &str, description: &str) -> Self {
        Self::new(
            name,
            Type::Map(Box::new(Type::List(Box::new(Type::String)))),
            description,
        )
    }

    pub fn string_map(name: &str, description: &str) -> Self {
        Self::new(name, Type::Map(Box::new(Type::String)), description)
    }

    /// A list of objects with the given attribute types, e.g. a computed table of rows.
    pub fn object_list(name: &str, fields: &[(&str, Type)], description: &str) -> Self {
        let fields = fields
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        Self::new(
            name,
            Type::List(Box::new(Type::Object(fields))),
            description,
        )
    }

    pub fn required(mut self) -> Self {
        self.mode = Mode::Required;
        self
    }

    pub fn optional(mut self) -> Self {
        self.mode = Mode::Optional;
        self
    }

    pub fn computed(mut self) -> Self {
        self.mode = Mode::Computed;
        self
    }

    /// Optional; when omitted, the resource computes it (unknown on create until planned).
    pub fn optional_computed(mut self) -> Self {
        self.mode = Mode::OptionalComputed;
        self
    }

    /// Optional, with a value planned when omitted.
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.mode = Mode::OptionalComputed;
        self.default = Some(value.into());
        self
    }

    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    pub fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }

    /// Keep the prior value across updates (UseStateForUnknown): for ids and values that only
    /// change when the resource is replaced.
    pub fn stable(mut self) -> Self {
        self.stable = true;
        self
    }

    /// Write-only: set in configuration, never stored in plan or state.
    pub fn write_only(mut self) -> Self {
        self.write_only = true;
        self
    }

    /// For a write-only attribute: the stored sibling attribute that clients without write-only
    /// support should set instead.
    pub fn stored_alternative(mut self, sibling: &str) -> Self {
        self.stored_alternative = Some(sibling.to_string());
        self
    }

    pub fn is_computed(&self) -> bool {
        matches!(self.mode, Mode::Computed | Mode::OptionalComputed)
    }

    fn to_proto(&self) -> pb::schema::Attribute {
        pb::schema::Attribute {
            name: self.name.clone(),
            r#type: self.ty.to_json().to_string().into_bytes(),
            description: self.description.clone(),
            required: self.mode == Mode::Required,
            optional: matches!(self.mode, Mode::Optional | Mode::OptionalComputed),
            computed: self.is_computed(),
            sensitive: self.sensitive,
            description_kind: pb::StringKind::Markdown as i32,
            deprecated: self.deprecated,
            // Sent to every client: GetProviderSchema carries no client capabilities, and
            // clients before protocol 6.8 (Terraform 1.0.3 among them) skip the unknown field.
            write_only: self.write_only,
        }
    }
}

impl NestedBlock {
    /// A block that appears at most once.
    pub fn single(name: &str, block: Block) -> Self {
        Self {
            name: name.to_string(),
            block,
            nesting: Nesting::Single,
            min_items: 0,
            max_items: 1,
            force_new: false,
        }
    }

    /// A block that may repeat, `min_items` times at least (0: optional).
    pub fn list(name: &str, block: Block, min_items: i64) -> Self {
        Self {
            name: name.to_string(),
            block,
            nesting: Nesting::List,
            min_items,
            max_items: 0,
            force_new: false,
        }
    }

    pub fn force_new(mut self) -> Self {
        self.force_new = true;
        self
    }

    fn to_proto(&self) -> pb::schema::NestedBlock {
        use pb::schema::nested_block::NestingMode;
        pb::schema::NestedBlock {
            type_name: self.name.clone(),
            block: Some(self.block.to_proto(0)),
            nesting: match self.nesting {
                Nesting::Single | Nesting::List => NestingMode::List,
                Nesting::Set => NestingMode::Set,
            } as i32,
            min_items: self.min_items,
            max_items: self.max_items,
        }
    }

    /// The value type of the block as it appears in its parent object on the wire.
    pub fn value_type(&self) -> Type {
        let obj = self.block.object_type();
        match self.nesting {
            Nesting::Single | Nesting::List => Type::List(Box::new(obj)),
            Nesting::Set => Type::Set(Box::new(obj)),
        }
    }
}

impl Block {
    pub fn new(description: &str) -> Self {
        Self {
            description: description.to_string(),
            ..Self::default()
        }
    }

    pub fn attr(mut self, a: Attribute) -> Self {
        self.attributes.push(a);
        self
    }

    pub fn block(mut self, b: NestedBlock) -> Self {
        self.blocks.push(b);
        self
    }

    /// The object type of a value of this block.
    pub fn object_type(&self) -> Type {
        let mut fields = BTreeMap::new();
        for a in &self.attributes {
            fields.insert(a.name.clone(), a.ty.clone());
        }
        for b in &self.blocks {
            fields.insert(b.name.clone(), b.value_type());
        }
        Type::Object(fields)
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    pub fn nested(&self, name: &str) -> Option<&NestedBlock> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// Nulls every write-only attribute of a value of this block (as resources see it), nested
    /// blocks included: planned and applied values of write-only attributes must be null.
    pub fn strip_write_only(&self, v: &mut Value) {
        let Value::Map(fields) = v else {
            return;
        };
        for a in self.attributes.iter().filter(|a| a.write_only) {
            if let Some(x) = fields.get_mut(&a.name) {
                *x = Value::Null;
            }
        }
        for b in &self.blocks {
            match fields.get_mut(&b.name) {
                Some(inner @ Value::Map(_)) => b.block.strip_write_only(inner),
                Some(Value::List(items)) => {
                    items.iter_mut().for_each(|i| b.block.strip_write_only(i))
                }
                _ => {}
            }
        }
    }

    /// Whether any attribute of this block or of its nested blocks is write-only.
    pub fn contains_write_only(&self) -> bool {
        self.attributes.iter().any(|a| a.write_only)
            || self.blocks.iter().any(|b| b.block.contains_write_only())
    }

    /// The write-only attributes a configuration of this block sets (known or not), with their
    /// paths as resources write them.
    pub fn write_only_set<'s>(&'s self, config: &Value) -> Vec<(AttributePath, &'s Attribute)> {
        let mut out = Vec::new();
        self.collect_write_only(config, &mut AttributePath::root(), &mut out);
        out
    }

    fn collect_write_only<'s>(
        &'s self,
        config: &Value,
        path: &mut AttributePath,
        out: &mut Vec<(AttributePath, &'s Attribute)>,
    ) {
        if !matches!(config, Value::Map(_)) {
            return;
        }
        for a in self.attributes.iter().filter(|a| a.write_only) {
            if !config.get(&a.name).is_null() {
                out.push((path.clone().attr(&a.name), a));
            }
        }
        for b in &self.blocks {
            path.push_attr(&b.name);
            match config.get(&b.name) {
                inner @ Value::Map(_) => b.block.collect_write_only(inner, path, out),
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        path.push_index(i as i64);
                        b.block.collect_write_only(item, path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }

    /// A value as Terraform sent it → as resources see it: every single block's one-element
    /// list becomes its object, an empty list null (unknown stays unknown).
    pub fn from_wire(&self, mut v: Value) -> Value {
        if !matches!(v, Value::Map(_)) {
            return v;
        }
        for b in &self.blocks {
            let inner = v.get(&b.name).clone();
            let converted = match (b.nesting, inner) {
                (Nesting::Single, Value::List(items)) => items
                    .into_iter()
                    .next()
                    .map_or(Value::Null, |item| b.block.from_wire(item)),
                (Nesting::List | Nesting::Set, Value::List(items)) => {
                    Value::List(items.into_iter().map(|i| b.block.from_wire(i)).collect())
                }
                (_, other) => other,
            };
            v.set(&b.name, converted);
        }
        v
    }

    /// The inverse of `from_wire`: a single block's object becomes a one-element list and null
    /// (or an absent block) an empty list, as Terraform expects of a list block.
    pub fn to_wire(&self, mut v: Value) -> Value {
        if !matches!(v, Value::Map(_)) {
            return v;
        }
        for b in &self.blocks {
            let inner = v.get(&b.name).clone();
            let converted = match (b.nesting, inner) {
                (_, Value::Unknown) => Value::Unknown,
                (_, Value::Null) => Value::List(Vec::new()),
                (Nesting::Single, obj @ Value::Map(_)) => Value::List(vec![b.block.to_wire(obj)]),
                (_, Value::List(items)) => {
                    Value::List(items.into_iter().map(|i| b.block.to_wire(i)).collect())
                }
                (_, other) => other,
            };
            v.set(&b.name, converted);
        }
        v
    }

    /// A path as resources write it (`root_ca.cert_pem`) → as Terraform reads it
    /// (`root_ca[0].cert_pem`).
    pub fn wire_path(&self, path: &AttributePath) -> AttributePath {
        let mut out = AttributePath::root();
        let mut block = Some(self);
        for step in &path.0 {
            out.0.push(step.clone());
            let nested = match (step, block) {
                (Step::Attr(name), Some(b)) => b.nested(name),
                _ => None,
            };
            block = match nested {
                Some(n) if n.nesting == Nesting::Single => {
                    out.push_index(0);
                    Some(&n.block)
                }
                Some(n) => Some(&n.block),
                // Inside an attribute, or a list/set element step: no more blocks to map.
                None => None,
            };
        }
        out
    }

    /// Stored JSON state from before single blocks were list blocks held them as objects:
    /// wrap them, so such state still decodes.
    pub fn wire_json(&self, json: &mut serde_json::Value) {
        let Some(map) = json.as_object_mut() else {
            return;
        };
        for b in &self.blocks {
            let Some(inner) = map.get_mut(&b.name) else {
                continue;
            };
            if b.nesting == Nesting::Single {
                match inner {
                    serde_json::Value::Null => *inner = serde_json::Value::Array(Vec::new()),
                    serde_json::Value::Object(_) => {
                        *inner = serde_json::Value::Array(vec![inner.take()])
                    }
                    _ => {}
                }
            }
            if let serde_json::Value::Array(items) = inner {
                for item in items {
                    b.block.wire_json(item);
                }
            }
        }
    }

    fn to_proto(&self, version: i64) -> pb::schema::Block {
        pb::schema::Block {
            version,
            attributes: self.attributes.iter().map(Attribute::to_proto).collect(),
            block_types: self.blocks.iter().map(NestedBlock::to_proto).collect(),
            description: self.description.clone(),
            description_kind: pb::StringKind::Markdown as i32,
            deprecated: self.deprecated,
        }
    }
}

impl Schema {
    pub fn new(version: i64, block: Block) -> Self {
        Self { version, block }
    }

    pub fn value_type(&self) -> Type {
        self.block.object_type()
    }

    pub(crate) fn to_proto(&self) -> pb::Schema {
        pb::Schema {
            version: self.version,
            block: Some(self.block.to_proto(self.version)),
        }
    }
}

/// Checks schema invariants Terraform would otherwise report late (or, on 1.0.x, crash on).
/// Used by tests over every resource.
pub fn lint(block: &Block, path: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    for a in &block.attributes {
        let here = format!("{path}{}", a.name);
        if !valid_name(&a.name) {
            problems.push(format!("{here}: invalid attribute name"));
        }
        if a.description.trim().is_empty() {
            problems.push(format!("{here}: missing description"));
        }
        if a.default.is_some() && a.mode != Mode::OptionalComputed {
            problems.push(format!("{here}: a default needs optional+computed"));
        }
        if a.mode == Mode::Computed && a.force_new {
            problems.push(format!(
                "{here}: computed-only attributes cannot force replacement"
            ));
        }
        if a.write_only && (a.is_computed() || a.force_new || a.stable) {
            problems.push(format!(
                "{here}: a write-only attribute is never planned or stored, so it cannot be computed, stable or force replacement"
            ));
        }
        if let Some(alt) = &a.stored_alternative {
            if !a.write_only {
                problems.push(format!("{here}: a stored alternative needs write-only"));
            }
            if block.attribute(alt).is_none_or(|s| s.write_only) {
                problems.push(format!(
                    "{here}: stored alternative {alt:?} is not a stored sibling attribute"
                ));
            }
        }
    }
    for b in &block.blocks {
        let here = format!("{path}{}", b.name);
        if !valid_name(&b.name) {
            problems.push(format!("{here}: invalid block name"));
        }
        if b.block.description.trim().is_empty() {
            problems.push(format!("{here}: missing description"));
        }
        if b.nesting == Nesting::Set && b.block.contains_write_only() {
            // Terraform refuses these: marks inside a set move up to the whole set.
            problems.push(format!(
                "{here}: set-nested blocks cannot hold write-only attributes"
            ));
        }
        problems.extend(lint(&b.block, &format!("{here}.")));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Block {
        Block::new("outer")
            .attr(Attribute::string("name", "name"))
            .block(NestedBlock::single(
                "remote",
                Block::new("remote")
                    .attr(Attribute::string("host", "host"))
                    .block(NestedBlock::single(
                        "auth",
                        Block::new("auth").attr(Attribute::string("token", "token").sensitive()),
                    )),
            ))
    }

    #[test]
    fn single_blocks_are_lists_of_one_on_the_wire() {
        let b = block();
        let nested = b.to_proto(0).block_types;
        assert_eq!(
            nested[0].nesting,
            pb::schema::nested_block::NestingMode::List as i32
        );
        assert_eq!((nested[0].min_items, nested[0].max_items), (0, 1));
        assert!(matches!(b.object_type(), Type::Object(f) if matches!(f["remote"], Type::List(_))));

        let seen = Value::object([
            ("name", Value::from("a")),
            (
                "remote",
                Value::object([
                    ("host", Value::from("h")),
                    ("auth", Value::object([("token", Value::from("t"))])),
                ]),
            ),
        ]);
        let wire = b.to_wire(seen.clone());
        assert_eq!(
            wire.get("remote").as_list().unwrap()[0]
                .get("auth")
                .as_list()
                .unwrap()[0]
                .get("token")
                .as_str(),
            Some("t")
        );
        assert_eq!(b.from_wire(wire), seen);

        // Absent blocks: null for resources, an empty list for Terraform; unknown stays unknown.
        let absent = Value::object([("name", Value::from("a")), ("remote", Value::Null)]);
        let wire = b.to_wire(absent.clone());
        assert_eq!(wire.get("remote"), &Value::List(vec![]));
        assert_eq!(b.from_wire(wire), absent);
        let unknown = Value::object([("name", Value::Null), ("remote", Value::Unknown)]);
        assert_eq!(b.to_wire(unknown.clone()).get("remote"), &Value::Unknown);
        assert_eq!(b.from_wire(b.to_wire(unknown.clone())), unknown);
        assert_eq!(b.to_wire(Value::Null), Value::Null);
    }

    #[test]
    fn paths_gain_the_element_index_of_each_single_block() {
        let b = block();
        let p = AttributePath::attrs(&["remote", "auth", "token"]);
        assert_eq!(b.wire_path(&p).to_string(), "remote[0].auth[0].token");
        assert_eq!(
            b.wire_path(&AttributePath::attrs(&["name"])).to_string(),
            "name"
        );
        assert_eq!(
            b.wire_path(&AttributePath::attrs(&["remote"])).to_string(),
            "remote[0]"
        );
    }

    fn with_secrets() -> Block {
        let secret = || {
            Block::new("secret")
                .attr(Attribute::string("key", "key").sensitive())
                .attr(
                    Attribute::string("key_wo", "key, not stored")
                        .sensitive()
                        .write_only()
                        .stored_alternative("key"),
                )
        };
        Block::new("outer")
            .attr(Attribute::string("token_wo", "token").write_only())
            .attr(Attribute::string("name", "name"))
            .block(NestedBlock::single("one", secret()))
            .block(NestedBlock {
                nesting: Nesting::List,
                max_items: 0,
                ..NestedBlock::single("many", secret())
            })
    }

    #[test]
    fn write_only_attributes_are_found_in_config_and_nulled_in_state() {
        let b = with_secrets();
        assert!(b.to_proto(0).attributes[0].write_only);
        assert!(!b.to_proto(0).attributes[1].write_only);
        assert!(b.contains_write_only());
        assert_eq!(lint(&b, ""), Vec::<String>::new());
        let secret = |k: Value, wo: Value| Value::object([("key", k), ("key_wo", wo)]);
        let config = Value::object([
            ("token_wo", Value::Unknown),
            ("name", Value::from("n")),
            ("one", secret(Value::Null, Value::from("s1"))),
            (
                "many",
                Value::List(vec![
                    secret(Value::from("k"), Value::Null),
                    secret(Value::Null, Value::from("s2")),
                ]),
            ),
        ]);
        let set: Vec<String> = b
            .write_only_set(&config)
            .iter()
            .map(|(p, a)| format!("{p}:{}", a.name))
            .collect();
        // Unknown counts as set: the configuration sets it, its value comes later.
        assert_eq!(
            set,
            [
                "token_wo:token_wo",
                "one.key_wo:key_wo",
                "many[1].key_wo:key_wo"
            ]
        );
        let mut state = config.clone();
        b.strip_write_only(&mut state);
        assert_eq!(state.get("token_wo"), &Value::Null);
        assert_eq!(state.get("name"), &Value::from("n"));
        assert_eq!(state.get("one"), &secret(Value::Null, Value::Null));
        assert_eq!(
            state.get("many"),
            &Value::List(vec![
                secret(Value::from("k"), Value::Null),
                secret(Value::Null, Value::Null)
            ])
        );
        // Null and unknown objects stay as they are.
        for v in [Value::Null, Value::Unknown] {
            let mut x = v.clone();
            b.strip_write_only(&mut x);
            assert_eq!(x, v);
        }
        assert!(b.write_only_set(&Value::Unknown).is_empty());
    }

    #[test]
    fn lint_refuses_write_only_that_would_be_planned_or_hidden_in_sets() {
        let bad = Block::new("b")
            .attr(Attribute::string("a", "a").computed().write_only())
            .attr(
                Attribute::string("b", "b")
                    .write_only()
                    .stored_alternative("nope"),
            )
            .attr(Attribute::string("c", "c").stored_alternative("b"))
            .block(NestedBlock {
                nesting: Nesting::Set,
                ..NestedBlock::single(
                    "s",
                    Block::new("s").attr(Attribute::string("x", "x").write_only()),
                )
            });
        let problems = lint(&bad, "");
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("a: a write-only attribute is never planned"));
        assert!(problems[1].starts_with("b: stored alternative \"nope\""));
        assert!(problems[2].starts_with("c: a stored alternative needs write-only"));
        assert!(problems[3].starts_with("c: stored alternative \"b\" is not a stored"));
        assert!(problems[4].starts_with("s: set-nested blocks cannot hold write-only"));
    }

    #[test]
    fn stored_single_blocks_written_as_objects_still_decode() {
        let b = block();
        let mut json = serde_json::json!({
            "name": "a",
            "remote": {"host": "h", "auth": {"token": "t"}},
        });
        b.wire_json(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "remote": [{"host": "h", "auth": [{"token": "t"}]}]})
        );
        let mut absent = serde_json::json!({"name": "a", "remote": null});
        b.wire_json(&mut absent);
        assert_eq!(absent, serde_json::json!({"name": "a", "remote": []}));
        // Already in list form: unchanged.
        let mut listed = json.clone();
        b.wire_json(&mut listed);
        assert_eq!(listed, json);
    }
}
