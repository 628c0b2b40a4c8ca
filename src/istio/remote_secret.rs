//! Endpoint discovery between clusters, as `istioctl create-remote-secret` does it: a reader
//! ServiceAccount (with Istio's reader ClusterRole) in the remote cluster, a long-lived
//! `kubernetes.io/service-account-token` Secret for it, and in the target cluster Secret
//! `istio-remote-secret-<cluster>` (label `istio/multiCluster: "true"`, annotation
//! `networking.istio.io/cluster`) whose data key `<cluster>` is a bearer-token kubeconfig.
//!
//! Pure functions: object builders, the kubeconfig rendering, names and hashes.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

/// Label istiod selects remote secrets by (in its own namespace).
pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";
/// Informational annotation naming the remote cluster.
pub const CLUSTER_ANNOTATION: &str = "networking.istio.io/cluster";
/// Istio's reader ServiceAccount (base chart).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "istio-reader-service-account";
/// Type of legacy (long-lived) service-account token secrets.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation binding a token secret to its ServiceAccount.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

/// Name of the secret in the target cluster for remote cluster `cluster_name`.
pub fn secret_name(cluster_name: &str) -> String {
    format!("istio-remote-secret-{cluster_name}")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What makes a token secret distinct: one per (target cluster, target namespace, remote
/// cluster name, service account, rotation trigger), so two targets never share a token and a
/// rotation gets a new secret beside the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenKey<'a> {
    /// The target cluster's API server URL (its identity as far as we can tell).
    pub target_server: &'a str,
    pub target_namespace: &'a str,
    pub cluster_name: &'a str,
    pub service_account: &'a str,
    pub rotation: &'a str,
}

/// Annotation on our token secrets naming whose they are: [`token_owner`] of their key. The
/// instance label alone does not tell, since two targets of the same remote share it.
pub const TOKEN_FOR_ANNOTATION: &str = "mesh.tfmesh.dev/token-for";

/// The owner of a token secret: its key without the rotation trigger, hashed. Every token one
/// resource ever minted (rotations included) has the same owner, so the ones it no longer
/// holds can be found in the cluster even when Terraform state lost track of them.
pub fn token_owner(key: &TokenKey<'_>) -> String {
    let mut input = b"token-owner\0".to_vec();
    for part in [
        key.target_server,
        key.target_namespace,
        key.cluster_name,
        key.service_account,
    ] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    sha256_hex(&input)[..10].to_string()
}

/// Deterministic name of our token secret: `<sa>-remote-token-<hash>` (the ServiceAccount
/// name is shortened when needed so the result is a valid object name).
pub fn token_secret_name(key: &TokenKey<'_>) -> String {
    let mut input = Vec::new();
    for part in [
        key.target_server,
        key.target_namespace,
        key.cluster_name,
        key.service_account,
        key.rotation,
    ] {
        input.extend_from_slice(part.as_bytes());
        input.push(0);
    }
    let hash = &sha256_hex(&input)[..10];
    let sa: String = key.service_account.chars().take(200).collect();
    let sa = sa.trim_end_matches(['-', '.']);
    format!("{sa}-remote-token-{hash}")
}

/// The token secret for `service_account`: the token controller fills in `token`, `ca.crt`
/// and `namespace`.
pub fn token_secret(
    namespace: &str,
    name: &str,
    service_account: &str,
    owner: &str,
    labels: BTreeMap<String, String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (SA_NAME_ANNOTATION.to_string(), service_account.to_string()),
                (TOKEN_FOR_ANNOTATION.to_string(), owner.to_string()),
            ])),
            ..Default::default()
        },
        type_: Some(TOKEN_SECRET_TYPE.into()),
        ..Default::default()
    }
}

/// The credentials a populated token secret holds. Debug never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub ca_crt: Vec<u8>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"<redacted>")
            .field("ca_crt_len", &self.ca_crt.len())
            .finish()
    }
}

/// `token` and `ca.crt` of a token secret, once both are populated.
pub fn token_of(secret: &Secret) -> Option<Token> {
    let data = secret.data.as_ref()?;
    let token = String::from_utf8(data.get("token")?.0.clone()).ok()?;
    let ca_crt = data.get("ca.crt")?.0.clone();
    (!token.is_empty() && !ca_crt.is_empty()).then_some(Token { token, ca_crt })
}

/// Everything the remote-secret kubeconfig is made of. Debug never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct KubeconfigSpec<'a> {
    pub cluster_name: &'a str,
    pub server: &'a str,
    pub tls_server_name: Option<&'a str>,
    pub token: &'a Token,
}

impl fmt::Debug for KubeconfigSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeconfigSpec")
            .field("cluster_name", &self.cluster_name)
            .field("server", &self.server)
            .field("tls_server_name", &self.tls_server_name)
            .finish_non_exhaustive()
    }
}

/// A YAML scalar that is always parsed as the given string (a JSON string is a valid YAML
/// double-quoted scalar).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The kubeconfig istiod reads, shaped as `istioctl create-remote-secret` writes it (client-go's
/// encoding: keys sorted, cluster/context/user all named after the remote cluster, current
/// context set, bearer token — istiod rejects exec plugins).
pub fn render_kubeconfig(spec: &KubeconfigSpec<'_>) -> String {
    use base64::Engine;
    let name = quoted(spec.cluster_name);
    let ca = base64::engine::general_purpose::STANDARD.encode(&spec.token.ca_crt);
    let mut out = String::from("apiVersion: v1\nclusters:\n- cluster:\n");
    out.push_str(&format!("    certificate-authority-data: {ca}\n"));
    out.push_str(&format!("    server: {}\n", quoted(spec.server)));
    if let Some(tls) = spec.tls_server_name {
        out.push_str(&format!("    tls-server-name: {}\n", quoted(tls)));
    }
    out.push_str(&format!("  name: {name}\ncontexts:\n- context:\n"));
    out.push_str(&format!("    cluster: {name}\n    user: {name}\n"));
    out.push_str(&format!("  name: {name}\ncurrent-context: {name}\n"));
    out.push_str("kind: Config\npreferences: {}\nusers:\n");
    out.push_str(&format!(
        "- name: {name}\n  user:\n    token: {}\n",
        quoted(&spec.token.token)
    ));
    out
}

/// Secret `istio-remote-secret-<cluster>` in the target cluster's istiod namespace.
pub fn remote_secret(
    namespace: &str,
    cluster_name: &str,
    kubeconfig: &str,
    mut labels: BTreeMap<String, String>,
) -> Secret {
    labels.insert(MULTICLUSTER_LABEL.into(), "true".into());
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(cluster_name)),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                CLUSTER_ANNOTATION.to_string(),
                cluster_name.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            cluster_name.to_string(),
            ByteString(kubeconfig.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// SHA-256 of the kubeconfig a live remote secret holds for `cluster_name`, when the secret
/// is still one istiod picks up (label and annotation in place).
pub fn live_kubeconfig_sha256(secret: &Secret, cluster_name: &str) -> Option<String> {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MULTICLUSTER_LABEL))
        .is_some_and(|v| v == "true");
    let annotated = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CLUSTER_ANNOTATION))
        .is_some_and(|v| v == cluster_name);
    if !labelled || !annotated {
        return None;
    }
    let data = secret.data.as_ref()?.get(cluster_name)?;
    Some(sha256_hex(&data.0))
}

/// The ServiceAccount istiod in other clusters reads this cluster as.
pub fn reader_service_account(
    namespace: &str,
    name: &str,
    mut labels: BTreeMap<String, String>,
) -> ServiceAccount {
    labels.insert("app".into(), "istio-reader".into());
    labels.insert("app.kubernetes.io/name".into(), "istio-reader".into());
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Name of our reader ClusterRole and ClusterRoleBinding. Deliberately not Istio's own
/// `istio-reader-clusterrole-<ns>`, so a later Helm or istioctl install does not collide.
pub fn reader_rbac_name(service_account_namespace: &str, service_account: &str) -> String {
    format!("mesh-remote-reader-{service_account_namespace}-{service_account}")
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        verbs: v(verbs),
        ..Default::default()
    }
}

/// The rules of Istio's reader ClusterRole (istiod chart `reader-clusterrole.yaml`), with
/// what the chart adds on a remote cluster (`istiodRemote.enabled`): a primary running with
/// `EXTERNAL_ISTIOD` writes through the remote secret (leader election lock and
/// `istio-ca-root-cert` ConfigMaps, the remote injector's and validator's caBundle), and
/// without these rights the remote's sidecars never start. The resource that creates this
/// role cannot tell a remote from another primary, so it always carries them.
pub fn reader_rules() -> Vec<PolicyRule> {
    let mut rules = base_reader_rules();
    rules.extend(remote_reader_rules());
    rules
}

/// What `reader-clusterrole.yaml` adds when `istiodRemote.enabled`.
pub fn remote_reader_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            &[""],
            &["configmaps"],
            &["create", "get", "list", "watch", "update"],
        ),
        rule(
            &["admissionregistration.k8s.io"],
            &["mutatingwebhookconfigurations"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(
            &["admissionregistration.k8s.io"],
            &["validatingwebhookconfigurations"],
            &["get", "list", "watch", "update"],
        ),
    ]
}

fn base_reader_rules() -> Vec<PolicyRule> {
    const READ: &[&str] = &["get", "list", "watch"];
    vec![
        rule(
            &[
                "config.istio.io",
                "security.istio.io",
                "networking.istio.io",
                "authentication.istio.io",
                "rbac.istio.io",
                "telemetry.istio.io",
                "extensions.istio.io",
            ],
            &["*"],
            READ,
        ),
        rule(
            &[""],
            &[
                "endpoints",
                "pods",
                "services",
                "nodes",
                "replicationcontrollers",
                "namespaces",
                "secrets",
                "configmaps",
            ],
            READ,
        ),
        rule(&["networking.istio.io"], &["workloadentries"], READ),
        rule(
            &["networking.x-k8s.io", "gateway.networking.k8s.io"],
            &["gateways"],
            READ,
        ),
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(&["apps"], &["replicasets"], READ),
        rule(
            &["multicluster.x-k8s.io"],
            &["serviceexports"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&["multicluster.x-k8s.io"], &["serviceimports"], READ),
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
    ]
}

pub fn reader_cluster_role(name: &str, labels: BTreeMap<String, String>) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        rules: Some(reader_rules()),
        ..Default::default()
    }
}

pub fn reader_cluster_role_binding(
    name: &str,
    service_account_namespace: &str,
    service_account: &str,
    labels: BTreeMap<String, String>,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: service_account.into(),
            namespace: Some(service_account_namespace.into()),
            ..Default::default()
        }]),
    }
}

/// Whether an API server URL points at the local machine (127.0.0.0/8, `localhost`, `::1`):
/// istiod running in another cluster cannot reach such an address.
pub fn is_loopback_server(server: &str) -> bool {
    let host = server_host(server);
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// Whether `server`'s host is a private-range address (RFC 1918, IPv6 unique local): reachable
/// from another cluster only over a shared network (VPC peering, VPN).
pub fn is_private_server(server: &str) -> bool {
    match server_host(server).parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_private(),
        Ok(std::net::IpAddr::V6(ip)) => (ip.segments()[0] & 0xfe00) == 0xfc00,
        Err(_) => false,
    }
}

/// The host part of a URL, lower-cased, without port, brackets or trailing dot.
fn server_host(server: &str) -> String {
    let rest = server.split_once("://").map(|(_, r)| r).unwrap_or(server);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            token: "eyJhbGciOi.secret.sig".into(),
            ca_crt: b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec(),
        }
    }

    #[test]
    fn kubeconfig_has_the_istioctl_shape_and_parses() {
        let t = token();
        let spec = KubeconfigSpec {
            cluster_name: "west",
            server: "https://10.0.0.2:6443",
            tls_server_name: Some("api.west"),
            token: &t,
        };
        let yaml = render_kubeconfig(&spec);
        let kc = kube::config::Kubeconfig::from_yaml(&yaml).expect("valid kubeconfig");
        assert_eq!(kc.current_context.as_deref(), Some("west"));
        assert_eq!(kc.clusters.len(), 1);
        assert_eq!(kc.clusters[0].name, "west");
        let c = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(c.server.as_deref(), Some("https://10.0.0.2:6443"));
        assert_eq!(c.tls_server_name.as_deref(), Some("api.west"));
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(c.certificate_authority_data.as_ref().unwrap())
            .unwrap();
        assert_eq!(ca, t.ca_crt);
        let ctx = kc.contexts[0].context.as_ref().unwrap();
        assert_eq!(
            (kc.contexts[0].name.as_str(), ctx.cluster.as_str()),
            ("west", "west")
        );
        assert_eq!(ctx.user.as_deref(), Some("west"));
        assert_eq!(kc.auth_infos[0].name, "west");
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(user.token.as_ref().unwrap().expose_secret(), t.token);
        assert!(user.exec.is_none());
        // Same inputs, same bytes (the hash in state depends on it).
        assert_eq!(yaml, render_kubeconfig(&spec));
        // No tls-server-name key when not given.
        let plain = render_kubeconfig(&KubeconfigSpec {
            tls_server_name: None,
            ..spec.clone()
        });
        assert!(!plain.contains("tls-server-name"));
        assert!(!format!("{spec:?}").contains("secret") && !format!("{t:?}").contains("secret"));
    }

    #[test]
    fn remote_secret_is_what_istiod_selects() {
        let s = remote_secret("istio-system", "west", "KC", BTreeMap::new());
        assert_eq!(s.metadata.name.as_deref(), Some("istio-remote-secret-west"));
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[MULTICLUSTER_LABEL],
            "true"
        );
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[CLUSTER_ANNOTATION],
            "west"
        );
        assert_eq!(s.data.as_ref().unwrap()["west"].0, b"KC");
        assert_eq!(
            live_kubeconfig_sha256(&s, "west").as_deref(),
            Some(sha256_hex(b"KC").as_str())
        );
        let mut unlabelled = s.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(live_kubeconfig_sha256(&unlabelled, "west"), None);
        assert_eq!(live_kubeconfig_sha256(&s, "east"), None);
    }

    #[test]
    fn token_secrets_are_distinct_per_target_and_rotation() {
        let key = TokenKey {
            target_server: "https://a:6443",
            target_namespace: "istio-system",
            cluster_name: "west",
            service_account: DEFAULT_SERVICE_ACCOUNT,
            rotation: "",
        };
        let name = token_secret_name(&key);
        assert!(name.starts_with("istio-reader-service-account-remote-token-"));
        assert_eq!(name, token_secret_name(&key.clone()));
        let other_target = TokenKey {
            target_server: "https://b:6443",
            ..key.clone()
        };
        let rotated = TokenKey {
            rotation: "2026-11",
            ..key.clone()
        };
        assert_ne!(name, token_secret_name(&other_target));
        assert_ne!(name, token_secret_name(&rotated));
        let long = "x".repeat(253);
        let n = token_secret_name(&TokenKey {
            service_account: &long,
            ..key
        });
        assert!(n.len() <= 253, "{}", n.len());

        // Every rotation of one resource's token has the same owner; another target's not.
        let owner = token_owner(&key);
        assert_eq!(owner.len(), 10);
        assert_eq!(owner, token_owner(&rotated));
        assert_ne!(owner, token_owner(&other_target));
        let s = token_secret("istio-system", &name, "reader", &owner, BTreeMap::new());
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[TOKEN_FOR_ANNOTATION],
            owner
        );
        assert_eq!(s.type_.as_deref(), Some(TOKEN_SECRET_TYPE));
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[SA_NAME_ANNOTATION],
            "reader"
        );
        assert_eq!(token_of(&s), None);
        let mut populated = s;
        populated.data = Some(BTreeMap::from([
            ("token".to_string(), ByteString(b"t".to_vec())),
            ("ca.crt".to_string(), ByteString(b"c".to_vec())),
        ]));
        assert_eq!(token_of(&populated).unwrap().token, "t");
    }

    #[test]
    fn reader_rbac_follows_istio() {
        let rules = reader_rules();
        let allows = |group: &str, res: &str, verb: &str| {
            rules.iter().any(|r| {
                r.api_groups.as_ref().unwrap().iter().any(|g| g == group)
                    && r.resources
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|x| x == res || x == "*")
                    && r.verbs.iter().any(|v| v == verb)
            })
        };
        assert!(allows("", "pods", "watch"));
        assert!(allows("", "secrets", "list"));
        assert!(allows("discovery.k8s.io", "endpointslices", "list"));
        assert!(allows("networking.istio.io", "serviceentries", "get"));
        assert!(allows("authentication.k8s.io", "tokenreviews", "create"));
        assert!(allows("multicluster.x-k8s.io", "serviceexports", "create"));
        assert!(!allows("", "pods", "create"));
        assert!(!allows("", "secrets", "delete"));
        // What the chart adds on a remote, used by a primary with EXTERNAL_ISTIOD.
        assert!(allows("", "configmaps", "create"));
        assert!(allows("", "configmaps", "update"));
        assert!(!allows("", "configmaps", "delete"));
        for verb in ["get", "list", "watch", "update", "patch"] {
            assert!(allows(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                verb
            ));
        }
        for verb in ["get", "list", "watch", "update"] {
            assert!(allows(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                verb
            ));
        }
        assert!(!allows(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "delete"
        ));
        let b = reader_cluster_role_binding("r", "istio-system", "sa", BTreeMap::new());
        assert_eq!(b.role_ref.name, "r");
        assert_eq!(
            b.subjects.unwrap()[0].namespace.as_deref(),
            Some("istio-system")
        );
    }

    #[test]
    fn private_servers() {
        assert!(is_private_server("https://10.0.0.5:6443"));
        assert!(is_private_server("https://192.168.1.2"));
        assert!(is_private_server("https://[fd00::1]:6443"));
        assert!(!is_private_server("https://203.0.113.9:6443"));
        assert!(!is_private_server("https://api.example.com"));
    }

    #[test]
    fn loopback_servers() {
        for s in [
            "https://127.0.0.1:6443",
            "https://127.1.2.3",
            "https://localhost:8443/",
            "https://LOCALHOST",
            "https://[::1]:6443",
            "http://user@127.0.0.1",
        ] {
            assert!(is_loopback_server(s), "{s}");
        }
        for s in [
            "https://10.0.0.1:6443",
            "https://api.example.com",
            "https://[2001:db8::1]:443",
            "https://localhost.example.com",
            "https://128.0.0.1",
        ] {
            assert!(!is_loopback_server(s), "{s}");
        }
    }
}
