//! `mesh_remote_secret`: lets istiod in one cluster (the target) read another cluster's API
//! server (the remote) — `istioctl create-remote-secret ... | kubectl apply` as a resource.
//!
//! In the remote cluster it finds (or creates) the reader ServiceAccount and mints a
//! long-lived token secret for it; in the target it server-side applies
//! `istio-remote-secret-<cluster_name>` holding a bearer-token kubeconfig. The kubeconfig and
//! token never enter state or logs: state keeps their SHA-256.

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{ListParams, PostParams};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::istio::{self, istiod, remote_secret as rs};
use crate::kube::{
    connect, labels, Cluster, Connection, Deadline, KubeError, FIELD_MANAGER, INSTANCE_LABEL,
    MANAGED_BY_LABEL, MANAGED_BY_VALUE,
};
use crate::plugin::resource::{timeout, timeouts_block, validate_timeouts};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, NestedBlock, Plan,
    Resource, Schema, Value,
};
use crate::resources::{kubernetes, private};

pub struct MeshRemoteSecret;

const DESCRIPTION: &str = "Lets istiod in one cluster (the *target*, `kubernetes { ... }` or `connection`) discover endpoints in another (the *remote*, `remote { kubernetes { ... } }` or `remote_connection`): the `istioctl create-remote-secret ... | kubectl apply` step of Istio's multicluster guides, as a resource.

In the remote cluster it finds the reader ServiceAccount (`istio-reader-service-account`, created by Istio's install; or creates it with Istio's reader ClusterRole when `create_service_account = true`), creates a `kubernetes.io/service-account-token` Secret for it (one per target, named `token_secret_name`) and waits for the token controller to fill it. In the target it writes Secret `istio-remote-secret-<cluster_name>` (label `istio/multiCluster: \"true\"`, annotation `networking.istio.io/cluster`) whose key `<cluster_name>` is a kubeconfig with the remote's API server, its CA and the bearer token. istiod picks it up live.

The kubeconfig and the token are never stored in state nor logged: `kubeconfig_sha256` is their fingerprint.

The API server address written into the kubeconfig is `remote.server`, else the remote connection's host. It must be reachable **from istiod's pods in the target cluster**: a loopback address (`127.0.0.1`, `localhost`, as kind writes into kubeconfigs) gives a warning; set `remote.server` to an address the target can reach (e.g. `https://<node-ip>:6443` for kind).

Drift is repaired: a deleted or edited target secret, a deleted (revoked) token secret, or a changed server or CA shows in the next plan and is put back in place. With `verify_token = true`, refresh also asks the remote API server (TokenReview) whether the token still authenticates, and mints a new one if not. Changing `token_rotation` rotates the token without a gap: the new token is minted and written to the target before the old one is deleted. Destroy removes the target secret, then deletes the token secret (revoking the token); an unreachable remote at that point is a warning, not a failed destroy.";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The remote's one-value connection, the counterpart of `remote { kubernetes { ... } }`.
const REMOTE_CONNECTION: &str = "remote_connection";
const READ_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How long destroy (and refresh) keeps trying an unreachable remote before it warns and
/// moves on.
const REMOTE_PATIENCE: Duration = Duration::from_secs(20);

/// `deadline`, shortened to REMOTE_PATIENCE: how long to keep trying a remote cluster that is
/// not strictly needed for the operation to succeed.
fn remote_patience(deadline: &Deadline) -> Deadline {
    deadline.capped(REMOTE_PATIENCE)
}

// ---------------------------------------------------------------------------------------------
// Schema

fn remote_block() -> NestedBlock {
    let mut b = NestedBlock::single(
        "remote",
        Block::new("The cluster whose API server the target's istiod will read. The token is minted there.")
            .attr(Attribute::string("cluster_name", "The remote cluster's name in the mesh: its `values.global.multiCluster.clusterName` (istiod's `CLUSTER_ID`). A DNS-1123 label; it names the secret (`istio-remote-secret-<cluster_name>`) and its data key.").required().force_new())
            .attr(Attribute::string("server", "API server URL written into the kubeconfig, as istiod in the target cluster must reach it (e.g. a private endpoint or `https://<node-ip>:6443`). Default: the remote connection's host.").optional())
            .attr(Attribute::string("tls_server_name", "Server name istiod verifies the remote API server's certificate against, when it differs from the host in `server`.").optional())
            .attr(Attribute::string("service_account", "ServiceAccount the token is minted for.").default(rs::DEFAULT_SERVICE_ACCOUNT))
            .attr(Attribute::string("service_account_namespace", "Namespace of the ServiceAccount (and of the token secret): the remote cluster's istiod namespace.").default("istio-system"))
            .attr(Attribute::bool("create_service_account", "Create the ServiceAccount, with Istio's reader ClusterRole and ClusterRoleBinding, when it does not exist (for remotes whose control plane is installed later, or not by Istio's charts). Destroy removes what it created. When `false`, a missing ServiceAccount is an error: install Istio in the remote cluster first.").default(false))
            .block(kubernetes::block()),
    );
    b.min_items = 1;
    b.max_items = 1;
    b
}

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(Attribute::string("namespace", "Namespace of istiod in the target cluster, where the secret is written.").default("istio-system").force_new())
            .attr(Attribute::string("token_rotation", "Any string; changing it mints a new token, writes it to the target and then deletes the old token secret (no window without a valid secret). E.g. a `time_rotating` id or a date.").optional())
            .attr(Attribute::bool("verify_token", "On refresh, ask the remote API server (TokenReview) whether the token still authenticates, and mint a new one if it does not. Costs one API request per refresh.").default(false))
            .attr(Attribute::bool("wait_for_sync", "After writing the secret, wait (within the create/update timeout) until every Ready istiod in the target reports the remote cluster `synced` in its `/debug/clusterz`, read through a port-forward to istiod's port 15014 as `istioctl remote-clusters` does; fail with a diagnosis when it does not. A target without istiod gets a warning and no wait. Refresh then keeps `sync_status` up to date. Needs `get` and `create` on `pods/portforward` in the target's istiod namespace.").default(true))
            .attr(Attribute::string("sync_status", "The remote cluster's status as the target's istiod reports it, the least synced replica's: `synced`, `syncing`, `timeout`, `closed`, `not_seen` (istiod does not list it), or `unknown` (istiod could not be asked; a warning says why). Null when `wait_for_sync = false` or no istiod runs in the target.").computed())
            .attr(Attribute::string("id", "`<namespace>/istio-remote-secret-<cluster_name>`.").computed().stable())
            .attr(Attribute::string("secret_name", "Name of the secret in the target cluster: `istio-remote-secret-<cluster_name>`.").computed().stable())
            .attr(Attribute::string("token_secret_name", "Name of the token secret in the remote cluster (in `remote.service_account_namespace`). One per target cluster and rotation.").computed().stable())
            .attr(Attribute::string("server", "The API server URL written into the kubeconfig (`remote.server`, else the remote connection's host).").computed().stable())
            .attr(Attribute::string("kubeconfig_sha256", "SHA-256 (hex) of the kubeconfig held in the target secret. The kubeconfig itself, which contains the token, is never stored in state.").computed().stable())
            .attr(kubernetes::connection_attribute())
            .attr(Attribute::string(REMOTE_CONNECTION, "How to reach the *remote* cluster, as one value instead of `remote { kubernetes { ... } }`: usually the remote's `mesh_cluster` `connection` output (`remote_connection = mesh_cluster.west.connection`), or a JSON object of the block's attributes, as `connection` takes. Set one or the other. It sits beside `connection` rather than inside `remote`: Terraform records where each sensitive value of a resource is, and a nested place costs every one of a mesh's N·(N−1) secrets several hundred bytes of state more. Changing it to another cluster moves the token there (revoked in the old one) without replacing the resource.").optional().sensitive())
            .block(kubernetes::block())
            .block(remote_block())
            .block(timeouts_block(&[("create", "5m"), ("update", "5m"), ("delete", "5m")])),
    )
}

// ---------------------------------------------------------------------------------------------
// Validate

fn at(names: &[&str]) -> AttributePath {
    AttributePath::attrs(names)
}

/// Whether two known connection settings (block-shaped, see `kubernetes::settings`) certainly
/// point at the same cluster.
fn same_cluster_statically(a: &Value, b: &Value) -> bool {
    if !a.is_wholly_known() || !b.is_wholly_known() || a.is_null() && b.is_null() {
        // Two empty blocks both mean "the current context": that is the same cluster too.
        return a.is_null() && b.is_null();
    }
    let s = |v: &Value, k: &str| v.get(k).as_str().map(str::to_string);
    match (s(a, "host"), s(b, "host")) {
        (Some(ha), Some(hb)) => {
            norm_server(&ha) == norm_server(&hb)
                && s(a, "cluster_ca_certificate") == s(b, "cluster_ca_certificate")
        }
        (None, None) => {
            s(a, "config_path") == s(b, "config_path")
                && s(a, "config_context") == s(b, "config_context")
        }
        _ => false,
    }
}

fn norm_server(s: &str) -> String {
    s.trim().trim_end_matches('/').to_ascii_lowercase()
}

fn validate_config(config: &Value, diags: &mut Diagnostics) {
    let remote = config.get("remote");
    if remote.is_null() {
        diags.error(
            "Missing remote block",
            "mesh_remote_secret needs a `remote { cluster_name = ... kubernetes { ... } }` block naming the cluster whose API server is exposed.",
        );
    }
    if let Some(name) = remote.get("cluster_name").as_str() {
        if !istio::is_dns1123_label(name) {
            diags.error_at(at(&["remote", "cluster_name"]), "Invalid cluster_name", format!("{name:?} is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters. It must equal the remote cluster's values.global.multiCluster.clusterName."));
        }
    }
    if let Some(server) = remote.get("server").as_str() {
        if !server.starts_with("https://") && !server.starts_with("http://") {
            diags.error_at(
                at(&["remote", "server"]),
                "Invalid server",
                format!(
                    "{server:?} must be a URL such as https://10.0.0.1:6443 (with the scheme)."
                ),
            );
        }
    }
    for (path, v) in [
        (vec!["namespace"], config.get("namespace")),
        (
            vec!["remote", "service_account_namespace"],
            remote.get("service_account_namespace"),
        ),
    ] {
        if let Some(ns) = v.as_str() {
            if !istio::is_dns1123_label(ns) {
                diags.error_at(
                    at(&path),
                    "Invalid namespace",
                    format!("{ns:?} is not a valid namespace name."),
                );
            }
        }
    }
    if let Some(sa) = remote.get("service_account").as_str() {
        let ok = !sa.is_empty() && sa.len() <= 253 && sa.split('.').all(istio::is_dns1123_label);
        if !ok {
            diags.error_at(
                at(&["remote", "service_account"]),
                "Invalid service_account",
                format!("{sa:?} is not a valid ServiceAccount name."),
            );
        }
    }
    kubernetes::validate_choice(config, &AttributePath::root(), diags);
    kubernetes::validate_pair(
        config.get(REMOTE_CONNECTION),
        &at(&[REMOTE_CONNECTION]),
        remote.get("kubernetes"),
        &at(&["remote", "kubernetes"]),
        diags,
    );
    if let (false, Ok(target), Ok(other)) = (
        remote.is_null(),
        kubernetes::settings(config),
        remote_settings(config),
    ) {
        if same_cluster_statically(&target, &other) {
            diags.error_at(remote_connection_path(config), "Remote and target are the same cluster", "The remote connection reaches the same cluster as the target's. A remote secret lets istiod in the target read a *different* cluster; istiod ignores a secret for its own cluster.");
        }
    }
    validate_timeouts(config, diags);
}

/// Where the remote's connection is set: `remote_connection` or `remote.kubernetes`.
fn remote_connection_path(v: &Value) -> AttributePath {
    if v.get(REMOTE_CONNECTION).is_null() {
        at(&["remote", "kubernetes"])
    } else {
        at(&[REMOTE_CONNECTION])
    }
}

/// The remote's connection settings (see `kubernetes::settings`).
fn remote_settings(v: &Value) -> Result<Value, String> {
    kubernetes::settings_of(v.get(REMOTE_CONNECTION), v.get("remote").get("kubernetes"))
}

/// The server as configuration alone says it: a string, unknown, or null (it then comes from
/// the remote connection's kubeconfig, read at apply time).
fn configured_server(v: &Value) -> Value {
    let remote = v.get("remote");
    match remote.get("server") {
        Value::Null => {}
        other => return other.clone(),
    }
    match remote_settings(v) {
        Ok(Value::Unknown) => Value::Unknown,
        Ok(k) => k.get("host").clone(),
        Err(_) => Value::Null,
    }
}

fn loopback_warning(ctx_or_plan: &mut dyn FnMut(&str, &str), server: &str) {
    ctx_or_plan(
        "The remote API server address is a loopback address",
        &format!("The kubeconfig written for istiod uses server {server}, which is the local machine. istiod runs in another cluster and cannot reach it there, so endpoint discovery will fail (the usual kind pitfall). Set remote.server to an address the target cluster's pods can reach, e.g. https://<node-ip>:6443."),
    );
}

// ---------------------------------------------------------------------------------------------
// Private state: where our token lives, what we created, and what the target should hold.
//
// Terraform rewrites the whole state file after every resource it applies, so each byte here is
// written N² times in a mesh of N clusters. Three fields usually repeat an attribute of the
// state stored beside them (token name and namespace, the kubeconfig's digest): they are left
// out when they do, and an absent field reads as that attribute. A field that differs from it
// is written, `null` included, so nothing is lost.

#[derive(Default, Clone, PartialEq, Debug, Serialize, Deserialize)]
struct Private {
    /// Namespace and name of our current token secret in the remote cluster.
    token_namespace: Option<String>,
    token_name: Option<String>,
    /// Refresh found the token no longer authenticates (verify_token): mint it again.
    #[serde(default, skip_serializing_if = "is_false")]
    token_invalid: bool,
    /// Token secrets replaced by a rotation whose deletion has not succeeded yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stale_tokens: Vec<(String, String)>,
    /// The ServiceAccount and reader RBAC were created by this resource.
    #[serde(default, skip_serializing_if = "is_false")]
    created_service_account: bool,
    /// SHA-256 of the kubeconfig the target should hold now (computed at apply and refresh).
    desired_sha256: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The fields of [`Private`] that usually equal an attribute of the state stored with it.
const MIRRORED: [private::Mirror; 3] = [
    ("token_name", &["token_secret_name"]),
    ("token_namespace", &["remote", "service_account_namespace"]),
    ("desired_sha256", &["kubeconfig_sha256"]),
];

impl Private {
    /// The private state saved beside `state`.
    fn load(bytes: &[u8], state: &Value) -> Self {
        let mut fields = match serde_json::from_slice(bytes) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        private::restore(&mut fields, state, &MIRRORED);
        serde_json::from_value(serde_json::Value::Object(fields)).unwrap_or_default()
    }

    /// The bytes to save beside `state`: empty when every field is its default or mirrored.
    fn store(&self, state: &Value) -> Vec<u8> {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        private::leave_out(&mut fields, state, &MIRRORED);
        if fields.is_empty() {
            return Vec::new();
        }
        serde_json::to_vec(&fields).unwrap_or_default()
    }
    /// "namespace/name" of the current token secret, for messages.
    fn token_ref(&self) -> String {
        format!(
            "{}/{}",
            self.token_namespace.as_deref().unwrap_or("?"),
            self.token_name.as_deref().unwrap_or("?")
        )
    }
}

mod apply;
mod plan;
mod read;
mod sync;

use apply::*;
use plan::*;
use read::*;
use sync::*;

// ---------------------------------------------------------------------------------------------
// The resource

#[tonic::async_trait]
impl Resource for MeshRemoteSecret {
    fn type_name(&self) -> &'static str {
        "mesh_remote_secret"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        validate_config(config, diags);
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        plan_remote_secret(plan);
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        let private = Private::load(change.private, &Value::Null);
        converge(ctx, change.planned, private, "create").await
    }

    async fn update(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        update(ctx, change).await
    }

    async fn delete(&self, ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), Failure> {
        remove(ctx, prior, private).await
    }

    async fn read(
        &self,
        ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        observe(ctx, state, private).await.map_err(kube_failure)
    }
}

#[cfg(test)]
mod tests;
