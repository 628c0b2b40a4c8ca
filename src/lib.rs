//! terraform-provider-mesh: a Terraform/OpenTofu provider that installs an Istio multicluster
//! service mesh.
//!
//! Layers, arrows pointing one way: `resources` → `pki`, `plugin`; `plugin` knows the
//! Terraform protocol and nothing else.

pub mod clock;
pub mod istio;
pub mod kube;
pub mod pki;
pub mod plugin;
pub mod resources;
pub mod timing;

use std::sync::Arc;

/// The provider's source address (`required_providers { mesh = { source = ... } }`).
pub const PROVIDER_ADDRESS: &str = "registry.terraform.io/tfmesh/mesh";

/// The provider with all its resources and data sources.
pub fn provider() -> plugin::Provider {
    plugin::Provider {
        address: PROVIDER_ADDRESS,
        description: resources::PROVIDER_DESCRIPTION,
        resources: resources::all()
            .into_iter()
            .map(|r| r as Arc<dyn plugin::Resource>)
            .collect(),
        data_sources: resources::data_sources(),
    }
}
