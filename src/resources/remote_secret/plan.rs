//! Planning: never contacts a cluster; decides from configuration and prior state whether the
//! token is minted again and the secret rewritten.

use super::*;

// ---------------------------------------------------------------------------------------------
// Plan

pub(super) fn plan_remote_secret(plan: &mut Plan<'_>) {
    let config = plan.config;
    let remote = config.get("remote");
    let name = remote.get("cluster_name");
    let ns = plan.planned.get("namespace").clone();
    match (name.as_str(), ns.as_str()) {
        (Some(n), Some(ns)) => {
            let secret = rs::secret_name(n);
            plan.planned
                .set("id", Value::from(format!("{ns}/{secret}")));
            plan.planned.set("secret_name", Value::from(secret));
        }
        _ => {
            if name.as_str().is_none() {
                plan.planned.set("secret_name", Value::Unknown);
            }
            plan.planned.set("id", Value::Unknown);
        }
    }
    let configured = configured_server(config);
    // Which cluster the remote connection reaches can change with these (or be unknown).
    // (Whether it is given as `connection` or as the block does not matter.)
    let settings = |v: &Value| remote_settings(v).unwrap_or(Value::Unknown);
    let (new, old) = (settings(&plan.planned), settings(plan.prior));
    let remote_retargeted = !plan.is_create()
        && ["host", "config_path", "config_context"]
            .iter()
            .any(|k| new.is_unknown() || new.get(k).is_unknown() || new.get(k) != old.get(k));
    let server = match configured {
        // From the remote connection's kubeconfig: known once applied, unless the server
        // was configured before or the connection was pointed elsewhere (then the
        // kubeconfig's value replaces it at apply).
        Value::Null
            if plan.is_create()
                || remote_retargeted
                || !configured_server(plan.prior).is_null() =>
        {
            Value::Unknown
        }
        Value::Null => plan.prior.get("server").clone(),
        other => other,
    };
    plan.planned.set("server", server.clone());
    if plan.is_create() {
        plan.planned.set("token_secret_name", Value::Unknown);
        plan.planned.set("kubeconfig_sha256", Value::Unknown);
    } else {
        let private = Private::load(plan.prior_private, plan.prior);
        let (prior, planned) = (plan.prior, &plan.planned);
        let changed = |path: &[&str]| {
            let (mut a, mut b) = (prior, planned);
            for p in path {
                a = a.get(p);
                b = b.get(p);
            }
            a != b
        };
        // Pointed at another cluster, the token may have to be minted there.
        let rotate = remote_retargeted
            || changed(&["token_rotation"])
            || changed(&["remote", "service_account"])
            || changed(&["remote", "service_account_namespace"])
            || prior.get("token_secret_name").is_null();
        let prior_sha = prior.get("kubeconfig_sha256").as_str().map(str::to_string);
        let rewrite = rotate
            || server != *prior.get("server")
            || changed(&["remote", "tls_server_name"])
            || prior_sha.is_none()
            || prior_sha != private.desired_sha256;
        if rotate {
            plan.planned.set("token_secret_name", Value::Unknown);
        }
        if rewrite {
            plan.planned.set("kubeconfig_sha256", Value::Unknown);
        }
    }
    if let Some(s) = server.as_str().filter(|s| rs::is_loopback_server(s)) {
        let diags = &mut plan.diags;
        loopback_warning(
            &mut |sum, det| diags.warning_at(at(&["remote", "server"]), sum, det),
            s,
        );
    }
}
