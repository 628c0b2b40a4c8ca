//! Istio knowledge as data: the objects a multicluster install consists of, with Istio's own
//! names, labels and keys. Knows Kubernetes objects, nothing of Terraform.

pub mod cacerts;
pub mod eastwest;
pub mod install;
pub mod istiod;
pub mod operator;
pub mod remote_secret;
pub mod restart;
pub mod verification;

/// Namespace label carrying the cluster's network (read by istiod and the gateways).
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Namespace annotation of a remote cluster naming the cluster(s) running its control plane.
pub const CONTROL_PLANE_CLUSTERS_ANNOTATION: &str = "topology.istio.io/controlPlaneClusters";

/// Whether `s` is a DNS-1123 label (what Istio requires of cluster names).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["cluster-east-1", "a", "c1"] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "East", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }
}
