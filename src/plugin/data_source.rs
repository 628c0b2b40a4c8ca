//! The contract between the protocol layer and one data source type.
//!
//! A data source has no state of its own: Terraform sends the configuration and receives the
//! full object (configuration plus computed attributes) back, at plan time when the
//! configuration is known, otherwise during apply. Terraform itself defers the read while the
//! configuration holds unknowns, so `read` always sees a wholly known configuration.

use super::diag::Diagnostics;
use super::resource::Ctx;
use super::schema::Schema;
use super::value::Value;

/// A data source type. Warnings that accompany a successful read go through [`Ctx::warn`];
/// a `timeouts { read = "..." }` block is declared with
/// [`timeouts_block`](super::resource::timeouts_block) and read with
/// [`timeout`](super::resource::timeout), as resources do (the layer validates its durations).
#[tonic::async_trait]
pub trait DataSource: Send + Sync + 'static {
    /// Full type name, e.g. `mesh_status`.
    fn type_name(&self) -> &'static str;

    fn schema(&self) -> Schema;

    /// Static checks of a configuration that may contain unknowns; report with attribute paths
    /// as the data source sees them (single blocks as objects), the layer maps them to the wire.
    fn validate(&self, _config: &Value, _diags: &mut Diagnostics) {}

    /// Reads the object: returns `config` with every computed attribute filled in (the value
    /// must be wholly known and fit the schema). A missing object is an error, not null.
    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diagnostics>;
}
