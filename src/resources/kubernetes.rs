//! The `kubernetes { ... }` block every cluster-touching resource carries, its one-value form
//! `connection` (a JSON string, as `mesh_cluster` exports it), and their conversion to a
//! `kube::Connection`. Same meaning as in the hashicorp/kubernetes and helm providers.
//! Changing either never replaces a resource: it says how to reach the cluster, not what is in
//! it.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use crate::kube::{Connection, Exec, KubeError};
use crate::plugin::value;
use crate::plugin::{Attribute, AttributePath, Block, Diagnostics, NestedBlock, Value};

/// The one-value form of the block, taken wherever the block is, and given by `mesh_cluster`.
pub const CONNECTION: &str = "connection";

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
    for p in problems(block) {
        let at = p.field.iter().fold(path.clone(), |at, f| at.attr(f));
        diags.error_at(at, p.summary, p.detail);
    }
}

/// One problem `validate` finds: the attribute (path inside the block), what, and why.
struct Problem {
    field: &'static [&'static str],
    summary: &'static str,
    detail: String,
}

fn problems(block: &Value) -> Vec<Problem> {
    let mut found = Vec::new();
    if let Some(host) = block.get("host").as_str() {
        if !(host.starts_with("https://") || host.starts_with("http://")) {
            found.push(Problem {
                field: &["host"],
                summary: "Invalid host",
                detail: format!("{host:?} must be a URL such as https://1.2.3.4:6443."),
            });
        }
    }
    for field in [&["cluster_ca_certificate"], &["client_certificate"]] {
        if let Some(pem) = block.get(field[0]).as_str() {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                found.push(Problem {
                    field,
                    summary: "Invalid certificate",
                    detail: "Expected a PEM certificate (-----BEGIN CERTIFICATE-----).".into(),
                });
            }
        }
    }
    let cert = block.get("client_certificate");
    let key = block.get("client_key");
    if !cert.is_unknown() && !key.is_unknown() && cert.is_null() != key.is_null() {
        found.push(Problem {
            field: if cert.is_null() {
                &["client_certificate"]
            } else {
                &["client_key"]
            },
            summary: "Incomplete client certificate",
            detail: "client_certificate and client_key go together: set both or neither.".into(),
        });
    }
    if let Some(v) = block.get("exec").get("api_version").as_str() {
        if !v.starts_with("client.authentication.k8s.io/") {
            found.push(Problem {
                field: &["exec", "api_version"],
                summary: "Invalid exec api_version",
                detail: format!(
                    "{v:?} is not a client.authentication.k8s.io version (use v1 or v1beta1)."
                ),
            });
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// `connection`: the block as one JSON string. A full mesh of N clusters has N·(N−1) remote
// secrets with two connections each, and Terraform rewrites its whole state file after every
// resource it applies: a reference to one string per connection keeps each of them a few bytes
// instead of eleven attributes, most of them null, and four sensitive paths.

/// The argument, beside the block, on every resource that takes one.
pub fn connection_attribute() -> Attribute {
    Attribute::string(CONNECTION, "How to reach the cluster, as one value instead of a `kubernetes` block: usually `mesh_cluster`'s `connection` output (`connection = mesh_cluster.east.connection`), or a JSON object with the block's attribute names (`jsonencode({ config_path = \"~/.kube/config\", config_context = \"east\" })`; `exec` as an object with `api_version`, `command`, `args`, `env`). Same meaning as the block; set one or the other. In a large mesh it keeps Terraform's state small: each remote secret holds two connections. Changing it never replaces the resource.").optional().sensitive()
}

/// `mesh_cluster`'s `connection` output: its block as the JSON `connection` takes, the set
/// attributes only (so equal blocks give equal strings; no block is `{}`, the default
/// kubeconfig). Unknown until the block is known.
pub fn encode(block: &Value) -> Value {
    if !block.is_wholly_known() {
        return Value::Unknown;
    }
    /// The JSON of `v` without its null members.
    fn set_only(v: &Value) -> Json {
        match v {
            Value::Map(fields) => Json::Object(
                fields
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), set_only(v)))
                    .collect(),
            ),
            other => value::to_json(other),
        }
    }
    let json = match block {
        Value::Null => Json::Object(Map::new()),
        b => set_only(b),
    };
    Value::from(json.to_string())
}

/// A `connection` string as the block's value, or why it is not one. The messages name keys
/// and expected types, never a value: a connection may hold a token or a key.
fn parse(text: &str) -> Result<Value, String> {
    let json: Json = serde_json::from_str(text).map_err(|e| {
        format!(
            "not JSON ({}, line {} column {})",
            classify(&e),
            e.line(),
            e.column()
        )
    })?;
    let Json::Object(fields) = json else {
        return Err("not a JSON object".into());
    };
    let string = |k: &str, v: &Json| match v {
        Json::String(s) => Ok(Value::from(s.as_str())),
        Json::Null => Ok(Value::Null),
        _ => Err(format!("`{k}` must be a string")),
    };
    let mut block = BTreeMap::new();
    for (k, v) in &fields {
        let value = match k.as_str() {
            "host" | "cluster_ca_certificate" | "token" | "client_certificate" | "client_key"
            | "tls_server_name" | "proxy_url" | "config_path" | "config_context" => string(k, v)?,
            "insecure" => match v {
                Json::Bool(b) => Value::Bool(*b),
                Json::Null => Value::Null,
                _ => return Err("`insecure` must be a bool".into()),
            },
            "exec" => parse_exec(v)?,
            other => {
                return Err(format!(
                    "unknown key `{other}` (the keys are the kubernetes block's: host, cluster_ca_certificate, token, client_certificate, client_key, insecure, tls_server_name, proxy_url, config_path, config_context, exec)"
                ))
            }
        };
        block.insert(k.clone(), value);
    }
    Ok(Value::Map(block))
}

fn parse_exec(v: &Json) -> Result<Value, String> {
    let fields = match v {
        Json::Null => return Ok(Value::Null),
        Json::Object(fields) => fields,
        _ => return Err("`exec` must be an object".into()),
    };
    let mut exec = BTreeMap::new();
    for (k, v) in fields {
        let value = match (k.as_str(), v) {
            ("api_version" | "command", Json::String(s)) => Value::from(s.as_str()),
            ("args", Json::Array(items)) => Value::List(
                items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(Value::from)
                            .ok_or("`exec.args` must be a list of strings")
                    })
                    .collect::<Result<_, _>>()?,
            ),
            ("env", Json::Object(env)) => Value::Map(
                env.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            v.as_str()
                                .map(Value::from)
                                .ok_or("`exec.env` must be a map of strings")?,
                        ))
                    })
                    .collect::<Result<_, &str>>()?,
            ),
            ("args" | "env", Json::Null) => Value::Null,
            ("api_version" | "command" | "args" | "env", _) => {
                return Err(format!("`exec.{k}` has the wrong type"))
            }
            (other, _) => {
                return Err(format!(
                    "unknown key `exec.{other}` (the keys are api_version, command, args, env)"
                ))
            }
        };
        exec.insert(k.clone(), value);
    }
    for required in ["api_version", "command"] {
        if exec.get(required).is_none_or(Value::is_null) {
            return Err(format!("`exec.{required}` is required"));
        }
    }
    Ok(Value::Map(exec))
}

/// serde_json's own message may quote the input; say only what kind of error it is.
fn classify(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Eof => "it ends early",
        serde_json::error::Category::Syntax => "a syntax error",
        serde_json::error::Category::Data | serde_json::error::Category::Io => "unreadable",
    }
}

/// The connection settings of a resource (or nested block) that takes `connection` or a
/// `kubernetes` block, as block-shaped values: the parsed `connection` when it is set, else
/// the block. `Ok(Value::Unknown)` while the connection is unknown.
pub fn settings(v: &Value) -> Result<Value, String> {
    settings_of(v.get(CONNECTION), v.get("kubernetes"))
}

/// [`settings`] of a connection string and the block it stands in for, wherever they are.
pub fn settings_of(connection_value: &Value, block: &Value) -> Result<Value, String> {
    match connection_value {
        Value::Unknown => Ok(Value::Unknown),
        Value::Null => Ok(block.clone()),
        c => parse(c.as_str().unwrap_or_default()),
    }
}

/// The connection of a resource (or nested block) with `connection` or a `kubernetes` block.
/// Call it at apply/read time only (values known).
pub fn connection_of(v: &Value) -> Result<Connection, KubeError> {
    connection_from(v.get(CONNECTION), v.get("kubernetes"))
}

/// [`connection_of`] a connection string and the block it stands in for.
pub fn connection_from(connection_value: &Value, block: &Value) -> Result<Connection, KubeError> {
    settings_of(connection_value, block)
        .map(|block| connection(&block))
        .map_err(|message| KubeError::Config {
            cluster: "(connection)".into(),
            message: format!("connection: {message}"),
        })
}

/// Checks of `connection` and the block of `v`, the object holding them at `path`: one or the
/// other, and what either says checked as `validate` checks the block.
pub fn validate_choice(v: &Value, path: &AttributePath, diags: &mut Diagnostics) {
    validate_pair(
        v.get(CONNECTION),
        &path.clone().attr(CONNECTION),
        v.get("kubernetes"),
        &path.clone().attr("kubernetes"),
        diags,
    );
}

/// [`validate_choice`] of a connection string at `at` and the block at `block_at` it stands
/// in for.
pub fn validate_pair(
    connection_value: &Value,
    at: &AttributePath,
    block: &Value,
    block_at: &AttributePath,
    diags: &mut Diagnostics,
) {
    let at = at.clone();
    match connection_value {
        Value::Null => validate(block, block_at, diags),
        Value::Unknown => {}
        c => {
            if !block.is_null() {
                diags.error_at(
                    at.clone(),
                    "Conflicting connection settings",
                    format!("Set either `{at}` or the `kubernetes` block it stands for ({block_at}), not both."),
                );
                return;
            }
            match parse(c.as_str().unwrap_or_default()) {
                Err(why) => diags.error_at(at, "Invalid connection", format!("The connection is {why}. It takes a JSON object of the kubernetes block's attributes, as `mesh_cluster`'s `connection` output gives.")),
                Ok(block) => {
                    for p in problems(&block) {
                        diags.error_at(
                            at.clone(),
                            p.summary,
                            format!("`{}` in the connection: {}", p.field.join("."), p.detail),
                        );
                    }
                }
            }
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

    fn with_connection(c: Value) -> Value {
        Value::object([(CONNECTION, c)])
    }

    fn problems_at(v: &Value) -> Vec<(String, String)> {
        let mut d = Diagnostics::new();
        validate_choice(v, &AttributePath::attrs(&["remote"]), &mut d);
        d.0.iter()
            .map(|x| {
                (
                    x.path.as_ref().unwrap().to_string(),
                    format!("{}: {}", x.summary, x.detail),
                )
            })
            .collect()
    }

    #[test]
    fn the_block_and_its_connection_string_reach_the_same_cluster() {
        let block = Value::object([
            ("host", Value::from("https://10.0.0.1:6443")),
            ("token", Value::from("s3cr3t")),
            ("insecure", Value::from(true)),
            ("client_certificate", Value::Null),
            (
                "exec",
                Value::object([
                    (
                        "api_version",
                        Value::from("client.authentication.k8s.io/v1"),
                    ),
                    ("command", Value::from("aws")),
                    ("args", Value::List(vec![Value::from("eks")])),
                    ("env", Value::Null),
                ]),
            ),
        ]);
        let encoded = encode(&block);
        let text = encoded.as_str().unwrap();
        // The set attributes only, keys sorted: equal blocks give equal strings.
        assert_eq!(
            text,
            r#"{"exec":{"api_version":"client.authentication.k8s.io/v1","args":["eks"],"command":"aws"},"host":"https://10.0.0.1:6443","insecure":true,"token":"s3cr3t"}"#
        );
        let from_string = connection_of(&with_connection(encoded.clone())).unwrap();
        assert!(from_string == connection(&block), "{from_string:?}");
        // With neither, the block (here absent: the default kubeconfig).
        assert!(connection_of(&Value::Null).unwrap() == Connection::default());
        // No block means the default context; unknown until every value is known.
        assert_eq!(encode(&Value::Null).as_str(), Some("{}"));
        assert!(encode(&Value::object([("host", Value::Unknown)])).is_unknown());
        assert_eq!(
            settings(&with_connection(Value::Unknown)),
            Ok(Value::Unknown)
        );
    }

    #[test]
    fn a_bad_connection_is_named_without_echoing_its_values() {
        let cases = [
            (
                r#"{"host": "https://a:6443", "token": "s3cr3t""#,
                "not JSON (it ends early",
            ),
            (r#"["s3cr3t"]"#, "not a JSON object"),
            (r#"{"tokn": "s3cr3t"}"#, "unknown key `tokn`"),
            (r#"{"token": ["s3cr3t"]}"#, "`token` must be a string"),
            (r#"{"insecure": "s3cr3t"}"#, "`insecure` must be a bool"),
            (
                r#"{"exec": {"command": "s3cr3t"}}"#,
                "`exec.api_version` is required",
            ),
            (
                r#"{"exec": {"api_version": "client.authentication.k8s.io/v1", "command": "x", "args": [1]}}"#,
                "`exec.args` must be a list of strings",
            ),
        ];
        for (text, want) in cases {
            let got = problems_at(&with_connection(Value::from(text)));
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert_eq!(got[0].0, "remote.connection");
            assert!(got[0].1.contains(want), "{text}: {}", got[0].1);
            assert!(!got[0].1.contains("s3cr3t"), "{text}: {}", got[0].1);
            let err = connection_of(&with_connection(Value::from(text))).unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn a_connection_is_checked_as_the_block_is_and_conflicts_with_it() {
        let got = problems_at(&with_connection(Value::from(
            r#"{"host": "1.2.3.4", "client_key": "k"}"#,
        )));
        let summaries: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            summaries[0].starts_with("Invalid host: `host` in the connection"),
            "{got:?}"
        );
        assert!(
            summaries[1].starts_with(
                "Incomplete client certificate: `client_certificate` in the connection"
            ),
            "{got:?}"
        );
        assert!(got.iter().all(|(p, _)| p == "remote.connection"));

        let mut both = with_connection(Value::from(r#"{"config_context": "east"}"#));
        both.set(
            "kubernetes",
            Value::object([("config_context", Value::from("east"))]),
        );
        let got = problems_at(&both);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].1.starts_with("Conflicting connection settings"),
            "{got:?}"
        );
        // The block alone is still checked on its own paths; an unknown connection waits.
        let block_only =
            Value::object([("kubernetes", Value::object([("host", Value::from("x"))]))]);
        assert_eq!(problems_at(&block_only)[0].0, "remote.kubernetes.host");
        assert!(problems_at(&with_connection(Value::Unknown)).is_empty());
        assert!(problems_at(&with_connection(Value::from(
            r#"{"config_context": "east"}"#
        )))
        .is_empty());
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
