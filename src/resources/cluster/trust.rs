//! Trust over time, decided at plan from state and configuration: intermediate renewal,
//! staged root rotation (superset/subset bundles), trust mode changes; and at apply, reusing the
//! intermediate whose key lives only in `cacerts`, and waiting for istiod to load a new bundle.

use super::*;

/// The renewal window of a trust block (`intermediate` or `ca`); the default when unset.
pub(super) fn renew_before(block: &Value) -> Duration {
    block
        .get("renew_before")
        .as_str()
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or_else(|| parse_duration(DEFAULT_RENEW_BEFORE).expect("default duration"))
}

/// Whether a certificate expiring at `not_after` (RFC 3339) is within `window` of expiry now.
pub(super) fn due_for_renewal(not_after: &str, window: Duration) -> Option<time::OffsetDateTime> {
    let end = pki::parse_rfc3339(not_after).ok()?;
    (crate::clock::now() + window >= end).then_some(end)
}

/// Renewal at plan time, from prior state and configuration alone: an intermediate issued from
/// `root_ca` that refresh found due (`ready_for_renewal`) is reissued in place (the trust
/// outputs become unknown, which apply reads as "issue a new one"); a `ca {}` one inside its
/// window gets a warning. Apply reissues only when the plan said so.
pub(super) fn plan_renewal(plan: &mut Plan<'_>) -> bool {
    let Some(not_after) = plan.prior.get("ca_not_after").as_str().map(str::to_string) else {
        return false;
    };
    if !plan.planned.get("root_ca").is_null() {
        if plan.prior.get("ready_for_renewal").as_bool() == Some(true) {
            plan.diags.warning_at(
                AttributePath::attrs(&["intermediate", "renew_before"]),
                "Intermediate CA due for renewal",
                format!("The intermediate CA in cacerts expires at {not_after} (within renew_before); this plan reissues it from the same root, in place."),
            );
            return true;
        }
    } else if !plan.planned.get("ca").is_null() {
        let window = renew_before(plan.planned.get("ca"));
        if let Some(end) = due_for_renewal(&not_after, window) {
            plan.diags.warning_at(
                AttributePath::attrs(&["ca", "cert_pem"]),
                "Intermediate CA expires soon",
                format!("The intermediate CA given in ca.cert_pem expires at {} (within ca.renew_before). The provider cannot renew a CA it did not issue: issue a new one (e.g. from Vault PKI) and set it here before then.", pki::format_rfc3339(end)),
            );
        }
    }
    false
}

/// `root` followed by the additional roots not already in it, each re-encoded (same order,
/// duplicates by fingerprint dropped).
pub(super) fn with_additional_roots(root: &str, extra: &Value) -> String {
    let mut seen: Vec<String> = pki::parse_certs_pem(root)
        .unwrap_or_default()
        .iter()
        .map(|c| pki::fingerprint_sha256(c.der()))
        .collect();
    let mut parts = vec![root.to_string()];
    for pem in extra
        .as_list()
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_str)
    {
        for cert in pki::parse_certs_pem(pem).unwrap_or_default() {
            let fp = pki::fingerprint_sha256(cert.der());
            if !seen.contains(&fp) {
                seen.push(fp);
                parts.push(cert.to_pem());
            }
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    pki::concat_pem(&refs)
}

/// Fingerprints of the certificates in a PEM bundle; `None` when it does not parse.
pub(super) fn bundle_fingerprints(pem: &str) -> Option<std::collections::BTreeSet<String>> {
    let certs = pki::parse_certs_pem(pem).ok()?;
    Some(
        certs
            .iter()
            .map(|c| pki::fingerprint_sha256(c.der()))
            .collect(),
    )
}

/// The planned trust bundle as far as configuration knows it: the fingerprints of the known
/// roots, and whether a root is still unknown (e.g. a `mesh_root_ca` being replaced).
pub(super) fn planned_roots(planned: &Value) -> Option<(std::collections::BTreeSet<String>, bool)> {
    let primary = if !planned.get("root_ca").is_null() {
        planned.get("root_ca").get("cert_pem")
    } else if !planned.get("ca").is_null() {
        planned.get("ca").get("root_cert_pem")
    } else {
        return None;
    };
    let mut roots = std::collections::BTreeSet::new();
    let mut unknown = false;
    let extra = planned.get("additional_roots_pem");
    let extra = if extra.is_unknown() {
        unknown = true;
        &[][..]
    } else {
        extra.as_list().unwrap_or_default()
    };
    for v in std::iter::once(primary).chain(extra.iter()) {
        match v.as_str() {
            Some(pem) => roots.extend(bundle_fingerprints(pem).unwrap_or_default()),
            None if v.is_unknown() => unknown = true,
            None => {}
        }
    }
    Some((roots, unknown))
}

/// The path of the attribute that sets the signing root, for messages.
pub(super) fn root_path(planned: &Value) -> AttributePath {
    if !planned.get("root_ca").is_null() {
        AttributePath::attrs(&["root_ca", "cert_pem"])
    } else {
        AttributePath::attrs(&["ca", "root_cert_pem"])
    }
}

/// Refuses, at plan, a trust-bundle change that istiod would reject and that breaks mTLS
/// between workloads of the old and the new root: neither a superset nor a subset of the
/// bundle in `cacerts` now. Decided from prior state and configuration alone.
pub(super) fn check_trust_change(plan: &mut Plan<'_>) {
    if plan.is_create() || plan.planned.get("allow_trust_break").as_bool() == Some(true) {
        return;
    }
    let Some(old) = plan
        .prior
        .get("root_cert_pem")
        .as_str()
        .and_then(bundle_fingerprints)
        .filter(|o| !o.is_empty())
    else {
        return;
    };
    let Some((new, unknown)) = planned_roots(&plan.planned) else {
        return;
    };
    let superset = new.is_superset(&old);
    let subset = !unknown && new.is_subset(&old);
    if superset || subset {
        return;
    }
    let why = if unknown {
        "The new bundle holds a root that is not known yet (e.g. a mesh_root_ca being replaced, or renewed by early_renewal_hours) and does not keep every current root"
    } else {
        "The new bundle is neither a superset nor a subset of the current one"
    };
    plan.diags.error_at(
        root_path(&plan.planned),
        "Unsafe change of the mesh's root of trust",
        format!("{why}, so this apply would swap the root in one step: istiod refuses such a root-cert.pem, and workloads with certificates from the old root cannot talk to those that trust only the new one until every certificate has rotated. Rotate in three applies instead, each a superset or subset change:\n  1. create the next root (e.g. mesh_root_ca.next) and set additional_roots_pem = [<next root>] — trust both, still sign with the old;\n  2. point root_ca at the next root and set additional_roots_pem = [<old root>] — intermediates reissued, both still trusted;\n  3. once every workload certificate has rotated (24 h by default), remove additional_roots_pem and the old root.\nSee docs/guides/root-rotation.md. For a throw-away mesh, set allow_trust_break = true."),
    );
}

/// Where istiod's CA comes from: its own self-signed one, `root_ca` or `ca`.
pub(super) fn trust_mode(state: &Value) -> &'static str {
    if !state.get("root_ca").is_null() {
        "root_ca"
    } else if !state.get("ca").is_null() {
        "ca"
    } else {
        "none"
    }
}

/// Plan: a running istiod keeps the CA it started with when the trust mode changes, so apply
/// restarts it; say so.
pub(super) fn plan_trust_mode_change(plan: &mut Plan<'_>) {
    let (before, after) = (trust_mode(plan.prior), trust_mode(&plan.planned));
    if plan.is_create() || before == after || plan.planned.get("control_plane").is_null() {
        return;
    }
    if plan.planned.get("control_plane").get("role").as_str() == Some("remote") {
        return;
    }
    let at = if after == "none" { before } else { after };
    plan.diags.warning_at(
        AttributePath::attrs(&[at]),
        "istiod will be restarted",
        format!("The trust mode changes from {before} to {after}. istiod reads cacerts at start-up and watches it only when it started with it, so this apply restarts istiod (a rollout of its Deployment, as `kubectl rollout restart` does) and waits for the new pods; workloads get certificates from the new CA as theirs are renewed."),
    );
}

pub(super) fn trust_inputs_changed(prior: &Value, planned: &Value) -> bool {
    // The renewal window says when to reissue, not what: changing it alone changes nothing.
    // Nor does the way the root key is given: it must match `root_ca.cert_pem` (checked at
    // validation), so the same certificate means the same key, stored, write-only (always null
    // in plan and state) or re-encoded; a new root changes the certificate.
    let without_window = |v: &Value, k: &str| {
        let mut b = v.get(k).clone();
        if b.as_map().is_some() {
            b.set("renew_before", Value::Null);
            if k == "root_ca" {
                for key in ["private_key_pem", ROOT_KEY_WO, ROOT_KEY_WO_VERSION] {
                    b.set(key, Value::Null);
                }
            }
        }
        b
    };
    ["root_ca", "ca", "intermediate", "namespace", "cluster_name"]
        .iter()
        .any(|k| without_window(prior, k) != without_window(planned, k))
}

pub(super) const TRUST_OUTPUTS: [&str; 5] = [
    "ca_cert_pem",
    "cert_chain_pem",
    "root_cert_pem",
    "ca_not_after",
    "ready_for_renewal",
];

pub(super) fn set_trust_outputs(state: &mut Value, bundle: Option<&CaBundle>) {
    let not_after = bundle
        .and_then(|b| pki::inspect_cert(&b.ca_cert_pem).ok())
        .map(|i| pki::format_rfc3339(i.not_after));
    state.set("ca_cert_pem", bundle.map(|b| b.ca_cert_pem.clone()).into());
    state.set(
        "cert_chain_pem",
        bundle.map(|b| b.cert_chain_pem.clone()).into(),
    );
    state.set(
        "root_cert_pem",
        bundle.map(|b| b.root_cert_pem.clone()).into(),
    );
    // Decided here, at refresh, not at plan: a saved plan is planned again at apply from the
    // same prior state, so the renewal decision must live in that state, not in the clock.
    let ready = not_after.as_deref().map(|end| {
        !state.get("root_ca").is_null()
            && due_for_renewal(end, renew_before(state.get("intermediate"))).is_some()
    });
    state.set("ca_not_after", not_after.into());
    state.set(
        "ready_for_renewal",
        ready.map(Value::from).unwrap_or(Value::Null),
    );
}

/// The longest the provider waits for a running istiod to load a new `cacerts` (the kubelet
/// refreshes a Secret volume within about a minute; a refused bundle never loads).
pub(super) const CACERTS_LOAD_WAIT: Duration = Duration::from_secs(5 * 60);

/// Whether `key_pem` is the private key of certificate `cert_pem`: the intermediate's key
/// found in the cluster, even when someone replaced the certificate next to it.
pub(super) fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    match (
        pki::parse_cert_pem(cert_pem),
        pki::parse_private_key_pem(key_pem),
    ) {
        (Ok(cert), Ok(key)) => key.check_matches(&cert).is_ok(),
        _ => false,
    }
}

/// The intermediate (cert, key) in the live `cacerts` when it is the one the plan keeps
/// (`ca_cert_pem` known and equal to it); `None` otherwise.
pub(super) async fn planned_intermediate_in_cluster(
    cluster: &Cluster,
    secrets: &Api<Secret>,
    planned: &Value,
    deadline: &Deadline,
) -> Result<Option<(String, String)>, KubeError> {
    let Some(want) = planned.get("ca_cert_pem").as_str() else {
        return Ok(None);
    };
    let live = cluster
        .get_opt(secrets, cacerts::SECRET_NAME, deadline)
        .await?;
    Ok(live
        .as_ref()
        .and_then(cacerts::bundle_of)
        .filter(|b| key_matches(want, &b.ca_key_pem))
        .map(|b| (want.to_string(), b.ca_key_pem)))
}

/// After `cacerts` is written with a running control plane: waits until istiod serves the
/// bundle's roots, which it shows by republishing ConfigMap `istio-ca-root-cert`. No Ready
/// istiod (created before the install, a remote): nothing to wait for.
pub(super) async fn wait_for_istiod_to_load(
    cluster: &Cluster,
    namespace: &str,
    bundle: &CaBundle,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let running = istio::istiod::pods(cluster, namespace, None, deadline).await?;
    if !running.iter().any(|p| p.ready) {
        return Ok(());
    }
    let want = bundle_fingerprints(&bundle.root_cert_pem).unwrap_or_default();
    let loaded = move |cm: Option<&ConfigMap>| {
        cm.and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(cacerts::ROOT_CONFIGMAP_KEY))
            .is_some_and(|pem| bundle_fingerprints(pem).as_ref() == Some(&want))
    };
    let capped = deadline.capped(CACERTS_LOAD_WAIT);
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), namespace);
    let what = format!(
        "istiod to load the new trust bundle (ConfigMap {namespace}/{} to hold it)",
        cacerts::ROOT_CONFIGMAP
    );
    match crate::kube::wait::wait_for(cluster, api, cacerts::ROOT_CONFIGMAP, &what, loaded, &capped)
        .await
    {
        Ok(_) => Ok(()),
        Err(KubeError::Timeout { waited, .. }) => Err(KubeError::Config {
            cluster: cluster.name.clone(),
            message: format!("istiod in namespace {namespace} has not loaded the new trust bundle after {:.0}s: ConfigMap {} still holds other roots. istiod loads a changed root-cert.pem only when ISTIO_MULTIROOT_MESH=true and the new roots are a superset or subset of the old (rotate in steps: docs/guides/root-rotation.md), and it watches cacerts only if it started with one: after switching a running control plane to root_ca or ca, restart it (kubectl -n {namespace} rollout restart deploy/istiod). cacerts is written; the next apply checks again.", waited.as_secs_f64(), cacerts::ROOT_CONFIGMAP),
        }),
        Err(e) => Err(e),
    }
}
