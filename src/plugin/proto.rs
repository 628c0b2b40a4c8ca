//! Code generated from `proto/` by `build.rs`.
#![allow(clippy::all, missing_docs, unreachable_pub)]

/// The Terraform plugin protocol, version 6.
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's controller and stdio services.
pub mod go_plugin {
    tonic::include_proto!("plugin");
}

/// The gRPC health service.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
