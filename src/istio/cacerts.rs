//! The plug-in CA: Secret `cacerts` in the istiod namespace with `ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem` (intermediate first, then the root) and `root-cert.pem` — the classic
//! format istiod reads at start-up and hot-reloads afterwards.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

/// Name of the plug-in CA secret.
pub const SECRET_NAME: &str = "cacerts";

/// The ConfigMap istiod publishes the roots it serves in (in every namespace).
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
/// Its key.
pub const ROOT_CONFIGMAP_KEY: &str = "root-cert.pem";

/// The four PEM documents istiod needs. Debug never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_chain_pem: String,
    pub root_cert_pem: String,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CaBundle {
    /// SHA-256 over all four documents: tells whether a live secret still holds exactly this
    /// bundle without keeping or comparing the key anywhere visible.
    pub fn digest(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [
            &self.ca_cert_pem,
            &self.ca_key_pem,
            &self.cert_chain_pem,
            &self.root_cert_pem,
        ] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        ctx.finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The `cacerts` Secret for `bundle` in `namespace`.
pub fn secret(namespace: &str, bundle: &CaBundle, labels: BTreeMap<String, String>) -> Secret {
    let data = [
        ("ca-cert.pem", &bundle.ca_cert_pem),
        ("ca-key.pem", &bundle.ca_key_pem),
        ("cert-chain.pem", &bundle.cert_chain_pem),
        ("root-cert.pem", &bundle.root_cert_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(SECRET_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The bundle held by a live `cacerts` Secret, if it has all four keys.
pub fn bundle_of(secret: &Secret) -> Option<CaBundle> {
    let data = secret.data.as_ref()?;
    let get = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(CaBundle {
        ca_cert_pem: get("ca-cert.pem")?,
        ca_key_pem: get("ca-key.pem")?,
        cert_chain_pem: get("cert-chain.pem")?,
        root_cert_pem: get("root-cert.pem")?,
    })
}

/// The istiod namespace as the provider declares it: the network label (and, for a remote
/// cluster, the annotation naming its control plane cluster) plus our labels.
pub fn namespace(
    name: &str,
    network: &str,
    control_plane_cluster: Option<&str>,
    mut labels: BTreeMap<String, String>,
) -> Namespace {
    labels.insert(super::NETWORK_LABEL.into(), network.into());
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: control_plane_cluster.map(|c| {
                BTreeMap::from([(
                    super::CONTROL_PLANE_CLUSTERS_ANNOTATION.to_string(),
                    c.to_string(),
                )])
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> CaBundle {
        CaBundle {
            ca_cert_pem: "C".into(),
            ca_key_pem: "K".into(),
            cert_chain_pem: "C\nR".into(),
            root_cert_pem: "R".into(),
        }
    }

    #[test]
    fn secret_round_trips_and_hides_the_key_in_debug() {
        let s = secret("istio-system", &bundle(), BTreeMap::new());
        assert_eq!(s.metadata.name.as_deref(), Some("cacerts"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.data.as_ref().unwrap().len(), 4);
        assert_eq!(bundle_of(&s), Some(bundle()));
        assert!(!format!("{:?}", bundle()).contains('K'));
    }

    #[test]
    fn digest_changes_with_any_document() {
        let mut other = bundle();
        other.ca_key_pem = "K2".into();
        assert_ne!(bundle().digest(), other.digest());
        assert_eq!(bundle().digest(), bundle().digest());
    }

    #[test]
    fn namespace_carries_network_and_control_plane() {
        let ns = namespace("istio-system", "net-1", Some("east"), BTreeMap::new());
        assert_eq!(
            ns.metadata.labels.unwrap()["topology.istio.io/network"],
            "net-1"
        );
        assert_eq!(
            ns.metadata.annotations.unwrap()["topology.istio.io/controlPlaneClusters"],
            "east"
        );
    }
}
