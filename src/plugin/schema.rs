//! Schema builder. Descriptions are mandatory in spirit: the registry docs are generated from
//! them. Nested structure is expressed with blocks only — Terraform 1.0.x crashes on nested
//! attributes.

use std::collections::BTreeMap;

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nesting {
    /// `name { ... }` at most once; the value is an object or null.
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

    pub fn string_map(name: &str, description: &str) -> Self {
        Self::new(name, Type::Map(Box::new(Type::String)), description)
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
            write_only: false,
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
                Nesting::Single => NestingMode::Single,
                Nesting::List => NestingMode::List,
                Nesting::Set => NestingMode::Set,
            } as i32,
            min_items: self.min_items,
            max_items: self.max_items,
        }
    }

    /// The value type of the block as it appears in its parent object.
    pub fn value_type(&self) -> Type {
        let obj = self.block.object_type();
        match self.nesting {
            Nesting::Single => obj,
            Nesting::List => Type::List(Box::new(obj)),
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
    }
    for b in &block.blocks {
        let here = format!("{path}{}", b.name);
        if !valid_name(&b.name) {
            problems.push(format!("{here}: invalid block name"));
        }
        if b.block.description.trim().is_empty() {
            problems.push(format!("{here}: missing description"));
        }
        problems.extend(lint(&b.block, &format!("{here}.")));
    }
    problems
}
