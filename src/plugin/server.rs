//! The tfplugin6 `Provider` gRPC service: decodes requests against each resource's schema,
//! runs the plan pipeline, dispatches CRUD, and encodes every answer as msgpack.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::diag::{AttributePath, Diagnostics};
use super::plan::Plan;
use super::proto::tfplugin6 as pb;
use super::proto::tfplugin6::provider_server::Provider as ProviderRpc;
use super::resource::{Change, Ctx, Failure, Resource};
use super::schema::{Block, Schema};
use super::value::{self, Type, Value};
use super::Provider;

struct Registered {
    resource: Arc<dyn Resource>,
    schema: Schema,
    ty: Type,
}

/// Values and paths cross the wire in Terraform's shape (single blocks as one-element lists)
/// and reach resources in theirs (single blocks as objects); these are the only crossings.
impl Registered {
    fn decode(&self, dv: Option<&pb::DynamicValue>, what: &str) -> Result<Value, Diagnostics> {
        decode(dv, &self.ty, what).map(|v| self.schema.block.from_wire(v))
    }

    fn encode(&self, v: &Value) -> Option<pb::DynamicValue> {
        encode(&self.schema.block.to_wire(v.clone()), &self.ty)
    }

    fn path(&self, p: &AttributePath) -> pb::AttributePath {
        self.schema.block.wire_path(p).to_proto()
    }

    fn diagnostics(&self, mut d: Diagnostics) -> Vec<pb::Diagnostic> {
        for x in &mut d.0 {
            if let Some(p) = &x.path {
                x.path = Some(self.schema.block.wire_path(p));
            }
        }
        d.to_proto()
    }
}

/// The gRPC service. Cheap to clone; all clones share the stop tokens.
#[derive(Clone)]
pub struct ProviderService {
    inner: Arc<Inner>,
}

struct Inner {
    description: &'static str,
    resources: BTreeMap<&'static str, Registered>,
    /// Cancels every operation, present and future (the caller's token).
    stop_all: CancellationToken,
    /// Cancels the operations in flight; StopProvider cancels it and arms a fresh one, so a
    /// provider that outlives a Ctrl-C (reattach/debug mode) can still work afterwards.
    stop: Mutex<CancellationToken>,
    terraform_version: Mutex<Option<String>>,
}

impl ProviderService {
    pub fn new(provider: Provider, stop: CancellationToken) -> Self {
        let resources = provider
            .resources
            .into_iter()
            .map(|r| {
                let schema = r.schema();
                let ty = schema.value_type();
                (
                    r.type_name(),
                    Registered {
                        resource: r,
                        schema,
                        ty,
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                description: provider.description,
                resources,
                stop: Mutex::new(stop.child_token()),
                stop_all: stop,
                terraform_version: Mutex::new(None),
            }),
        }
    }

    /// The Terraform version from ConfigureProvider, once known.
    pub fn terraform_version(&self) -> Option<String> {
        self.inner.terraform_version.lock().ok()?.clone()
    }

    fn resource(&self, type_name: &str) -> Result<&Registered, Status> {
        self.inner.resources.get(type_name).ok_or_else(|| {
            Status::invalid_argument(format!("this provider has no resource type {type_name:?}"))
        })
    }

    fn ctx(&self) -> Ctx {
        let stop = self.inner.stop.lock().unwrap_or_else(|e| e.into_inner());
        Ctx::new(stop.clone())
    }

    fn provider_schema(&self) -> Schema {
        Schema::new(0, Block::new(self.inner.description))
    }
}

/// Decodes a DynamicValue (msgpack, or JSON as a fallback) for `ty`, as a diagnostic on error.
fn decode(dv: Option<&pb::DynamicValue>, ty: &Type, what: &str) -> Result<Value, Diagnostics> {
    let Some(dv) = dv else {
        return Ok(Value::Null);
    };
    let result = if !dv.msgpack.is_empty() {
        value::from_msgpack(&dv.msgpack, ty)
    } else if !dv.json.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&dv.json)
            .map_err(|e| value::ValueError {
                path: AttributePath::root(),
                message: format!("invalid JSON: {e}"),
            })
            .and_then(|j| value::from_json(&j, ty))
    } else {
        Ok(Value::Null)
    };
    result.map_err(|e| {
        let mut d = Diagnostics::new();
        d.error_at(
            e.path.clone(),
            format!("Invalid {what}"),
            format!("{} does not fit the schema: {}", e.path, e.message),
        );
        d
    })
}

fn encode(v: &Value, ty: &Type) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: value::to_msgpack(v, ty),
        json: Vec::new(),
    })
}

fn unknown_left(state: &Value) -> Diagnostics {
    let mut d = Diagnostics::new();
    if !state.is_wholly_known() {
        d.error(
            "Provider returned an incomplete state",
            "A value is still unknown after apply. This is a bug in terraform-provider-mesh; please report it.",
        );
    }
    d
}

#[tonic::async_trait]
impl ProviderRpc for ProviderService {
    async fn get_metadata(
        &self,
        _req: Request<pb::get_metadata::Request>,
    ) -> Result<Response<pb::get_metadata::Response>, Status> {
        Ok(Response::new(pb::get_metadata::Response {
            server_capabilities: Some(capabilities()),
            diagnostics: vec![],
            data_sources: vec![],
            resources: self
                .inner
                .resources
                .keys()
                .map(|n| pb::get_metadata::ResourceMetadata {
                    type_name: n.to_string(),
                })
                .collect(),
        }))
    }

    async fn get_provider_schema(
        &self,
        _req: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(self.provider_schema().to_proto()),
            resource_schemas: self
                .inner
                .resources
                .iter()
                .map(|(n, r)| (n.to_string(), r.schema.to_proto()))
                .collect(),
            data_source_schemas: Default::default(),
            diagnostics: vec![],
            provider_meta: None,
            server_capabilities: Some(capabilities()),
        }))
    }

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let ty = self.provider_schema().value_type();
        let diags = decode(req.get_ref().config.as_ref(), &ty, "provider configuration")
            .err()
            .unwrap_or_default();
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: diags.to_proto(),
        }))
    }

    async fn validate_resource_config(
        &self,
        req: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let diagnostics = match r.decode(req.config.as_ref(), "configuration") {
            Ok(config) => {
                let mut d = Diagnostics::new();
                super::resource::validate_timeouts(&config, &mut d);
                r.resource.validate(&config, &mut d);
                r.diagnostics(d)
            }
            // Decoding errors already carry wire paths.
            Err(d) => d.to_proto(),
        };
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics,
        }))
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        Err(Status::invalid_argument(format!(
            "this provider has no data source {:?}",
            req.get_ref().type_name
        )))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let mut diags = Diagnostics::new();
        let raw = req.raw_state.unwrap_or_default();
        let upgraded = if !raw.json.is_empty() {
            match serde_json::from_slice::<serde_json::Value>(&raw.json) {
                Ok(json) => match r.resource.upgrade(req.version, json) {
                    Ok(mut json) => {
                        r.schema.block.wire_json(&mut json);
                        match value::from_json(&json, &r.ty) {
                            Ok(v) => Some(r.schema.block.from_wire(v)),
                            Err(e) => {
                                diags.error_at(
                                    e.path.clone(),
                                    "Stored state does not fit the schema",
                                    e.message,
                                );
                                None
                            }
                        }
                    }
                    Err(d) => {
                        diags.extend(d);
                        None
                    }
                },
                Err(e) => {
                    diags.error("Stored state is not valid JSON", e.to_string());
                    None
                }
            }
        } else if !raw.flatmap.is_empty() {
            diags.error(
                "Unsupported legacy state",
                "This state was written in the pre-0.12 flatmap format, which this provider never wrote.",
            );
            None
        } else {
            Some(Value::Null)
        };
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: upgraded.and_then(|v| r.encode(&v)),
            diagnostics: diags.to_proto(),
        }))
    }

    async fn configure_provider(
        &self,
        req: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let version = req.into_inner().terraform_version;
        tracing::debug!(terraform_version = %version, "provider configured");
        if let Ok(mut v) = self.inner.terraform_version.lock() {
            *v = Some(version);
        }
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: vec![],
        }))
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let state = match r.decode(req.current_state.as_ref(), "state") {
            Ok(s) => s,
            Err(d) => {
                return Ok(Response::new(pb::read_resource::Response {
                    new_state: req.current_state,
                    diagnostics: d.to_proto(),
                    private: req.private,
                }))
            }
        };
        let ctx = self.ctx();
        tracing::debug!(resource = r.resource.type_name(), "read");
        let (new_state, private, mut diags) =
            match r.resource.read(&ctx, &state, &req.private).await {
                Ok(Some(applied)) => (applied.state, applied.private, Diagnostics::new()),
                Ok(None) => (Value::Null, Vec::new(), Diagnostics::new()),
                // A failed refresh keeps what we had: nothing is dropped from state.
                Err(f) => {
                    let a = f.partial.unwrap_or(super::resource::Applied {
                        state: state.clone(),
                        private: req.private.clone(),
                    });
                    (a.state, a.private, f.diags)
                }
            };
        diags.extend(ctx.take_warnings());
        Ok(Response::new(pb::read_resource::Response {
            new_state: r.encode(&new_state),
            diagnostics: r.diagnostics(diags),
            private,
        }))
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let decoded = (|| {
            Ok::<_, Diagnostics>((
                r.decode(req.prior_state.as_ref(), "prior state")?,
                r.decode(req.proposed_new_state.as_ref(), "proposed state")?,
                r.decode(req.config.as_ref(), "configuration")?,
            ))
        })();
        let (prior, proposed, config) = match decoded {
            Ok(v) => v,
            Err(d) => {
                return Ok(Response::new(pb::plan_resource_change::Response {
                    diagnostics: d.to_proto(),
                    ..Default::default()
                }))
            }
        };
        let mut plan = Plan::new(&r.schema, &prior, proposed, &config, &req.prior_private);
        if !plan.is_destroy() {
            r.resource.modify_plan(&mut plan);
        }
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state: r.encode(&plan.planned),
            requires_replace: plan.requires_replace.iter().map(|p| r.path(p)).collect(),
            planned_private: plan.planned_private,
            diagnostics: r.diagnostics(plan.diags),
        }))
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let decoded = (|| {
            Ok::<_, Diagnostics>((
                r.decode(req.prior_state.as_ref(), "prior state")?,
                r.decode(req.planned_state.as_ref(), "planned state")?,
                r.decode(req.config.as_ref(), "configuration")?,
            ))
        })();
        let (prior, planned, config) = match decoded {
            Ok(v) => v,
            Err(d) => {
                return Ok(Response::new(pb::apply_resource_change::Response {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: d.to_proto(),
                }))
            }
        };
        let ctx = self.ctx();
        let res = r.resource.as_ref();
        let change = Change {
            prior: &prior,
            planned: &planned,
            config: &config,
            private: &req.planned_private,
        };
        let keep_prior = || super::resource::Applied {
            state: prior.clone(),
            private: req.planned_private.clone(),
        };
        let (applied, mut diags) = if planned.is_null() {
            tracing::info!(resource = res.type_name(), "deleting");
            match res.delete(&ctx, &prior, &req.planned_private).await {
                Ok(()) => (Default::default(), Diagnostics::new()),
                // Returning the prior state with an error keeps the resource in state: a
                // failed destroy must never silently forget an object that still exists.
                Err(Failure { mut diags, partial }) => {
                    if !diags.has_errors() {
                        diags.error("Delete failed", "The resource was not deleted.");
                    }
                    (partial.unwrap_or_else(keep_prior), diags)
                }
            }
        } else if prior.is_null() {
            tracing::info!(resource = res.type_name(), "creating");
            match res.create(&ctx, change).await {
                Ok(a) => {
                    let d = unknown_left(&a.state);
                    (a, d)
                }
                Err(f) => (f.partial.unwrap_or_default(), f.diags),
            }
        } else {
            tracing::info!(resource = res.type_name(), "updating");
            match res.update(&ctx, change).await {
                Ok(a) => {
                    let d = unknown_left(&a.state);
                    (a, d)
                }
                Err(f) => (f.partial.unwrap_or_else(keep_prior), f.diags),
            }
        };
        diags.extend(ctx.take_warnings());
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state: r.encode(&applied.state),
            private: applied.private,
            diagnostics: r.diagnostics(diags),
        }))
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let req = req.into_inner();
        let r = self.resource(&req.type_name)?;
        let (imported, diags) = match r.resource.import(&req.id) {
            Ok(a) => (
                vec![pb::import_resource_state::ImportedResource {
                    type_name: req.type_name.clone(),
                    state: r.encode(&a.state),
                    private: a.private,
                }],
                Diagnostics::new(),
            ),
            Err(d) => (vec![], d),
        };
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources: imported,
            diagnostics: r.diagnostics(diags),
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        Err(Status::invalid_argument(format!(
            "this provider has no data source {:?}",
            req.get_ref().type_name
        )))
    }

    async fn stop_provider(
        &self,
        _req: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        tracing::info!("StopProvider: cancelling in-flight operations");
        let fresh = self.inner.stop_all.child_token();
        let mut stop = self.inner.stop.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *stop, fresh).cancel();
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}

fn capabilities() -> pb::ServerCapabilities {
    pb::ServerCapabilities {
        // Destroy is planned by Terraform core alone; we have nothing to add to it.
        plan_destroy: false,
        // Our schemas are static, so a cached copy is as good as a fresh one.
        get_provider_schema_optional: true,
        move_resource_state: false,
    }
}
