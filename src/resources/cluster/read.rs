//! Refresh: the namespace's network label, `cacerts` drift, the control plane running.

use super::*;

pub(super) async fn observe(
    ctx: &Ctx,
    state: &Value,
    private_bytes: &[u8],
) -> Result<Option<Applied>, KubeError> {
    let private = Private::load(private_bytes, state);
    let deadline = Deadline::new(READ_TIMEOUT, ctx.cancel.clone());
    let cluster: Cluster = connect(&kubernetes::connection_of(state)?).await?;
    let ns_name = state
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let Some(ns) = cluster.get_opt(&namespaces, &ns_name, &deadline).await? else {
        return Ok(None);
    };
    let mut state = state.clone();
    // Filled in for state written before the attribute existed, so that no plan shows it.
    if state.get(kubernetes::CONNECTION).is_null() {
        let connection = kubernetes::encode(state.get("kubernetes"));
        state.set(kubernetes::CONNECTION, connection);
    }
    let live_network = ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(istio::NETWORK_LABEL))
        .cloned();
    // A missing or edited label shows as a change of `network` in the next plan.
    state.set("network", Value::from(live_network.unwrap_or_default()));

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let live = cluster
        .get_opt(&secrets, cacerts::SECRET_NAME, &deadline)
        .await?;
    let bundle = live.as_ref().and_then(cacerts::bundle_of);
    let mut private = private;
    match (&private.cacerts_digest, &bundle) {
        (Some(want), Some(b)) if *want == b.digest() => set_trust_outputs(&mut state, Some(b)),
        // Ours is missing or was edited: empty outputs make the plan put it back — the same
        // intermediate while cacerts still holds it with its key, else a new one.
        (Some(_), _) => {
            private.key_in_cluster = match (&bundle, &private.issued_cert_pem) {
                (Some(b), Some(cert)) => key_matches(cert, &b.ca_key_pem),
                _ => false,
            };
            set_trust_outputs(&mut state, None);
        }
        (None, _) => {}
    }
    if private.operator_name.is_some() {
        if let Some(cp) = control_plane_from(&state, &mut Diagnostics::new()) {
            let version = install::observed_version(&cluster, &ns_name, &cp, &deadline).await?;
            // Null (istiod gone) makes the next plan reinstall it.
            state.set("control_plane_version", version.into());
        }
    }
    Ok(Some(Applied {
        private: private.store(&state),
        state,
    }))
}
