//! The contract between the protocol layer and one resource type.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::diag::{AttributePath, Diagnostics};
use super::plan::Plan;
use super::proto::tfplugin6 as pb;
use super::schema::{Attribute, Block, NestedBlock, Schema};
use super::value::Value;

/// What the client (Terraform, OpenTofu) announced it supports. Terraform ≥ 1.9 sends it with
/// ValidateResourceConfig, PlanResourceChange, ReadResource, ImportResourceState, ReadDataSource
/// and ConfigureProvider; older clients (Terraform 1.0.3 among them) send none: all false.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    /// The client accepts deferred results (protocol 6.6). This provider never defers.
    pub deferral_allowed: bool,
    /// The client understands write-only attributes (protocol 6.8, Terraform ≥ 1.11): it keeps
    /// them out of plan and state. Without it, a write-only attribute would be stored like any
    /// other, so the protocol layer refuses configurations that set one.
    pub write_only_attributes_allowed: bool,
}

impl ClientCapabilities {
    pub(crate) fn from_proto(c: Option<&pb::ClientCapabilities>) -> Self {
        c.map_or_else(Self::default, |c| Self {
            deferral_allowed: c.deferral_allowed,
            write_only_attributes_allowed: c.write_only_attributes_allowed,
        })
    }
}

/// What every resource call receives: the StopProvider cancellation token, what the client
/// supports, and a place for warnings that accompany a successful result.
#[derive(Clone, Default)]
pub struct Ctx {
    /// Cancelled when Terraform calls StopProvider (first Ctrl-C): long waits must give up
    /// promptly and return what they have.
    pub cancel: CancellationToken,
    /// The client's capabilities: from the request when it carries them (ReadResource), else
    /// those announced at ConfigureProvider (ApplyResourceChange carries none).
    pub client: ClientCapabilities,
    warnings: Arc<Mutex<Diagnostics>>,
}

impl Ctx {
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            cancel,
            client: ClientCapabilities::default(),
            warnings: Arc::default(),
        }
    }

    /// Adds a warning shown with the result of this call.
    pub fn warn(&self, path: Option<AttributePath>, summary: &str, detail: &str) {
        let mut w = self.warnings.lock().expect("warnings lock");
        match path {
            Some(p) => w.warning_at(p, summary, detail),
            None => w.warning(summary, detail),
        }
    }

    pub(crate) fn take_warnings(&self) -> Diagnostics {
        std::mem::take(&mut *self.warnings.lock().expect("warnings lock"))
    }
}

/// A resource's state after an operation, with its private state (opaque to the user).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    pub state: Value,
    pub private: Vec<u8>,
}

impl Applied {
    pub fn new(state: Value) -> Self {
        Self {
            state,
            private: Vec::new(),
        }
    }
}

/// A failed operation: the diagnostics, and whatever exists by now. For a create, a partial
/// state lets the next apply resume (Terraform taints it); for an update or delete, the layer
/// keeps the prior state when no partial state is given, so nothing is lost from state.
#[derive(Debug, Default)]
pub struct Failure {
    pub diags: Diagnostics,
    pub partial: Option<Applied>,
}

impl From<Diagnostics> for Failure {
    fn from(diags: Diagnostics) -> Self {
        Self {
            diags,
            partial: None,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Diagnostics::from_error(&err).into()
    }
}

/// One inbound change: prior state (null on create), planned state, configuration, and the
/// private state planned for it.
pub struct Change<'a> {
    pub prior: &'a Value,
    pub planned: &'a Value,
    pub config: &'a Value,
    pub private: &'a [u8],
}

/// A managed resource type. Reads top to bottom as schema → validate → plan → apply → read.
#[tonic::async_trait]
pub trait Resource: Send + Sync + 'static {
    /// Full type name, e.g. `mesh_root_ca`.
    fn type_name(&self) -> &'static str;

    fn schema(&self) -> Schema;

    /// Static checks of a configuration that may contain unknowns; report with attribute paths.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}

    /// Adjusts the generic plan (see `plan.rs`). Never does I/O.
    fn modify_plan(&self, _plan: &mut Plan<'_>) {}

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure>;

    /// Default: the planned state is the new state (for resources whose only in-place
    /// changes are Terraform-side settings such as timeouts).
    async fn update(&self, _ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        Ok(Applied {
            state: change.planned.clone(),
            private: change.private.to_vec(),
        })
    }

    /// Removes what the resource created. Already gone is success.
    async fn delete(&self, ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), Failure>;

    /// Refreshes state from the real world. `Ok(None)` means the object is gone.
    async fn read(
        &self,
        ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure>;

    /// Builds the state to import for `id`; Terraform calls Read on it afterwards.
    fn import(&self, _id: &str) -> Result<Applied, Diagnostics> {
        let mut d = Diagnostics::new();
        d.error(
            format!("{} does not support import", self.type_name()),
            "Create it with Terraform instead.",
        );
        Err(d)
    }

    /// The state upgrades of this resource's schema versions: `steps[n]` turns the raw JSON
    /// state of version `n` into that of version `n + 1`, so a schema at version `v` lists `v`
    /// steps. Default: none (a resource still at version 0).
    fn upgrade_steps(&self) -> &[UpgradeStep] {
        &[]
    }

    /// Upgrades raw JSON state written by an older schema `version` to the current shape:
    /// by default, the [`Resource::upgrade_steps`] from `version` on (see [`upgrade_state`]).
    fn upgrade(
        &self,
        version: i64,
        raw: serde_json::Value,
    ) -> Result<serde_json::Value, Diagnostics> {
        upgrade_state(
            self.type_name(),
            version,
            self.schema().version,
            self.upgrade_steps(),
            raw,
        )
    }
}

/// One state upgrade: the raw JSON state of schema version N to that of version N+1, or why
/// it cannot be upgraded.
pub type UpgradeStep = fn(serde_json::Value) -> Result<serde_json::Value, String>;

/// Brings `raw`, written at schema version `stored`, to version `current` by applying
/// `steps[stored]`, `steps[stored + 1]`, ... in order (`steps[n]` upgrades version `n`). State
/// from a newer schema than `current` is refused: this provider cannot know its shape.
pub fn upgrade_state(
    type_name: &str,
    stored: i64,
    current: i64,
    steps: &[UpgradeStep],
    raw: serde_json::Value,
) -> Result<serde_json::Value, Diagnostics> {
    let refuse = |detail: String| {
        let mut d = Diagnostics::new();
        d.error(format!("Cannot upgrade {type_name} state"), detail);
        d
    };
    if stored == current {
        return Ok(raw);
    }
    if stored > current {
        return Err(refuse(format!(
            "The state was written by schema version {stored}, newer than version {current} that this provider knows. Use the provider version that wrote it, or a newer one."
        )));
    }
    if stored < 0 {
        return Err(refuse(format!(
            "The state claims schema version {stored}; versions start at 0."
        )));
    }
    let mut state = raw;
    for from in stored..current {
        let step = usize::try_from(from).ok().and_then(|i| steps.get(i));
        let Some(step) = step else {
            return Err(refuse(format!(
                "This provider has no upgrade from schema version {from} to {} (state written at version {stored}, current version {current}). Upgrade with an earlier provider release first.",
                from + 1
            )));
        };
        state = step(state).map_err(|e| {
            refuse(format!(
                "Upgrading the state from schema version {from} to {}: {e}",
                from + 1
            ))
        })?;
    }
    Ok(state)
}

/// Import helper for resources identified by their `id`: a state with only `id` set, which
/// Read then fills in.
pub fn import_passthrough(id: &str) -> Applied {
    Applied::new(Value::object([("id", Value::from(id))]))
}

// ---------------------------------------------------------------------------------------------
// timeouts { create = "30m" ... }

/// A `timeouts` block for the given operations, each with its default (Go duration syntax).
pub fn timeouts_block(ops: &[(&str, &str)]) -> NestedBlock {
    let mut block = Block::new(
        "How long each operation may take before it fails, as a duration such as `\"30s\"`, `\"10m\"` or `\"1h30m\"`.",
    );
    for (op, default) in ops {
        block = block.attr(Attribute::string(
            op,
            &format!("Time limit for {op}. Default `\"{default}\"`."),
        ));
    }
    NestedBlock::single("timeouts", block)
}

/// The timeout for `op` from a resource value, or `default` when unset.
pub fn timeout(value: &Value, op: &str, default: Duration) -> Duration {
    value
        .get("timeouts")
        .get(op)
        .as_str()
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(default)
}

/// Validates every set timeout, reporting errors on their paths.
pub fn validate_timeouts(config: &Value, diags: &mut Diagnostics) {
    if let Some(fields) = config.get("timeouts").as_map() {
        for (op, v) in fields {
            if let Some(s) = v.as_str() {
                if let Err(e) = parse_duration(s) {
                    diags.error_at(
                        AttributePath::attrs(&["timeouts", op]),
                        "Invalid timeout",
                        format!("{e}. Use a duration such as \"30s\", \"10m\" or \"1h30m\"."),
                    );
                }
            }
        }
    }
}

/// Parses Go-style durations: a sequence of number+unit pairs (`h`, `m`, `s`, `ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?} is missing a unit"))?;
        if num_len == 0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            u => return Err(format!("{s:?} has unknown unit {u:?}")),
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource at schema version 2: v0 called the attribute `name`, v1 renamed it `title`,
    /// v2 added `tags`.
    struct Versioned;

    fn v0_to_v1(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
        let obj = v.as_object_mut().ok_or("the state is not an object")?;
        let name = obj.remove("name").ok_or("no `name` in the state")?;
        obj.insert("title".into(), name);
        Ok(v)
    }

    fn v1_to_v2(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
        v["tags"] = serde_json::json!([]);
        Ok(v)
    }

    #[tonic::async_trait]
    impl Resource for Versioned {
        fn type_name(&self) -> &'static str {
            "mesh_versioned"
        }
        fn schema(&self) -> Schema {
            Schema::new(
                2,
                Block::new("test")
                    .attr(Attribute::string("title", "title"))
                    .attr(Attribute::string_list("tags", "tags")),
            )
        }
        fn upgrade_steps(&self) -> &[UpgradeStep] {
            &[v0_to_v1, v1_to_v2]
        }
        async fn create(&self, _: &Ctx, _: Change<'_>) -> Result<Applied, Failure> {
            Err(Diagnostics::new().into())
        }
        async fn delete(&self, _: &Ctx, _: &Value, _: &[u8]) -> Result<(), Failure> {
            Ok(())
        }
        async fn read(&self, _: &Ctx, _: &Value, _: &[u8]) -> Result<Option<Applied>, Failure> {
            Ok(None)
        }
    }

    fn detail(d: &Diagnostics) -> String {
        assert_eq!(d.0.len(), 1, "{d:?}");
        format!("{}: {}", d.0[0].summary, d.0[0].detail)
    }

    #[test]
    fn state_upgrades_run_step_by_step_from_the_stored_version() {
        use serde_json::json;
        let r = Versioned;
        let want = json!({"title": "a", "tags": []});
        assert_eq!(r.upgrade(0, json!({"name": "a"})).unwrap(), want);
        assert_eq!(r.upgrade(1, json!({"title": "a"})).unwrap(), want);
        // The current version passes through untouched.
        let current = json!({"title": "a", "tags": ["x"]});
        assert_eq!(r.upgrade(2, current.clone()).unwrap(), current);

        // A step that cannot upgrade says which step and why.
        let err = detail(&r.upgrade(0, json!({"title": "a"})).unwrap_err());
        assert_eq!(
            err,
            "Cannot upgrade mesh_versioned state: Upgrading the state from schema version 0 to 1: no `name` in the state"
        );
    }

    #[test]
    fn state_from_a_newer_schema_or_without_a_step_is_refused() {
        let r = Versioned;
        let err = detail(&r.upgrade(3, serde_json::json!({})).unwrap_err());
        assert!(
            err.contains("written by schema version 3, newer than version 2"),
            "{err}"
        );
        assert!(
            err.contains("Use the provider version that wrote it, or a newer one"),
            "{err}"
        );
        let err = detail(&r.upgrade(-1, serde_json::json!({})).unwrap_err());
        assert!(err.contains("versions start at 0"), "{err}");

        // A version with no step is refused, not skipped.
        let err = detail(
            &upgrade_state(
                "mesh_x",
                0,
                2,
                &[v0_to_v1],
                serde_json::json!({"name": "a"}),
            )
            .unwrap_err(),
        );
        assert!(
            err.contains("no upgrade from schema version 1 to 2"),
            "{err}"
        );
        // Resources that declare no steps keep their version-0 behaviour.
        assert_eq!(
            upgrade_state("mesh_x", 0, 0, &[], serde_json::json!({"a": 1})).unwrap(),
            serde_json::json!({"a": 1})
        );
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").unwrap_err().contains("missing a unit"));
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn timeouts_are_validated_on_their_path() {
        let config =
            Value::object([("timeouts", Value::object([("create", Value::from("soon"))]))]);
        let mut d = Diagnostics::new();
        validate_timeouts(&config, &mut d);
        assert_eq!(d.0[0].path.as_ref().unwrap().to_string(), "timeouts.create");
        assert_eq!(
            timeout(&config, "delete", Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
