//! Create, update and destroy: the reader ServiceAccount and token in the remote, the secret in
//! the target, token rotation without a gap, and revocation on destroy.

use super::*;

// ---------------------------------------------------------------------------------------------
// Apply

pub(super) fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = cur.get(p);
    }
    cur.as_str().unwrap_or_default()
}

pub(super) fn instance(v: &Value) -> String {
    format!(
        "mesh-remote-secret.{}.{}",
        str_of(v, &["namespace"]),
        str_of(v, &["remote", "cluster_name"])
    )
}

pub(super) fn kube_failure(err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(err.to_string(), "");
    d.into()
}

pub(super) fn error(summary: &str, detail: String) -> Failure {
    let mut d = Diagnostics::new();
    d.error(summary, detail);
    d.into()
}

/// The server URL and base64 CA data of a connection, from its settings alone (no I/O
/// beyond reading a kubeconfig file).
pub(super) fn resolved_endpoint(conn: &Connection) -> Result<(String, Option<String>), KubeError> {
    let kc = conn.resolve()?;
    let c = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .unwrap_or_default();
    let ca = c.certificate_authority_data.or_else(|| {
        c.certificate_authority.and_then(|p| {
            use base64::Engine;
            std::fs::read(p)
                .ok()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        })
    });
    Ok((c.server.unwrap_or_default(), ca))
}

pub(super) fn effective_server(v: &Value, remote_conn: &Connection) -> Result<String, KubeError> {
    match configured_server(v).as_str() {
        Some(s) => Ok(s.to_string()),
        None => Ok(resolved_endpoint(remote_conn)?.0),
    }
}

pub(super) struct Conns {
    pub target_conn: Connection,
    pub remote_conn: Connection,
}

/// Both connections of `v`, from `connection` or the `kubernetes` block at either level.
pub(super) fn conns(v: &Value) -> Result<Conns, KubeError> {
    Ok(Conns {
        target_conn: kubernetes::connection_of(v)?,
        remote_conn: kubernetes::connection_from(
            v.get(REMOTE_CONNECTION),
            v.get("remote").get("kubernetes"),
        )?,
    })
}

/// Errors when both connections resolve to the same API server with the same CA.
pub(super) fn check_distinct(v: &Value, c: &Conns) -> Result<(), Failure> {
    let (t, r) = (
        resolved_endpoint(&c.target_conn).map_err(kube_failure)?,
        resolved_endpoint(&c.remote_conn).map_err(kube_failure)?,
    );
    let same_ca = match (&t.1, &r.1) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if norm_server(&t.0) == norm_server(&r.0) && same_ca {
        let mut d = Diagnostics::new();
        d.error_at(remote_connection_path(v), "Remote and target are the same cluster", format!("Both connections reach {} with the same CA. A remote secret lets istiod in the target read a *different* cluster; istiod ignores a secret for its own cluster.", t.0));
        return Err(d.into());
    }
    Ok(())
}

/// Finds the reader ServiceAccount, creating it (with the reader RBAC) when asked to.
async fn ensure_service_account(
    remote: &Cluster,
    v: &Value,
    private: &mut Private,
    deadline: &Deadline,
) -> Result<(), Failure> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    let sas: Api<ServiceAccount> = Api::namespaced(remote.client.clone(), sa_ns);
    if let Some(live) = remote
        .get_opt(&sas, sa, deadline)
        .await
        .map_err(kube_failure)?
    {
        // Created by this provider (an earlier, interrupted apply of this resource, or another
        // mesh_remote_secret reading the same remote): shared, so whichever of them goes
        // last removes it.
        let ours = live
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .is_some_and(|m| m == MANAGED_BY_VALUE);
        let create = v.get("remote").get("create_service_account").as_bool() == Some(true);
        private.created_service_account |= ours && create;
        return Ok(());
    }
    if v.get("remote").get("create_service_account").as_bool() != Some(true) {
        return Err(error(
            "Reader ServiceAccount not found in the remote cluster",
            format!("cluster {}: ServiceAccount {sa_ns}/{sa} does not exist. Istio's control plane is not installed there yet (its base chart creates this ServiceAccount): install it first and make this resource depend on it, or set remote.create_service_account = true to have the provider create the ServiceAccount with Istio's reader ClusterRole.", remote.name),
        ));
    }
    let ours = labels(&instance(v));
    let missing_ns = |e: KubeError| {
        if e.is_not_found() {
            error("Namespace not found in the remote cluster", format!("cluster {}: namespace {sa_ns:?} does not exist, so the ServiceAccount cannot be created. Create it first (mesh_cluster does), or set remote.service_account_namespace.", remote.name))
        } else {
            kube_failure(e)
        }
    };
    remote
        .apply(
            &sas,
            &rs::reader_service_account(sa_ns, sa, ours.clone()),
            deadline,
        )
        .await
        .map_err(missing_ns)?;
    private.created_service_account = true;
    let rbac = rs::reader_rbac_name(sa_ns, sa);
    let roles: Api<ClusterRole> = Api::all(remote.client.clone());
    remote
        .apply(
            &roles,
            &rs::reader_cluster_role(&rbac, ours.clone()),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    let bindings: Api<ClusterRoleBinding> = Api::all(remote.client.clone());
    remote
        .apply(
            &bindings,
            &rs::reader_cluster_role_binding(&rbac, sa_ns, sa, ours),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    Ok(())
}

/// Creates (or adopts) token secret `name` and waits on a watch until it holds `token` and
/// `ca.crt`.
async fn mint_token(
    remote: &Cluster,
    v: &Value,
    name: &str,
    owner: &str,
    deadline: &Deadline,
) -> Result<rs::Token, Failure> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    let secrets: Api<Secret> = Api::namespaced(remote.client.clone(), sa_ns);
    let applied = remote
        .apply(
            &secrets,
            &rs::token_secret(sa_ns, name, sa, owner, labels(&instance(v))),
            deadline,
        )
        .await
        .map_err(kube_failure)?;
    if let Some(t) = rs::token_of(&applied) {
        return Ok(t);
    }
    let started = Instant::now();
    let what = format!("the token controller to populate Secret {sa_ns}/{name}");
    let populated = |o: Option<&Secret>| o.and_then(rs::token_of).is_some();
    let secret = crate::kube::wait::wait_for(remote, secrets, name, &what, populated, deadline)
        .await
        .map_err(kube_failure)?;
    let token = secret.as_ref().and_then(rs::token_of).ok_or_else(|| {
        error(
            "Token secret not populated",
            format!("cluster {}: {what} did not happen", remote.name),
        )
    })?;
    tracing::info!(
        cluster = %remote.name,
        wait_ms = started.elapsed().as_millis() as u64,
        "token secret {sa_ns}/{name} populated"
    );
    Ok(token)
}

/// The owner annotation of the token secrets resource value `v` mints (see
/// [`rs::token_owner`]); it needs the target's API server, resolved from `v`'s connection.
pub(super) fn token_owner_of(v: &Value) -> Result<String, KubeError> {
    let (target_server, _) = resolved_endpoint(&conns(v)?.target_conn)?;
    Ok(rs::token_owner(&rs::TokenKey {
        target_server: &norm_server(&target_server),
        target_namespace: str_of(v, &["namespace"]),
        cluster_name: str_of(v, &["remote", "cluster_name"]),
        service_account: str_of(v, &["remote", "service_account"]),
        rotation: "",
    }))
}

/// Token secrets of this resource in the remote (its instance label and `owner`) other than
/// `current`: left by an apply killed before Terraform saved state, whose private state (and
/// so the list of tokens to revoke) was lost. The cluster still knows them.
async fn orphaned_tokens(
    remote: &Cluster,
    v: &Value,
    owner: &str,
    current: Option<&str>,
    deadline: &Deadline,
) -> Result<Vec<(String, String)>, KubeError> {
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    let secrets: Api<Secret> = Api::namespaced(remote.client.clone(), sa_ns);
    let selector = ListParams::default().labels(&format!("{INSTANCE_LABEL}={}", instance(v)));
    let listed = remote.list(&secrets, &selector, deadline).await?;
    Ok(listed
        .into_iter()
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(rs::TOKEN_FOR_ANNOTATION))
                .is_some_and(|o| o == owner)
        })
        .filter_map(|s| s.metadata.name)
        .filter(|n| Some(n.as_str()) != current)
        .map(|n| (sa_ns.to_string(), n))
        .collect())
}

/// Deletes token secrets left over from rotations; what fails stays listed.
async fn delete_stale(remote: &Cluster, private: &mut Private, deadline: &Deadline) {
    let mut left = Vec::new();
    for (ns, name) in std::mem::take(&mut private.stale_tokens) {
        let api: Api<Secret> = Api::namespaced(remote.client.clone(), &ns);
        if let Err(e) = remote.delete(&api, &name, false, deadline).await {
            tracing::warn!("cannot delete old token secret {ns}/{name}: {e}");
            left.push((ns, name));
        }
    }
    private.stale_tokens = left;
}

/// Creates or updates to `planned`, from the private state the prior state was saved with.
pub(super) async fn converge(
    ctx: &Ctx,
    planned: &Value,
    mut private: Private,
    op: &str,
) -> Result<Applied, Failure> {
    // The planned state has the defaults filled in; at apply time all of it is known but the
    // computed attributes.
    let config = planned;
    let deadline = Deadline::new(timeout(config, op, DEFAULT_TIMEOUT), ctx.cancel.clone());
    let c = conns(config).map_err(kube_failure)?;
    check_distinct(config, &c)?;
    let server = effective_server(config, &c.remote_conn).map_err(kube_failure)?;
    if planned.get("server").is_unknown() && rs::is_loopback_server(&server) {
        loopback_warning(
            &mut |s, d| ctx.warn(Some(at(&["remote", "server"])), s, d),
            &server,
        );
    }
    let remote = connect(&c.remote_conn).await.map_err(kube_failure)?;
    let target = connect(&c.target_conn).await.map_err(kube_failure)?;
    let (target_server, _) = resolved_endpoint(&c.target_conn).map_err(kube_failure)?;

    let namespace = str_of(planned, &["namespace"]).to_string();
    let cluster_name = str_of(planned, &["remote", "cluster_name"]).to_string();
    let sa_ns = str_of(config, &["remote", "service_account_namespace"]).to_string();
    let remote_secrets: Api<Secret> = Api::namespaced(remote.client.clone(), &sa_ns);

    let mut state = planned.clone();
    let secret_name = rs::secret_name(&cluster_name);
    state.set("secret_name", Value::from(secret_name.as_str()));
    state.set("id", Value::from(format!("{namespace}/{secret_name}")));
    state.set("server", Value::from(server.as_str()));

    // The token: keep the current one unless the plan asks for a new one or it is gone.
    let current = match (&private.token_namespace, &private.token_name) {
        (Some(ns), Some(n)) => Some((ns.clone(), n.clone())),
        _ => None,
    };
    let mut token = None;
    if !planned.get("token_secret_name").is_unknown() && !private.token_invalid {
        if let Some((_, n)) = current.as_ref().filter(|(ns, _)| *ns == sa_ns) {
            token = remote
                .get_opt(&remote_secrets, n, &deadline)
                .await
                .map_err(kube_failure)?
                .as_ref()
                .and_then(rs::token_of)
                .map(|t| (n.clone(), t));
        }
    }
    let token_name;
    let token = match token {
        Some((n, t)) => {
            token_name = n;
            t
        }
        None => {
            // A create that fails from here on has made objects in the remote: hand back a
            // partial state naming them, so destroy (or the replacement) removes them.
            let keep = |mut f: Failure, state: &Value, private: &Private| {
                if op == "create" {
                    let state = state.known_or_null();
                    f.partial = Some(Applied {
                        private: private.store(&state),
                        state,
                    });
                }
                f
            };
            if let Err(f) = ensure_service_account(&remote, config, &mut private, &deadline).await {
                return Err(keep(f, &state, &private));
            }
            // A name the plan already promised (the secret vanished since) is kept; otherwise
            // it is derived from the target and the rotation trigger.
            token_name = match planned.get("token_secret_name").as_str() {
                Some(n) => n.to_string(),
                None => rs::token_secret_name(&rs::TokenKey {
                    target_server: &norm_server(&target_server),
                    target_namespace: &namespace,
                    cluster_name: &cluster_name,
                    service_account: str_of(config, &["remote", "service_account"]),
                    rotation: str_of(config, &["token_rotation"]),
                }),
            };
            if private.token_invalid
                && current.as_ref() == Some(&(sa_ns.clone(), token_name.clone()))
            {
                // Same name, dead token: replace the secret itself.
                remote
                    .delete(&remote_secrets, &token_name, true, &deadline)
                    .await
                    .map_err(kube_failure)?;
            }
            if op == "create" {
                private.token_namespace = Some(sa_ns.clone());
                private.token_name = Some(token_name.clone());
            }
            let owner = rs::token_owner(&rs::TokenKey {
                target_server: &norm_server(&target_server),
                target_namespace: &namespace,
                cluster_name: &cluster_name,
                service_account: str_of(config, &["remote", "service_account"]),
                rotation: "",
            });
            // Tokens of ours the state forgot (a killed apply) are revoked like rotated ones.
            // They are looked for while the new one is minted: the list leaves out the new
            // one by name, whether it sees it yet or not.
            let (minted, orphans) = tokio::join!(
                mint_token(&remote, config, &token_name, &owner, &deadline),
                orphaned_tokens(&remote, config, &owner, Some(&token_name), &deadline)
            );
            let t = match minted {
                Ok(t) => t,
                Err(f) => return Err(keep(f, &state, &private)),
            };
            private.token_invalid = false;
            if let Some(old) = current.filter(|o| *o != (sa_ns.clone(), token_name.clone())) {
                private.stale_tokens.push(old);
            }
            match orphans {
                Ok(found) => {
                    for t in found {
                        if !private.stale_tokens.contains(&t) {
                            private.stale_tokens.push(t);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot look for earlier token secrets of this resource: {e}")
                }
            }
            private.token_namespace = Some(sa_ns.clone());
            private.token_name = Some(token_name.clone());
            t
        }
    };
    state.set("token_secret_name", Value::from(token_name.as_str()));
    let partial = |state: &Value, private: &Private| Applied {
        state: state.clone(),
        private: private.store(state),
    };

    // The target secret, then (rotation) the old token.
    let tls = config.get("remote").get("tls_server_name").as_str();
    let kubeconfig = rs::render_kubeconfig(&rs::KubeconfigSpec {
        cluster_name: &cluster_name,
        server: &server,
        tls_server_name: tls,
        token: &token,
    });
    let sha = rs::sha256_hex(kubeconfig.as_bytes());
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), &namespace);
    let secret = rs::remote_secret(
        &namespace,
        &cluster_name,
        &kubeconfig,
        labels(&instance(planned)),
    );
    drop(kubeconfig);
    let wait = config.get("wait_for_sync").as_bool() == Some(true);
    // istiod's pods are listed while the secret is written (which pods run does not depend on
    // it): the first sync check after the write then only asks them.
    let write = target.apply(&target_secrets, &secret, &deadline);
    let (written, listed) = if wait {
        let (written, pods) =
            tokio::join!(write, istiod::pods(&target, &namespace, None, &deadline));
        (written, pods.ok())
    } else {
        (write.await, None)
    };
    if let Err(e) = written {
        let mut f = if e.is_not_found() {
            error("Namespace not found in the target cluster", format!("cluster {}: namespace {namespace:?} does not exist. Install the mesh there first (mesh_cluster creates it) and make this resource depend on it.", target.name))
        } else {
            kube_failure(e)
        };
        state.set("kubeconfig_sha256", Value::Null);
        f.partial = Some(partial(&state, &private));
        return Err(f);
    }
    state.set("kubeconfig_sha256", Value::from(sha.as_str()));
    private.desired_sha256 = Some(sha);
    delete_stale(&remote, &mut private, &deadline).await;
    let sync = if wait {
        let remote_side = Remote {
            cluster: &remote,
            cluster_name: &cluster_name,
            server: &server,
            token: &token,
        };
        match wait_for_sync(ctx, &target, &namespace, &remote_side, listed, &deadline).await {
            Ok(sync) => sync,
            Err(mut f) => {
                state.set("sync_status", Value::Null);
                f.partial = Some(partial(&state, &private));
                return Err(f);
            }
        }
    } else {
        None
    };
    state.set(
        "sync_status",
        sync.map(|s| Value::from(s.as_str())).unwrap_or(Value::Null),
    );
    if !private.stale_tokens.is_empty() {
        let names: Vec<String> = private
            .stale_tokens
            .iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        ctx.warn(None, "Old token secret not deleted yet", &format!("cluster {}: the replaced token secret(s) {} could not be deleted, so their tokens stay valid. The next apply or destroy tries again.", remote.name, names.join(", ")));
    }
    Ok(partial(&state, &private))
}

pub(super) fn tolerable_on_destroy(e: &KubeError) -> bool {
    matches!(
        e,
        KubeError::Unreachable { .. } | KubeError::Timeout { .. } | KubeError::Config { .. }
    )
}

pub(super) async fn remove(ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), Failure> {
    let mut private = Private::load(private, prior);
    let deadline = Deadline::new(
        timeout(prior, "delete", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let c = conns(prior).map_err(kube_failure)?;
    // The target secret first: istiod drops the cluster, then the credential is revoked.
    let target = connect(&c.target_conn).await.map_err(kube_failure)?;
    let namespace = str_of(prior, &["namespace"]);
    let secret_name = rs::secret_name(str_of(prior, &["remote", "cluster_name"]));
    let target_secrets: Api<Secret> = Api::namespaced(target.client.clone(), namespace);
    target
        .delete(&target_secrets, &secret_name, false, &deadline)
        .await
        .map_err(kube_failure)?;

    let patience = remote_patience(&deadline);
    let result = release_remote(&c.remote_conn, prior, &mut private, &patience).await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if tolerable_on_destroy(&e) => {
            let token = private.token_ref();
            ctx.warn(None, "Remote cluster unreachable: token not revoked", &format!("The target secret {namespace}/{secret_name} is deleted, but the remote cluster could not be reached to delete token secret {token}: {e}. Its token stays valid until that secret is deleted (kubectl -n {} delete secret {}).", private.token_namespace.as_deref().unwrap_or("?"), private.token_name.as_deref().unwrap_or("?")));
            Ok(())
        }
        Err(e) => Err(kube_failure(e)),
    }
}

/// Revokes what this resource holds in the remote cluster of `v`: its token secrets (current and
/// stale) and, when it created them, the reader ServiceAccount and RBAC.
async fn release_remote(
    conn: &Connection,
    v: &Value,
    private: &mut Private,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let remote = connect(conn).await?;
    if let (Some(ns), Some(n)) = (&private.token_namespace, &private.token_name) {
        private.stale_tokens.push((ns.clone(), n.clone()));
    }
    // Also those the state lost track of (an apply killed before state was saved): the
    // cluster knows them by their owner annotation.
    if let Ok(owner) = token_owner_of(v) {
        for t in orphaned_tokens(&remote, v, &owner, None, deadline).await? {
            if !private.stale_tokens.contains(&t) {
                private.stale_tokens.push(t);
            }
        }
    }
    for (ns, n) in std::mem::take(&mut private.stale_tokens) {
        let api: Api<Secret> = Api::namespaced(remote.client.clone(), &ns);
        remote.delete(&api, &n, false, deadline).await?;
    }
    if private.created_service_account {
        remove_reader(&remote, v, deadline).await?;
    }
    Ok(())
}

/// Whether the remote connection of `planned` reaches another API server than that of
/// `prior` (whose token and reader objects then live in a cluster this resource no longer
/// points at). `Err` when the prior connection no longer resolves (its context is gone).
fn remote_moved(prior: &Value, planned: &Value) -> Result<Result<bool, KubeError>, Failure> {
    let new = conns(planned)
        .and_then(|c| resolved_endpoint(&c.remote_conn))
        .map_err(kube_failure)?;
    Ok(conns(prior)
        .and_then(|c| resolved_endpoint(&c.remote_conn))
        .map(|old| norm_server(&old.0) != norm_server(&new.0) || old.1 != new.1))
}

/// An update whose remote cluster changed: first revoke what the old remote holds (best
/// effort: an unreachable old cluster is a warning, as on destroy), then converge on the new
/// one as if creating.
pub(super) async fn update(ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
    let prior_private = Private::load(change.private, change.prior);
    match remote_moved(change.prior, change.planned)? {
        Ok(true) => {}
        Ok(false) => return converge(ctx, change.planned, prior_private, "update").await,
        Err(e) => {
            ctx.warn(None, "Previous remote connection no longer resolves", &format!("Cannot tell whether remote.kubernetes now reaches another cluster ({e}); the token is kept if it is still there. If the remote cluster did change, delete the old token secret there by hand."));
            return converge(ctx, change.planned, prior_private, "update").await;
        }
    }
    let mut private = prior_private;
    let deadline = Deadline::new(
        timeout(change.planned, "update", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let patience = remote_patience(&deadline);
    let old_conn = conns(change.prior).map_err(kube_failure)?.remote_conn;
    match release_remote(&old_conn, change.prior, &mut private, &patience).await {
        Ok(()) => {}
        Err(e) if tolerable_on_destroy(&e) => {
            let token = private.token_ref();
            ctx.warn(None, "Previous remote cluster unreachable: token not revoked", &format!("remote.kubernetes now reaches another cluster, and the previous one ({}) could not be reached to delete token secret {token}: {e}. Its token stays valid until that secret is deleted there.", old_conn.describe()));
        }
        Err(e) => return Err(kube_failure(e)),
    }
    let fresh = Private {
        desired_sha256: private.desired_sha256.take(),
        ..Private::default()
    };
    converge(ctx, change.planned, fresh, "update").await
}

/// Removes the ServiceAccount and reader RBAC this resource created, unless someone else
/// (e.g. a later Istio install) has taken the ServiceAccount over.
async fn remove_reader(remote: &Cluster, v: &Value, deadline: &Deadline) -> Result<(), KubeError> {
    let sa = str_of(v, &["remote", "service_account"]);
    let sa_ns = str_of(v, &["remote", "service_account_namespace"]);
    // Other targets' tokens for the same ServiceAccount: it is still in use.
    let secrets: Api<Secret> = Api::namespaced(remote.client.clone(), sa_ns);
    let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    let action = format!("listing token secrets in namespace {sa_ns}");
    let tokens =
        crate::kube::retry::retry(&remote.name, &action, deadline, || secrets.list(&selector))
            .await?;
    let in_use = tokens.items.iter().any(|t| {
        t.type_.as_deref() == Some(rs::TOKEN_SECRET_TYPE)
            && t.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(rs::SA_NAME_ANNOTATION))
                .is_some_and(|n| n == sa)
    });
    if in_use {
        tracing::info!(cluster = %remote.name, "ServiceAccount {sa_ns}/{sa} still has tokens of other targets; leaving it");
        return Ok(());
    }
    let sas: Api<ServiceAccount> = Api::namespaced(remote.client.clone(), sa_ns);
    if let Some(live) = remote.get_opt(&sas, sa, deadline).await? {
        let foreign = live
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref().is_some_and(|x| x != FIELD_MANAGER));
        if foreign {
            tracing::info!(cluster = %remote.name, "ServiceAccount {sa_ns}/{sa} is managed by others now; leaving it");
            return Ok(());
        }
        remote.delete(&sas, sa, false, deadline).await?;
    }
    let rbac = rs::reader_rbac_name(sa_ns, sa);
    let bindings: Api<ClusterRoleBinding> = Api::all(remote.client.clone());
    remote.delete(&bindings, &rbac, false, deadline).await?;
    let roles: Api<ClusterRole> = Api::all(remote.client.clone());
    remote.delete(&roles, &rbac, false, deadline).await?;
    Ok(())
}
