//! The protocol layer: how Terraform talks to a provider process. It knows Terraform's plugin
//! protocol and nothing of Istio or Kubernetes.
//!
//! - `serve`: go-plugin handshake, AutoMTLS, Unix socket, signals, debug mode;
//! - `server`: the tfplugin6 gRPC service, dispatching to `Resource`s and `DataSource`s;
//! - `value`, `schema`, `plan`, `diag`: values with unknowns, schemas, the plan pipeline and
//!   diagnostics with attribute paths;
//! - `log`: hclog JSON lines on stderr, filtered like Terraform filters them;
//! - `docs`: registry docs rendered from schemas.

pub mod data_source;
pub mod diag;
pub mod docs;
pub mod log;
pub mod plan;
pub mod proto;
pub mod resource;
pub mod schema;
pub mod serve;
pub mod server;
pub mod value;

pub use data_source::DataSource;
pub use diag::{AttributePath, Diagnostics};
pub use plan::Plan;
pub use resource::{Applied, Change, ClientCapabilities, Ctx, Failure, Resource};
pub use schema::{Attribute, Block, NestedBlock, Schema};
pub use value::Value;

use std::sync::Arc;

/// A provider: its registry address, description, resource and data source types.
pub struct Provider {
    /// Fully qualified source address, e.g. `registry.terraform.io/tfmesh/mesh`.
    pub address: &'static str,
    /// Provider-level documentation (Markdown).
    pub description: &'static str,
    pub resources: Vec<Arc<dyn Resource>>,
    pub data_sources: Vec<Arc<dyn DataSource>>,
}
