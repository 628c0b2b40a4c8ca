//! Authentication (bearer tokens, client certificates) and authorization (admin, restricted
//! users, RBAC for service accounts).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::store::{ResKey, Store};

/// One allowed (verb, resource) pair of a restricted user; `*` matches anything. `resource` may
/// name a subresource (`pods/log`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Allow {
    pub verb: String,
    pub resource: String,
}

/// A bearer-token user with a fixed allow-list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RestrictedUser {
    pub token: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub allow: Vec<Allow>,
}

#[derive(Clone, Debug)]
pub enum Identity {
    /// Full access (admin token or admin client certificate).
    Admin(String),
    Restricted {
        name: String,
        allow: Vec<Allow>,
    },
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl Identity {
    pub fn user_name(&self) -> String {
        match self {
            Identity::Admin(n) => n.clone(),
            Identity::Restricted { name, .. } => name.clone(),
            Identity::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

/// A token minted by the token controller or by TokenRequest.
#[derive(Clone, Debug)]
struct SaToken {
    namespace: String,
    service_account: String,
    /// Token stored in this secret (revoked when the secret goes or changes).
    secret: Option<String>,
    expires: Option<time::OffsetDateTime>,
}

pub struct Auth {
    pub admin_token: String,
    pub control_token: String,
    /// DER of the admin client certificate.
    pub admin_cert_der: Vec<u8>,
    restricted: RwLock<HashMap<String, RestrictedUser>>,
    sa_tokens: RwLock<HashMap<String, SaToken>>,
}

/// What a request wants to do, for authorization.
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// Plural, with `/subresource` when there is one.
    pub resource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// Non-resource request path (discovery, version).
    pub non_resource: bool,
}

impl Auth {
    pub fn new(admin_token: String, control_token: String, admin_cert_der: Vec<u8>) -> Self {
        Auth {
            admin_token,
            control_token,
            admin_cert_der,
            restricted: RwLock::new(HashMap::new()),
            sa_tokens: RwLock::new(HashMap::new()),
        }
    }

    pub fn add_restricted(&self, user: RestrictedUser) {
        self.restricted
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.token.clone(), user);
    }

    pub fn restricted_users(&self) -> Vec<RestrictedUser> {
        self.restricted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Register a token bound to a token secret.
    pub fn register_secret_token(&self, token: &str, namespace: &str, sa: &str, secret: &str) {
        self.sa_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_string(),
                SaToken {
                    namespace: namespace.into(),
                    service_account: sa.into(),
                    secret: Some(secret.into()),
                    expires: None,
                },
            );
    }

    /// Register a TokenRequest token.
    pub fn register_bound_token(
        &self,
        token: &str,
        namespace: &str,
        sa: &str,
        expires: time::OffsetDateTime,
    ) {
        self.sa_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_string(),
                SaToken {
                    namespace: namespace.into(),
                    service_account: sa.into(),
                    secret: None,
                    expires: Some(expires),
                },
            );
    }

    /// Who is calling. `bearer` is the Authorization header's token, `cert` the DER of the TLS
    /// client certificate (already verified against the cluster CA).
    pub fn authenticate(
        &self,
        bearer: Option<&str>,
        cert: Option<&[u8]>,
        store: &Store,
    ) -> ApiResult<Identity> {
        if let Some(token) = bearer {
            if token == self.admin_token {
                return Ok(Identity::Admin("kube-sim-admin".into()));
            }
            if let Some(u) = self
                .restricted
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
            {
                return Ok(Identity::Restricted {
                    name: u.name.clone().unwrap_or_else(|| "restricted".into()),
                    allow: u.allow.clone(),
                });
            }
            let sa = self
                .sa_tokens
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(token)
                .cloned();
            if let Some(t) = sa {
                if self.sa_token_valid(token, &t, store) {
                    return Ok(Identity::ServiceAccount {
                        namespace: t.namespace,
                        name: t.service_account,
                    });
                }
            }
            return Err(ApiError::unauthorized());
        }
        if let Some(der) = cert {
            if der == self.admin_cert_der.as_slice() {
                return Ok(Identity::Admin("kube-sim-cert-admin".into()));
            }
        }
        Err(ApiError::unauthorized())
    }

    fn sa_token_valid(&self, token: &str, t: &SaToken, store: &Store) -> bool {
        if store
            .get(
                &ResKey::new("", "serviceaccounts"),
                &t.namespace,
                &t.service_account,
            )
            .is_none()
        {
            return false;
        }
        if let Some(exp) = t.expires {
            if exp < time::OffsetDateTime::now_utc() {
                return false;
            }
        }
        if let Some(secret) = &t.secret {
            let Some(s) = store.get(&ResKey::new("", "secrets"), &t.namespace, secret) else {
                return false;
            };
            let stored = s
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            return stored.as_deref() == Some(token.as_bytes());
        }
        true
    }

    /// Allow or 403.
    pub fn authorize(
        &self,
        who: &Identity,
        attrs: &Attributes<'_>,
        store: &Store,
    ) -> ApiResult<()> {
        let allowed = match who {
            Identity::Admin(_) => true,
            _ if attrs.non_resource => true,
            // Every authenticated user may ask what it may do (system:basic-user).
            _ if attrs.group == "authorization.k8s.io"
                && attrs.resource == "selfsubjectaccessreviews" =>
            {
                true
            }
            Identity::Restricted { allow, .. } => allow.iter().any(|a| {
                (a.verb == "*" || a.verb == attrs.verb)
                    && (a.resource == "*"
                        || a.resource == attrs.resource
                        || (a.resource.ends_with("/*")
                            && attrs.resource.starts_with(a.resource.trim_end_matches('*'))))
            }),
            Identity::ServiceAccount { namespace, name } => {
                rbac_allows(store, namespace, name, attrs)
            }
        };
        if allowed {
            return Ok(());
        }
        let scope = if attrs.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", attrs.namespace)
        };
        let (res, sub) = attrs
            .resource
            .split_once('/')
            .unwrap_or((attrs.resource, ""));
        let what = if sub.is_empty() {
            format!("resource \"{res}\"")
        } else {
            format!("resource \"{res}/{sub}\"")
        };
        let target = if attrs.name.is_empty() {
            crate::error::qualified(attrs.group, res)
        } else {
            format!(
                "{} \"{}\"",
                crate::error::qualified(attrs.group, res),
                attrs.name
            )
        };
        Err(ApiError::forbidden(format!(
            "{target} is forbidden: User \"{}\" cannot {} {what} in API group \"{}\" {scope}",
            who.user_name(),
            attrs.verb,
            attrs.group
        ))
        .with_details(serde_json::json!({"name": attrs.name, "group": attrs.group, "kind": res})))
    }
}

fn subject_matches(s: &Value, ns: &str, sa: &str) -> bool {
    let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "ServiceAccount" => {
            name == sa && s.get("namespace").and_then(Value::as_str).unwrap_or("") == ns
        }
        "Group" => {
            name == "system:serviceaccounts"
                || name == format!("system:serviceaccounts:{ns}")
                || name == "system:authenticated"
        }
        "User" => name == format!("system:serviceaccount:{ns}:{sa}"),
        _ => false,
    }
}

fn rule_allows(rule: &Value, attrs: &Attributes<'_>) -> bool {
    let has = |field: &str, want: &str| {
        rule.get(field).and_then(Value::as_array).is_some_and(|a| {
            a.iter()
                .any(|x| x.as_str() == Some("*") || x.as_str() == Some(want))
        })
    };
    let names_ok = rule
        .get("resourceNames")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty() || a.iter().any(|x| x.as_str() == Some(attrs.name)));
    has("verbs", attrs.verb)
        && has("apiGroups", attrs.group)
        && has("resources", attrs.resource)
        && names_ok
}

/// The role a binding refers to, shared with the store (read per request: no copy of its rules).
fn bound_role(store: &Store, role_ref: &Value, binding_ns: &str) -> Option<Arc<Value>> {
    let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "ClusterRole" => store.get(
            &ResKey::new("rbac.authorization.k8s.io", "clusterroles"),
            "",
            name,
        ),
        "Role" => store.get(
            &ResKey::new("rbac.authorization.k8s.io", "roles"),
            binding_ns,
            name,
        ),
        _ => None,
    }
}

fn rbac_allows(store: &Store, ns: &str, sa: &str, attrs: &Attributes<'_>) -> bool {
    let crbs = store
        .list(
            &ResKey::new("rbac.authorization.k8s.io", "clusterrolebindings"),
            None,
        )
        .0;
    let rbs = if attrs.namespace.is_empty() {
        Vec::new()
    } else {
        store
            .list(
                &ResKey::new("rbac.authorization.k8s.io", "rolebindings"),
                Some(attrs.namespace),
            )
            .0
    };
    crbs.iter().chain(rbs.iter()).any(|b| {
        let subjects = b.get("subjects").and_then(Value::as_array);
        if !subjects.is_some_and(|s| s.iter().any(|s| subject_matches(s, ns, sa))) {
            return false;
        }
        let role = b
            .get("roleRef")
            .and_then(|r| bound_role(store, r, object::namespace(b)));
        role.as_deref()
            .and_then(|r| r.get("rules"))
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.iter().any(|r| rule_allows(r, attrs)))
    })
}

/// A JWT-shaped service-account token (unsigned-looking random signature; only kube-sim
/// validates it, by lookup).
pub fn mint_jwt(ns: &str, sa: &str, sa_uid: &str, exp: Option<i64>, audiences: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = serde_json::json!({
        "aud": audiences,
        "iat": now,
        "nbf": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": object::new_uid(),
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": sa_uid}},
    });
    if let Some(e) = exp {
        claims["exp"] = serde_json::json!(e);
    }
    format!(
        "{}.{}.{}",
        b64(&serde_json::json!({"alg": "RS256", "kid": "kube-sim"})),
        b64(&claims),
        object::random_hex(32)
    )
}
