//! Static checks of a configuration (it may hold unknowns), and the typed trust and control
//! plane settings it describes.

use super::*;

pub(super) fn field_path(block: &str, f: Field) -> AttributePath {
    AttributePath::attrs(&[block, f.name()])
}

/// What the configuration asks for, once known.
pub(super) enum Trust {
    Root { signer: Box<CaSigner>, spec: CaSpec },
    Own(CaBundle),
    None,
}

pub(super) fn intermediate_spec(
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

/// The attribute of `root_ca` holding the root key: exactly one of `private_key_pem` (stored)
/// and `private_key_pem_wo` (write-only), unknown counting as set. `None` after an error, or
/// when the block itself is not known yet.
pub(super) fn root_key_attribute(root: &Value, diags: &mut Diagnostics) -> Option<&'static str> {
    root.as_map()?;
    let at = |n: &str| AttributePath::attrs(&["root_ca", n]);
    let wo = root.get(ROOT_KEY_WO);
    if wo.is_null() && !root.get(ROOT_KEY_WO_VERSION).is_null() {
        diags.error_at(
            at(ROOT_KEY_WO_VERSION),
            "private_key_pem_wo_version without private_key_pem_wo",
            "private_key_pem_wo_version marks changes of the write-only key private_key_pem_wo; remove it, or give the key in private_key_pem_wo.",
        );
    }
    match (root.get("private_key_pem").is_null(), wo.is_null()) {
        (false, true) => Some("private_key_pem"),
        (true, false) => Some(ROOT_KEY_WO),
        (true, true) => {
            diags.error_at(
                AttributePath::attrs(&["root_ca"]),
                "Missing root key",
                "root_ca needs the root's private key to issue the intermediate: set private_key_pem, or with Terraform 1.11 or later private_key_pem_wo (write-only: never stored in plan or state).",
            );
            None
        }
        (false, false) => {
            diags.error_at(
                at(ROOT_KEY_WO),
                "Conflicting root keys",
                "Set either root_ca.private_key_pem or root_ca.private_key_pem_wo, not both: private_key_pem_wo (Terraform 1.11 or later) keeps the key out of plan and state, private_key_pem works with every version and is stored in state.",
            );
            None
        }
    }
}

/// Checks everything knowable now; returns the trust to install when all of it is known.
pub(super) fn trust_from(config: &Value, diags: &mut Diagnostics) -> Option<Trust> {
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
        let key_attr = root_key_attribute(root, diags);
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
        let key_attr = key_attr?;
        let (cert, key) = (root.get("cert_pem").as_str()?, root.get(key_attr).as_str()?);
        return match CaSigner::from_pem(cert, key) {
            Ok(signer) => Some(Trust::Root {
                signer: Box::new(signer),
                spec: spec?,
            }),
            Err(e) => {
                let attr = match e.field {
                    Field::PrivateKeyPem => key_attr,
                    f => f.name(),
                };
                diags.error_at(
                    AttributePath::attrs(&["root_ca", attr]),
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
pub(super) fn normalised_ca_cert(cert_pem: &Value) -> Value {
    cert_pem
        .as_str()
        .and_then(|pem| pki::parse_certs_pem(pem).ok())
        .and_then(|certs| certs.first().map(pki::Certificate::to_pem))
        .map_or(Value::Unknown, Value::from)
}

pub(super) fn validate_config(config: &Value, diags: &mut Diagnostics) {
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
    kubernetes::validate_choice(config, &AttributePath::root(), diags);
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

pub(super) fn is_version(v: &str) -> bool {
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

pub(super) fn is_image_repository(hub: &str) -> bool {
    let last = hub.rsplit('/').next().unwrap_or("");
    !hub.is_empty()
        && !hub.contains('@')
        && !last.contains(':')
        && !hub.ends_with('/')
        && hub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./-_:".contains(&b))
}

pub(super) fn json_object(
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
pub(super) fn control_plane_from(config: &Value, diags: &mut Diagnostics) -> Option<ControlPlane> {
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
