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
    connect, labels, Cluster, Connection, Deadline, KubeError, FIELD_MANAGER, MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
};
use crate::plugin::resource::{timeout, timeouts_block, validate_timeouts};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, NestedBlock, Plan,
    Resource, Schema, Value,
};
use crate::resources::kubernetes;

pub struct MeshRemoteSecret;

const DESCRIPTION: &str = "Lets istiod in one cluster (the *target*, `kubernetes { ... }`) discover endpoints in another (the *remote*, `remote { kubernetes { ... } }`): the `istioctl create-remote-secret ... | kubectl apply` step of Istio's multicluster guides, as a resource.

In the remote cluster it finds the reader ServiceAccount (`istio-reader-service-account`, created by Istio's install; or creates it with Istio's reader ClusterRole when `create_service_account = true`), creates a `kubernetes.io/service-account-token` Secret for it (one per target, named `token_secret_name`) and waits for the token controller to fill it. In the target it writes Secret `istio-remote-secret-<cluster_name>` (label `istio/multiCluster: \"true\"`, annotation `networking.istio.io/cluster`) whose key `<cluster_name>` is a kubeconfig with the remote's API server, its CA and the bearer token. istiod picks it up live.

The kubeconfig and the token are never stored in state nor logged: `kubeconfig_sha256` is their fingerprint.

The API server address written into the kubeconfig is `remote.server`, else the remote connection's host. It must be reachable **from istiod's pods in the target cluster**: a loopback address (`127.0.0.1`, `localhost`, as kind writes into kubeconfigs) gives a warning; set `remote.server` to an address the target can reach (e.g. `https://<node-ip>:6443` for kind).

Drift is repaired: a deleted or edited target secret, a deleted (revoked) token secret, or a changed server or CA shows in the next plan and is put back in place. With `verify_token = true`, refresh also asks the remote API server (TokenReview) whether the token still authenticates, and mints a new one if not. Changing `token_rotation` rotates the token without a gap: the new token is minted and written to the target before the old one is deleted. Destroy removes the target secret, then deletes the token secret (revoking the token); an unreachable remote at that point is a warning, not a failed destroy.";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const READ_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// How long destroy (and refresh) keeps trying an unreachable remote before it warns and
/// moves on.
const REMOTE_PATIENCE: Duration = Duration::from_secs(20);

/// `deadline`, shortened to REMOTE_PATIENCE: how long to keep trying a remote cluster that is
/// not strictly needed for the operation to succeed.
fn remote_patience(deadline: &Deadline) -> Deadline {
    Deadline {
        started: Instant::now(),
        until: deadline.until.min(Instant::now() + REMOTE_PATIENCE),
        cancel: deadline.cancel.clone(),
    }
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
            .attr(Attribute::bool("wait_for_sync", "After writing the secret, wait (within the create/update timeout) until every Ready istiod in the target reports the remote cluster `synced` in its `/debug/clusterz`, read through a port-forward to istiod's port 15014 as `istioctl remote-clusters` does; fail with a diagnosis when it does not. A target without istiod gets a warning and no wait. Refresh then keeps `sync_status` up to date. Needs `create` on `pods/portforward` in the target's istiod namespace.").default(true))
            .attr(Attribute::string("sync_status", "The remote cluster's status as the target's istiod reports it, the least synced replica's: `synced`, `syncing`, `timeout`, `closed`, `not_seen` (istiod does not list it), or `unknown` (istiod could not be asked; a warning says why). Null when `wait_for_sync = false` or no istiod runs in the target.").computed())
            .attr(Attribute::string("id", "`<namespace>/istio-remote-secret-<cluster_name>`.").computed().stable())
            .attr(Attribute::string("secret_name", "Name of the secret in the target cluster: `istio-remote-secret-<cluster_name>`.").computed().stable())
            .attr(Attribute::string("token_secret_name", "Name of the token secret in the remote cluster (in `remote.service_account_namespace`). One per target cluster and rotation.").computed().stable())
            .attr(Attribute::string("server", "The API server URL written into the kubeconfig (`remote.server`, else the remote connection's host).").computed().stable())
            .attr(Attribute::string("kubeconfig_sha256", "SHA-256 (hex) of the kubeconfig held in the target secret. The kubeconfig itself, which contains the token, is never stored in state.").computed().stable())
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

/// Whether two known `kubernetes` blocks certainly point at the same cluster.
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
    kubernetes::validate(config.get("kubernetes"), &at(&["kubernetes"]), diags);
    kubernetes::validate(
        remote.get("kubernetes"),
        &at(&["remote", "kubernetes"]),
        diags,
    );
    if !remote.is_null()
        && same_cluster_statically(config.get("kubernetes"), remote.get("kubernetes"))
    {
        diags.error_at(at(&["remote", "kubernetes"]), "Remote and target are the same cluster", "The remote block connects to the same cluster as the top-level kubernetes block. A remote secret lets istiod in the target read a *different* cluster; istiod ignores a secret for its own cluster.");
    }
    validate_timeouts(config, diags);
}

/// The server as configuration alone says it: a string, unknown, or null (it then comes from
/// the remote connection's kubeconfig, read at apply time).
fn configured_server(v: &Value) -> Value {
    let remote = v.get("remote");
    match remote.get("server") {
        Value::Null => {}
        other => return other.clone(),
    }
    match remote.get("kubernetes") {
        Value::Unknown => Value::Unknown,
        k => k.get("host").clone(),
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

#[derive(Default, Serialize, Deserialize)]
struct Private {
    /// Namespace and name of our current token secret in the remote cluster.
    token_namespace: Option<String>,
    token_name: Option<String>,
    /// Refresh found the token no longer authenticates (verify_token): mint it again.
    #[serde(default)]
    token_invalid: bool,
    /// Token secrets replaced by a rotation whose deletion has not succeeded yet.
    #[serde(default)]
    stale_tokens: Vec<(String, String)>,
    /// The ServiceAccount and reader RBAC were created by this resource.
    #[serde(default)]
    created_service_account: bool,
    /// SHA-256 of the kubeconfig the target should hold now (computed at apply and refresh).
    desired_sha256: Option<String>,
}

impl Private {
    fn load(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    fn store(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
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

// ---------------------------------------------------------------------------------------------
// Apply

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = cur.get(p);
    }
    cur.as_str().unwrap_or_default()
}

fn instance(v: &Value) -> String {
    format!(
        "mesh-remote-secret.{}.{}",
        str_of(v, &["namespace"]),
        str_of(v, &["remote", "cluster_name"])
    )
}

fn kube_failure(err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(err.to_string(), "");
    d.into()
}

fn error(summary: &str, detail: String) -> Failure {
    let mut d = Diagnostics::new();
    d.error(summary, detail);
    d.into()
}

/// The server URL and base64 CA data of a connection, from its settings alone (no I/O
/// beyond reading a kubeconfig file).
fn resolved_endpoint(conn: &Connection) -> Result<(String, Option<String>), KubeError> {
    let kc = conn.resolve()?;
    let c = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .unwrap_or_default();
    let ca = c.certificate_authority_data.or_else(|| {
        c.certificate_authority.and_then(|p| {
            use base64::Engine;
            std::fs::read(p)
                .ok()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        })
    });
    Ok((c.server.unwrap_or_default(), ca))
}

fn effective_server(v: &Value, remote_conn: &Connection) -> Result<String, KubeError> {
    match configured_server(v).as_str() {
        Some(s) => Ok(s.to_string()),
        None => Ok(resolved_endpoint(remote_conn)?.0),
    }
}

struct Conns {
    target_conn: Connection,
    remote_conn: Connection,
}

fn conns(v: &Value) -> Conns {
    Conns {
        target_conn: kubernetes::connection(v.get("kubernetes")),
        remote_conn: kubernetes::connection(v.get("remote").get("kubernetes")),
    }
}

/// Errors when both connections resolve to the same API server with the same CA.
fn check_distinct(c: &Conns) -> Result<(), Failure> {
    let (t, r) = (
        resolved_endpoint(&c.target_conn).map_err(kube_failure)?,
        resolved_endpoint(&c.remote_conn).map_err(kube_failure)?,
    );
    let same_ca = match (&t.1, &r.1) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if norm_server(&t.0) == norm_server(&r.0) && same_ca {
        let mut d = Diagnostics::new();
        d.error_at(at(&["remote", "kubernetes"]), "Remote and target are the same cluster", format!("Both connections reach {} with the same CA. A remote secret lets istiod in the target read a *different* cluster; istiod ignores a secret for its own cluster.", t.0));
        return Err(d.into());
    }
    Ok(())
}

/// Finds the reader ServiceAccount, creating it (with the reader RBAC) when asked to.
async fn ensure_service_account(
    remote: &Cluster,
    v: &Value,
    private: &mut Private,
    deadline: &Deadline,
) -> Result<(), Failure> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    let sas: Api<ServiceAccount> = Api::namespaced(remote.client.clone(), sa_ns);
    if let Some(live) = remote
        .get_opt(&sas, sa, deadline)
        .await
        .map_err(kube_failure)?
    {
        // Created by this provider (an earlier, interrupted apply of this resource, or another
        // mesh_remote_secret reading the same remote): shared, so whichever of them goes
        // last removes it.
        let ours = live
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|m| m == MANAGED_BY_VALUE);
        let create = v.get("remote").get("create_service_account").as_bool() == Some(true);
        private.created_service_account |= ours && create;
        return Ok(());
    }
    if v.get("remote").get("create_service_account").as_bool() != Some(true) {
        return Err(error(
            "Reader ServiceAccount not found in the remote cluster",
            format!("cluster {}: ServiceAccount {sa_ns}/{sa} does not exist. Istio's control plane is not installed there yet (its base chart creates this ServiceAccount): install it first and make this resource depend on it, or set remote.create_service_account = true to have the provider create the ServiceAccount with Istio's reader ClusterRole.", remote.name),
        ));
    }
    let ours = labels(&instance(v));
    let missing_ns = |e: KubeError| {
        if e.is_not_found() {
            error("Namespace not found in the remote cluster", format!("cluster {}: namespace {sa_ns:?} does not exist, so the ServiceAccount cannot be created. Create it first (mesh_cluster does), or set remote.service_account_namespace.", remote.name))
        } else {
            kube_failure(e)
        }
    };
    remote
        .apply(
            &sas,
            &rs::reader_service_account(sa_ns, sa, ours.clone()),
            deadline,
        )
        .await
        .map_err(missing_ns)?;
    private.created_service_account = true;
    let rbac = rs::reader_rbac_name(sa_ns, sa);
    let roles: Api<ClusterRole> = Api::all(remote.client.clone());
    remote
        .apply(
            &roles,
            &rs::reader_cluster_role(&rbac, ours.clone()),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    let bindings: Api<ClusterRoleBinding> = Api::all(remote.client.clone());
    remote
        .apply(
            &bindings,
            &rs::reader_cluster_role_binding(&rbac, sa_ns, sa, ours),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    Ok(())
}

/// Creates (or adopts) token secret `name` and waits on a watch until it holds `token` and
/// `ca.crt`.
async fn mint_token(
    remote: &Cluster,
    v: &Value,
    name: &str,
    deadline: &Deadline,
) -> Result<rs::Token, Failure> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    let secrets: Api<Secret> = Api::namespaced(remote.client.clone(), sa_ns);
    let applied = remote
        .apply(
            &secrets,
            &rs::token_secret(sa_ns, name, sa, labels(&instance(v))),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    if let Some(t) = rs::token_of(&applied) {
        return Ok(t);
    }
    let started = Instant::now();
    let what = format!("the token controller to populate Secret {sa_ns}/{name}");
    let populated = |o: Option<&Secret>| o.and_then(rs::token_of).is_some();
    let secret = crate::kube::wait::wait_for(remote, secrets, name, &what, populated, deadline)
        .await
        .map_err(kube_failure)?;
    let token = secret.as_ref().and_then(rs::token_of).ok_or_else(|| {
        error(
            "Token secret not populated",
            format!("cluster {}: {what} did not happen", remote.name),
        )
    })?;
    tracing::info!(
        cluster = %remote.name,
        wait_ms = started.elapsed().as_millis() as u64,
        "token secret {sa_ns}/{name} populated"
    );
    Ok(token)
}

/// Deletes token secrets left over from rotations; what fails stays listed.
async fn delete_stale(remote: &Cluster, private: &mut Private, deadline: &Deadline) {
    let mut left = Vec::new();
    for (ns, name) in std::mem::take(&mut private.stale_tokens) {
        let api: Api<Secret> = Api::namespaced(remote.client.clone(), &ns);
        if let Err(e) = remote.delete(&api, &name, false, deadline).await {
            tracing::warn!("cannot delete old token secret {ns}/{name}: {e}");
            left.push((ns, name));
        }
    }
    private.stale_tokens = left;
}

async fn converge(
    ctx: &Ctx,
    planned: &Value,
    private: &[u8],
    op: &str,
) -> Result<Applied, Failure> {
    // The planned state has the defaults filled in; at apply time all of it is known but the
    // computed attributes.
    let config = planned;
    let mut private = Private::load(private);
    let deadline = Deadline::new(timeout(config, op, DEFAULT_TIMEOUT), ctx.cancel.clone());
    let c = conns(config);
    check_distinct(&c)?;
    let server = effective_server(config, &c.remote_conn).map_err(kube_failure)?;
    if planned.get("server").is_unknown() && rs::is_loopback_server(&server) {
        loopback_warning(
            &mut |s, d| ctx.warn(Some(at(&["remote", "server"])), s, d),
            &server,
        );
    }
    let remote = connect(&c.remote_conn).await.map_err(kube_failure)?;
    let target = connect(&c.target_conn).await.map_err(kube_failure)?;
    let (target_server, _) = resolved_endpoint(&c.target_conn).map_err(kube_failure)?;

    let namespace = str_of(planned, &["namespace"]).to_string();
    let cluster_name = str_of(planned, &["remote", "cluster_name"]).to_string();
    let sa_ns = str_of(config, &["remote", "service_account_namespace"]).to_string();
    let remote_secrets: Api<Secret> = Api::namespaced(remote.client.clone(), &sa_ns);

    let mut state = planned.clone();
    let secret_name = rs::secret_name(&cluster_name);
    state.set("secret_name", Value::from(secret_name.as_str()));
    state.set("id", Value::from(format!("{namespace}/{secret_name}")));
    state.set("server", Value::from(server.as_str()));

    // The token: keep the current one unless the plan asks for a new one or it is gone.
    let current = match (&private.token_namespace, &private.token_name) {
        (Some(ns), Some(n)) => Some((ns.clone(), n.clone())),
        _ => None,
    };
    let mut token = None;
    if !planned.get("token_secret_name").is_unknown() && !private.token_invalid {
        if let Some((_, n)) = current.as_ref().filter(|(ns, _)| *ns == sa_ns) {
            token = remote
                .get_opt(&remote_secrets, n, &deadline)
                .await
                .map_err(kube_failure)?
                .as_ref()
                .and_then(rs::token_of)
                .map(|t| (n.clone(), t));
        }
    }
    let token_name;
    let token = match token {
        Some((n, t)) => {
            token_name = n;
            t
        }
        None => {
            // A create that fails from here on has made objects in the remote: hand back a
            // partial state naming them, so destroy (or the replacement) removes them.
            let keep = |mut f: Failure, state: &Value, private: &Private| {
                if op == "create" {
                    f.partial = Some(Applied {
                        state: state.known_or_null(),
                        private: private.store(),
                    });
                }
                f
            };
            if let Err(f) = ensure_service_account(&remote, config, &mut private, &deadline).await {
                return Err(keep(f, &state, &private));
            }
            // A name the plan already promised (the secret vanished since) is kept; otherwise
            // it is derived from the target and the rotation trigger.
            token_name = match planned.get("token_secret_name").as_str() {
                Some(n) => n.to_string(),
                None => rs::token_secret_name(&rs::TokenKey {
                    target_server: &norm_server(&target_server),
                    target_namespace: &namespace,
                    cluster_name: &cluster_name,
                    service_account: str_of(config, &["remote", "service_account"]),
                    rotation: str_of(config, &["token_rotation"]),
                }),
            };
            if private.token_invalid
                && current.as_ref() == Some(&(sa_ns.clone(), token_name.clone()))
            {
                // Same name, dead token: replace the secret itself.
                remote
                    .delete(&remote_secrets, &token_name, true, &deadline)
                    .await
                    .map_err(kube_failure)?;
            }
            if op == "create" {
                private.token_namespace = Some(sa_ns.clone());
                private.token_name = Some(token_name.clone());
            }
            let t = match mint_token(&remote, config, &token_name, &deadline).await {
                Ok(t) => t,
                Err(f) => return Err(keep(f, &state, &private)),
            };
            private.token_invalid = false;
            if let Some(old) = current.filter(|o| *o != (sa_ns.clone(), token_name.clone())) {
                private.stale_tokens.push(old);
            }
            private.token_namespace = Some(sa_ns.clone());
            private.token_name = Some(token_name.clone());
            t
        }
    };
    state.set("token_secret_name", Value::from(token_name.as_str()));
    let partial = |state: &Value, private: &Private| Applied {
        state: state.clone(),
        private: private.store(),
    };

    // The target secret, then (rotation) the old token.
    let tls = config.get("remote").get("tls_server_name").as_str();
    let kubeconfig = rs::render_kubeconfig(&rs::KubeconfigSpec {
        cluster_name: &cluster_name,
        server: &server,
        tls_server_name: tls,
        token: &token,
    });
    let sha = rs::sha256_hex(kubeconfig.as_bytes());
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), &namespace);
    let secret = rs::remote_secret(
        &namespace,
        &cluster_name,
        &kubeconfig,
        labels(&instance(planned)),
    );
    drop(kubeconfig);
    if let Err(e) = target.apply(&target_secrets, &secret, &deadline).await {
        let mut f = if e.is_not_found() {
            error("Namespace not found in the target cluster", format!("cluster {}: namespace {namespace:?} does not exist. Install the mesh there first (mesh_cluster creates it) and make this resource depend on it.", target.name))
        } else {
            kube_failure(e)
        };
        state.set("kubeconfig_sha256", Value::Null);
        f.partial = Some(partial(&state, &private));
        return Err(f);
    }
    state.set("kubeconfig_sha256", Value::from(sha.as_str()));
    private.desired_sha256 = Some(sha);
    delete_stale(&remote, &mut private, &deadline).await;
    let sync = if config.get("wait_for_sync").as_bool() == Some(true) {
        let remote_side = Remote {
            cluster: &remote,
            cluster_name: &cluster_name,
            server: &server,
            token: &token,
        };
        match wait_for_sync(ctx, &target, &namespace, &remote_side, &deadline).await {
            Ok(sync) => sync,
            Err(mut f) => {
                state.set("sync_status", Value::Null);
                f.partial = Some(partial(&state, &private));
                return Err(f);
            }
        }
    } else {
        None
    };
    state.set(
        "sync_status",
        sync.map(|s| Value::from(s.as_str())).unwrap_or(Value::Null),
    );
    if !private.stale_tokens.is_empty() {
        let names: Vec<String> = private
            .stale_tokens
            .iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        ctx.warn(None, "Old token secret not deleted yet", &format!("cluster {}: the replaced token secret(s) {} could not be deleted, so their tokens stay valid. The next apply or destroy tries again.", remote.name, names.join(", ")));
    }
    Ok(partial(&state, &private))
}

// ---------------------------------------------------------------------------------------------
// Waiting for istiod to read the remote

/// The remote side of a written secret, for the sync wait and its diagnosis.
struct Remote<'a> {
    cluster: &'a Cluster,
    cluster_name: &'a str,
    server: &'a str,
    token: &'a rs::Token,
}

/// How often istiod is asked again while the remote is not synced yet.
const SYNC_POLL: Duration = Duration::from_millis(500);

/// Waits until every Ready istiod in the target's `namespace` reports the remote `synced`
/// (`Ok(Some(Synced))`). No istiod at all: a warning and `Ok(None)`, never a hang. Not synced
/// by the deadline: an error naming every replica's last status and the likely cause.
async fn wait_for_sync(
    ctx: &Ctx,
    target: &Cluster,
    namespace: &str,
    remote: &Remote<'_>,
    deadline: &Deadline,
) -> Result<Option<istiod::Sync>, Failure> {
    // Leave time for the diagnosis (a TokenReview in the remote) after the wait.
    let total = deadline.until.saturating_duration_since(deadline.started);
    let wait = Deadline {
        started: deadline.started,
        until: deadline.until - (total / 10).min(Duration::from_secs(10)),
        cancel: deadline.cancel.clone(),
    };
    let started = Instant::now();
    let mut last: Vec<istiod::PodView> = Vec::new();
    let mut polls = 0u32;
    loop {
        let views = match istiod::views(target, namespace, None, &wait).await {
            Ok(v) => v,
            Err(KubeError::Timeout { .. }) => break,
            Err(e) => return Err(kube_failure(e)),
        };
        if views.is_empty() {
            ctx.warn(Some(at(&["wait_for_sync"])), "No istiod in the target cluster: not waiting for sync", &format!("cluster {}: no istiod pod (label app=istiod) runs in namespace {namespace:?}, so nothing reads the secret yet and the provider did not wait for istiod to sync cluster {:?}. This is expected when the control plane is installed outside Terraform or later; check afterwards with the mesh_status data source or `istioctl remote-clusters`.", target.name, remote.cluster_name));
            return Ok(None);
        }
        let ready: Vec<&istiod::PodView> = views.iter().filter(|v| v.pod.ready).collect();
        let synced = !ready.is_empty()
            && ready
                .iter()
                .all(|v| v.status_of(remote.cluster_name) == Some(istiod::Sync::Synced));
        polls += 1;
        last = views;
        if synced {
            tracing::info!(
                cluster = %target.name,
                remote = remote.cluster_name,
                waited_ms = started.elapsed().as_millis() as u64,
                polls,
                "istiod reports the remote cluster synced"
            );
            return Ok(Some(istiod::Sync::Synced));
        }
        let pause = SYNC_POLL.min(wait.remaining());
        if pause.is_zero() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = deadline.cancel.cancelled() => {
                return Err(kube_failure(KubeError::Cancelled {
                    cluster: target.name.clone(),
                    action: format!("waiting for istiod to sync remote cluster {:?}", remote.cluster_name),
                }));
            }
        }
    }
    Err(not_synced(
        target,
        namespace,
        remote,
        &last,
        started.elapsed(),
        deadline,
    )
    .await)
}

/// The error when istiod did not sync the remote: every replica's last word, what it means,
/// and the cause the provider can see from here.
async fn not_synced(
    target: &Cluster,
    namespace: &str,
    remote: &Remote<'_>,
    views: &[istiod::PodView],
    waited: Duration,
    deadline: &Deadline,
) -> Failure {
    let mut lines = Vec::new();
    let mut statuses = Vec::new();
    for v in views {
        match (&v.clusters, v.status_of(remote.cluster_name)) {
            (_, Some(s)) => {
                statuses.push(s);
                lines.push(format!(
                    "  - {}: {} — {}",
                    v.pod.name,
                    s.as_str(),
                    s.meaning()
                ));
            }
            (Err(e), _) => lines.push(format!("  - {}: not asked ({e})", v.pod.name)),
            (Ok(_), None) => {}
        }
    }
    if lines.is_empty() {
        lines.push("  - no istiod pod answered".into());
    }
    let mut causes = Vec::new();
    if rs::is_loopback_server(remote.server) {
        causes.push(format!("The server {} is a loopback address: inside the target cluster it is istiod's own pod, not the remote API server. Set remote.server to an address the target's pods can reach (for kind: https://<control-plane node IP>:6443).", remote.server));
    } else if rs::is_private_server(remote.server) {
        causes.push(format!("The server {} is a private address: the target's pods reach it only if the two clusters share a network (peering, VPN) and firewalls allow it.", remote.server));
    }
    // The reader token, presented to the remote API server from here.
    let check = Deadline::new(
        deadline.remaining().max(Duration::from_secs(5)),
        deadline.cancel.clone(),
    );
    match token_authenticates(remote.cluster, remote.token, &check).await {
        Ok(Some(false)) => causes.push("The remote API server rejects the reader token (TokenReview says it does not authenticate): it was revoked or its ServiceAccount deleted. Change token_rotation, or set verify_token = true so refresh mints a new one.".to_string()),
        Ok(Some(true)) if statuses.iter().any(|s| *s != istiod::Sync::Synced && *s != istiod::Sync::NotSeen) => causes.push(format!("The reader token authenticates when the provider presents it to cluster {}, so the target most likely cannot reach {} (DNS, firewall, private endpoint) or does not trust its certificate (CA, remote.tls_server_name).", remote.cluster.name, remote.server)),
        Ok(_) => {}
        Err(e) => causes.push(format!("The reader token could not be checked against the remote: {e}")),
    }
    if statuses.contains(&istiod::Sync::NotSeen) {
        causes.push(format!("istiod does not list cluster {:?} at all: check that the secret is in istiod's namespace ({namespace}) and that remote.cluster_name equals the remote's clusterName (istiod's CLUSTER_ID there).", remote.cluster_name));
    }
    error(
        "istiod did not sync the remote cluster",
        format!(
            "cluster {}: after {:.0}s, istiod in namespace {namespace} does not report remote cluster {:?} (secret {}, server {}) as synced. Last status per istiod pod:\n{}\n\n{}\n\nThe secret is written; the next apply waits again. Set wait_for_sync = false to apply without waiting.",
            target.name,
            waited.as_secs_f64(),
            remote.cluster_name,
            rs::secret_name(remote.cluster_name),
            remote.server,
            lines.join("\n"),
            if causes.is_empty() { "No cause is visible from where Terraform runs: look at istiod's log in the target (kubectl logs deploy/istiod) for the remote cluster.".to_string() } else { causes.join("\n") },
        ),
    )
}

fn tolerable_on_destroy(e: &KubeError) -> bool {
    matches!(
        e,
        KubeError::Unreachable { .. } | KubeError::Timeout { .. } | KubeError::Config { .. }
    )
}

async fn remove(ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), Failure> {
    let mut private = Private::load(private);
    let deadline = Deadline::new(
        timeout(prior, "delete", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let c = conns(prior);
    // The target secret first: istiod drops the cluster, then the credential is revoked.
    let target = connect(&c.target_conn).await.map_err(kube_failure)?;
    let namespace = str_of(prior, &["namespace"]);
    let secret_name = rs::secret_name(str_of(prior, &["remote", "cluster_name"]));
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    target
        .delete(&target_secrets, &secret_name, false, &deadline)
        .await
        .map_err(kube_failure)?;

    let patience = remote_patience(&deadline);
    let result = release_remote(&c.remote_conn, prior, &mut private, &patience).await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if tolerable_on_destroy(&e) => {
            let token = private.token_ref();
            ctx.warn(None, "Remote cluster unreachable: token not revoked", &format!("The target secret {namespace}/{secret_name} is deleted, but the remote cluster could not be reached to delete token secret {token}: {e}. Its token stays valid until that secret is deleted (kubectl -n {} delete secret {}).", private.token_namespace.as_deref().unwrap_or("?"), private.token_name.as_deref().unwrap_or("?")));
            Ok(())
        }
        Err(e) => Err(kube_failure(e)),
    }
}

/// Revokes what this resource holds in the remote cluster of `v`: its token secrets (current and
/// stale) and, when it created them, the reader ServiceAccount and RBAC.
async fn release_remote(
    conn: &Connection,
    v: &Value,
    private: &mut Private,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let remote = connect(conn).await?;
    if let (Some(ns), Some(n)) = (&private.token_namespace, &private.token_name) {
        private.stale_tokens.push((ns.clone(), n.clone()));
    }
    for (ns, n) in std::mem::take(&mut private.stale_tokens) {
        let api: Api<Secret> = Api::namespaced(remote.client.clone(), &ns);
        remote.delete(&api, &n, false, deadline).await?;
    }
    if private.created_service_account {
        remove_reader(&remote, v, deadline).await?;
    }
    Ok(())
}

/// Whether the remote connection of `planned` reaches another API server than that of
/// `prior` (whose token and reader objects then live in a cluster this resource no longer
/// points at). `Err` when the prior connection no longer resolves (its context is gone).
fn remote_moved(prior: &Value, planned: &Value) -> Result<Result<bool, KubeError>, Failure> {
    let new = resolved_endpoint(&conns(planned).remote_conn).map_err(kube_failure)?;
    Ok(resolved_endpoint(&conns(prior).remote_conn)
        .map(|old| norm_server(&old.0) != norm_server(&new.0) || old.1 != new.1))
}

/// An update whose remote cluster changed: first revoke what the old remote holds (best
/// effort: an unreachable old cluster is a warning, as on destroy), then converge on the new
/// one as if creating.
async fn update(ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
    match remote_moved(change.prior, change.planned)? {
        Ok(true) => {}
        Ok(false) => return converge(ctx, change.planned, change.private, "update").await,
        Err(e) => {
            ctx.warn(None, "Previous remote connection no longer resolves", &format!("Cannot tell whether remote.kubernetes now reaches another cluster ({e}); the token is kept if it is still there. If the remote cluster did change, delete the old token secret there by hand."));
            return converge(ctx, change.planned, change.private, "update").await;
        }
    }
    let mut private = Private::load(change.private);
    let deadline = Deadline::new(
        timeout(change.planned, "update", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let patience = remote_patience(&deadline);
    let old_conn = conns(change.prior).remote_conn;
    match release_remote(&old_conn, change.prior, &mut private, &patience).await {
        Ok(()) => {}
        Err(e) if tolerable_on_destroy(&e) => {
            let token = private.token_ref();
            ctx.warn(None, "Previous remote cluster unreachable: token not revoked", &format!("remote.kubernetes now reaches another cluster, and the previous one ({}) could not be reached to delete token secret {token}: {e}. Its token stays valid until that secret is deleted there.", old_conn.describe()));
        }
        Err(e) => return Err(kube_failure(e)),
    }
    let fresh = Private {
        desired_sha256: private.desired_sha256.take(),
        ..Private::default()
    };
    converge(ctx, change.planned, &fresh.store(), "update").await
}

/// Removes the ServiceAccount and reader RBAC this resource created, unless someone else
/// (e.g. a later Istio install) has taken the ServiceAccount over.
async fn remove_reader(remote: &Cluster, v: &Value, deadline: &Deadline) -> Result<(), KubeError> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    // Other targets' tokens for the same ServiceAccount: it is still in use.
    let secrets: Api<Secret> = Api::namespaced(remote.client.clone(), sa_ns);
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let action = format!("listing token secrets in namespace {sa_ns}");
    let tokens =
        crate::kube::retry::retry(&remote.name, &action, deadline, || secrets.list(&selector))
            .await?;
    let in_use = tokens.items.iter().any(|t| {
        t.type_.as_deref() == Some(rs::TOKEN_SECRET_TYPE)
            && t.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(rs::SA_NAME_ANNOTATION))
                .is_some_and(|n| n == sa)
    });
    if in_use {
        tracing::info!(cluster = %remote.name, "ServiceAccount {sa_ns}/{sa} still has tokens of other targets; leaving it");
        return Ok(());
    }
    let sas: Api<ServiceAccount> = Api::namespaced(remote.client.clone(), sa_ns);
    if let Some(live) = remote.get_opt(&sas, sa, deadline).await? {
        let foreign = live
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref().is_some_and(|x| x != FIELD_MANAGER));
        if foreign {
            tracing::info!(cluster = %remote.name, "ServiceAccount {sa_ns}/{sa} is managed by others now; leaving it");
            return Ok(());
        }
        remote.delete(&sas, sa, false, deadline).await?;
    }
    let rbac = rs::reader_rbac_name(sa_ns, sa);
    let bindings: Api<ClusterRoleBinding> = Api::all(remote.client.clone());
    remote.delete(&bindings, &rbac, false, deadline).await?;
    let roles: Api<ClusterRole> = Api::all(remote.client.clone());
    remote.delete(&roles, &rbac, false, deadline).await?;
    Ok(())
}

/// Whether `token` still authenticates against the remote API server (TokenReview). `None`
/// when the provider's credentials may not ask.
async fn token_authenticates(
    remote: &Cluster,
    token: &rs::Token,
    deadline: &Deadline,
) -> Result<Option<bool>, KubeError> {
    let api: Api<TokenReview> = Api::all(remote.client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.token.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    let result =
        crate::kube::retry::retry(&remote.name, "creating a TokenReview", deadline, || {
            api.create(&pp, &review)
        })
        .await;
    match result {
        Ok(r) => Ok(Some(
            r.status.and_then(|s| s.authenticated).unwrap_or(false),
        )),
        Err(e) if e.code() == Some(403) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn observe(
    ctx: &Ctx,
    state: &Value,
    private_bytes: &[u8],
) -> Result<Option<Applied>, KubeError> {
    let mut private = Private::load(private_bytes);
    let deadline = Deadline::new(READ_TIMEOUT, ctx.cancel.clone());
    let c = conns(state);
    let target = connect(&c.target_conn).await?;
    let namespace = str_of(state, &["namespace"]);
    let cluster_name = str_of(state, &["remote", "cluster_name"]).to_string();
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    let live = target
        .get_opt(&target_secrets, &rs::secret_name(&cluster_name), &deadline)
        .await?;
    // The remote gets less patience: a remote that is down (or already destroyed, its
    // kubeconfig context gone) must not block the plan, least of all the refresh before a
    // destroy.
    let patience = remote_patience(&deadline);
    let remote_side = async {
        let remote = connect(&c.remote_conn).await?;
        let secret = match (&private.token_namespace, &private.token_name) {
            (Some(ns), Some(n)) => {
                let api: Api<Secret> = Api::namespaced(remote.client.clone(), ns);
                remote.get_opt(&api, n, &patience).await?
            }
            _ => None,
        };
        Ok::<_, KubeError>((remote, secret))
    };
    let (remote, token_secret) = match remote_side.await {
        Ok(found) => found,
        Err(e) if tolerable_on_destroy(&e) => {
            ctx.warn(None, "Remote cluster unreachable", &format!("The token in the remote cluster was not checked: {e}. The target secret was checked; the token is checked again on the next refresh."));
            let mut state = state.clone();
            state.set(
                "kubeconfig_sha256",
                live.as_ref()
                    .and_then(|s| rs::live_kubeconfig_sha256(s, &cluster_name))
                    .map(Value::from)
                    .unwrap_or(Value::Null),
            );
            return Ok(Some(Applied {
                state,
                private: private_bytes.to_vec(),
            }));
        }
        Err(e) => return Err(e),
    };
    if live.is_none() && token_secret.is_none() {
        return Ok(None);
    }
    let mut state = state.clone();
    let server = effective_server(&state, &c.remote_conn)?;
    state.set("server", Value::from(server.as_str()));
    let mut token = token_secret.as_ref().and_then(rs::token_of);
    if let (Some(t), Some(true)) = (&token, state.get("verify_token").as_bool()) {
        let verdict = match token_authenticates(&remote, t, &patience).await {
            Ok(v) => v,
            Err(e) if tolerable_on_destroy(&e) => {
                ctx.warn(
                    Some(at(&["verify_token"])),
                    "Cannot verify the token",
                    &format!("{e}"),
                );
                Some(true)
            }
            Err(e) => return Err(e),
        };
        match verdict {
            Some(true) => {}
            Some(false) => {
                tracing::info!(cluster = %remote.name, "the remote token no longer authenticates");
                private.token_invalid = true;
                token = None;
            }
            None => ctx.warn(Some(at(&["verify_token"])), "Cannot verify the token", &format!("cluster {}: the provider's credentials may not create TokenReviews (authentication.k8s.io), so the token was not checked.", remote.name)),
        }
    }
    match &token {
        Some(_) => state.set(
            "token_secret_name",
            private
                .token_name
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        // Gone, unpopulated or revoked: the next plan mints a new one.
        None => state.set("token_secret_name", Value::Null),
    }
    private.desired_sha256 = token.as_ref().map(|t| {
        rs::sha256_hex(
            rs::render_kubeconfig(&rs::KubeconfigSpec {
                cluster_name: &cluster_name,
                server: &server,
                tls_server_name: state.get("remote").get("tls_server_name").as_str(),
                token: t,
            })
            .as_bytes(),
        )
    });
    state.set(
        "kubeconfig_sha256",
        live.as_ref()
            .and_then(|s| rs::live_kubeconfig_sha256(s, &cluster_name))
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    if state.get("wait_for_sync").as_bool() == Some(true) && live.is_some() {
        let status = observe_sync(ctx, &target, namespace, &cluster_name, &deadline).await;
        state.set("sync_status", status);
    }
    Ok(Some(Applied {
        state,
        private: private.store(),
    }))
}

/// How long one answer of istiod serves the refresh of other remote secrets in its cluster.
const SYNC_VIEW_MAX_AGE: Duration = Duration::from_secs(2);

/// The remote's sync status as the target's istiod reports it now (null: no istiod). When
/// istiod cannot be asked, a warning, and the status reads `unknown`.
async fn observe_sync(
    ctx: &Ctx,
    target: &Cluster,
    namespace: &str,
    cluster_name: &str,
    deadline: &Deadline,
) -> Value {
    let patience = remote_patience(deadline);
    match istiod::views_shared(target, namespace, SYNC_VIEW_MAX_AGE, &patience).await {
        Ok(views) if views.is_empty() => Value::Null,
        Ok(views) => {
            let statuses: Vec<istiod::Sync> = views
                .iter()
                .filter(|v| v.pod.ready)
                .filter_map(|v| v.status_of(cluster_name))
                .collect();
            match statuses.iter().max() {
                Some(worst) => Value::from(worst.as_str()),
                None => {
                    ctx.warn(
                        Some(at(&["sync_status"])),
                        "istiod could not be asked",
                        &format!(
                            "cluster {}: no Ready istiod pod in namespace {namespace} answered: {}",
                            target.name,
                            views
                                .iter()
                                .map(|v| format!(
                                    "{}: {}",
                                    v.pod.name,
                                    v.clusters.as_ref().err().map_or("answered", String::as_str)
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    );
                    Value::from("unknown")
                }
            }
        }
        Err(e) => {
            ctx.warn(
                Some(at(&["sync_status"])),
                "istiod could not be asked",
                &format!(
                    "The sync status of remote cluster {cluster_name:?} was not refreshed: {e}"
                ),
            );
            Value::from("unknown")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plan

fn plan_remote_secret(plan: &mut Plan<'_>) {
    let config = plan.config;
    let remote = config.get("remote");
    let name = remote.get("cluster_name");
    let ns = plan.planned.get("namespace").clone();
    match (name.as_str(), ns.as_str()) {
        (Some(n), Some(ns)) => {
            let secret = rs::secret_name(n);
            plan.planned
                .set("id", Value::from(format!("{ns}/{secret}")));
            plan.planned.set("secret_name", Value::from(secret));
        }
        _ => {
            if name.as_str().is_none() {
                plan.planned.set("secret_name", Value::Unknown);
            }
            plan.planned.set("id", Value::Unknown);
        }
    }
    let configured = configured_server(config);
    // Which cluster the remote connection reaches can change with these (or be unknown).
    let remote_retargeted = !plan.is_create()
        && ["host", "config_path", "config_context"].iter().any(|k| {
            let new = plan.planned.get("remote").get("kubernetes").get(k);
            new.is_unknown() || new != plan.prior.get("remote").get("kubernetes").get(k)
        });
    let server = match configured {
        // From the remote connection's kubeconfig: known once applied, unless the server
        // was configured before or the connection was pointed elsewhere (then the
        // kubeconfig's value replaces it at apply).
        Value::Null
            if plan.is_create()
                || remote_retargeted
                || !configured_server(plan.prior).is_null() =>
        {
            Value::Unknown
        }
        Value::Null => plan.prior.get("server").clone(),
        other => other,
    };
    plan.planned.set("server", server.clone());
    if plan.is_create() {
        plan.planned.set("token_secret_name", Value::Unknown);
        plan.planned.set("kubeconfig_sha256", Value::Unknown);
    } else {
        let private = Private::load(plan.prior_private);
        let (prior, planned) = (plan.prior, &plan.planned);
        let changed = |path: &[&str]| {
            let (mut a, mut b) = (prior, planned);
            for p in path {
                a = a.get(p);
                b = b.get(p);
            }
            a != b
        };
        // Pointed at another cluster, the token may have to be minted there.
        let rotate = remote_retargeted
            || changed(&["token_rotation"])
            || changed(&["remote", "service_account"])
            || changed(&["remote", "service_account_namespace"])
            || prior.get("token_secret_name").is_null();
        let prior_sha = prior.get("kubeconfig_sha256").as_str().map(str::to_string);
        let rewrite = rotate
            || server != *prior.get("server")
            || changed(&["remote", "tls_server_name"])
            || prior_sha.is_none()
            || prior_sha != private.desired_sha256;
        if rotate {
            plan.planned.set("token_secret_name", Value::Unknown);
        }
        if rewrite {
            plan.planned.set("kubeconfig_sha256", Value::Unknown);
        }
    }
    if let Some(s) = server.as_str().filter(|s| rs::is_loopback_server(s)) {
        let diags = &mut plan.diags;
        loopback_warning(
            &mut |sum, det| diags.warning_at(at(&["remote", "server"]), sum, det),
            s,
        );
    }
}

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
        converge(ctx, change.planned, change.private, "create").await
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
mod tests {
    use super::*;
    use crate::plugin::schema::lint;

    fn kube(ctx: &str) -> Value {
        Value::object([
            ("config_path", Value::from("/kc")),
            ("config_context", Value::from(ctx)),
        ])
    }

    fn config(name: &str, target: Value, remote: Value) -> Value {
        Value::object([
            ("namespace", Value::from("istio-system")),
            ("kubernetes", target),
            (
                "remote",
                Value::object([
                    ("cluster_name", Value::from(name)),
                    ("service_account", Value::from(rs::DEFAULT_SERVICE_ACCOUNT)),
                    ("service_account_namespace", Value::from("istio-system")),
                    ("create_service_account", Value::from(false)),
                    ("kubernetes", remote),
                ]),
            ),
        ])
    }

    fn error_paths(config: &Value) -> Vec<String> {
        let mut d = Diagnostics::new();
        validate_config(config, &mut d);
        d.0.iter()
            .map(|x| x.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn schema_is_documented_and_nothing_secret_is_stored() {
        let s = schema();
        assert_eq!(lint(&s.block, ""), Vec::<String>::new());
        let remote = s.block.nested("remote").unwrap();
        assert_eq!((remote.min_items, remote.max_items), (1, 1));
        assert!(
            remote
                .block
                .nested("kubernetes")
                .unwrap()
                .block
                .attribute("token")
                .unwrap()
                .sensitive
        );
        assert!(remote.block.attribute("cluster_name").unwrap().force_new);
        // No attribute holds the kubeconfig or the token.
        for a in &s.block.attributes {
            assert!(
                !["kubeconfig", "token"].contains(&a.name.as_str()),
                "{}",
                a.name
            );
        }
    }

    #[test]
    fn cluster_name_and_server_are_checked_on_their_path() {
        let mut c = config("West_1", kube("c1"), kube("c2"));
        let mut remote = c.get("remote").clone();
        remote.set("server", Value::from("10.0.0.1:6443"));
        c.set("remote", remote);
        assert_eq!(error_paths(&c), ["remote.cluster_name", "remote.server"]);
        assert!(error_paths(&config("west-1", kube("c1"), kube("c2"))).is_empty());
    }

    #[test]
    fn same_cluster_is_an_error_when_known() {
        assert_eq!(
            error_paths(&config("west", kube("c1"), kube("c1"))),
            ["remote.kubernetes"]
        );
        let host = |h: &str| Value::object([("host", Value::from(h))]);
        assert_eq!(
            error_paths(&config(
                "west",
                host("https://a:6443/"),
                host("https://a:6443")
            )),
            ["remote.kubernetes"]
        );
        assert!(error_paths(&config(
            "west",
            host("https://a:6443"),
            host("https://b:6443")
        ))
        .is_empty());
        // Unknown (created in the same apply): checked at apply time instead.
        let unknown = Value::object([("host", Value::Unknown)]);
        assert!(error_paths(&config("west", unknown, host("https://a:6443"))).is_empty());
    }

    fn planned(prior: &Value, config: &Value, private: &Private) -> (Value, Vec<String>) {
        let s = schema();
        let bytes = private.store();
        let mut proposed = config.clone();
        for k in [
            "id",
            "secret_name",
            "token_secret_name",
            "server",
            "kubeconfig_sha256",
        ] {
            proposed.set(k, prior.get(k).clone());
        }
        let mut plan = Plan::new(&s, prior, proposed, config, &bytes);
        plan_remote_secret(&mut plan);
        let warnings = plan.diags.0.iter().map(|d| d.summary.clone()).collect();
        (plan.planned, warnings)
    }

    #[test]
    fn plan_mints_rewrites_and_warns_as_needed() {
        let mut cfg = config("west", kube("c1"), kube("c2"));
        cfg.set("token_rotation", Value::Null);
        cfg.set("verify_token", Value::from(false));
        // Create: server from the kubeconfig is unknown until apply.
        let (p, w) = planned(&Value::Null, &cfg, &Private::default());
        assert_eq!(
            p.get("secret_name").as_str(),
            Some("istio-remote-secret-west")
        );
        assert_eq!(
            p.get("id").as_str(),
            Some("istio-system/istio-remote-secret-west")
        );
        assert!(p.get("server").is_unknown() && p.get("token_secret_name").is_unknown());
        assert!(w.is_empty());

        let mut prior = cfg.clone();
        prior.set("id", Value::from("istio-system/istio-remote-secret-west"));
        prior.set("secret_name", Value::from("istio-remote-secret-west"));
        prior.set("token_secret_name", Value::from("tok"));
        prior.set("server", Value::from("https://127.0.0.1:1234"));
        prior.set("kubeconfig_sha256", Value::from("aaa"));
        let private = Private {
            desired_sha256: Some("aaa".into()),
            ..Default::default()
        };
        // No change: nothing unknown, but the loopback warning shows.
        let (p, w) = planned(&prior, &cfg, &private);
        assert_eq!(p, prior);
        assert_eq!(w, ["The remote API server address is a loopback address"]);

        // The target secret drifted: rewrite, same token.
        let drifted = Private {
            desired_sha256: Some("bbb".into()),
            ..Default::default()
        };
        let (p, _) = planned(&prior, &cfg, &drifted);
        assert!(p.get("kubeconfig_sha256").is_unknown());
        assert_eq!(p.get("token_secret_name").as_str(), Some("tok"));

        // Rotation: new token and rewrite.
        let mut rotated = cfg.clone();
        rotated.set("token_rotation", Value::from("2"));
        let (p, _) = planned(&prior, &rotated, &private);
        assert!(p.get("token_secret_name").is_unknown() && p.get("kubeconfig_sha256").is_unknown());

        // Server override: known at plan, rewrite, no warning for a routable address.
        let mut overridden = cfg.clone();
        let mut remote = cfg.get("remote").clone();
        remote.set("server", Value::from("https://10.1.2.3:6443"));
        overridden.set("remote", remote);
        let (p, w) = planned(&prior, &overridden, &private);
        assert_eq!(p.get("server").as_str(), Some("https://10.1.2.3:6443"));
        assert!(p.get("kubeconfig_sha256").is_unknown());
        assert_eq!(p.get("token_secret_name").as_str(), Some("tok"));
        assert!(w.is_empty());

        // Token revoked (refresh cleared the name): mint again.
        let mut revoked = prior.clone();
        revoked.set("token_secret_name", Value::Null);
        let (p, _) = planned(&revoked, &cfg, &private);
        assert!(p.get("token_secret_name").is_unknown());
    }
}
