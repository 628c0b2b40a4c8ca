//! The CA side of the simulated istiod: which root bundle it serves and publishes, written from
//! Istio's plug-in CA behaviour (`pilot/pkg/bootstrap/istio_ca.go`, `security/pkg/pki/ca`):
//!
//! * An istiod that starts with a complete `cacerts` Secret in its namespace runs the plug-in
//!   CA and watches the mounted files; one that starts without it runs its self-signed CA and
//!   never looks at `cacerts` again until it restarts.
//! * A changed `cacerts` is loaded when its root bundle equals the current one (a new
//!   intermediate under the same root), or when `ISTIO_MULTIROOT_MESH=true` and the new bundle is
//!   a superset or subset of the current one; otherwise istiod keeps serving the old bundle.
//! * The bundle it serves is published in ConfigMap `istio-ca-root-cert` (key `root-cert.pem`).
//!   Istio's namespace controller writes it into every namespace; the simulation writes it into
//!   istiod's own namespace only, which is where clients of the simulation look.

use std::collections::BTreeSet;

use serde_json::json;

use super::Istiod;
use crate::cluster::Cluster;
use crate::controllers::key;
use crate::object;

pub const CACERTS: &str = "cacerts";
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
const FILES: [&str; 4] = [
    "ca-cert.pem",
    "ca-key.pem",
    "cert-chain.pem",
    "root-cert.pem",
];
/// Field manager of what istiod writes.
const MANAGER: &str = "pilot-discovery";

/// The certificate and key an istiod signs workload certificates with, and the chain it
/// appends to them. `Debug` leaves the key out.
#[derive(Clone, PartialEq)]
pub struct Signer {
    pub cert_pem: String,
    pub key_pem: String,
    /// Appended after every workload certificate (`cert-chain.pem`; empty for a root signer).
    pub chain_pem: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

/// What one istiod pod's CA serves.
#[derive(Clone, Debug, PartialEq)]
pub enum CaMode {
    /// Started with `cacerts`: serves `roots` (PEM), signs with `ca-cert.pem`/`ca-key.pem`, and
    /// follows changes that it accepts.
    PlugIn { roots: String, signer: Signer },
    /// Started without: its own self-signed root (which also signs), `cacerts` ignored.
    SelfSigned { root: String, signer: Signer },
}

impl CaMode {
    /// The root bundle it serves (what proxies of its cluster trust).
    pub fn roots(&self) -> &str {
        match self {
            CaMode::PlugIn { roots, .. } => roots,
            CaMode::SelfSigned { root, .. } => root,
        }
    }

    pub fn signer(&self) -> &Signer {
        match self {
            CaMode::PlugIn { signer, .. } | CaMode::SelfSigned { signer, .. } => signer,
        }
    }
}

/// The certificates of a PEM bundle, compared by their base64 bodies (order and line breaks
/// do not matter, as Istio compares parsed certificates as a set).
pub fn root_set(pem: &str) -> BTreeSet<String> {
    pem.split("-----END CERTIFICATE-----")
        .filter_map(|b| b.split("-----BEGIN CERTIFICATE-----").nth(1))
        .map(|b| b.split_whitespace().collect::<String>())
        .filter(|b| !b.is_empty())
        .collect()
}

/// Whether istiod loads a `cacerts` whose roots are `new` while serving `current`.
pub fn accepts(current: &str, new: &str, multiroot: bool) -> bool {
    let (cur, new) = (root_set(current), root_set(new));
    if new.is_empty() {
        return false;
    }
    cur == new || (multiroot && (new.is_superset(&cur) || new.is_subset(&cur)))
}

/// The four files of a complete `cacerts`, if it is complete.
fn cacerts_files(cluster: &Cluster, namespace: &str) -> Option<[String; 4]> {
    let secret = cluster.store.get(&key("", "secrets"), namespace, CACERTS)?;
    let data = secret.get("data")?;
    let file = |k: &str| -> Option<String> {
        let b64 = data.get(k)?.as_str()?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        String::from_utf8(bytes)
            .ok()
            .filter(|s| !s.trim().is_empty())
    };
    Some([
        file(FILES[0])?,
        file(FILES[1])?,
        file(FILES[2])?,
        file(FILES[3])?,
    ])
}

/// A self-signed root (PEM) and its key, as istiod's self-signed CA makes one (organization =
/// trust domain; here the cluster name so roots of different clusters differ visibly).
fn self_signed_root(cluster: &Cluster) -> (String, String) {
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, cluster.name.clone());
    match rcgen::KeyPair::generate().and_then(|k| params.self_signed(&k).map(|c| (c, k))) {
        Ok((c, k)) => (c.pem(), k.serialize_pem()),
        Err(_) => (String::new(), String::new()),
    }
}

fn plug_in_signer(files: &[String; 4]) -> Signer {
    Signer {
        cert_pem: files[0].clone(),
        key_pem: files[1].clone(),
        chain_pem: files[2].clone(),
    }
}

/// A pod's CA when it starts: plug-in when a complete `cacerts` is there.
pub fn on_start(cluster: &Cluster, istiod: &Istiod) {
    let mode = match cacerts_files(cluster, &istiod.namespace) {
        Some(files) => CaMode::PlugIn {
            roots: files[3].clone(),
            signer: plug_in_signer(&files),
        },
        None => {
            let (root, key) = self_signed_root(cluster);
            CaMode::SelfSigned {
                signer: Signer {
                    cert_pem: root.clone(),
                    key_pem: key,
                    chain_pem: String::new(),
                },
                root,
            }
        }
    };
    let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
    if st.ca.contains_key(&istiod.uid) {
        return;
    }
    st.ca.insert(istiod.uid.clone(), mode);
    drop(st);
    publish(cluster, istiod);
}

/// `cacerts` changed: each plug-in istiod of that namespace loads it or keeps what it has.
pub fn on_cacerts_change(cluster: &Cluster, istiods: &[Istiod]) {
    for istiod in istiods {
        let Some(files) = cacerts_files(cluster, &istiod.namespace) else {
            // Files gone or incomplete: istiod keeps what it loaded.
            continue;
        };
        let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
        let Some(CaMode::PlugIn { roots, signer }) = st.ca.get_mut(&istiod.uid) else {
            continue;
        };
        if accepts(roots, &files[3], istiod.multiroot) {
            *roots = files[3].clone();
            *signer = plug_in_signer(&files);
        } else {
            st.rejected.insert(istiod.uid.clone());
            continue;
        }
        st.rejected.remove(&istiod.uid);
        drop(st);
        publish(cluster, istiod);
    }
}

/// Writes the bundle this istiod serves into `istio-ca-root-cert`.
fn publish(cluster: &Cluster, istiod: &Istiod) {
    let roots = {
        let st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
        match st.ca.get(&istiod.uid) {
            Some(mode) => mode.roots().to_string(),
            None => return,
        }
    };
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOT_CONFIGMAP, "namespace": istiod.namespace,
            "labels": {"istio.io/config": "true"}},
        "data": {"root-cert.pem": roots},
    });
    let _ = cluster.apply_internal(cm, MANAGER);
}

/// The istiod pods of `namespace` the simulation knows.
pub fn istiods_in(cluster: &Cluster, namespace: &str) -> Vec<Istiod> {
    cluster
        .store
        .list(&key("", "pods"), Some(namespace))
        .0
        .iter()
        .filter(|p| object::meta_str(p, "deletionTimestamp").is_none())
        .filter_map(|p| super::identify(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(body: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    }

    #[test]
    fn istiod_loads_only_a_bundle_change_it_can_bridge() {
        let (a, b, c) = (pem("QUFB"), pem("QkJC"), pem("Q0ND"));
        let ab = format!("{a}{b}");
        let ba = format!("{b}{a}");
        // Same roots (a new intermediate under the same root): always.
        assert!(accepts(&a, &a, false));
        assert!(accepts(&ab, &ba, false), "order does not matter");
        // Growing or shrinking: only with ISTIO_MULTIROOT_MESH.
        assert!(!accepts(&a, &ab, false));
        assert!(accepts(&a, &ab, true));
        assert!(accepts(&ab, &b, true));
        // A swap: never.
        assert!(!accepts(&a, &b, true));
        assert!(!accepts(&ab, &format!("{b}{c}"), true));
        assert!(!accepts(&a, "", true));
    }
}
