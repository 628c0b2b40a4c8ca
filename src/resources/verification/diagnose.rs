//! Explaining a failed check: for every pair that never connected, what the clusters show
//! that would stop it (see `istio::verification::causes`), with what the client last saw.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::api::{Api, ListParams};

use super::apply::Site;
use super::probe::Outcome;
use super::Config;
use crate::istio::eastwest::{service_addresses, Gateway};
use crate::istio::verification::{causes, exposes_services, ClusterFacts, EastWest};
use crate::istio::{cacerts, istiod, NETWORK_LABEL};
use crate::kube::{Cluster, Deadline};
use crate::pki::{parse_certs_pem, Certificate};

/// How long the clusters are read for the explanation.
const READ_FOR: Duration = Duration::from_secs(15);
/// Where istiod keeps its self-signed root when no `cacerts` is given.
const SELF_SIGNED_SECRET: &str = "istio-ca-secret";

/// The error detail for a failed check.
pub(super) async fn explain(
    config: &Config,
    sites: &[Site],
    outcome: &Outcome,
    missing: &[(String, String)],
    operation: &Deadline,
) -> String {
    // Its own bound (the probing may have used the operation's time), but the same
    // StopProvider cancellation.
    let deadline = Deadline::new(READ_FOR, operation.cancel.clone());
    let facts: Vec<ClusterFacts> =
        futures::future::join_all(sites.iter().map(|s| read_facts(s, &deadline))).await;
    let by_name: BTreeMap<&str, &ClusterFacts> =
        facts.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut out =
        String::from("Pairs (client → server) where the server's HelloWorld never answered:\n");
    for (client, server) in missing {
        let sent = outcome.sent.get(client).copied().unwrap_or(0);
        out.push_str(&format!(
            "\n- {client} → {server}: no answer in {sent} requests"
        ));
        if let Some(last) = outcome.last_failure.get(client) {
            out.push_str(&format!(" (the client's last other result: {last})"));
        }
        out.push('.');
        let found = match (by_name.get(client.as_str()), by_name.get(server.as_str())) {
            (Some(c), Some(s)) => causes(c, s, &facts),
            _ => Vec::new(),
        };
        let heard_nothing = outcome.seen.get(client).is_none_or(|s| s.is_empty());
        if found.is_empty() && client == server {
            out.push_str(&format!("\n  The client does not reach HelloWorld in its own cluster, which needs no remote secret, gateway or shared root: the problem is in {client} itself (the client's sidecar, the `helloworld` Service or its endpoints). The last result above says more."));
        } else if found.is_empty() && heard_nothing {
            out.push_str(&format!("\n  The client in {client} was answered by no cluster at all, not even its own: look at the client's side first (see its own pair)."));
        } else if found.is_empty() {
            out.push_str("\n  No cause is visible from here: remote secrets are synced, networks are reachable and the CAs share a root. Check the sidecars' logs and `istioctl proxy-config endpoints` in the client.");
        }
        for cause in found {
            out.push_str(&format!("\n  Likely cause: {cause}."));
        }
    }
    out.push_str("\n\nVersions each client saw:");
    for c in &config.clusters {
        let seen = outcome
            .seen
            .get(&c.name)
            .map(|s| s.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        out.push_str(&format!(
            "\n  {}: [{}]",
            c.name,
            if seen.is_empty() { "none".into() } else { seen }
        ));
    }
    out.push_str(
        "\n\nSee the verification guide (docs/guides/verification.md) for how to read this.",
    );
    out
}

/// What one cluster shows; an aspect that cannot be read stays unknown.
async fn read_facts(site: &Site, deadline: &Deadline) -> ClusterFacts {
    let cluster = &site.cluster;
    let ns = site.config.istio_namespace.as_str();
    let (network, remotes, eastwest, ca, roots) = tokio::join!(
        network(cluster, ns, deadline),
        remotes(cluster, ns, site.config.revision.as_deref(), deadline),
        eastwest(cluster, deadline),
        signing_chain(cluster, ns, deadline),
        trust_roots(cluster, ns, deadline),
    );
    let (signing_chain, self_signed) = match ca {
        Some((chain, self_signed)) => (Some(chain), self_signed),
        None => (None, false),
    };
    ClusterFacts {
        name: site.config.name.clone(),
        network,
        remotes,
        eastwest,
        signing_chain,
        self_signed,
        trust_roots: roots,
    }
}

async fn network(cluster: &Cluster, ns: &str, deadline: &Deadline) -> Option<String> {
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let live = cluster.get_opt(&api, ns, deadline).await.ok()??;
    // An unlabelled namespace is istiod's default network: the empty name.
    Some(
        live.metadata
            .labels
            .and_then(|l| l.get(NETWORK_LABEL).cloned())
            .unwrap_or_default(),
    )
}

async fn remotes(
    cluster: &Cluster,
    ns: &str,
    revision: Option<&str>,
    deadline: &Deadline,
) -> Option<BTreeMap<String, istiod::Sync>> {
    let views = istiod::views(cluster, ns, revision, deadline).await.ok()?;
    if !views.iter().any(|v| v.clusters.is_ok()) {
        return None;
    }
    Some(
        istiod::least_synced(&views)
            .into_iter()
            .map(|(id, (_, sync))| (id, sync))
            .collect(),
    )
}

async fn eastwest(cluster: &Cluster, deadline: &Deadline) -> Option<Vec<EastWest>> {
    let services: Api<Service> = Api::all(cluster.client.clone());
    let params = ListParams::default().labels(NETWORK_LABEL);
    let listed = cluster.list(&services, &params, deadline).await.ok()?;
    let gateways: Api<Gateway> = Api::all(cluster.client.clone());
    let gateways = cluster
        .list(&gateways, &ListParams::default(), deadline)
        .await
        .unwrap_or_default();
    let out = listed
        .iter()
        .filter(|svc| {
            svc.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|ports| ports.iter().any(|p| p.port == 15443))
        })
        .map(|svc| {
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            let svc_ns = svc.metadata.namespace.clone().unwrap_or_default();
            EastWest {
                network: svc
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(NETWORK_LABEL).cloned())
                    .unwrap_or_default(),
                service: format!(
                    "{svc_ns}/{}",
                    svc.metadata.name.as_deref().unwrap_or_default()
                ),
                has_address: !service_addresses(svc).is_empty(),
                // A Gateway applies to gateway pods in its own namespace (Istio's default
                // PILOT_SCOPE_GATEWAY_TO_NAMESPACE is off, so any namespace counts).
                exposes_services: gateways
                    .iter()
                    .any(|g| exposes_services(&g.spec, &selector)),
            }
        })
        .collect();
    Some(out)
}

fn certs(secret_or_map: Option<&String>) -> Option<Vec<Certificate>> {
    parse_certs_pem(secret_or_map?).ok()
}

/// The chain istiod signs with: `cacerts`' `cert-chain.pem` (else `ca-cert.pem` and
/// `root-cert.pem`), or its self-signed root. Only certificates are kept; the key is dropped
/// with the secret.
async fn signing_chain(
    cluster: &Cluster,
    ns: &str,
    deadline: &Deadline,
) -> Option<(Vec<Certificate>, bool)> {
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let text = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    if let Some(s) = cluster
        .get_opt(&secrets, cacerts::SECRET_NAME, deadline)
        .await
        .ok()?
    {
        let chain = certs(text(&s, "cert-chain.pem").as_ref()).or_else(|| {
            let pem = format!(
                "{}{}",
                text(&s, "ca-cert.pem")?,
                text(&s, "root-cert.pem").unwrap_or_default()
            );
            parse_certs_pem(&pem).ok()
        })?;
        return Some((chain, false));
    }
    let s = cluster
        .get_opt(&secrets, SELF_SIGNED_SECRET, deadline)
        .await
        .ok()??;
    Some((certs(text(&s, "ca-cert.pem").as_ref())?, true))
}

/// The roots istiod publishes for its proxies to trust.
async fn trust_roots(cluster: &Cluster, ns: &str, deadline: &Deadline) -> Option<Vec<Certificate>> {
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let cm = cluster
        .get_opt(&maps, cacerts::ROOT_CONFIGMAP, deadline)
        .await
        .ok()??;
    certs(cm.data.as_ref()?.get(cacerts::ROOT_CONFIGMAP_KEY))
}
