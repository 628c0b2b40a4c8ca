//! Create, update and destroy: namespace, trust (`cacerts`), control plane, and uninstall.

use super::*;

pub(super) fn instance(state: &Value) -> String {
    format!(
        "mesh-cluster.{}",
        state.get("cluster_name").as_str().unwrap_or_default()
    )
}

pub(super) fn kube_failure(err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(err.to_string(), "");
    d.into()
}

/// The error of the namespace step. A wait for a deletion that did not finish in time says
/// what holds the namespace and what to do, not only that time ran out.
pub(super) fn namespace_failure(ns_name: &str, err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    match err {
        KubeError::Timeout { cluster, waited, .. } => d.error(
            format!("cluster {cluster}: namespace {ns_name} is still being deleted"),
            format!("Namespace {ns_name} has been Terminating for at least {waited:.0?} while this apply waited to create it again. Nothing can be created in a namespace that is being deleted. Something holds it: see `kubectl get namespace {ns_name} -o yaml` (status.conditions name what remains) and the finalizers of the objects left in it. Apply again once it is gone, or raise timeouts.create to wait longer."),
        ),
        other => d.error(other.to_string(), ""),
    }
    d.into()
}

/// Builds or repairs everything: namespace, trust, control plane — in that order, since
/// istiod must find `cacerts` at its first start. A failure after the namespace step returns
/// what exists by then, so Terraform keeps the resource (tainted) and nothing is orphaned.
pub(super) async fn converge(ctx: &Ctx, change: Change<'_>, op: &str) -> Result<Applied, Failure> {
    let (planned, config) = (change.planned, change.config);
    let mut diags = Diagnostics::new();
    let trust = trust_from(config, &mut diags);
    let cp = control_plane_from(config, &mut diags);
    let (Some(trust), false) = (trust, diags.has_errors()) else {
        if !diags.has_errors() {
            diags.error(
                "Settings are not known",
                "All trust settings must be known at apply time.",
            );
        }
        return Err(diags.into());
    };
    if !config.get("control_plane").is_null() && cp.is_none() {
        if !diags.has_errors() {
            diags.error(
                "Settings are not known",
                "All control_plane settings must be known at apply time.",
            );
        }
        return Err(diags.into());
    }
    let mut private = Private::load(change.private, change.prior);
    let deadline = Deadline::new(timeout(config, op, DEFAULT_TIMEOUT), ctx.cancel.clone());
    let connection = kubernetes::connection_of(config).map_err(kube_failure)?;
    let cluster = connect(&connection).await.map_err(kube_failure)?;
    let ns_name = planned
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let cluster_name = planned
        .get("cluster_name")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let network = planned
        .get("network")
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ours = labels(&instance(planned));
    let mut state = planned.clone();
    state.set("id", Value::from(cluster_name.clone()));
    if config.get(kubernetes::CONNECTION).is_null() {
        state.set(
            kubernetes::CONNECTION,
            kubernetes::encode(config.get("kubernetes")),
        );
    }

    // Namespace first: create it, marked as created by this instance, or adopt it with our
    // labels only. The mark lives in the cluster, so a namespace made by an apply that was
    // killed before Terraform saved state is still known as ours by the next one (and deleted
    // by destroy). One being deleted (a re-apply right after a destroy) is waited out, then
    // created again.
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let live_ns = cluster
        .namespace_settled(&ns_name, &deadline)
        .await
        .map_err(|e| namespace_failure(&ns_name, e))?;
    private.namespace_created = match &live_ns {
        None => true,
        // Private state alone: created by a version that did not mark it yet.
        Some(ns) => created_by(&ns.metadata, &instance(planned)) || private.namespace_created,
    };
    let controller = cp
        .as_ref()
        .filter(|c| c.role == Role::Remote)
        .and_then(|c| c.primary_cluster_name.clone());
    let created_ns = private.namespace_created;
    // The IstioOperators whose objects may be in the cluster are recorded on the namespace
    // before the installer runs, so that they are found (and uninstalled) even when private
    // state is lost: Terraform keeps no private state of an operation whose provider died.
    let target = cp
        .as_ref()
        .map(|c| operator::operator_name(&cluster_name, c.revision.as_deref()));
    for old in live_ns.as_ref().map(recorded_operators).unwrap_or_default() {
        if Some(&old) != target.as_ref()
            && private.operator_name.as_ref() != Some(&old)
            && !private.previous_operators.contains(&old)
        {
            private.previous_operators.push(old);
        }
    }
    let mut recorded: Vec<String> = private.operators().cloned().chain(target).collect();
    recorded.sort();
    recorded.dedup();
    let ns_object = |operators: &[String]| {
        let mut ns = cacerts::namespace(&ns_name, &network, controller.as_deref(), ours.clone());
        if created_ns {
            mark_created(&mut ns.metadata, &instance(planned));
        }
        if !operators.is_empty() {
            ns.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(OPERATORS_ANNOTATION.into(), operators.join(","));
        }
        ns
    };
    cluster
        .apply(&namespaces, &ns_object(&recorded), &deadline)
        .await
        .map_err(|e| namespace_failure(&ns_name, e))?;

    let partial = |state: &Value, private: &Private, diags: Diagnostics| {
        let state = state.known_or_null();
        Failure {
            diags,
            partial: Some(Applied {
                private: private.store(&state),
                state,
            }),
        }
    };
    let kube_partial = |state: &Value, private: &Private, e: KubeError| {
        let mut d = Diagnostics::new();
        d.error(e.to_string(), "");
        partial(state, private, d)
    };

    // A trust mode change needs an istiod restart (see plan_trust_mode_change).
    let mode_before = match (&private.cacerts_digest, &private.issued_cert_pem) {
        (None, _) => "none",
        (Some(_), Some(_)) => "root_ca",
        (Some(_), None) => "ca",
    };
    let mode_after = match &trust {
        Trust::Root { .. } => "root_ca",
        Trust::Own(_) => "ca",
        Trust::None => "none",
    };
    if op == "update" && mode_before != mode_after {
        private.istiod_restart_pending = true;
    }

    // Then trust, before any istiod starts.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let bundle = match trust_bundle(
        &cluster,
        &secrets,
        &ns_name,
        planned,
        config,
        trust,
        &mut private,
        &deadline,
    )
    .await
    {
        Ok(b) => b,
        Err(d) => return Err(partial(&state, &private, d)),
    };
    let trust_written = write_trust(
        &cluster,
        &secrets,
        &ns_name,
        bundle.as_ref(),
        &ours,
        planned,
        &mut private,
        &mut state,
        &deadline,
    )
    .await;
    if let Err(e) = trust_written {
        return Err(kube_partial(&state, &private, e));
    }

    // Control plane last.
    let installed = converge_control_plane(
        ctx,
        &cluster,
        cp,
        Identity {
            cluster_name: &cluster_name,
            mesh_id: planned.get("mesh_id").as_str().unwrap_or_default(),
            network: &network,
            namespace: &ns_name,
        },
        planned,
        config,
        &ours,
        &mut private,
        &mut state,
        &deadline,
    )
    .await;
    if let Err(d) = installed {
        return Err(partial(&state, &private, d));
    }
    // Record what is left installed, when that changed (a previous revision removed).
    let left: Vec<String> = {
        let mut l: Vec<String> = private.operators().cloned().collect();
        l.sort();
        l.dedup();
        l
    };
    if left != recorded {
        if let Err(e) = cluster
            .apply(&namespaces, &ns_object(&left), &deadline)
            .await
        {
            return Err(kube_partial(&state, &private, e));
        }
    }
    Ok(Applied {
        private: private.store(&state),
        state,
    })
}

/// Installs or upgrades the control plane this configuration describes (istioctl in the
/// cluster), removes a previous revision once the new one is up, restarts istiod when a trust
/// mode change is owed; without `control_plane`, uninstalls what this resource installed.
#[allow(clippy::too_many_arguments)]
async fn converge_control_plane(
    ctx: &Ctx,
    cluster: &Cluster,
    cp: Option<ControlPlane>,
    id: Identity<'_>,
    planned: &Value,
    config: &Value,
    ours: &std::collections::BTreeMap<String, String>,
    private: &mut Private,
    state: &mut Value,
    deadline: &Deadline,
) -> Result<(), Diagnostics> {
    match cp {
        Some(cp) => {
            let (iop, overridden) = operator::istio_operator(&id, &cp);
            for key in overridden {
                ctx.warn(
                    Some(AttributePath::attrs(&["control_plane", "values"])),
                    "Value set by the provider",
                    &format!("values.{key} is set by mesh_cluster from cluster_name, mesh_id, network and the remote settings; the value in `values` is ignored."),
                );
            }
            let digest = operator::digest(&iop);
            let name = operator::operator_name(id.cluster_name, cp.revision.as_deref());
            let needed = planned.get("control_plane_version").is_unknown()
                || private.operator_digest.as_deref() != Some(digest.as_str());
            private.remove_crds = config
                .get("control_plane")
                .get("remove_crds_on_destroy")
                .as_bool()
                .unwrap_or(false);
            // A pending restart applies to an istiod that ran before this apply; one the
            // installer creates now starts with the current cacerts.
            let restart = private.istiod_restart_pending
                && cp.role == Role::Primary
                && match restart::istiod_exists(
                    cluster,
                    id.namespace,
                    cp.revision.as_deref(),
                    deadline,
                )
                .await
                {
                    Ok(exists) => exists,
                    Err(e) => return Err(kube_diags(e)),
                };
            if needed {
                if let Some(old) = private.operator_name.clone().filter(|o| *o != name) {
                    if !private.previous_operators.contains(&old) {
                        private.previous_operators.push(old);
                    }
                }
                private.operator_name = Some(name.clone());
                private.operator_digest = None;
                let installer = Installer::new(id.namespace, &name);
                let annotations = config
                    .get("control_plane")
                    .get("installer_pod_annotations")
                    .as_map()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Err(e) =
                    install::install(cluster, &installer, &iop, &cp, ours, &annotations, deadline)
                        .await
                {
                    let mut d = Diagnostics::new();
                    d.error(e.to_string(), e.detail());
                    return Err(d);
                }
                // A new revision name is a new install: remove the previous one once the new
                // control plane is up (and an installer a killed apply left for it).
                for old in private.previous_operators.clone() {
                    let installer = Installer::new(id.namespace, &old);
                    if let Err(e) = install::remove_installer(cluster, &installer, deadline).await {
                        return Err(kube_diags(e));
                    }
                    if let Err(e) = install::uninstall(
                        cluster,
                        &operator::owner_selector(&old, id.namespace),
                        false,
                        deadline,
                    )
                    .await
                    {
                        return Err(kube_diags(e));
                    }
                    private.previous_operators.retain(|o| *o != old);
                }
                private.operator_digest = Some(digest);
            }
            if restart {
                let now = pki::format_rfc3339(time::OffsetDateTime::now_utc());
                if let Err(e) = restart::restart_istiod(
                    cluster,
                    id.namespace,
                    cp.revision.as_deref(),
                    &now,
                    deadline,
                )
                .await
                {
                    return Err(kube_diags(e));
                }
            }
            private.istiod_restart_pending = false;
            let version = install::observed_version(cluster, id.namespace, &cp, deadline).await;
            match version {
                Ok(v) => state.set("control_plane_version", v.into()),
                Err(e) => return Err(kube_diags(e)),
            }
        }
        None => {
            for old in private.operators().cloned().collect::<Vec<_>>() {
                if let Err(e) = install::uninstall(
                    cluster,
                    &operator::owner_selector(&old, id.namespace),
                    private.remove_crds,
                    deadline,
                )
                .await
                {
                    return Err(kube_diags(e));
                }
                if private.operator_name.as_ref() == Some(&old) {
                    private.operator_name = None;
                    private.operator_digest = None;
                }
                private.previous_operators.retain(|o| *o != old);
            }
            state.set("control_plane_version", Value::Null);
        }
    }
    Ok(())
}

/// The trust bundle to write: the intermediate issued from `root_ca` (kept when the plan keeps
/// it, its key read back from `cacerts`; issued anew otherwise), or the one given in `ca`,
/// with the additional roots appended. `None`: istiod's own CA.
#[allow(clippy::too_many_arguments)]
async fn trust_bundle(
    cluster: &Cluster,
    secrets: &Api<Secret>,
    ns_name: &str,
    planned: &Value,
    config: &Value,
    trust: Trust,
    private: &mut Private,
    deadline: &Deadline,
) -> Result<Option<CaBundle>, Diagnostics> {
    let reissue = planned.get("ca_cert_pem").is_unknown();
    let bundle = match trust {
        Trust::Root { signer, spec } => {
            // The plan keeps the intermediate: its key is in the cluster (or, in state from an
            // earlier version, in private state). Also after private state was lost (the
            // provider killed during an update).
            let reuse = match (&private.issued_cert_pem, &private.issued_key_pem) {
                (Some(c), Some(k)) if !reissue => Some((c.clone(), k.clone())),
                _ if !reissue => {
                    match planned_intermediate_in_cluster(cluster, secrets, planned, deadline).await
                    {
                        Ok(Some(found)) => Some(found),
                        Ok(None) => {
                            let mut d = Diagnostics::new();
                            d.error(format!("cluster {}: the intermediate CA's key is no longer in Secret {ns_name}/cacerts", cluster.name), "The key of the intermediate this plan keeps lives only in cacerts, and cacerts changed after the plan was made. Plan and apply again: the new plan issues a new intermediate from the root.");
                            return Err(d);
                        }
                        Err(e) => return Err(kube_diags(e)),
                    }
                }
                _ => None,
            };
            let (cert, key) = match reuse {
                Some(pair) => pair,
                None => {
                    tracing::info!(cluster = %cluster.name, "issuing intermediate CA");
                    let issued = tokio::task::spawn_blocking(move || {
                        pki::issue_intermediate(&signer, &spec)
                    })
                    .await;
                    match issued {
                        Ok(Ok(i)) => (i.cert_pem, i.private_key_pem),
                        Ok(Err(e)) => {
                            return Err(Diagnostics::from_error(&anyhow::anyhow!(
                                "Cannot issue the intermediate CA: {e}"
                            )))
                        }
                        Err(e) => {
                            return Err(Diagnostics::from_error(&anyhow::anyhow!(
                                "intermediate issuance task failed: {e}"
                            )))
                        }
                    }
                }
            };
            let root = config
                .get("root_ca")
                .get("cert_pem")
                .as_str()
                .unwrap_or_default()
                .to_string();
            let root = pki::parse_cert_pem(&root)
                .map(|c| c.to_pem())
                .unwrap_or(root);
            private.issued_cert_pem = Some(cert.clone());
            private.issued_key_pem = None;
            private.key_in_cluster = false;
            Some(CaBundle {
                cert_chain_pem: pki::concat_pem(&[&cert, &root]),
                ca_cert_pem: cert,
                ca_key_pem: key,
                root_cert_pem: root,
            })
        }
        Trust::Own(b) => {
            private.issued_cert_pem = None;
            private.issued_key_pem = None;
            Some(b)
        }
        Trust::None => None,
    };
    let bundle = bundle.map(|mut b| {
        b.root_cert_pem =
            with_additional_roots(&b.root_cert_pem, config.get("additional_roots_pem"));
        b
    });
    Ok(bundle)
}

/// Writes `cacerts` (and waits until a running istiod loads it), or removes the one we wrote
/// when the cluster goes back to istiod's own CA; sets the trust outputs.
#[allow(clippy::too_many_arguments)]
async fn write_trust(
    cluster: &Cluster,
    secrets: &Api<Secret>,
    ns_name: &str,
    bundle: Option<&CaBundle>,
    ours: &std::collections::BTreeMap<String, String>,
    planned: &Value,
    private: &mut Private,
    state: &mut Value,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    match bundle {
        Some(b) => {
            cluster
                .apply(
                    secrets,
                    &cacerts::secret(ns_name, b, ours.clone()),
                    deadline,
                )
                .await?;
            private.cacerts_digest = Some(b.digest());
            // An istiod owed a restart (trust mode changed) loads cacerts when it restarts,
            // below; one that keeps running must load it now.
            if !private.istiod_restart_pending {
                wait_for_istiod_to_load(cluster, ns_name, b, deadline).await?
            }
            set_trust_outputs(state, Some(b));
            // A plan that did not reissue promised the refresh-time verdict; the next refresh
            // gives the current one.
            if let Some(promised) = planned.get("ready_for_renewal").as_bool() {
                state.set("ready_for_renewal", Value::from(promised));
            }
        }
        None => {
            if private.cacerts_digest.is_some() {
                // Switched to istiod's own CA: remove the plug-in CA we installed.
                cluster
                    .delete(secrets, cacerts::SECRET_NAME, false, deadline)
                    .await?;
                private.cacerts_digest = None;
            }
            set_trust_outputs(state, None);
        }
    }
    Ok(())
}

/// A cluster error as diagnostics.
fn kube_diags(e: KubeError) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error(e.to_string(), "");
    d
}

/// Namespace annotation listing (comma-separated) the IstioOperators this resource installed
/// or started installing in the cluster.
pub(super) const OPERATORS_ANNOTATION: &str = "mesh.tfmesh.dev/istio-operators";

/// The IstioOperators recorded on the namespace.
pub(super) fn recorded_operators(ns: &Namespace) -> Vec<String> {
    ns.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OPERATORS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn remove(ctx: &Ctx, prior: &Value, private: &[u8]) -> Result<(), KubeError> {
    let private = Private::load(private, prior);
    let deadline = Deadline::new(
        timeout(prior, "delete", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let cluster = connect(&kubernetes::connection_of(prior)?).await?;
    let ns_name = prior
        .get("namespace")
        .as_str()
        .unwrap_or("istio-system")
        .to_string();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let live_ns = cluster.get_opt(&namespaces, &ns_name, &deadline).await?;
    // Every IstioOperator that may have left objects: from private state, from the record on
    // the namespace (private state is lost when a provider dies mid-operation), and the one
    // the configuration names.
    let configured = control_plane_from(prior, &mut Diagnostics::new()).map(|cp| {
        operator::operator_name(
            prior.get("cluster_name").as_str().unwrap_or_default(),
            cp.revision.as_deref(),
        )
    });
    let mut operators: Vec<String> = private
        .operators()
        .cloned()
        .chain(live_ns.as_ref().map(recorded_operators).unwrap_or_default())
        .chain(configured)
        .collect();
    operators.sort();
    operators.dedup();
    let remove_crds = private.remove_crds
        || prior
            .get("control_plane")
            .get("remove_crds_on_destroy")
            .as_bool()
            == Some(true);
    for name in &operators {
        // An installer a killed apply left behind holds a cluster-admin binding.
        install::remove_installer(&cluster, &Installer::new(&ns_name, name), &deadline).await?;
        let removed = install::uninstall(
            &cluster,
            &operator::owner_selector(name, &ns_name),
            remove_crds,
            &deadline,
        )
        .await?;
        tracing::info!(cluster = %cluster.name, operator = %name, removed, "control plane uninstalled");
    }
    // `cacerts` goes if we wrote it: recorded in private state, or (written by an apply that
    // was killed before state was saved, under a configuration since changed) labelled with
    // this instance in the cluster.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns_name);
    let ours = private.cacerts_digest.is_some()
        || cluster
            .get_opt(&secrets, cacerts::SECRET_NAME, &deadline)
            .await?
            .is_some_and(|s| has_instance_label(&s.metadata, &instance(prior)));
    if ours {
        cluster
            .delete(&secrets, cacerts::SECRET_NAME, false, &deadline)
            .await?;
    }
    // The namespace goes if this instance created it: the cluster's mark decides (private
    // state only for namespaces created before the mark existed). Otherwise it stays.
    let created = live_ns
        .as_ref()
        .is_some_and(|ns| created_by(&ns.metadata, &instance(prior)) || private.namespace_created);
    if created {
        cluster
            .delete(&namespaces, &ns_name, true, &deadline)
            .await?;
    } else if live_ns.is_some() {
        // Not ours: give back the labels we set (an apply that owns nothing releases them).
        let bare = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns_name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        cluster.apply(&namespaces, &bare, &deadline).await?;
    }
    Ok(())
}
