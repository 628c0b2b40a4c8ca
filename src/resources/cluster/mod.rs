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
use crate::resources::{kubernetes, private};

mod apply;
mod plan;
mod read;
mod trust;
mod validate;

use apply::*;
use plan::*;
use read::*;
use trust::*;
use validate::*;

pub struct MeshCluster;

const DESCRIPTION: &str = "Joins one Kubernetes cluster to the mesh: creates (or adopts) the istiod namespace, labels it with the cluster's network (`topology.istio.io/network`), and installs the mesh's trust as Istio's plug-in CA — Secret `cacerts` with `ca-cert.pem`, `ca-key.pem`, `cert-chain.pem` and `root-cert.pem` — before any istiod starts.

Trust comes from one of:

- `root_ca { ... }`: the provider issues this cluster's own intermediate CA from the mesh root (Istio's tooling defaults: RSA 4096, 10 years, `O=Istio`, `CN=Intermediate CA`, `L=<cluster_name>`, path length 0, SAN `istiod.<namespace>.svc`; tune them in `intermediate { ... }`). The intermediate is kept across plans and reissued when the root or the `intermediate` settings change, and in place once refresh finds it within `intermediate.renew_before` of expiry (`ready_for_renewal`).
- `ca { ... }`: bring your own intermediate (e.g. from Vault PKI), so the root key never enters Terraform. It is checked before anything is changed, as istiod and Envoy will use it: it must chain to `root_cert_pem`, match its key, be a CA and be valid now, with positive serial numbers, SHA-256 or stronger signatures (RSA-PSS with a salt as long as the hash included), and on each CA an extendedKeyUsage that is absent or lists both serverAuth and clientAuth. It is written to `cacerts` re-encoded: unindented PEM, the key block alone (no `EC PARAMETERS`), and only the first certificate of `cert_pem` (a full chain there continues in `cert_chain_pem`).
- neither: no `cacerts`; istiod then runs its own self-signed CA, which only works for a single primary.

istiod reads `cacerts` at start-up and watches it only when it started with it, so changing the trust mode (none, `root_ca`, `ca`) of a running primary restarts istiod (a rollout of its Deployment, waited for); the plan warns about it.

With `control_plane { ... }` the provider installs Istio: it renders an IstioOperator for this cluster (mesh ID, cluster name, network; `profile: remote`, `remotePilotAddress` and the injection path for a remote; `externalIstiod` for a primary serving remotes; your `values` and `mesh_config` merged in) and runs `istioctl install` **inside the cluster** as a Job (image `<hub>/istioctl:<version>`) under a temporary cluster-admin ServiceAccount, then waits for istiod to be Available (on a remote: for the injector webhook). The Job and its RBAC are removed afterwards; a failed install shows the installer's log in the error. Changing the version or values re-runs the installer (in-place upgrade). No local `istioctl` is needed. Omit the block to install istiod yourselves (e.g. with Helm) after this resource, with the same `mesh_id`, `cluster_name` and `network`.

Drift is repaired: a deleted or edited `cacerts`, a changed network label, or a missing istiod shows in the next plan and is put back by apply. If the namespace is gone, the resource is planned for creation again. Destroy uninstalls the control plane: every object carrying the installer's owner labels for this cluster's IstioOperator. That is more than `istioctl uninstall -f` without `--purge`, which keeps Istio's base (the reader ServiceAccount, the base RBAC, the validating webhook): after destroy nothing of the install is left, except Istio's CRDs, which are deleted only with `remove_crds_on_destroy` (deleting them deletes every Istio resource in the cluster). Then it removes `cacerts`, and the namespace if this resource created it (otherwise only its labels). What it created is marked in the cluster itself — annotation `mesh.tfmesh.dev/created-by` on a namespace it created, `mesh.tfmesh.dev/istio-operators` listing the control planes it installs — so destroy removes it even when an earlier apply was killed before Terraform saved state.

The intermediate CA's private key is never stored in Terraform's state: it lives only in `cacerts`, where a repair reads it back; when `cacerts` is gone, the repair issues a new intermediate from the root. The root key given in `root_ca.private_key_pem` is stored in this resource's state too; with Terraform 1.11 or later give it in `root_ca.private_key_pem_wo` instead, which is never stored. A root from `mesh_root_ca` still has its key in that resource's state: to keep the root key out of Terraform's state altogether, keep the root outside Terraform and pass its key write-only from an ephemeral source, or bring your own intermediate with `ca`.";

/// `root_ca`'s write-only key and its version marker.
const ROOT_KEY_WO: &str = "private_key_pem_wo";
const ROOT_KEY_WO_VERSION: &str = "private_key_pem_wo_version";

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
            .attr(Attribute::string(kubernetes::CONNECTION, "How to reach the cluster as one value, for the `connection` argument of the other resources (`mesh_eastwest_gateway`, `mesh_remote_secret`'s `connection` and `remote_connection`, `mesh_status`, `mesh_verification`'s `cluster`): `connection = mesh_cluster.east.connection` instead of repeating the block. Without it set here, it is this resource's `kubernetes` block as a JSON object of the attributes that are set. It can also be set instead of the block, as a JSON object with the block's attribute names (`jsonencode({ config_path = \"~/.kube/config\", config_context = \"east\" })`; `exec` as an object with `api_version`, `command`, `args`, `env`): same meaning, one or the other, and the other resources get the same string. Sensitive, since it may hold a token or a key. Unknown at plan while what it comes from is. Changing it never replaces the resource.").optional_computed().sensitive())
            .block(kubernetes::block())
            .block(NestedBlock::single(
                "root_ca",
                Block::new("The mesh root CA to issue this cluster's intermediate from, typically `mesh_root_ca`'s outputs. Conflicts with `ca`. Give its key in exactly one of `private_key_pem` (any Terraform; kept in this resource's state) and `private_key_pem_wo` (Terraform 1.11 or later; never stored).")
                    .attr(Attribute::string("cert_pem", "Root certificate, PEM.").required())
                    .attr(Attribute::string("private_key_pem", "Root private key, PEM (PKCS#8, PKCS#1 or SEC1). Stored in this resource's state (marked sensitive, in plain text in the state file). Use it with Terraform before 1.11 (OpenTofu before 1.11), which cannot keep `private_key_pem_wo` out of state; with newer versions prefer `private_key_pem_wo`. Exactly one of the two.").optional().sensitive())
                    .attr(Attribute::string(ROOT_KEY_WO, "Root private key, PEM, as a write-only argument: Terraform 1.11 or later hands it to the provider at plan and apply and never stores it in plan or state, so it can come from an ephemeral source (an `ephemeral = true` variable, an ephemeral resource reading a secret store) and leave no copy in this resource's state. The key signs only when the intermediate is issued (create, a change of `cert_pem` or `intermediate`, renewal, a repair that finds the intermediate's key gone from `cacerts`), but it must be given on every run, like any required input. Exactly one of this and `private_key_pem`; older clients get an error naming `private_key_pem`.").optional().sensitive().write_only().stored_alternative("private_key_pem"))
                    .attr(Attribute::number(ROOT_KEY_WO_VERSION, "A number to change when the key given in `private_key_pem_wo` changes (the usual companion of a write-only argument: Terraform cannot see a change of a value it does not store). Stored in state. Here the key belongs to `cert_pem`, and a new root changes `cert_pem`, which reissues the intermediate by itself: changing only this number is an in-place update that reissues nothing. Only with `private_key_pem_wo`.").optional()),
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
// Private state: what the provider installed, to see drift and to find the intermediate again.

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// The private field that mirrors an attribute of the state saved beside it (see
/// `resources::private`; ~1 KB less per cluster). They differ when a refresh that found
/// `cacerts` gone emptied the attribute, and in own-CA mode (an attribute, no issued
/// intermediate).
const MIRRORED: [private::Mirror; 1] = [("issued_cert_pem", &["ca_cert_pem"])];

impl Private {
    /// Reads the bytes saved beside `state`. Empty or unreadable bytes (import, a provider
    /// killed mid-apply) are all defaults; bytes written before the mirroring always carry the
    /// field, so they read as before.
    fn load(bytes: &[u8], state: &Value) -> Self {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(bytes) else {
            return Self::default();
        };
        private::restore(&mut fields, state, &MIRRORED);
        serde_json::from_value(serde_json::Value::Object(fields)).unwrap_or_default()
    }

    /// The bytes to save beside `state`.
    fn store(&self, state: &Value) -> Vec<u8> {
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        private::leave_out(&mut fields, state, &MIRRORED);
        serde_json::to_vec(&fields).unwrap_or_default()
    }
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
        // Set in the configuration, it is what the plan proposes; else the block's value.
        if plan.config.get(kubernetes::CONNECTION).is_null() {
            let connection = kubernetes::encode(plan.planned.get("kubernetes"));
            plan.planned.set(kubernetes::CONNECTION, connection);
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
        let private = Private::load(plan.prior_private, plan.prior);
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
        converge(ctx, change, "create").await
    }

    async fn update(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        converge(ctx, change, "update").await
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
mod tests;
