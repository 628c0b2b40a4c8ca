//! The plan pipeline every resource gets for free, as terraform-plugin-framework users expect:
//! defaults for omitted optional attributes, computed attributes unknown on create (and on
//! update unless marked stable), and `requires_replace` for force-new attributes and blocks.
//! Resources then adjust the result in `Resource::modify_plan`, which is synchronous on
//! purpose: planning never touches a cluster.

use super::diag::{AttributePath, Diagnostics};
use super::resource::ClientCapabilities;
use super::schema::{Block, Mode, Nesting, Schema};
use super::value::Value;

/// A plan being computed for one resource instance.
pub struct Plan<'a> {
    pub schema: &'a Schema,
    /// Prior state; null when the resource is being created.
    pub prior: &'a Value,
    /// The configuration as written (may contain unknowns).
    pub config: &'a Value,
    /// The planned new state; starts as Terraform's proposed state run through the pipeline.
    pub planned: Value,
    pub requires_replace: Vec<AttributePath>,
    pub diags: Diagnostics,
    pub prior_private: &'a [u8],
    pub planned_private: Vec<u8>,
    /// What the client supports (from the PlanResourceChange request).
    pub client: ClientCapabilities,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(
        schema: &'a Schema,
        prior: &'a Value,
        proposed: Value,
        config: &'a Value,
        prior_private: &'a [u8],
    ) -> Self {
        let create = prior.is_null();
        let mut planned = proposed;
        // Terraform proposes the configured value of a write-only attribute; the plan holds
        // null (so it never differs from the prior state because of one, either).
        schema.block.strip_write_only(&mut planned);
        let mut requires_replace = Vec::new();
        if !planned.is_null() {
            apply_defaults(&schema.block, config, &mut planned);
            let changed = create || planned != *prior;
            mark_unknowns(&schema.block, config, &mut planned, create, changed);
            if !create {
                collect_replacements(
                    &schema.block,
                    prior,
                    &planned,
                    &mut AttributePath::root(),
                    &mut requires_replace,
                );
            }
        }
        Self {
            schema,
            prior,
            config,
            planned,
            requires_replace,
            diags: Diagnostics::new(),
            prior_private,
            planned_private: prior_private.to_vec(),
            client: ClientCapabilities::default(),
        }
    }

    pub fn is_create(&self) -> bool {
        self.prior.is_null()
    }

    pub fn is_destroy(&self) -> bool {
        self.planned.is_null()
    }

    /// True when the planned state differs from the prior state.
    pub fn has_changes(&self) -> bool {
        self.planned != *self.prior
    }

    /// Marks a top-level attribute "(known after apply)".
    pub fn set_unknown(&mut self, name: &str) {
        self.planned.set(name, Value::Unknown);
    }

    /// Forces replacement because of `path`.
    pub fn require_replace(&mut self, path: AttributePath) {
        if !self.requires_replace.contains(&path) {
            self.requires_replace.push(path);
        }
    }
}

fn apply_defaults(block: &Block, config: &Value, planned: &mut Value) {
    for a in &block.attributes {
        if let Some(default) = &a.default {
            if config.get(&a.name).is_null() {
                planned.set(&a.name, default.clone());
            }
        }
    }
    for b in &block.blocks {
        let cfg = config.get(&b.name);
        match (b.nesting, planned.get(&b.name).clone()) {
            (Nesting::Single, mut inner @ Value::Map(_)) => {
                apply_defaults(&b.block, cfg, &mut inner);
                planned.set(&b.name, inner);
            }
            (Nesting::List | Nesting::Set, Value::List(mut items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let c = cfg.as_list().and_then(|l| l.get(i)).unwrap_or(&Value::Null);
                    apply_defaults(&b.block, c, item);
                }
                planned.set(&b.name, Value::List(items));
            }
            _ => {}
        }
    }
}

fn mark_unknowns(block: &Block, config: &Value, planned: &mut Value, create: bool, changed: bool) {
    for a in &block.attributes {
        let computed_here = match a.mode {
            Mode::Computed => true,
            Mode::OptionalComputed => a.default.is_none() && config.get(&a.name).is_null(),
            _ => false,
        };
        if computed_here && (create || (changed && !a.stable)) {
            planned.set(&a.name, Value::Unknown);
        }
    }
    for b in &block.blocks {
        let cfg = config.get(&b.name);
        match (b.nesting, planned.get(&b.name).clone()) {
            (Nesting::Single, mut inner @ Value::Map(_)) => {
                mark_unknowns(&b.block, cfg, &mut inner, create, changed);
                planned.set(&b.name, inner);
            }
            (Nesting::List | Nesting::Set, Value::List(mut items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let c = cfg.as_list().and_then(|l| l.get(i)).unwrap_or(&Value::Null);
                    mark_unknowns(&b.block, c, item, create, changed);
                }
                planned.set(&b.name, Value::List(items));
            }
            _ => {}
        }
    }
}

fn collect_replacements(
    block: &Block,
    prior: &Value,
    planned: &Value,
    path: &mut AttributePath,
    out: &mut Vec<AttributePath>,
) {
    for a in &block.attributes {
        if a.force_new && prior.get(&a.name) != planned.get(&a.name) {
            path.push_attr(&a.name);
            out.push(path.clone());
            path.pop();
        }
    }
    for b in &block.blocks {
        let (p, n) = (prior.get(&b.name), planned.get(&b.name));
        path.push_attr(&b.name);
        if b.force_new && p != n {
            out.push(path.clone());
        } else if b.nesting == Nesting::Single && p.as_map().is_some() && n.as_map().is_some() {
            collect_replacements(&b.block, p, n, path, out);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::schema::{Attribute, NestedBlock};

    fn schema() -> Schema {
        Schema::new(
            0,
            Block::new("test")
                .attr(Attribute::string("id", "id").computed().stable())
                .attr(Attribute::string("name", "name").required().force_new())
                .attr(Attribute::string("size", "size").default("small"))
                .attr(Attribute::string("note", "note").optional())
                .attr(Attribute::string("digest", "digest").computed())
                .block(NestedBlock::single(
                    "opts",
                    Block::new("opts")
                        .attr(Attribute::number("bits", "bits").default(4096))
                        .attr(Attribute::string("curve", "curve").optional().force_new()),
                )),
        )
    }

    fn state() -> Value {
        Value::object([
            ("id", Value::from("x1")),
            ("name", Value::from("a")),
            ("size", Value::from("small")),
            ("note", Value::Null),
            ("digest", Value::from("d1")),
            ("opts", Value::Null),
        ])
    }

    #[test]
    fn create_fills_defaults_and_unknowns() {
        let s = schema();
        let config = Value::object([
            ("name", Value::from("a")),
            (
                "opts",
                Value::object([("bits", Value::Null), ("curve", Value::from("P256"))]),
            ),
        ]);
        let plan = Plan::new(&s, &Value::Null, config.clone(), &config, &[]);
        assert!(plan.planned.get("id").is_unknown());
        assert!(plan.planned.get("digest").is_unknown());
        assert_eq!(plan.planned.get("size").as_str(), Some("small"));
        assert_eq!(plan.planned.get("opts").get("bits").as_i64(), Some(4096));
        assert!(plan.requires_replace.is_empty());
    }

    #[test]
    fn no_change_keeps_everything_known() {
        let s = schema();
        let prior = state();
        let config = Value::object([("name", Value::from("a"))]);
        let plan = Plan::new(&s, &prior, prior.clone(), &config, &[]);
        assert_eq!(plan.planned, prior);
        assert!(!plan.has_changes());
    }

    #[test]
    fn update_recomputes_unstable_and_keeps_stable() {
        let s = schema();
        let prior = state();
        let config = Value::object([("name", Value::from("a")), ("note", Value::from("hi"))]);
        let mut proposed = prior.clone();
        proposed.set("note", Value::from("hi"));
        let plan = Plan::new(&s, &prior, proposed, &config, &[]);
        assert_eq!(plan.planned.get("id").as_str(), Some("x1"));
        assert!(plan.planned.get("digest").is_unknown());
        assert!(plan.requires_replace.is_empty());
    }

    #[test]
    fn force_new_attribute_and_nested_attribute_require_replace() {
        let s = schema();
        let mut prior = state();
        prior.set(
            "opts",
            Value::object([("bits", Value::from(4096)), ("curve", Value::from("P256"))]),
        );
        let mut proposed = prior.clone();
        proposed.set("name", Value::from("b"));
        proposed.set(
            "opts",
            Value::object([("bits", Value::from(4096)), ("curve", Value::from("P384"))]),
        );
        let config = proposed.clone();
        let plan = Plan::new(&s, &prior, proposed, &config, &[]);
        let paths: Vec<String> = plan
            .requires_replace
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(paths, ["name", "opts.curve"]);
    }
}
