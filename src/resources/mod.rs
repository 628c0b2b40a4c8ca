//! One file per Terraform resource: schema, validation, plan, apply, read.

pub mod cluster;
pub mod eastwest_gateway;
pub mod kubernetes;
mod private;
pub mod remote_secret;
pub mod root_ca;
pub mod status;
pub mod verification;

use std::sync::Arc;

use crate::plugin::{DataSource, Resource};

/// The provider's documentation page (docs/index.md).
pub const PROVIDER_DESCRIPTION: &str = include_str!("provider.md");

/// Every resource type the provider serves.
pub fn all() -> Vec<Arc<dyn Resource>> {
    vec![
        Arc::new(root_ca::RootCa),
        Arc::new(cluster::MeshCluster),
        Arc::new(eastwest_gateway::EastWestGateway),
        Arc::new(remote_secret::MeshRemoteSecret),
        Arc::new(verification::MeshVerification),
    ]
}

/// Every data source type the provider serves.
pub fn data_sources() -> Vec<Arc<dyn DataSource>> {
    vec![Arc::new(status::MeshStatus)]
}
