//! `mesh_verification`: the seed's "Verify the installation" as a resource. In every listed
//! cluster it runs Istio's HelloWorld sample (answering with the cluster's name) and a curl
//! client, then calls `helloworld.<namespace>:5000/hello` from every client until every
//! cluster's HelloWorld has answered: the proof that traffic crosses clusters and networks.
//! When a pair never connects, the error says why, from what the clusters show.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::istio::verification::Images;
use crate::kube::Connection;
use crate::plugin::resource::{timeout, timeouts_block, validate_timeouts};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, NestedBlock, Plan,
    Resource, Schema, Value,
};
use crate::resources::kubernetes;

mod apply;
mod diagnose;
mod probe;

pub struct MeshVerification;

const DESCRIPTION: &str = "Proves the mesh carries traffic: the last step of Istio's multicluster guides (\"Verify the installation\") as a resource. In every `cluster` it deploys Istio's HelloWorld sample as `helloworld-<name>`, answering with the cluster's `name` as its version, behind Service `helloworld` (which every cluster gets, so the name resolves everywhere), and the curl sample as a client, in `namespace` labelled for sidecar injection. Once the pods are Ready and have their sidecars, it runs `curl helloworld.<namespace>:5000/hello` in every client through the API server's pod exec (what `kubectl exec` does) until every cluster's HelloWorld has answered every client, or the timeout passes.

`reachability` records which versions each client saw. When a client never hears from a cluster, the apply fails and names each failing pair with the likely cause the provider can see: no remote secret for that pair, or istiod has not synced it; the server's network has no east-west gateway, the gateway has no address or does not expose services; the two clusters' CAs do not chain to a root both trust.

The workloads are removed once the check has run (also when it fails), unless `keep_workloads = true`; destroy removes whatever is left. A namespace the check created is deleted; in an existing one only the check's objects are removed, and the labels it added (injection included) are given back. Changing any argument, or `triggers`, runs the check again. Refresh does not run it: the result is that of the last apply.";

const DEFAULT_NAMESPACE: &str = "sample";
const DEFAULT_ISTIO_NAMESPACE: &str = "istio-system";
const DEFAULT_REQUESTS: i64 = 10;
const MAX_REQUESTS: i64 = 1000;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

// ---------------------------------------------------------------------------------------------
// Schema

fn cluster_block() -> NestedBlock {
    NestedBlock::list(
        "cluster",
        Block::new("A cluster to test, once per cluster: it runs a HelloWorld and a client, and its client must reach every listed cluster's HelloWorld.")
            .attr(Attribute::string("name", "The cluster's name in the mesh: its `mesh_cluster` `cluster_name` (istiod's `CLUSTER_ID`). Its HelloWorld answers with it as its version, and the diagnosis looks it up in the other clusters' remote secrets. A DNS-1123 label, unique among the blocks.").required())
            .attr(Attribute::string("revision", "The control plane revision whose injector should give the workloads their sidecars: the namespace gets `istio.io/rev=<revision>`. Default: the default revision (`istio-injection=enabled`).").optional())
            .attr(Attribute::string("istio_namespace", "Namespace of istiod and `cacerts` in this cluster, read when diagnosing a failure.").default(DEFAULT_ISTIO_NAMESPACE))
            .attr(kubernetes::connection_attribute())
            .block(kubernetes::block()),
        1,
    )
}

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(Attribute::string("namespace", "Namespace of the workloads in every cluster, created when missing (and then deleted with them).").default(DEFAULT_NAMESPACE))
            .attr(Attribute::string("hub", "Registry path holding the samples' images under their usual names (`<hub>/examples-helloworld-v1:1.0`, `<hub>/curl:<tag>`), for clusters that cannot pull from Docker Hub. `helloworld_image` and `curl_image` override it.").optional())
            .attr(Attribute::string("helloworld_image", &format!("Image of the HelloWorld server. It must answer `GET /hello` on port 5000 with `Hello version: <SERVICE_VERSION>, ...`. Default `{}` (from `hub` when set).", crate::istio::verification::DEFAULT_HELLOWORLD_IMAGE)).optional())
            .attr(Attribute::string("curl_image", &format!("Image of the client; it must have `curl` and `/bin/sleep`. Default `{}` (from `hub` when set).", crate::istio::verification::DEFAULT_CURL_IMAGE)).optional())
            .attr(Attribute::number("requests", "Requests each client sends at least; it keeps going until every cluster has answered or the timeout passes. Between 1 and 1000.").default(DEFAULT_REQUESTS))
            .attr(Attribute::string_map("triggers", "Any values; a change runs the check again (like `terraform_data`'s `triggers_replace`, but in place). E.g. the ids of the remote secrets, or a `timestamp()` to check on every apply.").optional())
            .attr(Attribute::bool("keep_workloads", "Leave HelloWorld and the clients running after the check (for poking around with `kubectl exec`). Destroy removes them.").default(false))
            .attr(Attribute::string("id", "`<namespace>/<cluster names joined with ,>`.").computed())
            .attr(Attribute::string_list_map("reachability", "For each client cluster, the sorted versions (cluster names) whose HelloWorld answered it. A complete mesh lists every cluster for every client.").computed())
            .block(cluster_block())
            .block(timeouts_block(&[("create", "5m"), ("update", "5m"), ("delete", "5m")])),
    )
}

// ---------------------------------------------------------------------------------------------
// Configuration, decoded once

/// One `cluster` block.
#[derive(Clone)]
pub(crate) struct ClusterConfig {
    pub name: String,
    pub revision: Option<String>,
    pub istio_namespace: String,
    pub connection: Connection,
}

/// The resource's configuration (planned values: all known at apply).
pub(crate) struct Config {
    pub namespace: String,
    pub images: Images,
    pub requests: u32,
    pub keep_workloads: bool,
    pub clusters: Vec<ClusterConfig>,
}

impl Config {
    /// Fails only on a `connection` that validation would have refused (a hand-edited state).
    pub fn decode(v: &Value) -> Result<Config, Failure> {
        let s = |k: &str| v.get(k).as_str().map(str::to_string);
        let clusters = v
            .get("cluster")
            .as_list()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Ok(ClusterConfig {
                    name: c.get("name").as_str().unwrap_or_default().to_string(),
                    revision: c.get("revision").as_str().map(str::to_string),
                    istio_namespace: c
                        .get("istio_namespace")
                        .as_str()
                        .unwrap_or(DEFAULT_ISTIO_NAMESPACE)
                        .to_string(),
                    connection: kubernetes::connection_of(c).map_err(|e| {
                        let mut d = Diagnostics::new();
                        d.error("Invalid connection", e.to_string());
                        Failure::from(d)
                    })?,
                })
            })
            .collect::<Result<_, Failure>>()?;
        Ok(Config {
            namespace: s("namespace").unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
            images: Images::resolve(
                s("hub").as_deref(),
                s("helloworld_image").as_deref(),
                s("curl_image").as_deref(),
            ),
            requests: v
                .get("requests")
                .as_i64()
                .unwrap_or(DEFAULT_REQUESTS)
                .clamp(1, MAX_REQUESTS) as u32,
            keep_workloads: v.get("keep_workloads").as_bool().unwrap_or(false),
            clusters,
        })
    }

    /// The instance label of everything this check creates.
    pub fn instance(&self) -> String {
        instance(&self.namespace)
    }
}

fn instance(namespace: &str) -> String {
    format!("verification.{namespace}")
}

// ---------------------------------------------------------------------------------------------
// Validate

fn validate_config(config: &Value, diags: &mut Diagnostics) {
    let at = AttributePath::attrs;
    if let Some(ns) = config.get("namespace").as_str() {
        if !crate::istio::is_dns1123_label(ns) {
            diags.error_at(
                at(&["namespace"]),
                "Invalid namespace",
                format!("{ns:?} is not a valid namespace name (DNS-1123 label)."),
            );
        } else if ns.starts_with("kube-") || ns == "default" || ns == "istio-system" {
            diags.error_at(at(&["namespace"]), "Namespace not allowed", format!("The check creates and deletes its workloads (and the namespace, when it creates it) in {ns:?}; use a namespace of its own, such as \"sample\"."));
        }
    }
    if let Some(n) = config.get("requests").as_i64() {
        if !(1..=MAX_REQUESTS).contains(&n) {
            diags.error_at(
                at(&["requests"]),
                "Invalid requests",
                format!("{n} is out of range: between 1 and {MAX_REQUESTS} requests per client."),
            );
        }
    }
    for key in ["hub", "helloworld_image", "curl_image"] {
        if let Some(v) = config.get(key).as_str() {
            if v.trim().is_empty() || v.chars().any(char::is_whitespace) {
                diags.error_at(
                    at(&[key]),
                    format!("Invalid {key}"),
                    format!("{v:?} is not an image reference (no blanks)."),
                );
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, c) in config
        .get("cluster")
        .as_list()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let path = |leaf: &str| {
            let mut p = AttributePath::attrs(&["cluster"]);
            p.push_index(i as i64);
            p.push_attr(leaf);
            p
        };
        if let Some(name) = c.get("name").as_str() {
            if !crate::istio::is_dns1123_label(name) {
                diags.error_at(path("name"), "Invalid cluster name", format!("{name:?} is not a DNS-1123 label; it must be the cluster's mesh name (mesh_cluster cluster_name)."));
            } else if !names.insert(name.to_string()) {
                diags.error_at(
                    path("name"),
                    "Duplicate cluster name",
                    format!("Cluster {name:?} is listed twice; list each cluster once."),
                );
            }
        }
        for key in ["revision", "istio_namespace"] {
            if let Some(v) = c.get(key).as_str() {
                if !crate::istio::is_dns1123_label(v) {
                    diags.error_at(
                        path(key),
                        format!("Invalid {key}"),
                        format!("{v:?} is not a DNS-1123 label."),
                    );
                }
            }
        }
        let mut at = AttributePath::attrs(&["cluster"]);
        at.push_index(i as i64);
        kubernetes::validate_choice(c, &at, diags);
    }
    validate_timeouts(config, diags);
}

// ---------------------------------------------------------------------------------------------
// Plan

/// Everything but `timeouts` is part of the check: a change to it runs the check again.
fn reruns(plan: &Plan<'_>) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if !v.is_null() {
            v.set("timeouts", Value::Null);
            v.set("reachability", Value::Null);
            v.set("id", Value::Null);
        }
        v
    };
    plan.is_create() || strip(&plan.planned) != strip(plan.prior)
}

fn plan_verification(plan: &mut Plan<'_>) {
    if plan.is_destroy() {
        return;
    }
    let names: Option<Vec<String>> = plan
        .planned
        .get("cluster")
        .as_list()
        .map(|l| {
            l.iter()
                .map(|c| c.get("name").as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .unwrap_or(None);
    let id = match (plan.planned.get("namespace").as_str(), names) {
        (Some(ns), Some(names)) => Value::from(format!("{ns}/{}", names.join(","))),
        _ => Value::Unknown,
    };
    plan.planned.set("id", id);
    if reruns(plan) {
        plan.set_unknown("reachability");
    } else {
        let prior = plan.prior.get("reachability").clone();
        plan.planned.set("reachability", prior);
    }
}

/// The state after a check: the planned values with what the check saw.
fn state_with(planned: &Value, reachability: &BTreeMap<String, BTreeSet<String>>) -> Value {
    let mut state = planned.clone();
    let matrix = reachability
        .iter()
        .map(|(client, seen)| {
            (
                client.clone(),
                Value::List(seen.iter().map(|v| Value::from(v.clone())).collect()),
            )
        })
        .collect();
    state.set("reachability", Value::Map(matrix));
    state
}

// ---------------------------------------------------------------------------------------------
// The resource

#[tonic::async_trait]
impl Resource for MeshVerification {
    fn type_name(&self) -> &'static str {
        "mesh_verification"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        validate_config(config, diags);
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        plan_verification(plan);
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        let timeout = timeout(change.planned, "create", DEFAULT_TIMEOUT);
        let config = Config::decode(change.planned)?;
        let seen = apply::check(ctx, &config, timeout).await?;
        Ok(Applied::new(state_with(change.planned, &seen)))
    }

    async fn update(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        if !change.planned.get("reachability").is_unknown() {
            // Only timeouts changed: nothing to run.
            return Ok(Applied::new(change.planned.clone()));
        }
        let timeout = timeout(change.planned, "update", DEFAULT_TIMEOUT);
        let config = Config::decode(change.planned)?;
        let prior = Config::decode(change.prior)?;
        apply::remove_dropped(ctx, &prior, &config, timeout).await?;
        let seen = apply::check(ctx, &config, timeout).await?;
        Ok(Applied::new(state_with(change.planned, &seen)))
    }

    async fn delete(&self, ctx: &Ctx, prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        let timeout = timeout(prior, "delete", DELETE_TIMEOUT);
        apply::remove_all(ctx, &Config::decode(prior)?, timeout).await
    }

    async fn read(
        &self,
        _ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        // The check's result stands until the next apply runs it again.
        Ok(Some(Applied {
            state: state.clone(),
            private: private.to_vec(),
        }))
    }
}

#[cfg(test)]
mod tests;
