//! `mesh_cluster`: joins one cluster to the mesh — the istiod namespace with the cluster's
//! network label, the mesh's trust (an intermediate CA in Secret `cacerts`, written before any
//! istiod starts), and the Istio control plane, installed by Istio's own installer running in
//! the cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::Api;
use serde::{Deserialize, Serialize};

use crate::istio::operator::{self, ControlPlane, Identity, Installer, Role};
use crate::istio::{self, cacerts, cacerts::CaBundle, install, restart};
use crate::kube::{
    connect, created_by, has_instance_label, labels, mark_created, Cluster, Deadline, KubeError,
};
use crate::pki::{self, CaSigner, CaSpec, Field, KeyAlgorithm};
use crate::plugin::resource::{parse_duration, timeout, timeouts_block};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, NestedBlock, Plan,
    Resource, Schema, Value,
};
use crate::resources::kubernetes;

pub struct MeshCluster;

const DESCRIPTION: &str = "Joins one Kubernetes cluster to the mesh: creates (or adopts) the istiod namespace, labels it with the cluster's network (`topology.istio.io/network`), and installs the mesh's trust as Istio's plug-in CA — Secret `cacerts` with `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem` and `root-cert.pem` — before any istiod starts.

Trust comes from one of:

- `root_ca { ... }`: the provider issues this cluster's own intermediate CA from the mesh root (Istio's tooling defaults: RSA 4096, 10 years, `O=Istio`, `CN=Intermediate CA`, `L=<cluster_name>`, path length 0, SAN `istiod.<namespace>.svc`; tune them in `intermediate { ... }`). The intermediate is kept across plans and reissued when the root or the `intermediate` settings change, and in place once refresh finds it within `intermediate.renew_before` of expiry (`ready_for_renewal`).
- `ca { ... }`: bring your own intermediate (e.g. from Vault PKI), so the root key never enters Terraform. It is checked before anything is changed, as istiod and Envoy will use it: it must chain to `root_cert_pem`, match its key, be a CA and be valid now, with positive serial numbers, SHA-256 or stronger signatures (RSA-PSS with a salt as long as the hash included), and on each CA an extendedKeyUsage that is absent or lists both serverAuth and clientAuth. It is written to `cacerts` re-encoded: unindented PEM, the key block alone (no `EC PARAMETERS`), and only the first certificate of `cert_pem` (a full chain there continues in `cert_chain_pem`).
- neither: no `cacerts`; istiod then runs its own self-signed CA, which only works for a single primary.

istiod reads `cacerts` at start-up and watches it only when it started with it, so changing the trust mode (none, `root_ca`, `ca`) of a running primary restarts istiod (a rollout of its Deployment, waited for); the plan warns about it.

With `control_plane { ... }` the provider installs Istio: it renders an IstioOperator for this cluster (mesh ID, cluster name, network; `profile: remote`, `remotePilotAddress` and the injection path for a remote; `externalIstiod` for a primary serving remotes; your `values` and `mesh_config` merged in) and runs `istioctl install` **inside the cluster** as a Job (image `<hub>/istioctl:<version>`) under a temporary cluster-admin ServiceAccount, then waits for istiod to be Available (on a remote: for the injector webhook). The Job and its RBAC are removed afterwards; a failed install shows the installer's log in the error. Changing the version or values re-runs the installer (in-place upgrade). No local `istioctl` is needed. Omit the block to install istiod yourselves (e.g. with Helm) after this resource, with the same `mesh_id`, `cluster_name` and `network`.

Drift is repaired: a deleted or edited `cacerts`, a changed network label, or a missing istiod shows in the next plan and is put back by apply. If the namespace is gone, the resource is planned for creation again. Destroy uninstalls the control plane: every object carrying the installer's owner labels for this cluster's IstioOperator. That is more than `istioctl uninstall -f` without `--purge`, which keeps Istio's base (the reader ServiceAccount, the base RBAC, the validating webhook): after destroy nothing of the install is left, except Istio's CRDs, which are deleted only with `remove_crds_on_destroy` (deleting them deletes every Istio resource in the cluster). Then it removes `cacerts`, and the namespace if this resource created it (otherwise only its labels). What it created is marked in the cluster itself — annotation `mesh.tfmesh.dev/created-by` on a namespace it created, `mesh.tfmesh.dev/istio-operators` listing the control planes it installs — so destroy removes it even when an earlier apply was killed before Terraform saved state.

The intermediate CA's private key is never stored in Terraform's state: it lives only in `cacerts`, where a repair reads it back; when `cacerts` is gone, the repair issues a new intermediate from the root. (The root key, given in `root_ca`, is in the state of `mesh_root_ca` and in this resource's configuration.)";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const READ_TIMEOUT: Duration = Duration::from_secs(5 * 60);

// ---------------------------------------------------------------------------------------------
// Schema

/// How long before the intermediate expires a plan renews it (Go duration).
const DEFAULT_RENEW_BEFORE: &str = "720h";

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(Attribute::string("cluster_name", "This cluster's name in the mesh (`values.global.multiCluster.clusterName`): a DNS-1123 label, unique in the mesh.").required().force_new())
            .attr(Attribute::string("mesh_id", "The mesh ID (`values.global.meshID`), the same on every cluster of the mesh.").required())
            .attr(Attribute::string("network", "The network this cluster's pods are on (`topology.istio.io/network`). Clusters whose pods can reach each other directly share a network; otherwise traffic goes through east-west gateways.").required())
            .attr(Attribute::string("namespace", "Namespace of istiod and `cacerts`.").default("istio-system").force_new())
            .attr(Attribute::string("id", "The cluster name.").computed().stable())
            .attr(Attribute::string("ca_cert_pem", "The cluster's signing (intermediate) CA certificate, as found in `cacerts`.").computed().stable())
            .attr(Attribute::string("cert_chain_pem", "Chain from the signing certificate up to the root, as in `cacerts`.").computed().stable())
            .attr(Attribute::string("root_cert_pem", "The mesh root certificate(s), as in `cacerts`.").computed().stable())
            .attr(Attribute::string("ca_not_after", "Expiry of the signing CA certificate (RFC 3339).").computed().stable())
            .attr(Attribute::bool("ready_for_renewal", "True once refresh finds the intermediate issued from `root_ca` within `intermediate.renew_before` of `ca_not_after`; the plan then reissues it in place. Null without trust settings; always false with `ca {}` (the provider cannot renew a CA it did not issue: the plan warns instead).").computed().stable())
            .attr(Attribute::string("control_plane_version", "The Istio version running, as observed on istiod: its `operator.istio.io/version` label, else its image tag, else the configured version (on a remote, the injector webhook's label). Null without `control_plane`, or when istiod is missing.").computed().stable())
            .attr(Attribute::string_list("additional_roots_pem", "Extra root certificates (PEM, one per element) appended to `root-cert.pem`: trusted, never used to sign. The tool of a staged root rotation (see the root-rotation guide): first add the next root here, then switch `root_ca` to it and list the old one here, then drop it. Changing it rewrites `cacerts` without reissuing the intermediate.").optional())
            .attr(Attribute::bool("allow_trust_break", "Allow a change of the trust bundle (`root-cert.pem`) that is neither a superset nor a subset of the current one, e.g. replacing the root in one apply. Workloads holding certificates from the old root and those trusting only the new one cannot talk until every certificate has rotated: for throw-away meshes only. Default false: such a plan is refused, naming the staged procedure.").default(false))
            .block(kubernetes::block())
            .block(NestedBlock::single(
                "root_ca",
                Block::new("The mesh root CA to issue this cluster's intermediate from, typically `mesh_root_ca`'s outputs. Conflicts with `ca`.")
                    .attr(Attribute::string("cert_pem", "Root certificate, PEM.").required())
                    .attr(Attribute::string("private_key_pem", "Root private key, PEM (PKCS#8, PKCS#1 or SEC1).").required().sensitive()),
            ))
            .block(NestedBlock::single(
                "intermediate",
                Block::new("Settings of the intermediate CA issued from `root_ca` (Istio's defaults when omitted). Changing them reissues it.")
                    .attr(Attribute::string("key_algorithm", "`\"RSA\"` or `\"ECDSA\"`.").default("RSA"))
                    .attr(Attribute::number("rsa_bits", "RSA key size: 2048, 3072 or 4096.").default(4096))
                    .attr(Attribute::string("ecdsa_curve", "`\"P256\"` or `\"P384\"`.").default("P256"))
                    .attr(Attribute::number("validity_period_hours", "Validity in hours (never beyond the root's).").default(87600))
                    .attr(Attribute::string("organization", "Subject organization (O).").default("Istio"))
                    .attr(Attribute::string("renew_before", "Renew the intermediate this long before it expires, as a duration (`\"720h\"`). A plan made within that window of `ca_not_after` shows an in-place update that reissues the intermediate from the same root; istiod reloads `cacerts` without a restart. Changing it alone reissues nothing. Default `\"720h\"` (30 days), also when the block is omitted.").default(DEFAULT_RENEW_BEFORE)),
            ))
            .block(NestedBlock::single(
                "ca",
                Block::new("Bring your own intermediate CA for this cluster instead of `root_ca`: the root key never enters Terraform. Conflicts with `root_ca`.")
                    .attr(Attribute::string("cert_pem", "The cluster's signing CA certificate, PEM. It may be followed by its chain: istiod uses the first certificate.").required())
                    .attr(Attribute::string("private_key_pem", "Its private key, PEM.").required().sensitive())
                    .attr(Attribute::string("cert_chain_pem", "Chain from `cert_pem` up to the root, PEM (the root may be included).").required())
                    .attr(Attribute::string("root_cert_pem", "The mesh root certificate(s), PEM.").required())
                    .attr(Attribute::string("renew_before", "Warn at plan when `cert_pem` expires within this duration (`\"720h\"`): the provider cannot renew an intermediate it did not issue. Default `\"720h\"`.").default(DEFAULT_RENEW_BEFORE)),
            ))
            .block(control_plane_block())
            .block(timeouts_block(&[("create", "20m"), ("update", "20m"), ("delete", "20m")])),
    )
}

fn control_plane_block() -> NestedBlock {
    NestedBlock::single(
        "control_plane",
        Block::new("Install the Istio control plane with Istio's own installer, run in the cluster. Omit it to install istiod yourselves.")
            .attr(Attribute::string("version", "Istio version, e.g. `\"1.30.3\"` (the istioctl image tag and the control plane's tag).").required())
            .attr(Attribute::string("hub", "Image repository of Istio's images, e.g. a mirror for air-gapped clusters.").default("docker.io/istio"))
            .attr(Attribute::string("role", "`\"primary\"` (runs istiod) or `\"remote\"` (uses a primary's istiod through its east-west gateway).").default("primary"))
            .attr(Attribute::bool("external_istiod", "A primary that also serves remote clusters (`values.global.externalIstiod`). Every primary named by a remote's `primary_cluster_name` needs it: without it that istiod never leads for the remote and the remote's sidecars cannot start. A remote's resource cannot see this setting, so it is not checked at plan.").default(false))
            .attr(Attribute::string("remote_pilot_address", "For `role = \"remote\"`: the address of the primary's istiod, usually its east-west gateway's `address`.").optional())
            .attr(Attribute::string("primary_cluster_name", "For `role = \"remote\"`: the `cluster_name` of the primary whose istiod controls this cluster (namespace annotation `topology.istio.io/controlPlaneClusters`). That primary must set `external_istiod = true`.").optional())
            .attr(Attribute::string("revision", "Istio revision name, for canary upgrades: a DNS-1123 label (it becomes part of object names, e.g. `istiod-<revision>`). Omit it for the default (unrevisioned) control plane; `\"default\"` is refused, since Istio would name the objects after it (`istiod-default`). Changing it installs the new revision, then removes the old one.").optional())
            .attr(Attribute::string("values", "JSON object deep-merged into the IstioOperator's `spec.values` (use `jsonencode`). The multicluster keys (mesh ID, cluster name, network, remote settings) are set by the provider.").optional())
            .attr(Attribute::string("mesh_config", "JSON object for the IstioOperator's `spec.meshConfig` (use `jsonencode`).").optional())
            .attr(Attribute::string_map("installer_pod_annotations", "Extra annotations on the installer Job's pod.").optional())
            .attr(Attribute::bool("remove_crds_on_destroy", "Also delete Istio's CRDs on destroy (and when `control_plane` is removed). This deletes every Istio resource in the cluster. Without it the CRDs stay, so Istio resources of other tools survive.").default(false)),
    )
}

// ---------------------------------------------------------------------------------------------
// Validate

fn field_path(block: &str, f: Field) -> AttributePath {
    AttributePath::attrs(&[block, f.name()])
}

/// What the configuration asks for, once known.
enum Trust {
    Root { signer: Box<CaSigner>, spec: CaSpec },
    Own(CaBundle),
    None,
}

fn intermediate_spec(
    config: &Value,
    cluster: &str,
    namespace: &str,
    diags: &mut Diagnostics,
) -> Option<CaSpec> {
    let mut spec = CaSpec::istio_intermediate(cluster, namespace);
    let b = config.get("intermediate");
    if b.is_null() {
        return Some(spec);
    }
    if !b.is_wholly_known() {
        return None;
    }
    let at = |n: &str| AttributePath::attrs(&["intermediate", n]);
    let algorithm = b.get("key_algorithm").as_str().unwrap_or("RSA");
    match KeyAlgorithm::parse(
        algorithm,
        b.get("rsa_bits").as_i64(),
        b.get("ecdsa_curve").as_str(),
    ) {
        Ok(k) => spec.key_algorithm = k,
        Err(e @ pki::PkiError::UnknownKeyAlgorithm { .. }) => {
            diags.error_at(at("key_algorithm"), "Invalid key_algorithm", e.to_string())
        }
        Err(e @ pki::PkiError::UnsupportedRsaBits { .. }) => {
            diags.error_at(at("rsa_bits"), "Invalid rsa_bits", e.to_string())
        }
        Err(e) => diags.error_at(at("ecdsa_curve"), "Invalid ecdsa_curve", e.to_string()),
    }
    if let Some(h) = b.get("validity_period_hours").as_i64() {
        if h <= 0 {
            diags.error_at(
                at("validity_period_hours"),
                "Invalid validity_period_hours",
                format!("must be a positive number of hours, got {h}"),
            );
        }
        spec.validity_hours = h;
    }
    if let Some(o) = b.get("organization").as_str() {
        spec.organization = o.to_string();
    }
    if let Some(r) = b.get("renew_before").as_str() {
        match parse_duration(r) {
            Ok(d) if d.as_secs() >= spec.validity_hours.max(0) as u64 * 3600 => diags.error_at(
                at("renew_before"),
                "Invalid renew_before",
                format!("{r:?} is not shorter than validity_period_hours ({}h): every plan would renew the intermediate.", spec.validity_hours),
            ),
            Ok(_) => {}
            Err(e) => diags.error_at(
                at("renew_before"),
                "Invalid renew_before",
                format!("{e}. Use a duration such as \"720h\"."),
            ),
        }
    }
    Some(spec)
}

/// The renewal window of a trust block (`intermediate` or `ca`); the default when unset.
fn renew_before(block: &Value) -> Duration {
    block
        .get("renew_before")
        .as_str()
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or_else(|| parse_duration(DEFAULT_RENEW_BEFORE).expect("default duration"))
}

/// Whether a certificate expiring at `not_after` (RFC 3339) is within `window` of expiry now.
fn due_for_renewal(not_after: &str, window: Duration) -> Option<time::OffsetDateTime> {
    let end = pki::parse_rfc3339(not_after).ok()?;
    (crate::clock::now() + window >= end).then_some(end)
}

/// Renewal at plan time, from prior state and configuration alone: an intermediate issued from
/// `root_ca` that refresh found due (`ready_for_renewal`) is reissued in place (the trust
/// outputs become unknown, which apply reads as "issue a new one"); a `ca {}` one inside its
/// window gets a warning. Apply reissues only when the plan said so.
fn plan_renewal(plan: &mut Plan<'_>) -> bool {
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
fn with_additional_roots(root: &str, extra: &Value) -> String {
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
fn bundle_fingerprints(pem: &str) -> Option<std::collections::BTreeSet<String>> {
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
fn planned_roots(planned: &Value) -> Option<(std::collections::BTreeSet<String>, bool)> {
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
fn root_path(planned: &Value) -> AttributePath {
    if !planned.get("root_ca").is_null() {
        AttributePath::attrs(&["root_ca", "cert_pem"])
    } else {
        AttributePath::attrs(&["ca", "root_cert_pem"])
    }
}

/// Refuses, at plan, a trust-bundle change that istiod would reject and that breaks mTLS
/// between workloads of the old and the new root: neither a superset nor a subset of the
/// bundle in `cacerts` now. Decided from prior state and configuration alone.
fn check_trust_change(plan: &mut Plan<'_>) {
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

/// Checks everything knowable now; returns the trust to install when all of it is known.
fn trust_from(config: &Value, diags: &mut Diagnostics) -> Option<Trust> {
    let (root, own) = (config.get("root_ca"), config.get("ca"));
    if !root.is_null() && !own.is_null() {
        diags.error_at(AttributePath::attrs(&["ca"]), "Conflicting trust settings", "Set either root_ca (the provider issues this cluster's intermediate) or ca (bring your own intermediate), not both.");
        return None;
    }
    let cluster = config.get("cluster_name").as_str().unwrap_or_default();
    let namespace = config.get("namespace").as_str().unwrap_or("istio-system");
    if let Some(r) = own.get("renew_before").as_str() {
        if let Err(e) = parse_duration(r) {
            diags.error_at(
                AttributePath::attrs(&["ca", "renew_before"]),
                "Invalid renew_before",
                format!("{e}. Use a duration such as \"720h\"."),
            );
        }
    }
    if !root.is_null() {
        let spec = intermediate_spec(config, cluster, namespace, diags);
        // The certificate can be checked on its own while the key is still unknown.
        if let Some(cert) = root.get("cert_pem").as_str() {
            let checked = pki::parse_cert_pem(cert).and_then(|c| {
                c.check_is_ca()?;
                c.check_valid_at(time::OffsetDateTime::now_utc())
            });
            if let Err(e) = checked {
                diags.error_at(
                    AttributePath::attrs(&["root_ca", "cert_pem"]),
                    "Invalid root CA",
                    e.to_string(),
                );
                return None;
            }
        }
        let (cert, key) = (
            root.get("cert_pem").as_str()?,
            root.get("private_key_pem").as_str()?,
        );
        return match CaSigner::from_pem(cert, key) {
            Ok(signer) => Some(Trust::Root {
                signer: Box::new(signer),
                spec: spec?,
            }),
            Err(e) => {
                diags.error_at(
                    field_path("root_ca", e.field),
                    "Invalid root CA",
                    e.to_string(),
                );
                None
            }
        };
    }
    if !own.is_null() {
        let get = |n: &str| own.get(n).as_str();
        let (cert, key, chain, rootc) = (
            get("cert_pem")?,
            get("private_key_pem")?,
            get("cert_chain_pem")?,
            get("root_cert_pem")?,
        );
        return match pki::validate_ca_bundle(cert, key, chain, rootc) {
            // Written as validated and re-encoded, in the form istiod reads.
            Ok(checked) => Some(Trust::Own(CaBundle {
                ca_cert_pem: checked.pem.cert_pem,
                ca_key_pem: checked.pem.private_key_pem,
                cert_chain_pem: checked.pem.cert_chain_pem,
                root_cert_pem: checked.pem.root_cert_pem,
            })),
            Err(e) => {
                diags.error_at(
                    field_path("ca", e.field),
                    "Invalid CA bundle",
                    e.to_string(),
                );
                None
            }
        };
    }
    Some(Trust::None)
}

/// `ca.cert_pem` as apply writes it to `cacerts`: its first certificate, re-encoded.
fn normalised_ca_cert(cert_pem: &Value) -> Value {
    cert_pem
        .as_str()
        .and_then(|pem| pki::parse_certs_pem(pem).ok())
        .and_then(|certs| certs.first().map(pki::Certificate::to_pem))
        .map_or(Value::Unknown, Value::from)
}

/// Where istiod's CA comes from: its own self-signed one, `root_ca` or `ca`.
fn trust_mode(state: &Value) -> &'static str {
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
fn plan_trust_mode_change(plan: &mut Plan<'_>) {
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

fn validate_config(config: &Value, diags: &mut Diagnostics) {
    if let Some(name) = config.get("cluster_name").as_str() {
        if !istio::is_dns1123_label(name) {
            diags.error_at(AttributePath::attrs(&["cluster_name"]), "Invalid cluster_name", format!("{name:?} is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters."));
        }
    }
    for attr in ["mesh_id", "network", "namespace"] {
        if config
            .get(attr)
            .as_str()
            .is_some_and(|s| s.trim().is_empty())
        {
            diags.error_at(
                AttributePath::attrs(&[attr]),
                format!("Empty {attr}"),
                format!("{attr} must not be empty."),
            );
        }
    }
    if let Some(ns) = config.get("namespace").as_str() {
        if !ns.is_empty() && !istio::is_dns1123_label(ns) {
            diags.error_at(
                AttributePath::attrs(&["namespace"]),
                "Invalid namespace",
                format!("{ns:?} is not a valid namespace name."),
            );
        }
    }
    kubernetes::validate(
        config.get("kubernetes"),
        &AttributePath::attrs(&["kubernetes"]),
        diags,
    );
    trust_from(config, diags);
    for (i, v) in config
        .get("additional_roots_pem")
        .as_list()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(pem) = v.as_str() else { continue };
        let checked = pki::parse_certs_pem(pem)
            .and_then(|certs| certs.iter().try_for_each(|c| c.check_is_ca()));
        if let Err(e) = checked {
            let mut path = AttributePath::attrs(&["additional_roots_pem"]);
            path.push_index(i as i64);
            diags.error_at(path, "Invalid additional root", e.to_string());
        }
    }
    if !config.get("control_plane").is_null() {
        control_plane_from(config, diags);
    }
}

fn is_version(v: &str) -> bool {
    let (core, pre) = v.split_once('-').unwrap_or((v, ""));
    let parts: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && pre
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

fn is_image_repository(hub: &str) -> bool {
    let last = hub.rsplit('/').next().unwrap_or("");
    !hub.is_empty()
        && !hub.contains('@')
        && !last.contains(':')
        && !hub.ends_with('/')
        && hub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./-_:".contains(&b))
}

fn json_object(
    v: &Value,
    path: AttributePath,
    diags: &mut Diagnostics,
) -> Option<serde_json::Value> {
    match v {
        Value::Null => Some(serde_json::json!({})),
        Value::String(s) => match serde_json::from_str::<serde_json::Value>(s) {
            Ok(j) if j.is_object() => Some(j),
            Ok(_) => {
                diags.error_at(
                    path,
                    "Not a JSON object",
                    "Use jsonencode({ ... }) with an object.",
                );
                None
            }
            Err(e) => {
                diags.error_at(path, "Invalid JSON", e.to_string());
                None
            }
        },
        _ => None,
    }
}

/// The control plane settings, checked; `None` when absent, unknown or invalid.
fn control_plane_from(config: &Value, diags: &mut Diagnostics) -> Option<ControlPlane> {
    let b = config.get("control_plane");
    if b.is_null() {
        return None;
    }
    let at = |n: &str| AttributePath::attrs(&["control_plane", n]);
    let version = b.get("version");
    if let Some(v) = version.as_str() {
        if !is_version(v) {
            diags.error_at(
                at("version"),
                "Invalid version",
                format!("{v:?} is not an Istio version such as \"1.30.3\"."),
            );
        }
    }
    let hub = b.get("hub").as_str().unwrap_or("docker.io/istio");
    if !b.get("hub").is_unknown() && !is_image_repository(hub) {
        diags.error_at(at("hub"), "Invalid hub", format!("{hub:?} is not an image repository such as \"docker.io/istio\" (no tag or digest)."));
    }
    let role = match b.get("role").as_str().unwrap_or("primary") {
        "primary" => Role::Primary,
        "remote" => Role::Remote,
        other => {
            diags.error_at(
                at("role"),
                "Invalid role",
                format!("{other:?} is not \"primary\" or \"remote\"."),
            );
            Role::Primary
        }
    };
    if role == Role::Remote {
        for needed in ["remote_pilot_address", "primary_cluster_name"] {
            if b.get(needed).is_null() {
                diags.error_at(
                    at(needed),
                    format!("Missing {needed}"),
                    format!("A remote cluster needs {needed}: it has no istiod of its own."),
                );
            }
        }
        if b.get("external_istiod").as_bool() == Some(true) {
            diags.error_at(
                at("external_istiod"),
                "Invalid external_istiod",
                "external_istiod applies to a primary that serves remotes, not to a remote.",
            );
        }
    }
    // The revision becomes part of object names (`istiod-<revision>`, the IstioOperator's).
    if let Some(r) = b.get("revision").as_str() {
        if r == operator::RESERVED_REVISION {
            diags.error_at(
                at("revision"),
                "Invalid revision",
                "\"default\" is not a revision name: Istio would name the control plane after it (istiod-default, istio-sidecar-injector-default) instead of installing the unrevisioned one. Omit revision for the default control plane, or choose another name such as \"1-30\" or \"canary\".",
            );
        } else if !istio::is_dns1123_label(r) {
            diags.error_at(
                at("revision"),
                "Invalid revision",
                format!("{r:?} is not a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters."),
            );
        }
    }
    if let Some(p) = b.get("primary_cluster_name").as_str() {
        if !istio::is_dns1123_label(p) {
            diags.error_at(
                at("primary_cluster_name"),
                "Invalid primary_cluster_name",
                format!("{p:?} is not a DNS-1123 label."),
            );
        }
    }
    let values = json_object(b.get("values"), at("values"), diags);
    let mesh_config = json_object(b.get("mesh_config"), at("mesh_config"), diags);
    if diags.has_errors() || !b.is_wholly_known() {
        return None;
    }
    Some(ControlPlane {
        version: version.as_str()?.to_string(),
        hub: hub.to_string(),
        role,
        external_istiod: b.get("external_istiod").as_bool().unwrap_or(false),
        remote_pilot_address: b.get("remote_pilot_address").as_str().map(str::to_string),
        primary_cluster_name: b.get("primary_cluster_name").as_str().map(str::to_string),
        revision: b.get("revision").as_str().map(str::to_string),
        values: values?,
        mesh_config: mesh_config?,
    })
}

// ---------------------------------------------------------------------------------------------
// Private state: what the provider installed, to see drift and to keep the intermediate.

#[derive(Default, Serialize, Deserialize)]
struct Private {
    /// The namespace did not exist before this resource created it.
    namespace_created: bool,
    /// Digest of the bundle written to `cacerts` (none: no `cacerts`).
    cacerts_digest: Option<String>,
    /// The intermediate issued from `root_ca`, reused until reissued. Its key lives only in the
    /// cluster (`cacerts`); state written by earlier versions may still carry it: read, never
    /// written again.
    issued_cert_pem: Option<String>,
    #[serde(default, skip_serializing)]
    issued_key_pem: Option<String>,
    /// Refresh found `cacerts` drifted but still holding our intermediate and its key, so the
    /// repair writes it back; otherwise the repair has to issue a new one.
    #[serde(default)]
    key_in_cluster: bool,
    /// The IstioOperator installed (its name selects what to uninstall) and its digest. The
    /// name is recorded before the installer runs, so a failed install is still uninstalled
    /// by destroy; the digest only once it succeeded.
    operator_name: Option<String>,
    operator_digest: Option<String>,
    remove_crds: bool,
    /// Earlier IstioOperators (a previous revision) whose objects may still be in the cluster:
    /// removed once the new control plane is up, and by destroy in any case.
    #[serde(default)]
    previous_operators: Vec<String>,
    /// The trust mode changed and istiod, which watches `cacerts` only when it started with
    /// it, has not been restarted since (kept until done, so a failed apply retries it).
    #[serde(default)]
    istiod_restart_pending: bool,
}

impl Private {
    /// Every IstioOperator whose objects this resource may have left in the cluster.
    fn operators(&self) -> impl Iterator<Item = &String> {
        self.operator_name.iter().chain(&self.previous_operators)
    }
}

impl Private {
    fn load(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    fn store(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn trust_inputs_changed(prior: &Value, planned: &Value) -> bool {
    // The renewal window says when to reissue, not what: changing it alone changes nothing.
    let without_window = |v: &Value, k: &str| {
        let mut b = v.get(k).clone();
        if b.as_map().is_some() {
            b.set("renew_before", Value::Null);
        }
        b
    };
    ["root_ca", "ca", "intermediate", "namespace", "cluster_name"]
        .iter()
        .any(|k| without_window(prior, k) != without_window(planned, k))
}

const TRUST_OUTPUTS: [&str; 5] = [
    "ca_cert_pem",
    "cert_chain_pem",
    "root_cert_pem",
    "ca_not_after",
    "ready_for_renewal",
];

// ---------------------------------------------------------------------------------------------
// Apply

fn instance(state: &Value) -> String {
    format!(
        "mesh-cluster.{}",
        state.get("cluster_name").as_str().unwrap_or_default()
    )
}

fn kube_failure(err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(err.to_string(), "");
    d.into()
}

/// The error of the namespace step. A wait for a deletion that did not finish in time says
/// what holds the namespace and what to do, not only that time ran out.
fn namespace_failure(ns_name: &str, err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    match err {
        KubeError::Timeout { cluster, waited, .. } => d.error(
            format!("cluster {cluster}: namespace {ns_name} is still being deleted"),
            format!("Namespace {ns_name} has been Terminating for at least {waited:.0?} while this apply waited to create it again. Nothing can be created in a namespace that is being deleted. Something holds it: see `kubectl get namespace {ns_name} -o yaml` (status.conditions name what remains) and the finalizers of the objects left in it. Apply again once it is gone, or raise timeouts.create to wait longer."),
        ),
        other => d.error(other.to_string(), ""),
    }
    d.into()
}

/// Builds or repairs everything: namespace, trust, control plane — in that order, since
/// istiod must find `cacerts` at its first start. A failure after the namespace step returns
/// what exists by then, so Terraform keeps the resource (tainted) and nothing is orphaned.
async fn converge(
    ctx: &Ctx,
    planned: &Value,
    config: &Value,
    private: &[u8],
    op: &str,
) -> Result<Applied, Failure> {
    let mut diags = Diagnostics::new();
    let trust = trust_from(config, &mut diags);
    let cp = control_plane_from(config, &mut diags);
    let (Some(trust), false) = (trust, diags.has_errors()) else {
        if !diags.has_errors() {
            diags.error(
                "Settings are not known",
                "All trust settings must be known at apply time.",
            );
        }
        return Err(diags.into());
    };
    if !config.get("control_plane").is_null() && cp.is_none() {
        if !diags.has_errors() {
            diags.error(
                "Settings are not known",
                "All control_plane settings must be known at apply time.",
            );
        }
        return Err(diags.into());
    }
    let mut private = Private::load(private);
    let deadline = Deadline::new(timeout(config, op, DEFAULT_TIMEOUT), ctx.cancel.clone());
    let cluster = connect(&kubernetes::connection(config.get("kubernetes")))
        .await
        .map_err(kube_failure)?;
    let ns_name = planned
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let cluster_name = planned
        .get("cluster_name")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let network = planned
        .get("network")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ours = labels(&instance(planned));
    let mut state = planned.clone();
    state.set("id", Value::from(cluster_name.clone()));

    // Namespace first: create it, marked as created by this instance, or adopt it with our
    // labels only. The mark lives in the cluster, so a namespace made by an apply that was
    // killed before Terraform saved state is still known as ours by the next one (and deleted
    // by destroy). One being deleted (a re-apply right after a destroy) is waited out, then
    // created again.
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let live_ns = cluster
        .namespace_settled(&ns_name, &deadline)
        .await
        .map_err(|e| namespace_failure(&ns_name, e))?;
    private.namespace_created = match &live_ns {
        None => true,
        // Private state alone: created by a version that did not mark it yet.
        Some(ns) => created_by(&ns.metadata, &instance(planned)) || private.namespace_created,
    };
    let controller = cp
        .as_ref()
        .filter(|c| c.role == Role::Remote)
        .and_then(|c| c.primary_cluster_name.clone());
    let created_ns = private.namespace_created;
    // The IstioOperators whose objects may be in the cluster are recorded on the namespace
    // before the installer runs, so that they are found (and uninstalled) even when private
    // state is lost: Terraform keeps no private state of an operation whose provider died.
    let target = cp
        .as_ref()
        .map(|c| operator::operator_name(&cluster_name, c.revision.as_deref()));
    for old in live_ns.as_ref().map(recorded_operators).unwrap_or_default() {
        if Some(&old) != target.as_ref()
            && private.operator_name.as_ref() != Some(&old)
            && !private.previous_operators.contains(&old)
        {
            private.previous_operators.push(old);
        }
    }
    let mut recorded: Vec<String> = private.operators().cloned().chain(target).collect();
    recorded.sort();
    recorded.dedup();
    let ns_object = |operators: &[String]| {
        let mut ns = cacerts::namespace(&ns_name, &network, controller.as_deref(), ours.clone());
        if created_ns {
            mark_created(&mut ns.metadata, &instance(planned));
        }
        if !operators.is_empty() {
            ns.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(OPERATORS_ANNOTATION.into(), operators.join(","));
        }
        ns
    };
    cluster
        .apply(&namespaces, &ns_object(&recorded), &deadline)
        .await
        .map_err(|e| namespace_failure(&ns_name, e))?;

    let partial = |state: &Value, private: &Private, diags: Diagnostics| Failure {
        diags,
        partial: Some(Applied {
            state: state.known_or_null(),
            private: private.store(),
        }),
    };
    let kube_partial = |state: &Value, private: &Private, e: KubeError| {
        let mut d = Diagnostics::new();
        d.error(e.to_string(), "");
        partial(state, private, d)
    };

    // A trust mode change needs an istiod restart (see plan_trust_mode_change).
    let mode_before = match (&private.cacerts_digest, &private.issued_cert_pem) {
        (None, _) => "none",
        (Some(_), Some(_)) => "root_ca",
        (Some(_), None) => "ca",
    };
    let mode_after = match &trust {
        Trust::Root { .. } => "root_ca",
        Trust::Own(_) => "ca",
        Trust::None => "none",
    };
    if op == "update" && mode_before != mode_after {
        private.istiod_restart_pending = true;
    }

    // Then trust, before any istiod starts.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let reissue = planned.get("ca_cert_pem").is_unknown();
    let bundle = match trust {
        Trust::Root { signer, spec } => {
            // The plan keeps the intermediate: its key is in the cluster (or, in state from an
            // earlier version, in private state). Also after private state was lost (the
            // provider killed during an update).
            let reuse = match (&private.issued_cert_pem, &private.issued_key_pem) {
                (Some(c), Some(k)) if !reissue => Some((c.clone(), k.clone())),
                _ if !reissue => {
                    match planned_intermediate_in_cluster(&cluster, &secrets, planned, &deadline)
                        .await
                    {
                        Ok(Some(found)) => Some(found),
                        Ok(None) => {
                            let mut d = Diagnostics::new();
                            d.error(format!("cluster {}: the intermediate CA's key is no longer in Secret {ns_name}/cacerts", cluster.name), "The key of the intermediate this plan keeps lives only in cacerts, and cacerts changed after the plan was made. Plan and apply again: the new plan issues a new intermediate from the root.");
                            return Err(partial(&state, &private, d));
                        }
                        Err(e) => return Err(kube_partial(&state, &private, e)),
                    }
                }
                _ => None,
            };
            let (cert, key) = match reuse {
                Some(pair) => pair,
                None => {
                    tracing::info!(cluster = %cluster.name, "issuing intermediate CA");
                    let issued = tokio::task::spawn_blocking(move || {
                        pki::issue_intermediate(&signer, &spec)
                    })
                    .await;
                    match issued {
                        Ok(Ok(i)) => (i.cert_pem, i.private_key_pem),
                        Ok(Err(e)) => {
                            return Err(partial(
                                &state,
                                &private,
                                Diagnostics::from_error(&anyhow::anyhow!(
                                    "Cannot issue the intermediate CA: {e}"
                                )),
                            ))
                        }
                        Err(e) => {
                            return Err(partial(
                                &state,
                                &private,
                                Diagnostics::from_error(&anyhow::anyhow!(
                                    "intermediate issuance task failed: {e}"
                                )),
                            ))
                        }
                    }
                }
            };
            let root = config
                .get("root_ca")
                .get("cert_pem")
                .as_str()
                .unwrap_or_default()
                .to_string();
            let root = pki::parse_cert_pem(&root)
                .map(|c| c.to_pem())
                .unwrap_or(root);
            private.issued_cert_pem = Some(cert.clone());
            private.issued_key_pem = None;
            private.key_in_cluster = false;
            Some(CaBundle {
                cert_chain_pem: pki::concat_pem(&[&cert, &root]),
                ca_cert_pem: cert,
                ca_key_pem: key,
                root_cert_pem: root,
            })
        }
        Trust::Own(b) => {
            private.issued_cert_pem = None;
            private.issued_key_pem = None;
            Some(b)
        }
        Trust::None => None,
    };
    let bundle = bundle.map(|mut b| {
        b.root_cert_pem =
            with_additional_roots(&b.root_cert_pem, config.get("additional_roots_pem"));
        b
    });
    match &bundle {
        Some(b) => {
            if let Err(e) = cluster
                .apply(
                    &secrets,
                    &cacerts::secret(&ns_name, b, ours.clone()),
                    &deadline,
                )
                .await
            {
                return Err(kube_partial(&state, &private, e));
            }
            private.cacerts_digest = Some(b.digest());
            // An istiod owed a restart (trust mode changed) loads cacerts when it restarts,
            // below; one that keeps running must load it now.
            if !private.istiod_restart_pending {
                if let Err(e) = wait_for_istiod_to_load(&cluster, &ns_name, b, &deadline).await {
                    return Err(kube_partial(&state, &private, e));
                }
            }
            set_trust_outputs(&mut state, Some(b));
            // A plan that did not reissue promised the refresh-time verdict; the next refresh
            // gives the current one.
            if let Some(promised) = planned.get("ready_for_renewal").as_bool() {
                state.set("ready_for_renewal", Value::from(promised));
            }
        }
        None => {
            if private.cacerts_digest.is_some() {
                // Switched to istiod's own CA: remove the plug-in CA we installed.
                if let Err(e) = cluster
                    .delete(&secrets, cacerts::SECRET_NAME, false, &deadline)
                    .await
                {
                    return Err(kube_partial(&state, &private, e));
                }
                private.cacerts_digest = None;
            }
            set_trust_outputs(&mut state, None);
        }
    }

    // Control plane last.
    match cp {
        Some(cp) => {
            let id = Identity {
                cluster_name: &cluster_name,
                mesh_id: planned.get("mesh_id").as_str().unwrap_or_default(),
                network: &network,
                namespace: &ns_name,
            };
            let (iop, overridden) = operator::istio_operator(&id, &cp);
            for key in overridden {
                ctx.warn(
                    Some(AttributePath::attrs(&["control_plane", "values"])),
                    "Value set by the provider",
                    &format!("values.{key} is set by mesh_cluster from cluster_name, mesh_id, network and the remote settings; the value in `values` is ignored."),
                );
            }
            let digest = operator::digest(&iop);
            let name = operator::operator_name(&cluster_name, cp.revision.as_deref());
            let needed = planned.get("control_plane_version").is_unknown()
                || private.operator_digest.as_deref() != Some(digest.as_str());
            private.remove_crds = config
                .get("control_plane")
                .get("remove_crds_on_destroy")
                .as_bool()
                .unwrap_or(false);
            // A pending restart applies to an istiod that ran before this apply; one the
            // installer creates now starts with the current cacerts.
            let restart = private.istiod_restart_pending
                && cp.role == Role::Primary
                && match restart::istiod_exists(
                    &cluster,
                    &ns_name,
                    cp.revision.as_deref(),
                    &deadline,
                )
                .await
                {
                    Ok(exists) => exists,
                    Err(e) => return Err(kube_partial(&state, &private, e)),
                };
            if needed {
                if let Some(old) = private.operator_name.clone().filter(|o| *o != name) {
                    if !private.previous_operators.contains(&old) {
                        private.previous_operators.push(old);
                    }
                }
                private.operator_name = Some(name.clone());
                private.operator_digest = None;
                let installer = Installer::new(&ns_name, &name);
                let annotations = config
                    .get("control_plane")
                    .get("installer_pod_annotations")
                    .as_map()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Err(e) = install::install(
                    &cluster,
                    &installer,
                    &iop,
                    &cp,
                    &ours,
                    &annotations,
                    &deadline,
                )
                .await
                {
                    let mut d = Diagnostics::new();
                    d.error(e.to_string(), e.detail());
                    return Err(partial(&state, &private, d));
                }
                // A new revision name is a new install: remove the previous one once the new
                // control plane is up (and an installer a killed apply left for it).
                for old in private.previous_operators.clone() {
                    let installer = Installer::new(&ns_name, &old);
                    if let Err(e) = install::remove_installer(&cluster, &installer, &deadline).await
                    {
                        return Err(kube_partial(&state, &private, e));
                    }
                    if let Err(e) = install::uninstall(
                        &cluster,
                        &operator::owner_selector(&old, &ns_name),
                        false,
                        &deadline,
                    )
                    .await
                    {
                        return Err(kube_partial(&state, &private, e));
                    }
                    private.previous_operators.retain(|o| *o != old);
                }
                private.operator_digest = Some(digest);
            }
            if restart {
                let now = pki::format_rfc3339(time::OffsetDateTime::now_utc());
                if let Err(e) = restart::restart_istiod(
                    &cluster,
                    &ns_name,
                    cp.revision.as_deref(),
                    &now,
                    &deadline,
                )
                .await
                {
                    return Err(kube_partial(&state, &private, e));
                }
            }
            private.istiod_restart_pending = false;
            let version = install::observed_version(&cluster, &ns_name, &cp, &deadline).await;
            match version {
                Ok(v) => state.set("control_plane_version", v.into()),
                Err(e) => return Err(kube_partial(&state, &private, e)),
            }
        }
        None => {
            for old in private.operators().cloned().collect::<Vec<_>>() {
                if let Err(e) = install::uninstall(
                    &cluster,
                    &operator::owner_selector(&old, &ns_name),
                    private.remove_crds,
                    &deadline,
                )
                .await
                {
                    return Err(kube_partial(&state, &private, e));
                }
                if private.operator_name.as_ref() == Some(&old) {
                    private.operator_name = None;
                    private.operator_digest = None;
                }
                private.previous_operators.retain(|o| *o != old);
            }
            state.set("control_plane_version", Value::Null);
        }
    }
    // Record what is left installed, when that changed (a previous revision removed).
    let left: Vec<String> = {
        let mut l: Vec<String> = private.operators().cloned().collect();
        l.sort();
        l.dedup();
        l
    };
    if left != recorded {
        if let Err(e) = cluster
            .apply(&namespaces, &ns_object(&left), &deadline)
            .await
        {
            return Err(kube_partial(&state, &private, e));
        }
    }
    Ok(Applied {
        state,
        private: private.store(),
    })
}

/// Namespace annotation listing (comma-separated) the IstioOperators this resource installed
/// or started installing in the cluster.
const OPERATORS_ANNOTATION: &str = "mesh.tfmesh.dev/istio-operators";

/// The IstioOperators recorded on the namespace.
fn recorded_operators(ns: &Namespace) -> Vec<String> {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPERATORS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The intermediate (cert, key) in the live `cacerts` when it is the one the plan keeps
/// (`ca_cert_pem` known and equal to it); `None` otherwise.
async fn planned_intermediate_in_cluster(
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

/// Whether `key_pem` is the private key of certificate `cert_pem`: the intermediate's key
/// found in the cluster, even when someone replaced the certificate next to it.
fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    match (
        pki::parse_cert_pem(cert_pem),
        pki::parse_private_key_pem(key_pem),
    ) {
        (Ok(cert), Ok(key)) => key.check_matches(&cert).is_ok(),
        _ => false,
    }
}

/// The longest the provider waits for a running istiod to load a new `cacerts` (the kubelet
/// refreshes a Secret volume within about a minute; a refused bundle never loads).
const CACERTS_LOAD_WAIT: Duration = Duration::from_secs(5 * 60);

/// Root fingerprints of a PEM bundle.
fn root_fingerprints(pem: &str) -> std::collections::BTreeSet<String> {
    pki::parse_certs_pem(pem)
        .unwrap_or_default()
        .iter()
        .map(|c| pki::fingerprint_sha256(c.der()))
        .collect()
}

/// After `cacerts` is written with a running control plane: waits until istiod serves the
/// bundle's roots, which it shows by republishing ConfigMap `istio-ca-root-cert`. No Ready
/// istiod (created before the install, a remote): nothing to wait for.
async fn wait_for_istiod_to_load(
    cluster: &Cluster,
    namespace: &str,
    bundle: &CaBundle,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let running = istio::istiod::pods(cluster, namespace, None, deadline).await?;
    if !running.iter().any(|p| p.ready) {
        return Ok(());
    }
    let want = root_fingerprints(&bundle.root_cert_pem);
    let loaded = move |cm: Option<&ConfigMap>| {
        cm.and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(cacerts::ROOT_CONFIGMAP_KEY))
            .is_some_and(|pem| root_fingerprints(pem) == want)
    };
    let capped = Deadline {
        started: std::time::Instant::now(),
        until: deadline
            .until
            .min(std::time::Instant::now() + CACERTS_LOAD_WAIT),
        cancel: deadline.cancel.clone(),
    };
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

fn set_trust_outputs(state: &mut Value, bundle: Option<&CaBundle>) {
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

async fn remove(ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), KubeError> {
    let private = Private::load(private);
    let deadline = Deadline::new(
        timeout(prior, "delete", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let cluster = connect(&kubernetes::connection(prior.get("kubernetes"))).await?;
    let ns_name = prior
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let live_ns = cluster.get_opt(&namespaces, &ns_name, &deadline).await?;
    // Every IstioOperator that may have left objects: from private state, from the record on
    // the namespace (private state is lost when a provider dies mid-operation), and the one
    // the configuration names.
    let configured = control_plane_from(prior, &mut Diagnostics::new()).map(|cp| {
        operator::operator_name(
            prior.get("cluster_name").as_str().unwrap_or_default(),
            cp.revision.as_deref(),
        )
    });
    let mut operators: Vec<String> = private
        .operators()
        .cloned()
        .chain(live_ns.as_ref().map(recorded_operators).unwrap_or_default())
        .chain(configured)
        .collect();
    operators.sort();
    operators.dedup();
    let remove_crds = private.remove_crds
        || prior
            .get("control_plane")
            .get("remove_crds_on_destroy")
            .as_bool()
            == Some(true);
    for name in &operators {
        // An installer a killed apply left behind holds a cluster-admin binding.
        install::remove_installer(&cluster, &Installer::new(&ns_name, name), &deadline).await?;
        let removed = install::uninstall(
            &cluster,
            &operator::owner_selector(name, &ns_name),
            remove_crds,
            &deadline,
        )
        .await?;
        tracing::info!(cluster = %cluster.name, operator = %name, removed, "control plane uninstalled");
    }
    // `cacerts` goes if we wrote it: recorded in private state, or (written by an apply that
    // was killed before state was saved, under a configuration since changed) labelled with
    // this instance in the cluster.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let ours = private.cacerts_digest.is_some()
        || cluster
            .get_opt(&secrets, cacerts::SECRET_NAME, &deadline)
            .await?
            .is_some_and(|s| has_instance_label(&s.metadata, &instance(prior)));
    if ours {
        cluster
            .delete(&secrets, cacerts::SECRET_NAME, false, &deadline)
            .await?;
    }
    // The namespace goes if this instance created it: the cluster's mark decides (private
    // state only for namespaces created before the mark existed). Otherwise it stays.
    let created = live_ns
        .as_ref()
        .is_some_and(|ns| created_by(&ns.metadata, &instance(prior)) || private.namespace_created);
    if created {
        cluster
            .delete(&namespaces, &ns_name, true, &deadline)
            .await?;
    } else if live_ns.is_some() {
        // Not ours: give back the labels we set (an apply that owns nothing releases them).
        let bare = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns_name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        cluster.apply(&namespaces, &bare, &deadline).await?;
    }
    Ok(())
}

async fn observe(
    ctx: &Ctx,
    state: &Value,
    private_bytes: &[u8],
) -> Result<Option<Applied>, KubeError> {
    let private = Private::load(private_bytes);
    let deadline = Deadline::new(READ_TIMEOUT, ctx.cancel.clone());
    let cluster: Cluster = connect(&kubernetes::connection(state.get("kubernetes"))).await?;
    let ns_name = state
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let Some(ns) = cluster.get_opt(&namespaces, &ns_name, &deadline).await? else {
        return Ok(None);
    };
    let mut state = state.clone();
    let live_network = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(istio::NETWORK_LABEL))
        .cloned();
    // A missing or edited label shows as a change of `network` in the next plan.
    state.set("network", Value::from(live_network.unwrap_or_default()));

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let live = cluster
        .get_opt(&secrets, cacerts::SECRET_NAME, &deadline)
        .await?;
    let bundle = live.as_ref().and_then(cacerts::bundle_of);
    let mut private = private;
    match (&private.cacerts_digest, &bundle) {
        (Some(want), Some(b)) if *want == b.digest() => set_trust_outputs(&mut state, Some(b)),
        // Ours is missing or was edited: empty outputs make the plan put it back — the same
        // intermediate while cacerts still holds it with its key, else a new one.
        (Some(_), _) => {
            private.key_in_cluster = match (&bundle, &private.issued_cert_pem) {
                (Some(b), Some(cert)) => key_matches(cert, &b.ca_key_pem),
                _ => false,
            };
            set_trust_outputs(&mut state, None);
        }
        (None, _) => {}
    }
    if private.operator_name.is_some() {
        if let Some(cp) = control_plane_from(&state, &mut Diagnostics::new()) {
            let version = install::observed_version(&cluster, &ns_name, &cp, &deadline).await?;
            // Null (istiod gone) makes the next plan reinstall it.
            state.set("control_plane_version", version.into());
        }
    }
    Ok(Some(Applied {
        state,
        private: private.store(),
    }))
}

/// `control_plane_version` is unknown whenever the installer will run: on create, when the
/// control plane settings or the identity it is installed with change, or when Read found
/// istiod missing.
fn plan_control_plane(plan: &mut Plan<'_>) {
    let version = if plan.planned.get("control_plane").is_null() {
        Value::Null
    } else if plan.is_create()
        || plan.prior.get("control_plane") != plan.planned.get("control_plane")
        || plan.prior.get("control_plane_version").is_null()
        || ["mesh_id", "network"]
            .iter()
            .any(|k| plan.prior.get(k) != plan.planned.get(k))
    {
        Value::Unknown
    } else {
        plan.prior.get("control_plane_version").clone()
    };
    plan.planned.set("control_plane_version", version);
}

// ---------------------------------------------------------------------------------------------
// The resource

#[tonic::async_trait]
impl Resource for MeshCluster {
    fn type_name(&self) -> &'static str {
        "mesh_cluster"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        validate_config(config, diags);
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        if let Some(name) = plan.config.get("cluster_name").as_str() {
            plan.planned.set("id", Value::from(name));
        }
        plan_control_plane(plan);
        plan_trust_mode_change(plan);
        let has_trust = !plan.planned.get("root_ca").is_null() || !plan.planned.get("ca").is_null();
        check_trust_change(plan);
        let changed = plan.is_create() || trust_inputs_changed(plan.prior, &plan.planned);
        if !changed
            && has_trust
            && plan.prior.get("additional_roots_pem") != plan.planned.get("additional_roots_pem")
        {
            // Only the trusted roots change: same intermediate, new root-cert.pem.
            plan.planned.set("root_cert_pem", Value::Unknown);
        }
        if changed || plan_renewal(plan) {
            for k in TRUST_OUTPUTS {
                plan.planned.set(
                    k,
                    if has_trust {
                        Value::Unknown
                    } else {
                        Value::Null
                    },
                );
            }
            return;
        }
        // Same inputs: the outputs are what we installed, unless Read found them gone or
        // edited, in which case apply writes them again (same intermediate, same key).
        let private = Private::load(plan.prior_private);
        if private.cacerts_digest.is_some() && plan.prior.get("ca_cert_pem").is_null() {
            let cert = match &private.issued_cert_pem {
                // The key went with cacerts: the repair issues a new intermediate.
                Some(_) if !private.key_in_cluster => Value::Unknown,
                Some(c) => Value::from(c.as_str()),
                None => normalised_ca_cert(plan.config.get("ca").get("cert_pem")),
            };
            plan.planned.set("ca_cert_pem", cert);
            for k in [
                "cert_chain_pem",
                "root_cert_pem",
                "ca_not_after",
                "ready_for_renewal",
            ] {
                plan.planned.set(k, Value::Unknown);
            }
        }
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        converge(ctx, change.planned, change.config, change.private, "create").await
    }

    async fn update(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        converge(ctx, change.planned, change.config, change.private, "update").await
    }

    async fn delete(&self, ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), Failure> {
        remove(ctx, prior, private).await.map_err(kube_failure)
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

    fn errors(config: &Value) -> Vec<String> {
        let mut d = Diagnostics::new();
        validate_config(config, &mut d);
        d.0.iter()
            .map(|x| x.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
            .collect()
    }

    fn base() -> Vec<(&'static str, Value)> {
        vec![
            ("cluster_name", Value::from("east-1")),
            ("mesh_id", Value::from("mesh1")),
            ("network", Value::from("net1")),
            ("namespace", Value::from("istio-system")),
        ]
    }

    fn mesh_root() -> Value {
        let root = pki::generate_root(&CaSpec {
            key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
            ..CaSpec::istio_root()
        })
        .unwrap();
        Value::object([
            ("cert_pem", Value::from(root.cert_pem.as_str())),
            (
                "private_key_pem",
                Value::from(root.private_key_pem.as_str()),
            ),
        ])
    }

    #[test]
    fn renewal_is_due_within_the_window_only() {
        let in_days =
            |d: i64| pki::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(d));
        let days = |d: u64| Duration::from_secs(d * 86400);
        assert!(due_for_renewal(&in_days(10), days(30)).is_some());
        assert!(due_for_renewal(&in_days(40), days(30)).is_none());
        assert!(due_for_renewal("not a time", days(30)).is_none());
        assert_eq!(renew_before(&Value::Null), days(30));
    }

    #[test]
    fn the_renewal_window_alone_is_no_trust_change() {
        let state = |window: &str, hours: i64| {
            Value::object([(
                "intermediate",
                Value::object([
                    ("renew_before", Value::from(window)),
                    ("validity_period_hours", Value::from(hours)),
                ]),
            )])
        };
        assert!(!trust_inputs_changed(
            &state("720h", 100),
            &state("24h", 100)
        ));
        assert!(trust_inputs_changed(
            &state("720h", 100),
            &state("720h", 200)
        ));
    }

    #[test]
    fn renew_before_must_be_a_duration_shorter_than_the_validity() {
        let root = mesh_root();
        let with = |window: &str| {
            let mut fields = base();
            fields.push(("root_ca", root.clone()));
            fields.push((
                "intermediate",
                Value::object([
                    ("validity_period_hours", Value::from(48)),
                    ("renew_before", Value::from(window)),
                ]),
            ));
            errors(&Value::object(fields))
        };
        assert_eq!(with("24h"), Vec::<String>::new());
        assert_eq!(with("48h"), ["intermediate.renew_before"]);
        assert_eq!(with("soon"), ["intermediate.renew_before"]);
    }

    #[test]
    fn schema_is_documented_and_secrets_are_sensitive() {
        let s = schema();
        assert_eq!(lint(&s.block, ""), Vec::<String>::new());
        assert!(
            s.block
                .nested("root_ca")
                .unwrap()
                .block
                .attribute("private_key_pem")
                .unwrap()
                .sensitive
        );
        assert!(
            s.block
                .nested("ca")
                .unwrap()
                .block
                .attribute("private_key_pem")
                .unwrap()
                .sensitive
        );
        assert!(!s.block.nested("kubernetes").unwrap().force_new);
    }

    #[test]
    fn names_and_conflicts_are_checked_on_their_attribute() {
        let mut c = base();
        c[0].1 = Value::from("East_1");
        c[2].1 = Value::from(" ");
        c.push(("root_ca", Value::object([("cert_pem", Value::Unknown)])));
        c.push(("ca", Value::object([("cert_pem", Value::Unknown)])));
        assert_eq!(errors(&Value::object(c)), ["cluster_name", "network", "ca"]);
    }

    #[test]
    fn root_ca_must_parse_and_match() {
        let root = pki::generate_root(&CaSpec {
            key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
            ..CaSpec::istio_root()
        })
        .unwrap();
        let other = pki::generate_root(&CaSpec {
            key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
            ..CaSpec::istio_root()
        })
        .unwrap();
        let with_root = |cert: &str, key: &str| {
            let mut c = base();
            c.push((
                "root_ca",
                Value::object([
                    ("cert_pem", Value::from(cert)),
                    ("private_key_pem", Value::from(key)),
                ]),
            ));
            errors(&Value::object(c))
        };
        assert!(with_root(&root.cert_pem, &root.private_key_pem).is_empty());
        assert_eq!(
            with_root("garbage", &root.private_key_pem),
            ["root_ca.cert_pem"]
        );
        assert_eq!(
            with_root(&root.cert_pem, &other.private_key_pem),
            ["root_ca.private_key_pem"]
        );
        // Unknown root (created in the same apply): nothing to check yet.
        let mut c = base();
        c.push((
            "root_ca",
            Value::object([
                ("cert_pem", Value::Unknown),
                ("private_key_pem", Value::Unknown),
            ]),
        ));
        assert!(errors(&Value::object(c)).is_empty());
    }

    /// `base()` plus a `control_plane` block with `fields` (version 1.30.3 unless given).
    fn with_control_plane(fields: &[(&'static str, Value)]) -> Vec<String> {
        let mut cp: Vec<(&str, Value)> = vec![("version", Value::from("1.30.3"))];
        for (k, v) in fields {
            cp.retain(|(n, _)| n != k);
            cp.push((*k, v.clone()));
        }
        let mut c = base();
        c.push(("control_plane", Value::object(cp)));
        errors(&Value::object(c))
    }

    #[test]
    fn empty_mesh_id_is_refused_on_its_attribute() {
        let mut c = base();
        c[1].1 = Value::from("");
        assert_eq!(errors(&Value::object(c)), ["mesh_id"]);
    }

    #[test]
    fn a_remote_needs_the_pilot_address_and_the_primary() {
        let remote = ("role", Value::from("remote"));
        let pilot = ("remote_pilot_address", Value::from("10.0.0.9"));
        let primary = ("primary_cluster_name", Value::from("east-0"));
        assert!(with_control_plane(&[remote.clone(), pilot.clone(), primary.clone()]).is_empty());
        assert_eq!(
            with_control_plane(&[remote.clone(), primary.clone()]),
            ["control_plane.remote_pilot_address"]
        );
        assert_eq!(
            with_control_plane(&[remote.clone(), pilot.clone()]),
            ["control_plane.primary_cluster_name"]
        );
        assert_eq!(
            with_control_plane(&[remote]),
            [
                "control_plane.remote_pilot_address",
                "control_plane.primary_cluster_name"
            ]
        );
        // Known only at apply (a gateway's address): nothing to refuse yet.
        assert!(with_control_plane(&[
            ("role", Value::from("remote")),
            ("remote_pilot_address", Value::Unknown),
            primary
        ])
        .is_empty());
        // A primary needs neither.
        assert!(with_control_plane(&[]).is_empty());
    }

    #[test]
    fn values_and_mesh_config_must_be_json_objects() {
        for attr in ["values", "mesh_config"] {
            let path = format!("control_plane.{attr}");
            assert!(with_control_plane(&[(attr, Value::from(r#"{"a": {"b": 1}}"#))]).is_empty());
            for bad in [r#"["a"]"#, "42", r#""text""#, "{not json", ""] {
                assert_eq!(
                    with_control_plane(&[(attr, Value::from(bad))]),
                    [path.as_str()],
                    "{attr} = {bad:?}"
                );
            }
        }
        let mut d = Diagnostics::new();
        let mut c = base();
        c.push((
            "control_plane",
            Value::object([
                ("version", Value::from("1.30.3")),
                ("values", Value::from("[1]")),
                ("mesh_config", Value::from("{oops")),
            ]),
        ));
        validate_config(&Value::object(c), &mut d);
        let summaries: Vec<&str> = d.0.iter().map(|x| x.summary.as_str()).collect();
        assert_eq!(summaries, ["Not a JSON object", "Invalid JSON"]);
    }

    #[test]
    fn version_must_be_a_version() {
        for ok in ["1.30.3", "1.30", "1.31.0-beta.1", "1.30.3-distroless"] {
            assert!(
                with_control_plane(&[("version", Value::from(ok))]).is_empty(),
                "{ok}"
            );
        }
        for bad in [
            "latest",
            "v1.30.3",
            "1",
            "1.30.",
            "1..3",
            "1.30.3.4",
            "",
            "1.30.3-a b",
        ] {
            assert_eq!(
                with_control_plane(&[("version", Value::from(bad))]),
                ["control_plane.version"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hub_must_be_an_image_repository() {
        for ok in [
            "docker.io/istio",
            "gcr.io/istio-release",
            "mirror.corp:5000/istio",
            "localhost:5000/mirror/istio_images",
        ] {
            assert!(
                with_control_plane(&[("hub", Value::from(ok))]).is_empty(),
                "{ok}"
            );
        }
        for bad in [
            "docker.io/istio:1.30.3",
            "docker.io/istio/pilot@sha256:0123abcd",
            "docker.io/istio/",
            "",
            "docker.io/ist io",
        ] {
            assert_eq!(
                with_control_plane(&[("hub", Value::from(bad))]),
                ["control_plane.hub"],
                "{bad:?}"
            );
        }
    }

    #[test]
    fn revision_must_be_a_dns_label() {
        assert!(with_control_plane(&[("revision", Value::from("canary-1-31"))]).is_empty());
        let long = "r".repeat(64);
        for bad in [
            "Canary",
            "1.31",
            "canary_1",
            "-canary",
            long.as_str(),
            "default",
        ] {
            assert_eq!(
                with_control_plane(&[("revision", Value::from(bad))]),
                ["control_plane.revision"],
                "{bad:?}"
            );
        }
    }

    fn p256(spec: CaSpec) -> CaSpec {
        CaSpec {
            key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
            ..spec
        }
    }

    fn with_root(cert: &str, key: Value) -> Vec<String> {
        let mut c = base();
        c.push((
            "root_ca",
            Value::object([("cert_pem", Value::from(cert)), ("private_key_pem", key)]),
        ));
        errors(&Value::object(c))
    }

    #[test]
    fn root_ca_must_be_a_valid_ca() {
        // A leaf certificate is not a CA: refused even while the key is unknown.
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["leaf.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let leaf_key = Value::from(key.serialize_pem());
        assert_eq!(with_root(&leaf.pem(), leaf_key), ["root_ca.cert_pem"]);
        assert_eq!(with_root(&leaf.pem(), Value::Unknown), ["root_ca.cert_pem"]);

        // An expired root, with its key known or not.
        let now = time::OffsetDateTime::now_utc();
        let expired = pki::generate_root_at(
            &p256(CaSpec {
                validity_hours: 24,
                ..CaSpec::istio_root()
            }),
            now - time::Duration::days(3),
        )
        .unwrap();
        let mut d = Diagnostics::new();
        let mut c = base();
        c.push((
            "root_ca",
            Value::object([
                ("cert_pem", Value::from(expired.cert_pem.clone())),
                (
                    "private_key_pem",
                    Value::from(expired.private_key_pem.clone()),
                ),
            ]),
        ));
        validate_config(&Value::object(c), &mut d);
        assert_eq!(d.0.len(), 1);
        assert_eq!(
            d.0[0].path.as_ref().map(|p| p.to_string()).as_deref(),
            Some("root_ca.cert_pem")
        );
        assert!(d.0[0].detail.contains("expired at"), "{}", d.0[0].detail);
        assert_eq!(
            with_root(&expired.cert_pem, Value::Unknown),
            ["root_ca.cert_pem"]
        );
    }

    #[test]
    fn own_ca_chain_must_end_at_the_root() {
        let root_a = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
        let root_b = pki::generate_root(&p256(CaSpec {
            common_name: "Other Root".into(),
            ..CaSpec::istio_root()
        }))
        .unwrap();
        let inter = pki::issue_intermediate(
            &root_a.signer().unwrap(),
            &p256(CaSpec::istio_intermediate("east-1", "istio-system")),
        )
        .unwrap();
        let with_ca = |chain: &str, root: &str| {
            let mut c = base();
            c.push((
                "ca",
                Value::object([
                    ("cert_pem", Value::from(inter.cert_pem.clone())),
                    (
                        "private_key_pem",
                        Value::from(inter.private_key_pem.clone()),
                    ),
                    ("cert_chain_pem", Value::from(chain)),
                    ("root_cert_pem", Value::from(root)),
                ]),
            ));
            errors(&Value::object(c))
        };
        let chain = pki::concat_pem(&[&inter.cert_pem, &root_a.cert_pem]);
        assert!(with_ca(&chain, &root_a.cert_pem).is_empty());
        // Signed by A, but the mesh root given is B.
        assert_eq!(with_ca(&chain, &root_b.cert_pem), ["ca.root_cert_pem"]);
        // The chain claims B above the intermediate.
        let wrong = pki::concat_pem(&[&inter.cert_pem, &root_b.cert_pem]);
        assert_eq!(with_ca(&wrong, &root_b.cert_pem), ["ca.cert_chain_pem"]);
    }
}
