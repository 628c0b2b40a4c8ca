//! Refresh: the target secret, the token in the remote (optionally checked by TokenReview) and
//! istiod's sync status.

use super::*;

/// Whether `token` still authenticates against the remote API server (TokenReview). `None`
/// when the provider's credentials may not ask.
pub(super) async fn token_authenticates(
    remote: &Cluster,
    token: &rs::Token,
    deadline: &Deadline,
) -> Result<Option<bool>, KubeError> {
    let api: Api<TokenReview> = Api::all(remote.client.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.token.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    let result =
        crate::kube::retry::retry(&remote.name, "creating a TokenReview", deadline, || {
            api.create(&pp, &review)
        })
        .await;
    match result {
        Ok(r) => Ok(Some(
            r.status.and_then(|s| s.authenticated).unwrap_or(false),
        )),
        Err(e) if e.code() == Some(403) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn observe(
    ctx: &Ctx,
    state: &Value,
    private_bytes: &[u8],
) -> Result<Option<Applied>, KubeError> {
    let mut private = Private::load(private_bytes, state);
    let deadline = Deadline::new(READ_TIMEOUT, ctx.cancel.clone());
    let c = conns(state)?;
    let target = connect(&c.target_conn).await?;
    let namespace = str_of(state, &["namespace"]);
    let cluster_name = str_of(state, &["remote", "cluster_name"]).to_string();
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    let live = target
        .get_opt(&target_secrets, &rs::secret_name(&cluster_name), &deadline)
        .await?;
    // The remote gets less patience: a remote that is down (or already destroyed, its
    // kubeconfig context gone) must not block the plan, least of all the refresh before a
    // destroy.
    let patience = remote_patience(&deadline);
    let remote_side = async {
        let remote = connect(&c.remote_conn).await?;
        let secret = match (&private.token_namespace, &private.token_name) {
            (Some(ns), Some(n)) => {
                let api: Api<Secret> = Api::namespaced(remote.client.clone(), ns);
                remote.get_opt(&api, n, &patience).await?
            }
            _ => None,
        };
        Ok::<_, KubeError>((remote, secret))
    };
    let (remote, token_secret) = match remote_side.await {
        Ok(found) => found,
        Err(e) if tolerable_on_destroy(&e) => {
            ctx.warn(None, "Remote cluster unreachable", &format!("The token in the remote cluster was not checked: {e}. The target secret was checked; the token is checked again on the next refresh."));
            let mut state = state.clone();
            state.set(
                "kubeconfig_sha256",
                live.as_ref()
                    .and_then(|s| rs::live_kubeconfig_sha256(s, &cluster_name))
                    .map(Value::from)
                    .unwrap_or(Value::Null),
            );
            return Ok(Some(Applied {
                state,
                private: private_bytes.to_vec(),
            }));
        }
        Err(e) => return Err(e),
    };
    if live.is_none() && token_secret.is_none() {
        return Ok(None);
    }
    let mut state = state.clone();
    let server = effective_server(&state, &c.remote_conn)?;
    state.set("server", Value::from(server.as_str()));
    let mut token = token_secret.as_ref().and_then(rs::token_of);
    if let (Some(t), Some(true)) = (&token, state.get("verify_token").as_bool()) {
        let verdict = match token_authenticates(&remote, t, &patience).await {
            Ok(v) => v,
            Err(e) if tolerable_on_destroy(&e) => {
                ctx.warn(
                    Some(at(&["verify_token"])),
                    "Cannot verify the token",
                    &format!("{e}"),
                );
                Some(true)
            }
            Err(e) => return Err(e),
        };
        match verdict {
            Some(true) => {}
            Some(false) => {
                tracing::info!(cluster = %remote.name, "the remote token no longer authenticates");
                private.token_invalid = true;
                token = None;
            }
            None => ctx.warn(Some(at(&["verify_token"])), "Cannot verify the token", &format!("cluster {}: the provider's credentials may not create TokenReviews (authentication.k8s.io), so the token was not checked.", remote.name)),
        }
    }
    match &token {
        Some(_) => state.set(
            "token_secret_name",
            private
                .token_name
                .clone()
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        // Gone, unpopulated or revoked: the next plan mints a new one.
        None => state.set("token_secret_name", Value::Null),
    }
    private.desired_sha256 = token.as_ref().map(|t| {
        rs::sha256_hex(
            rs::render_kubeconfig(&rs::KubeconfigSpec {
                cluster_name: &cluster_name,
                server: &server,
                tls_server_name: state.get("remote").get("tls_server_name").as_str(),
                token: t,
            })
            .as_bytes(),
        )
    });
    state.set(
        "kubeconfig_sha256",
        live.as_ref()
            .and_then(|s| rs::live_kubeconfig_sha256(s, &cluster_name))
            .map(Value::from)
            .unwrap_or(Value::Null),
    );
    if state.get("wait_for_sync").as_bool() == Some(true) && live.is_some() {
        let status = observe_sync(ctx, &target, namespace, &cluster_name, &deadline).await;
        state.set("sync_status", status);
    }
    Ok(Some(Applied {
        private: private.store(&state),
        state,
    }))
}
