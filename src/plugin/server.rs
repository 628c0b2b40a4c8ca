//! The tfplugin6 `Provider` gRPC service: decodes requests against each resource's schema,
//! runs the plan pipeline, dispatches CRUD, and encodes every answer as msgpack.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::data_source::DataSource;
use super::diag::{AttributePath, Diagnostics};
use super::plan::Plan;
use super::proto::tfplugin6 as pb;
use super::proto::tfplugin6::provider_server::Provider as ProviderRpc;
use super::resource::{Change, ClientCapabilities, Ctx, Failure, Resource};
use super::schema::{Block, Mode, Schema};
use super::value::{self, Type, Value};
use super::Provider;

/// One registered resource or data source type with its schema and value type, computed once.
struct Registered<T: ?Sized> {
    imp: Arc<T>,
    schema: Schema,
    ty: Type,
}

/// Values and paths cross the wire in Terraform's shape (single blocks as one-element lists)
/// and reach resources in theirs (single blocks as objects); these are the only crossings.
impl<T: ?Sized> Registered<T> {
    fn new(imp: Arc<T>, schema: Schema) -> Self {
        let ty = schema.value_type();
        Self { imp, schema, ty }
    }

    fn decode(&self, dv: Option<&pb::DynamicValue>, what: &str) -> Result<Value, Diagnostics> {
        decode(dv, &self.ty, what).map(|v| self.schema.block.from_wire(v))
    }

    /// Every value encoded here is a state (planned, applied, refreshed, upgraded, imported):
    /// write-only attributes are nulled whatever the implementation returned, so none can
    /// reach plan or state by mistake.
    fn encode(&self, v: &Value) -> Option<pb::DynamicValue> {
        let mut v = v.clone();
        self.schema.block.strip_write_only(&mut v);
        encode(&self.schema.block.to_wire(v), &self.ty)
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
    resources: BTreeMap<&'static str, Registered<dyn Resource>>,
    data_sources: BTreeMap<&'static str, Registered<dyn DataSource>>,
    /// Cancels every operation, present and future (the caller's token).
    stop_all: CancellationToken,
    /// Cancels the operations in flight; StopProvider cancels it and arms a fresh one, so a
    /// provider that outlives a Ctrl-C (reattach/debug mode) can still work afterwards.
    stop: Mutex<CancellationToken>,
    terraform_version: Mutex<Option<String>>,
    /// The client capabilities announced at ConfigureProvider, for the RPCs that carry none.
    client: Mutex<ClientCapabilities>,
}

impl ProviderService {
    pub fn new(provider: Provider, stop: CancellationToken) -> Self {
        let resources = provider
            .resources
            .into_iter()
            .map(|r| (r.type_name(), Registered::new(r.clone(), r.schema())))
            .collect();
        let data_sources = provider
            .data_sources
            .into_iter()
            .map(|d| (d.type_name(), Registered::new(d.clone(), d.schema())))
            .collect();
        Self {
            inner: Arc::new(Inner {
                description: provider.description,
                resources,
                data_sources,
                stop: Mutex::new(stop.child_token()),
                stop_all: stop,
                terraform_version: Mutex::new(None),
                client: Mutex::default(),
            }),
        }
    }

    /// The Terraform version from ConfigureProvider, once known.
    pub fn terraform_version(&self) -> Option<String> {
        self.inner.terraform_version.lock().ok()?.clone()
    }

    /// The resource `type_name`, or the diagnostic terraform-plugin-framework answers for a
    /// type it does not serve.
    fn resource(&self, type_name: &str) -> Result<&Registered<dyn Resource>, Diagnostics> {
        self.inner.resources.get(type_name).ok_or_else(|| {
            let mut d = Diagnostics::new();
            d.error(
                "Resource Type Not Found",
                format!("No resource type named {type_name:?} was found in the provider."),
            );
            d
        })
    }

    /// The data source `type_name`, or the diagnostic terraform-plugin-framework answers for a
    /// type it does not serve.
    fn data_source(&self, type_name: &str) -> Result<&Registered<dyn DataSource>, Diagnostics> {
        self.inner.data_sources.get(type_name).ok_or_else(|| {
            let mut d = Diagnostics::new();
            d.error(
                "Data Source Type Not Found",
                format!("No data source type named {type_name:?} was found in the provider."),
            );
            d
        })
    }

    /// The context of one call: the request's client capabilities when it carries them, else
    /// those announced at ConfigureProvider.
    fn ctx(&self, client: Option<&pb::ClientCapabilities>) -> Ctx {
        let stop = self.inner.stop.lock().unwrap_or_else(|e| e.into_inner());
        let mut ctx = Ctx::new(stop.clone());
        ctx.client = self.client(client);
        ctx
    }

    fn client(&self, client: Option<&pb::ClientCapabilities>) -> ClientCapabilities {
        match client {
            Some(c) => ClientCapabilities::from_proto(Some(c)),
            None => *self.inner.client.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn provider_schema(&self) -> Schema {
        Schema::new(0, Block::new(self.inner.description))
    }
}

/// Decodes a DynamicValue for `ty`, as an error diagnostic when it cannot be. Terraform sends
/// msgpack; the protocol also allows JSON, which terraform-plugin-go's `DynamicValue.Unmarshal`
/// accepts, so we do too. A value that is absent, empty, or carries both forms is refused:
/// Terraform always sends exactly one (msgpack `c0` for null).
fn decode(dv: Option<&pb::DynamicValue>, ty: &Type, what: &str) -> Result<Value, Diagnostics> {
    let refuse = |path: AttributePath, detail: String| {
        let mut d = Diagnostics::new();
        d.error_at(path, format!("Invalid {what}"), detail);
        d
    };
    let Some(dv) = dv else {
        return Err(refuse(
            AttributePath::root(),
            format!("The request carries no {what}."),
        ));
    };
    let result = match (dv.msgpack.is_empty(), dv.json.is_empty()) {
        (false, true) => value::from_msgpack(&dv.msgpack, ty),
        (true, false) => value::from_json_bytes(&dv.json, ty),
        (true, true) => {
            return Err(refuse(
                AttributePath::root(),
                format!("The {what} is empty: neither msgpack nor JSON was sent."),
            ))
        }
        (false, false) => {
            return Err(refuse(
                AttributePath::root(),
                format!("The {what} carries both msgpack and JSON; send exactly one."),
            ))
        }
    };
    result.map_err(|e| {
        let detail = format!(
            "The {what} does not fit the schema at {}: {}.",
            e.path, e.message
        );
        refuse(e.path, detail)
    })
}

fn encode(v: &Value, ty: &Type) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: value::to_msgpack(v, ty),
        json: Vec::new(),
    })
}

/// Errors for the write-only attributes `config` sets when the client does not support them:
/// such a client (Terraform before 1.11) treats them as ordinary attributes and would store the
/// value in plan and state, the very thing write-only exists to prevent.
fn write_only_refused(schema: &Schema, config: &Value, client: ClientCapabilities) -> Diagnostics {
    let mut d = Diagnostics::new();
    if client.write_only_attributes_allowed {
        return d;
    }
    for (path, attr) in schema.block.write_only_set(config) {
        let instead = match &attr.stored_alternative {
            Some(alt) => {
                let mut alt_path = path.clone();
                alt_path.pop();
                let alt_path = alt_path.attr(alt);
                format!(" With this Terraform, set `{alt_path}` instead (stored in the state, marked sensitive), or upgrade.")
            }
            None => " Upgrade Terraform, or leave it unset.".to_string(),
        };
        d.error_at(
            path.clone(),
            "Write-only attribute not supported by this Terraform",
            format!("`{path}` is write-only: its value must never be stored. Write-only attributes need Terraform 1.11 or later (or OpenTofu 1.11 or later); this client did not announce support for them and would save the value in plan and state.{instead}"),
        );
    }
    d
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
            data_sources: self
                .inner
                .data_sources
                .keys()
                .map(|n| pb::get_metadata::DataSourceMetadata {
                    type_name: n.to_string(),
                })
                .collect(),
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
        let _timing = crate::timing::rpc("GetProviderSchema", "", || {
            prost::Message::encoded_len(_req.get_ref())
        });
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(self.provider_schema().to_proto()),
            resource_schemas: self
                .inner
                .resources
                .iter()
                .map(|(n, r)| (n.to_string(), r.schema.to_proto()))
                .collect(),
            data_source_schemas: self
                .inner
                .data_sources
                .iter()
                .map(|(n, d)| (n.to_string(), d.schema.to_proto()))
                .collect(),
            diagnostics: vec![],
            provider_meta: None,
            server_capabilities: Some(capabilities()),
        }))
    }

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let _timing = crate::timing::rpc("ValidateProviderConfig", "", || {
            prost::Message::encoded_len(req.get_ref())
        });
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
        let _timing =
            crate::timing::rpc("ValidateResourceConfig", &req.get_ref().type_name, || {
                prost::Message::encoded_len(req.get_ref())
            });
        let req = req.into_inner();
        let r = match self.resource(&req.type_name) {
            Ok(r) => r,
            Err(d) => {
                return Ok(Response::new(pb::validate_resource_config::Response {
                    diagnostics: d.to_proto(),
                }))
            }
        };
        let client = self.client(req.client_capabilities.as_ref());
        let diagnostics = match r.decode(req.config.as_ref(), "configuration") {
            Ok(config) => {
                let mut d = write_only_refused(&r.schema, &config, client);
                super::resource::validate_timeouts(&config, &mut d);
                r.imp.validate(&config, &mut d);
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
        let _timing = crate::timing::rpc(
            "ValidateDataResourceConfig",
            &req.get_ref().type_name,
            || prost::Message::encoded_len(req.get_ref()),
        );
        let req = req.into_inner();
        let diagnostics = match self.data_source(&req.type_name) {
            Ok(ds) => match ds.decode(req.config.as_ref(), "configuration") {
                Ok(config) => {
                    let mut d = Diagnostics::new();
                    super::resource::validate_timeouts(&config, &mut d);
                    ds.imp.validate(&config, &mut d);
                    ds.diagnostics(d)
                }
                // Decoding errors already carry wire paths.
                Err(d) => d.to_proto(),
            },
            Err(d) => d.to_proto(),
        };
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics,
        }))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let _timing = crate::timing::rpc("UpgradeResourceState", &req.get_ref().type_name, || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let r = match self.resource(&req.type_name) {
            Ok(r) => r,
            Err(d) => {
                return Ok(Response::new(pb::upgrade_resource_state::Response {
                    upgraded_state: None,
                    diagnostics: d.to_proto(),
                }))
            }
        };
        let mut diags = Diagnostics::new();
        let raw = req.raw_state.unwrap_or_default();
        let upgraded = if !raw.json.is_empty() {
            match serde_json::from_slice::<serde_json::Value>(&raw.json) {
                Ok(json) => match r.imp.upgrade(req.version, json) {
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
                    let detail = if value::is_msgpack(&raw.json) {
                        "The raw state holds msgpack; Terraform stores state as JSON.".to_string()
                    } else {
                        e.to_string()
                    };
                    diags.error("Stored state is not valid JSON", detail);
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
            diags.error(
                "Missing stored state",
                "The request carries no raw state (neither JSON nor flatmap).",
            );
            None
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
        let _timing = crate::timing::rpc("ConfigureProvider", "", || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let ty = self.provider_schema().value_type();
        if let Err(d) = decode(req.config.as_ref(), &ty, "provider configuration") {
            return Ok(Response::new(pb::configure_provider::Response {
                diagnostics: d.to_proto(),
            }));
        }
        let version = req.terraform_version;
        tracing::debug!(terraform_version = %version, "provider configured");
        if let Ok(mut v) = self.inner.terraform_version.lock() {
            *v = Some(version);
        }
        if let Ok(mut c) = self.inner.client.lock() {
            *c = ClientCapabilities::from_proto(req.client_capabilities.as_ref());
        }
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: vec![],
        }))
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let _timing = crate::timing::rpc("ReadResource", &req.get_ref().type_name, || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let r = match self.resource(&req.type_name) {
            Ok(r) => r,
            Err(d) => {
                return Ok(Response::new(pb::read_resource::Response {
                    new_state: req.current_state,
                    diagnostics: d.to_proto(),
                    private: req.private,
                }))
            }
        };
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
        let ctx = self.ctx(req.client_capabilities.as_ref());
        tracing::debug!(resource = r.imp.type_name(), "read");
        let (new_state, private, mut diags) = match r.imp.read(&ctx, &state, &req.private).await {
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
        let _timing = crate::timing::rpc("PlanResourceChange", &req.get_ref().type_name, || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let decoded = self.resource(&req.type_name).and_then(|r| {
            Ok::<_, Diagnostics>((
                r,
                r.decode(req.prior_state.as_ref(), "prior state")?,
                r.decode(req.proposed_new_state.as_ref(), "proposed state")?,
                r.decode(req.config.as_ref(), "configuration")?,
            ))
        });
        let (r, prior, proposed, config) = match decoded {
            Ok(v) => v,
            Err(d) => {
                return Ok(Response::new(pb::plan_resource_change::Response {
                    diagnostics: d.to_proto(),
                    ..Default::default()
                }))
            }
        };
        let client = self.client(req.client_capabilities.as_ref());
        let refused = write_only_refused(&r.schema, &config, client);
        if refused.has_errors() {
            return Ok(Response::new(pb::plan_resource_change::Response {
                diagnostics: r.diagnostics(refused),
                ..Default::default()
            }));
        }
        let mut plan = Plan::new(&r.schema, &prior, proposed, &config, &req.prior_private);
        plan.client = client;
        if !plan.is_destroy() {
            r.imp.modify_plan(&mut plan);
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
        let _timing = crate::timing::rpc("ApplyResourceChange", &req.get_ref().type_name, || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let decoded = self.resource(&req.type_name).and_then(|r| {
            Ok::<_, Diagnostics>((
                r,
                r.decode(req.prior_state.as_ref(), "prior state")?,
                r.decode(req.planned_state.as_ref(), "planned state")?,
                r.decode(req.config.as_ref(), "configuration")?,
            ))
        });
        let (r, prior, planned, config) = match decoded {
            Ok(v) => v,
            Err(d) => {
                return Ok(Response::new(pb::apply_resource_change::Response {
                    new_state: req.prior_state,
                    private: req.planned_private,
                    diagnostics: d.to_proto(),
                }))
            }
        };
        // ApplyResourceChange carries no client capabilities: those of ConfigureProvider.
        let ctx = self.ctx(None);
        let res = r.imp.as_ref();
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
        let r = match self.resource(&req.type_name) {
            Ok(r) => r,
            Err(d) => {
                return Ok(Response::new(pb::import_resource_state::Response {
                    imported_resources: vec![],
                    diagnostics: d.to_proto(),
                }))
            }
        };
        let (imported, diags) = match r.imp.import(&req.id) {
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
        let _timing = crate::timing::rpc("ReadDataSource", &req.get_ref().type_name, || {
            prost::Message::encoded_len(req.get_ref())
        });
        let req = req.into_inner();
        let ds = match self.data_source(&req.type_name) {
            Ok(ds) => ds,
            Err(d) => return Ok(Response::new(read_data_source_failed(d))),
        };
        let config = match ds.decode(req.config.as_ref(), "configuration") {
            Ok(c) => c,
            Err(d) => return Ok(Response::new(read_data_source_failed(d))),
        };
        if !config.is_wholly_known() {
            // Terraform defers such reads to apply; we never defer, so this is a client bug.
            let mut d = Diagnostics::new();
            d.error(
                "Data source configuration is not known yet",
                format!(
                    "{} was asked to read with values that are only known after apply. Terraform reads a data source once its configuration is known; this request is unexpected.",
                    req.type_name
                ),
            );
            return Ok(Response::new(read_data_source_failed(d)));
        }
        let ctx = self.ctx(req.client_capabilities.as_ref());
        tracing::debug!(data_source = ds.imp.type_name(), "read");
        let (state, mut diags) = match ds.imp.read(&ctx, &config).await {
            Ok(state) => {
                let d = check_read_result(ds, &config, &state);
                (Some(state).filter(|_| !d.has_errors()), d)
            }
            Err(d) => (None, d),
        };
        diags.extend(ctx.take_warnings());
        Ok(Response::new(pb::read_data_source::Response {
            state: state.and_then(|s| ds.encode(&s)),
            diagnostics: ds.diagnostics(diags),
        }))
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

fn read_data_source_failed(d: Diagnostics) -> pb::read_data_source::Response {
    pb::read_data_source::Response {
        state: None,
        diagnostics: d.to_proto(),
    }
}

/// What Terraform would reject in a data source's answer, reported as a provider bug naming the
/// attribute: a null or partly unknown object, a value that does not fit the schema, or a
/// configured (not computed) attribute whose value differs from the configuration.
fn check_read_result(
    ds: &Registered<dyn DataSource>,
    config: &Value,
    state: &Value,
) -> Diagnostics {
    let name = ds.imp.type_name();
    let mut d = Diagnostics::new();
    let bug = format!("This is a bug in {name} of terraform-provider-mesh; please report it.");
    if state.is_null() {
        d.error(format!("{name} returned no object"), bug);
        return d;
    }
    if !state.is_wholly_known() {
        d.error(
            format!("{name} returned an incomplete object"),
            format!("A value is still unknown after the read. {bug}"),
        );
    }
    if let Err(e) = value::conforms(&ds.schema.block.to_wire(state.clone()), &ds.ty) {
        // The path is a wire path (the value was checked in wire shape): keep it in the text.
        d.error(
            format!("{name} returned a value that does not fit its schema"),
            format!("{}: {}. {bug}", e.path, e.message),
        );
        return d;
    }
    for a in &ds.schema.block.attributes {
        let configured = matches!(a.mode, Mode::Required | Mode::Optional);
        if configured && state.get(&a.name) != config.get(&a.name) {
            d.error_at(
                AttributePath::attrs(&[a.name.as_str()]),
                format!("{name} changed a configured value"),
                format!("`{}` must be returned as configured. {bug}", a.name),
            );
        }
    }
    d
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
