//! `data "mesh_status"`: one cluster's mesh as its istiod sees it — the seed's "Verify the
//! installation" step (`istioctl remote-clusters`) as a data source, for outputs and `check`
//! blocks. Reads istiod's pods, each Ready replica's `/debug/clusterz` and `/debug/networkz`
//! (through a port-forward), and presents each remote secret's reader credentials to the
//! remote API server they name.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};

use crate::istio::{istiod, remote_secret as rs};
use crate::kube::{connect, probe_kubeconfig, Cluster, Deadline, KubeError, Probe, Prober};
use crate::plugin::resource::{timeout, timeouts_block, validate_timeouts};
use crate::plugin::value::Type;
use crate::plugin::{Attribute, AttributePath, Block, Ctx, DataSource, Diagnostics, Schema, Value};
use crate::resources::kubernetes;

pub struct MeshStatus;

const DESCRIPTION: &str = "One cluster's mesh as its istiod sees it: istiod's pods, the remote clusters each replica reads (and whether it has synced them), the east-west gateways it routes other networks through, and a `healthy` verdict with the `problems` behind it. What `istioctl remote-clusters` shows, for outputs and `check` blocks.

istiod's debug endpoints (`/debug/clusterz`, `/debug/networkz` on port 15014) answer only local callers, so they are read through a port-forward to each Ready istiod pod, as istioctl does. Each remote secret's reader token is also presented to the remote API server it names (one `list namespaces`), because istiod keeps reporting a remote `synced` after its token is revoked: a rejected token is a problem even while istiod still says `synced`. A server that cannot be reached from where Terraform runs is not reported (it may be reachable only from the cluster). With the same credentials it looks for an istiod in the remote (same namespace): a remote without one needs an istiod here that serves remotes (`external_istiod = true`), and its absence is a problem.

Unlike the resources, which never contact a cluster while planning, a data source whose configuration is known is read during plan (and refresh); when its `kubernetes` block depends on something not yet created, Terraform defers the read to apply.";

const DEFAULT_NAMESPACE: &str = "istio-system";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a remote API server is given to answer the credential check.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn istiod_row() -> Vec<(&'static str, Type)> {
    vec![
        ("name", Type::String),
        ("ready", Type::Bool),
        ("version", Type::String),
        ("revision", Type::String),
    ]
}

fn remote_row() -> Vec<(&'static str, Type)> {
    vec![
        ("cluster_id", Type::String),
        ("secret_name", Type::String),
        ("sync_status", Type::String),
    ]
}

fn gateway_row() -> Vec<(&'static str, Type)> {
    vec![
        ("network", Type::String),
        ("cluster", Type::String),
        ("address", Type::String),
        ("port", Type::Number),
    ]
}

#[tonic::async_trait]
impl DataSource for MeshStatus {
    fn type_name(&self) -> &'static str {
        "mesh_status"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        validate(config, diags);
    }

    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diagnostics> {
        read(ctx, config).await
    }
}

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(Attribute::string("namespace", "Namespace of istiod. Default `\"istio-system\"`.").default(DEFAULT_NAMESPACE))
            .attr(Attribute::string("revision", "Only istiod pods of this revision (`istio.io/rev` label; `default` for the default revision). Default: every istiod in the namespace.").optional())
            .attr(Attribute::string("id", "`<cluster_id>/<namespace>`, or the namespace alone when no istiod answered.").computed())
            .attr(Attribute::string("cluster_id", "The cluster's own ID as istiod reports it (its `CLUSTER_ID`, the mesh_cluster's `cluster_name`); null when no istiod answered.").computed())
            .attr(Attribute::object_list("istiod", &istiod_row(), "istiod's pods, sorted by name: `name`, `ready` (Running and Ready), `version` (the image tag), `revision`.").computed())
            .attr(Attribute::object_list("remote_clusters", &remote_row(), "The remote clusters istiod reads, sorted by ID: `cluster_id`, `secret_name` (`<namespace>/<secret>`), and `sync_status` of the least synced Ready replica: `synced`, `syncing`, `timeout`, `closed`, or `not_seen` (a replica does not list it).").computed())
            .attr(Attribute::object_list("eastwest_gateways", &gateway_row(), "The cross-network gateways istiod routes through (its `/debug/networkz`), this cluster's and those it learned from remote clusters: `network`, `cluster`, `address`, `port`.").computed())
            .attr(Attribute::bool("healthy", "True when `problems` is empty: istiod runs, every replica is Ready and answered, every remote is `synced` on every replica, and no remote secret's token is rejected.").computed())
            .attr(Attribute::string_list("problems", "What is wrong, as plain sentences naming the pod, remote or secret; empty when healthy.").computed())
            .attr(kubernetes::connection_attribute())
            .block(kubernetes::block())
            .block(timeouts_block(&[("read", "1m")])),
    )
}

fn validate(config: &Value, diags: &mut Diagnostics) {
    kubernetes::validate_choice(config, &AttributePath::root(), diags);
    for name in ["namespace", "revision"] {
        if let Some(v) = config.get(name).as_str() {
            if !crate::istio::is_dns1123_label(v) {
                diags.error_at(
                    AttributePath::attrs(&[name]),
                    format!("Invalid {name}"),
                    format!("{v:?} is not a DNS-1123 label (lower-case letters, digits and '-')."),
                );
            }
        }
    }
    validate_timeouts(config, diags);
}

/// What was found, before it becomes the data source's value.
#[derive(Default)]
struct Report {
    cluster_id: Option<String>,
    istiod: Vec<istiod::IstiodPod>,
    remotes: BTreeMap<String, (String, istiod::Sync)>,
    gateways: BTreeSet<(String, String, String, u32)>,
    problems: Vec<String>,
}

async fn read(ctx: &Ctx, config: &Value) -> Result<Value, Diagnostics> {
    let namespace = config
        .get("namespace")
        .as_str()
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let revision = config.get("revision").as_str();
    let deadline = Deadline::new(timeout(config, "read", DEFAULT_TIMEOUT), ctx.cancel.clone());
    let report = async {
        let cluster = connect(&kubernetes::connection_of(config)?).await?;
        let report = observe(&cluster, &namespace, revision, &deadline).await?;
        tracing::info!(
            cluster = %cluster.name,
            read_ms = deadline.elapsed().as_millis() as u64,
            istiod_pods = report.istiod.len(),
            problems = report.problems.len(),
            "mesh status read"
        );
        Ok::<_, KubeError>(report)
    }
    .await
    .map_err(|e| {
        let mut d = Diagnostics::new();
        d.error(format!("Cannot read the mesh status: {e}"), "");
        d
    })?;
    Ok(to_value(config, &namespace, report))
}

async fn observe(
    cluster: &Cluster,
    namespace: &str,
    revision: Option<&str>,
    deadline: &Deadline,
) -> Result<Report, KubeError> {
    let mut report = Report::default();
    // The remote secrets' credentials are checked while istiod is asked: the two need each
    // other only for whether an istiod here serves remotes, which the credential check awaits
    // after its probes (a read sits at the end of every apply and refresh: round trips count).
    let (serves_tx, serves_rx) = tokio::sync::watch::channel(None);
    let istiod = async {
        let views = istiod::views(cluster, namespace, revision, deadline).await?;
        let _ = serves_tx.send(Some(views.iter().any(|v| v.pod.serves_remotes)));
        // Gateways: every replica that answers clusterz is asked for networkz too, on the
        // port-forward its clusterz answer came through.
        let gateways = futures::future::join_all(views.iter().filter(|v| v.clusters.is_ok()).map(
            |v| async move {
                (
                    v.pod.name.clone(),
                    istiod::networkz(cluster, namespace, &v.pod.name, deadline).await,
                )
            },
        ))
        .await;
        Ok::<_, KubeError>((views, gateways))
    };
    let credentials = check_remote_credentials(cluster, namespace, serves_rx, deadline);
    // Either failing fails the read at once, as when they ran one after the other.
    let ((views, gateways), credentials) = futures::future::try_join(istiod, credentials).await?;
    if views.is_empty() {
        report.problems.push(format!(
            "No istiod pod (label app=istiod{}) runs in namespace {namespace}.",
            revision
                .map(|r| format!(", istio.io/rev={r}"))
                .unwrap_or_default()
        ));
    }
    for v in &views {
        report.istiod.push(v.pod.clone());
        match &v.clusters {
            Ok(clusters) => {
                if report.cluster_id.is_none() {
                    report.cluster_id = clusters.first().map(|c| c.id.clone());
                }
            }
            Err(_) if !v.pod.ready => report
                .problems
                .push(format!("istiod pod {} is not Ready.", v.pod.name)),
            Err(e) => report.problems.push(format!(
                "istiod pod {} could not be asked which clusters it reads: {e}",
                v.pod.name
            )),
        }
    }
    report.remotes = istiod::least_synced(&views);
    for (id, (secret, sync)) in &report.remotes {
        if *sync != istiod::Sync::Synced {
            report.problems.push(format!(
                "Remote cluster {id} (secret {secret}) is {} on at least one istiod replica: {}.",
                sync.as_str(),
                sync.meaning()
            ));
        }
    }
    for (pod, answer) in gateways {
        match answer {
            Ok(gws) => report.gateways.extend(
                gws.into_iter()
                    .map(|g| (g.network, g.cluster, g.addr, g.port)),
            ),
            Err(e) => report.problems.push(format!(
                "istiod pod {pod} could not be asked for its network gateways: {e}"
            )),
        }
    }
    report.problems.extend(credentials);
    Ok(report)
}

/// Presents each remote secret's kubeconfig to the API server it names, all at once, and
/// returns the problems found. istiod latches `synced` after its first read, so a token revoked
/// later shows only this way. `serves`: whether an istiod here serves remotes, once known
/// (then a remote without istiod of its own is no problem, and is not asked; never known:
/// istiod could not be read, and the read fails on that).
async fn check_remote_credentials(
    cluster: &Cluster,
    namespace: &str,
    serves: tokio::sync::watch::Receiver<Option<bool>>,
    deadline: &Deadline,
) -> Result<Vec<String>, KubeError> {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = format!("{}=true", rs::MULTICLUSTER_LABEL);
    let listed = cluster
        .list(&secrets, &ListParams::default().labels(&selector), deadline)
        .await?;
    let mut checks = Vec::new();
    for secret in &listed {
        let name = secret.metadata.name.clone().unwrap_or_default();
        for (cluster_id, data) in secret.data.iter().flatten() {
            let Ok(yaml) = std::str::from_utf8(&data.0) else {
                continue;
            };
            let yaml = yaml.to_string();
            let (name, cluster_id) = (name.clone(), cluster_id.clone());
            let mut serves = serves.clone();
            checks.push(async move {
                let probe = probe_kubeconfig(&yaml, PROBE_TIMEOUT).await;
                // Asked with the same credentials, right after: one round trip more per remote.
                let serves = serves.wait_for(Option::is_some).await.map(|s| *s);
                let own_istiod = match (&probe, serves) {
                    (Probe::Accepted(remote), Ok(Some(false))) => {
                        Some(runs_istiod(remote.clone(), namespace).await)
                    }
                    _ => None,
                };
                (name, cluster_id, probe, own_istiod)
            });
        }
    }
    let mut problems = Vec::new();
    for (secret, cluster_id, probe, own_istiod) in futures::future::join_all(checks).await {
        match probe {
            Probe::Accepted(_) => {
                if own_istiod == Some(false) {
                    problems.push(format!(
                        "Cluster {cluster_id} runs no istiod of its own (a remote), but no istiod here serves remotes (EXTERNAL_ISTIOD): its sidecars cannot get injected or certificates. Install this cluster's control plane with external_istiod = true."
                    ));
                }
            }
            Probe::Refused(401) => problems.push(format!(
                "The remote API server of cluster {cluster_id} rejects the reader token in secret {namespace}/{secret} (401): the token was revoked or its ServiceAccount deleted. Mint a new one (mesh_remote_secret: change token_rotation, or verify_token = true)."
            )),
            Probe::Refused(403) => problems.push(format!(
                "The reader token in secret {namespace}/{secret} authenticates to cluster {cluster_id} but may not list namespaces there (403): its ServiceAccount lacks Istio's reader ClusterRole."
            )),
            // Overload or a server fault says nothing about the credentials: not checked.
            Probe::Refused(code @ (429 | 500..=599)) => tracing::debug!(
                "remote credentials of {cluster_id} in {namespace}/{secret} not checked: the server answered {code}"
            ),
            Probe::Refused(code) => problems.push(format!(
                "The remote API server of cluster {cluster_id} (secret {namespace}/{secret}) answered {code} to the reader token."
            )),
            Probe::Unreachable(why) => tracing::debug!(
                "remote credentials of {cluster_id} in {namespace}/{secret} not checked: {why}"
            ),
        }
    }
    Ok(problems)
}

/// Whether a remote cluster runs an istiod in `namespace` (asked with the reader's own
/// credentials, which may list pods). Unknown counts as yes: no problem is claimed.
async fn runs_istiod(remote: Prober, namespace: &str) -> bool {
    let params = ListParams::default().labels("app=istiod").limit(1);
    let pods = remote.list::<k8s_openapi::api::core::v1::Pod>(Some(namespace), &params);
    match tokio::time::timeout(PROBE_TIMEOUT, pods).await {
        Ok(Ok(list)) => !list.items.is_empty(),
        _ => true,
    }
}

fn to_value(config: &Value, namespace: &str, r: Report) -> Value {
    let mut v = config.clone();
    v.set("namespace", Value::from(namespace));
    v.set(
        "id",
        Value::from(match &r.cluster_id {
            Some(id) => format!("{id}/{namespace}"),
            None => namespace.to_string(),
        }),
    );
    v.set(
        "cluster_id",
        r.cluster_id.clone().map(Value::from).unwrap_or(Value::Null),
    );
    v.set(
        "istiod",
        Value::List(
            r.istiod
                .iter()
                .map(|p| {
                    Value::object([
                        ("name", Value::from(p.name.as_str())),
                        ("ready", Value::from(p.ready)),
                        ("version", Value::from(p.version.as_str())),
                        ("revision", Value::from(p.revision.as_str())),
                    ])
                })
                .collect(),
        ),
    );
    v.set(
        "remote_clusters",
        Value::List(
            r.remotes
                .iter()
                .map(|(id, (secret, sync))| {
                    Value::object([
                        ("cluster_id", Value::from(id.as_str())),
                        ("secret_name", Value::from(secret.as_str())),
                        ("sync_status", Value::from(sync.as_str())),
                    ])
                })
                .collect(),
        ),
    );
    v.set(
        "eastwest_gateways",
        Value::List(
            r.gateways
                .iter()
                .map(|(network, cluster, addr, port)| {
                    Value::object([
                        ("network", Value::from(network.as_str())),
                        ("cluster", Value::from(cluster.as_str())),
                        ("address", Value::from(addr.as_str())),
                        ("port", Value::from(i64::from(*port))),
                    ])
                })
                .collect(),
        ),
    );
    v.set("healthy", Value::from(r.problems.is_empty()));
    v.set(
        "problems",
        Value::List(r.problems.into_iter().map(Value::from).collect()),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::schema::lint;

    #[test]
    fn schema_is_documented() {
        let problems = lint(&schema().block, "mesh_status");
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn the_value_holds_every_row_and_the_verdict() {
        let report = Report {
            cluster_id: Some("c1".into()),
            istiod: vec![istiod::IstiodPod {
                name: "istiod-1".into(),
                ready: true,
                version: "1.30.3".into(),
                revision: "default".into(),
                serves_remotes: false,
            }],
            remotes: BTreeMap::from([(
                "c2".to_string(),
                (
                    "istio-system/istio-remote-secret-c2".to_string(),
                    istiod::Sync::Timeout,
                ),
            )]),
            gateways: BTreeSet::from([(
                "net2".to_string(),
                "c3".to_string(),
                "203.0.113.9".to_string(),
                15443,
            )]),
            problems: vec!["Remote cluster c2 is timeout".into()],
        };
        let v = to_value(
            &Value::object([("revision", Value::Null)]),
            "istio-system",
            report,
        );
        assert_eq!(v.get("id").as_str(), Some("c1/istio-system"));
        assert_eq!(v.get("healthy").as_bool(), Some(false));
        let remotes = v.get("remote_clusters").as_list().unwrap();
        assert_eq!(remotes[0].get("sync_status").as_str(), Some("timeout"));
        let gws = v.get("eastwest_gateways").as_list().unwrap();
        assert_eq!(gws[0].get("port").as_i64(), Some(15443));
        assert_eq!(
            v.get("istiod").as_list().unwrap()[0].get("ready").as_bool(),
            Some(true)
        );
        assert!(v.is_wholly_known());
    }

    #[test]
    fn bad_names_are_reported_on_their_path() {
        let config = Value::object([("namespace", Value::from("Istio_System"))]);
        let mut d = Diagnostics::new();
        validate(&config, &mut d);
        assert_eq!(d.0[0].path.as_ref().unwrap().to_string(), "namespace");
    }
}
