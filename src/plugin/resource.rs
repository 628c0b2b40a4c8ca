//! The contract between the protocol layer and one resource type.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::diag::{AttributePath, Diagnostics};
use super::plan::Plan;
use super::schema::{Attribute, Block, NestedBlock, Schema};
use super::value::Value;

/// What every resource call receives: the StopProvider cancellation token and a place for
/// warnings that accompany a successful result.
#[derive(Clone, Default)]
pub struct Ctx {
    /// Cancelled when Terraform calls StopProvider (first Ctrl-C): long waits must give up
    /// promptly and return what they have.
    pub cancel: CancellationToken,
    warnings: Arc<Mutex<Diagnostics>>,
}

impl Ctx {
    pub fn new(cancel: CancellationToken) -> Self {
        Self {
            cancel,
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

    /// Upgrades raw JSON state written by an older schema `version` to the current shape.
    fn upgrade(
        &self,
        version: i64,
        raw: serde_json::Value,
    ) -> Result<serde_json::Value, Diagnostics> {
        let current = self.schema().version;
        if version == current {
            return Ok(raw);
        }
        let mut d = Diagnostics::new();
        d.error(
            format!("Cannot upgrade {} state", self.type_name()),
            format!(
                "The state was written by schema version {version}; this provider knows version {current}. Use the provider version that wrote it, or a newer one."
            ),
        );
        Err(d)
    }
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
