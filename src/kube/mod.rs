//! Cluster access. Knows Kubernetes, nothing of Terraform: a `Connection` (what a resource's
//! `kubernetes` block says) becomes a cached `Cluster` client; server-side apply with our field
//! manager, deletes where gone is success, watch-based waits, and one retry policy, all under
//! an operation `Deadline` that also carries the StopProvider cancellation.

pub mod apply;
pub mod client;
pub mod connection;
pub mod error;
pub mod exec;
pub mod namespace;
pub mod pod;
pub mod pod_exec;
pub mod portforward;
pub mod probe;
pub mod retry;
pub mod retry_after;
pub mod wait;

pub use apply::{
    created_by, has_instance_label, labels, mark_created, CREATED_BY_ANNOTATION, FIELD_MANAGER,
    INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
pub use client::{connect, Cluster};
pub use connection::{Connection, Env, Exec, Resolved};
pub use error::{ApiDetails, KubeError};
pub use probe::{probe_kubeconfig, Probe, Prober};
pub use retry::Deadline;
