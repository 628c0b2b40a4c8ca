//! The `kubernetes { ... }` block every cluster-touching resource carries, and its conversion
//! to a `kube::Connection`. Same meaning as in the hashicorp/kubernetes and helm providers.
//! Changing it never replaces a resource: it says how to reach the cluster, not what is in it.

use crate::kube::{Connection, Exec};
use crate::plugin::{Attribute, AttributePath, Block, Diagnostics, NestedBlock, Value};

/// The block, named `name` (`kubernetes`, or `kubernetes` inside `remote`).
pub fn block() -> NestedBlock {
    NestedBlock::single(
        "kubernetes",
        Block::new("How to reach the cluster's API server. Inline values override the kubeconfig's; with nothing set, the current context of `KUBECONFIG` or `~/.kube/config` is used. Any value may come from resources created in the same apply: planning never contacts the cluster.")
            .attr(Attribute::string("host", "API server URL, e.g. `https://1.2.3.4:6443`.").optional())
            .attr(Attribute::string("cluster_ca_certificate", "PEM-encoded CA certificate of the API server.").optional())
            .attr(Attribute::string("token", "Bearer token. The connection is part of each resource's configuration, so a token that is new on every run (such as `data.aws_eks_cluster_auth`'s) shows as an in-place update in every plan; prefer `exec` (e.g. `aws eks get-token`), which runs only when the provider connects.").optional().sensitive())
            .attr(Attribute::string("client_certificate", "PEM-encoded client certificate for TLS authentication.").optional())
            .attr(Attribute::string("client_key", "PEM-encoded private key of `client_certificate`.").optional().sensitive())
            .attr(Attribute::bool("insecure", "Skip verification of the API server's certificate. For throw-away test clusters only.").optional())
            .attr(Attribute::string("tls_server_name", "Server name to verify the API server's certificate against, when it differs from the host.").optional())
            .attr(Attribute::string("proxy_url", "HTTP proxy to reach the API server through.").optional())
            .attr(Attribute::string("config_path", "Path to a kubeconfig file. Default: `KUBECONFIG`, then `~/.kube/config` (only read when no `host` is set, or when `config_context` is).").optional())
            .attr(Attribute::string("config_context", "Kubeconfig context to use instead of the current one.").optional())
            .block(NestedBlock::single(
                "exec",
                Block::new("A credential plugin that prints an `ExecCredential`, e.g. `aws eks get-token`. It runs once per cluster per provider process; its token is refreshed when it expires.")
                    .attr(Attribute::string("api_version", "`client.authentication.k8s.io/v1` or `v1beta1`.").required())
                    .attr(Attribute::string("command", "The plugin executable.").required())
                    .attr(Attribute::string_list("args", "Arguments.").optional())
                    .attr(Attribute::string_map("env", "Extra environment variables.").optional()),
            )),
    )
}

fn opt(v: &Value, key: &str) -> Option<String> {
    v.get(key).as_str().map(str::to_string)
}

/// The connection a block value describes. Call it at apply/read time only (values known).
pub fn connection(block: &Value) -> Connection {
    let exec = block.get("exec");
    Connection {
        host: opt(block, "host"),
        cluster_ca_certificate: opt(block, "cluster_ca_certificate"),
        token: opt(block, "token"),
        client_certificate: opt(block, "client_certificate"),
        client_key: opt(block, "client_key"),
        insecure: block.get("insecure").as_bool(),
        tls_server_name: opt(block, "tls_server_name"),
        proxy_url: opt(block, "proxy_url"),
        config_path: opt(block, "config_path"),
        config_context: opt(block, "config_context"),
        exec: exec.as_map().map(|_| Exec {
            api_version: opt(exec, "api_version").unwrap_or_default(),
            command: opt(exec, "command").unwrap_or_default(),
            args: exec
                .get("args")
                .as_list()
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            env: exec
                .get("env")
                .as_map()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        }),
    }
}

/// Static checks of what is known (unknown values are skipped: they come from resources
/// created in the same apply).
pub fn validate(block: &Value, path: &AttributePath, diags: &mut Diagnostics) {
    let at = |name: &str| path.clone().attr(name);
    if let Some(host) = block.get("host").as_str() {
        if !(host.starts_with("https://") || host.starts_with("http://")) {
            diags.error_at(
                at("host"),
                "Invalid host",
                format!("{host:?} must be a URL such as https://1.2.3.4:6443."),
            );
        }
    }
    for pem_attr in ["cluster_ca_certificate", "client_certificate"] {
        if let Some(pem) = block.get(pem_attr).as_str() {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                diags.error_at(
                    at(pem_attr),
                    "Invalid certificate",
                    "Expected a PEM certificate (-----BEGIN CERTIFICATE-----).",
                );
            }
        }
    }
    let cert = block.get("client_certificate");
    let key = block.get("client_key");
    if !cert.is_unknown() && !key.is_unknown() && cert.is_null() != key.is_null() {
        diags.error_at(
            at(if cert.is_null() {
                "client_certificate"
            } else {
                "client_key"
            }),
            "Incomplete client certificate",
            "client_certificate and client_key go together: set both or neither.",
        );
    }
    if let Some(v) = block.get("exec").get("api_version").as_str() {
        if !v.starts_with("client.authentication.k8s.io/") {
            diags.error_at(
                path.clone().attr("exec").attr("api_version"),
                "Invalid exec api_version",
                format!("{v:?} is not a client.authentication.k8s.io version (use v1 or v1beta1)."),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::schema::lint;

    #[test]
    fn block_is_documented_and_secrets_are_sensitive() {
        let b = block();
        assert_eq!(lint(&b.block, "kubernetes."), Vec::<String>::new());
        for name in ["token", "client_key"] {
            assert!(b.block.attribute(name).unwrap().sensitive, "{name}");
        }
        assert!(b.block.attributes.iter().all(|a| !a.force_new));
        assert!(!b.force_new);
    }

    #[test]
    fn values_become_a_connection() {
        let v = Value::object([
            ("config_context", Value::from("east")),
            ("token", Value::from("t")),
            (
                "exec",
                Value::object([
                    (
                        "api_version",
                        Value::from("client.authentication.k8s.io/v1"),
                    ),
                    ("command", Value::from("aws")),
                    (
                        "args",
                        Value::List(vec![Value::from("eks"), Value::from("get-token")]),
                    ),
                    ("env", Value::object([("AWS_PROFILE", Value::from("prod"))])),
                ]),
            ),
        ]);
        let c = connection(&v);
        assert_eq!(c.config_context.as_deref(), Some("east"));
        let exec = c.exec.unwrap();
        assert_eq!(exec.args, ["eks", "get-token"]);
        assert_eq!(exec.env["AWS_PROFILE"], "prod");
    }

    #[test]
    fn bad_values_are_reported_on_their_path_and_unknowns_skipped() {
        let mut d = Diagnostics::new();
        let v = Value::object([
            ("host", Value::from("1.2.3.4")),
            ("client_certificate", Value::Unknown),
            ("exec", Value::object([("api_version", Value::from("v1"))])),
        ]);
        validate(&v, &AttributePath::attrs(&["kubernetes"]), &mut d);
        let paths: Vec<String> =
            d.0.iter()
                .map(|x| x.path.as_ref().unwrap().to_string())
                .collect();
        assert_eq!(paths, ["kubernetes.host", "kubernetes.exec.api_version"]);
    }
}
