//! Protocol tests: an in-process tfplugin6 client driving the provider over a Unix socket the
//! way Terraform does (msgpack DynamicValues, attribute paths, requires_replace, StopProvider,
//! GRPCController.Shutdown).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use terraform_provider_mesh::pki;
use terraform_provider_mesh::plugin::resource::{import_passthrough, timeouts_block, UpgradeStep};
use terraform_provider_mesh::plugin::value::{self, to_json, Type};
use terraform_provider_mesh::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, DataSource, Diagnostics, Failure,
    Provider, Resource, Schema, Value,
};
use tokio::sync::Notify;

const ROOT_CA: &str = "mesh_root_ca";
const THING: &str = "test_thing";
const LOOKUP: &str = "test_lookup";

/// Attributes of mesh_root_ca the provider computes.
const ROOT_CA_COMPUTED: [&str; 6] = [
    "id",
    "cert_pem",
    "private_key_pem",
    "not_before",
    "not_after",
    "fingerprint_sha256",
];

/// Attributes of mesh_root_ca the user sets.
const ROOT_CA_INPUTS: [&str; 7] = [
    "common_name",
    "organization",
    "key_algorithm",
    "rsa_bits",
    "ecdsa_curve",
    "validity_period_hours",
    "early_renewal_hours",
];

// ---------------------------------------------------------------------------------------------
// A test-only resource exercising what mesh_root_ca cannot: delete failures, import, blocking
// creates, timeouts and large values.

struct Thing {
    /// Signalled when a create has started waiting for StopProvider.
    waiting: Arc<Notify>,
}

/// `name` of a Thing whose create waits until Terraform calls StopProvider.
const WAIT_FOR_STOP: &str = "wait-for-stop";

#[tonic::async_trait]
impl Resource for Thing {
    fn type_name(&self) -> &'static str {
        THING
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A resource for protocol tests.")
                .attr(Attribute::string("id", "Identifier.").computed().stable())
                .attr(Attribute::string("name", "Name.").optional())
                .attr(Attribute::string("payload", "Opaque payload.").optional())
                .attr(Attribute::bool("fail_delete", "Make deletes fail.").optional())
                .block(timeouts_block(&[("create", "1m"), ("delete", "1m")])),
        )
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        if change.planned.get("name").as_str() == Some(WAIT_FOR_STOP) {
            self.waiting.notify_one();
            ctx.cancel.cancelled().await;
            return Err(
                anyhow::anyhow!("interrupted: Terraform asked the provider to stop").into(),
            );
        }
        if ctx.cancel.is_cancelled() {
            return Err(anyhow::anyhow!("cancelled before it started").into());
        }
        let mut state = change.planned.clone();
        let id = format!(
            "thing-{}",
            change.planned.get("name").as_str().unwrap_or("x")
        );
        state.set("id", Value::from(id));
        Ok(Applied::new(state))
    }

    async fn delete(&self, _ctx: &Ctx, prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        if prior.get("fail_delete").as_bool() == Some(true) {
            let mut d = Diagnostics::new();
            d.error("Cannot delete thing", "The backend refused.");
            return Err(d.into());
        }
        Ok(())
    }

    async fn read(
        &self,
        _ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        let mut state = state.clone();
        if state.get("name").is_null() {
            let id = state.get("id").as_str().unwrap_or_default().to_string();
            state.set("name", Value::from(format!("read-{id}")));
        }
        Ok(Some(Applied {
            state,
            private: private.to_vec(),
        }))
    }

    fn import(&self, id: &str) -> Result<Applied, Diagnostics> {
        Ok(import_passthrough(id))
    }
}

// ---------------------------------------------------------------------------------------------
// A test-only data source: echoes its configuration with computed attributes, fails on request,
// and can answer with what Terraform would reject.

struct Lookup;

/// `name` values that make the lookup misbehave.
const LOOKUP_FAILS: &str = "fail";
const LOOKUP_LEAVES_UNKNOWN: &str = "leave-unknown";
const LOOKUP_RENAMES: &str = "rename";

#[tonic::async_trait]
impl DataSource for Lookup {
    fn type_name(&self) -> &'static str {
        LOOKUP
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A data source for protocol tests.")
                .attr(Attribute::string("name", "What to look up.").required())
                .attr(Attribute::string("greeting", "Computed from the name.").computed())
                .attr(Attribute::string_list("labels", "Computed labels.").computed())
                .block(timeouts_block(&[("read", "1m")])),
        )
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        if config.get("name").as_str() == Some("") {
            diags.error_at(
                AttributePath::attrs(&["name"]),
                "Invalid name",
                "The name must not be empty.",
            );
        }
    }

    async fn read(&self, ctx: &Ctx, config: &Value) -> Result<Value, Diagnostics> {
        let name = config.get("name").as_str().unwrap_or_default().to_string();
        let mut state = config.clone();
        match name.as_str() {
            LOOKUP_FAILS => {
                let mut d = Diagnostics::new();
                d.error("Lookup failed", "The backend has no such thing.");
                return Err(d);
            }
            LOOKUP_LEAVES_UNKNOWN => state.set("greeting", Value::Unknown),
            LOOKUP_RENAMES => state.set("name", Value::from("renamed")),
            _ => state.set("greeting", Value::from(format!("hello {name}"))),
        }
        state.set("labels", Value::List(vec![Value::from("a")]));
        ctx.warn(None, "Looked up", "A warning travels with the result.");
        Ok(state)
    }
}

fn lookup_type() -> Type {
    Lookup.schema().value_type()
}

fn thing_type() -> Type {
    Thing {
        waiting: Arc::default(),
    }
    .schema()
    .value_type()
}

/// The real resources plus the test resource, whose `waiting` signal is returned.
fn test_provider() -> (Provider, Arc<Notify>) {
    let waiting = Arc::new(Notify::new());
    let mut provider = terraform_provider_mesh::provider();
    provider.resources.push(Arc::new(Thing {
        waiting: waiting.clone(),
    }));
    provider.data_sources.push(Arc::new(Lookup));
    (provider, waiting)
}

async fn serve_real() -> InProcess {
    serve(terraform_provider_mesh::provider()).await
}

async fn serve_test() -> (InProcess, Arc<Notify>) {
    let (provider, waiting) = test_provider();
    (serve(provider).await, waiting)
}

// ---------------------------------------------------------------------------------------------
// Schema and metadata

/// Asserts every attribute has a cty type (never `nested_type` semantics, which Terraform 1.0.x
/// crashes on) and that attributes and nested blocks are all documented.
fn check_block(block: &pb::schema::Block, at: &str, problems: &mut Vec<String>) {
    if block.description.trim().is_empty() {
        problems.push(format!("{at}: block without description"));
    }
    for a in &block.attributes {
        let here = format!("{at}.{}", a.name);
        if a.description.trim().is_empty() {
            problems.push(format!("{here}: no description"));
        }
        match serde_json::from_slice::<serde_json::Value>(&a.r#type) {
            Ok(t) if t.is_string() || t.is_array() => {}
            _ => problems.push(format!("{here}: no JSON type constraint")),
        }
        // Exactly one of required, optional, computed, optional+computed.
        if !matches!(
            (a.required, a.optional, a.computed),
            (true, false, false) | (false, true, _) | (false, false, true)
        ) {
            problems.push(format!("{here}: inconsistent required/optional/computed"));
        }
    }
    for b in &block.block_types {
        match &b.block {
            Some(inner) => check_block(inner, &format!("{at}.{}", b.type_name), problems),
            None => problems.push(format!("{at}.{}: nested block without a body", b.type_name)),
        }
    }
}

/// The part of GetProviderSchema.Response needed to see, on the wire, whether any attribute
/// carries `nested_type` (field 10 of Schema.Attribute, absent from our vendored proto so the
/// generated client would silently drop it).
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(map = "string, message", tag = "2")]
        pub resource_schemas: std::collections::HashMap<String, Schema>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(message, optional, tag = "2")]
        pub block: Option<Block>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Block {
        #[prost(message, repeated, tag = "2")]
        pub attributes: Vec<Attribute>,
        #[prost(message, repeated, tag = "3")]
        pub block_types: Vec<NestedBlock>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NestedBlock {
        #[prost(message, optional, tag = "2")]
        pub block: Option<Block>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Attribute {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(bytes = "vec", optional, tag = "10")]
        pub nested_type: Option<Vec<u8>>,
    }

    pub fn nested_type_attributes(block: &Block, out: &mut Vec<String>) {
        for a in &block.attributes {
            if a.nested_type.is_some() {
                out.push(a.name.clone());
            }
        }
        for b in block.block_types.iter().filter_map(|b| b.block.as_ref()) {
            nested_type_attributes(b, out);
        }
    }
}

#[tokio::test]
async fn schema_declares_root_ca_with_flat_documented_attributes() {
    let mut p = serve_real().await;
    let resp = p
        .client
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));

    let schema = &resp.resource_schemas[ROOT_CA];
    let block = schema.block.as_ref().unwrap();
    assert_eq!(block.version, schema.version);
    let attr = |name: &str| {
        block
            .attributes
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("no attribute {name}"))
    };

    let key = attr("private_key_pem");
    assert!(key.sensitive && key.computed && !key.optional && !key.required);
    assert_eq!(key.r#type, b"\"string\"");
    for name in ROOT_CA_INPUTS {
        let a = attr(name);
        // Optional with a default: optional+computed, never required.
        assert!(a.optional && a.computed && !a.required, "{name}: {a:?}");
    }
    for name in ROOT_CA_COMPUTED {
        let a = attr(name);
        assert!(a.computed && !a.optional, "{name}: {a:?}");
    }
    assert_eq!(attr("rsa_bits").r#type, b"\"number\"");
    assert_eq!(attr("ready_for_renewal").r#type, b"\"bool\"");

    let mut problems = Vec::new();
    check_block(
        resp.provider.as_ref().unwrap().block.as_ref().unwrap(),
        "provider",
        &mut problems,
    );
    for (name, s) in &resp.resource_schemas {
        check_block(s.block.as_ref().unwrap(), name, &mut problems);
    }
    assert_eq!(problems, Vec::<String>::new());

    let caps = resp.server_capabilities.unwrap();
    assert!(caps.get_provider_schema_optional);
    assert!(!caps.plan_destroy);
}

#[tokio::test]
async fn schema_never_sends_nested_type_on_the_wire() {
    let p = serve_test().await.0;
    let mut grpc = tonic::client::Grpc::new(unix_channel(&p.socket).await);
    grpc.ready().await.unwrap();
    let resp: wire::Response = grpc
        .unary(
            tonic::Request::new(pb::get_provider_schema::Request {}),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/tfplugin6.Provider/GetProviderSchema",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    // Every real resource plus the test-only one.
    assert_eq!(
        resp.resource_schemas.len(),
        terraform_provider_mesh::provider().resources.len() + 1
    );
    let mut offenders = Vec::new();
    for s in resp.resource_schemas.values() {
        let block = s.block.as_ref().unwrap();
        assert!(!block.attributes.is_empty());
        wire::nested_type_attributes(block, &mut offenders);
    }
    assert_eq!(offenders, Vec::<String>::new());
}

#[tokio::test]
async fn metadata_lists_resources_and_capabilities() {
    let mut p = serve_real().await;
    let resp = p
        .client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = resp
        .resources
        .iter()
        .map(|r| r.type_name.as_str())
        .collect();
    let mut registered: Vec<_> = terraform_provider_mesh::provider()
        .resources
        .iter()
        .map(|r| r.type_name())
        .collect();
    registered.sort();
    assert_eq!(names, registered);
    assert!(names.contains(&ROOT_CA));
    let data_sources: Vec<_> = resp
        .data_sources
        .iter()
        .map(|d| d.type_name.as_str())
        .collect();
    let mut registered: Vec<_> = terraform_provider_mesh::provider()
        .data_sources
        .iter()
        .map(|d| d.type_name())
        .collect();
    registered.sort();
    assert_eq!(data_sources, registered);
    assert!(resp.diagnostics.is_empty());
    let caps = resp.server_capabilities.unwrap();
    assert!(caps.get_provider_schema_optional);
    assert!(!caps.plan_destroy);
    assert!(!caps.move_resource_state);
}

// ---------------------------------------------------------------------------------------------
// ValidateResourceConfig

#[tokio::test]
async fn validate_accepts_unknowns_as_terraform_encodes_them() {
    let mut p = serve_real().await;
    let ty = root_ca_type();
    // Exactly what Terraform sends for `common_name = var.x` (unknown during validate), a
    // refined unknown, and a number carried as a string.
    let config = raw_object(
        &ty,
        vec![
            ("common_name", unknown()),
            ("organization", refined_unknown()),
            ("key_algorithm", "ECDSA".into()),
            ("rsa_bits", unknown()),
            ("validity_period_hours", "87600".into()),
            ("early_renewal_hours", unknown()),
        ],
    );
    assert_eq!(&mp(raw_get(&config, "common_name"))[..], [0xd4, 0x00, 0x00]);
    let diags = validate(&mut p.client, ROOT_CA, dv_raw(config)).await;
    assert!(diags.is_empty(), "{}", show(&diags));

    // A known but invalid number as a string is decoded, then rejected on its attribute.
    let config = raw_object(&ty, vec![("validity_period_hours", "0".into())]);
    let diags = validate(&mut p.client, ROOT_CA, dv_raw(config)).await;
    assert_eq!(error_paths(&diags), ["validity_period_hours"]);
}

#[tokio::test]
async fn validate_reports_errors_on_the_attribute_at_fault() {
    let mut p = serve_real().await;
    let ty = root_ca_type();

    for rsa_bits in [rmpv::Value::from(1024), rmpv::Value::from("1024")] {
        let config = raw_object(&ty, vec![("rsa_bits", rsa_bits)]);
        let diags = validate(&mut p.client, ROOT_CA, dv_raw(config)).await;
        assert_eq!(diags.len(), 1, "{}", show(&diags));
        assert!(is_error(&diags[0]));
        assert_eq!(diags[0].attribute, Some(attr_path(&["rsa_bits"])));
        assert!(diags[0].detail.contains("1024"), "{}", diags[0].detail);
    }

    let cases: [(&[(&str, Value)], &str); 3] = [
        (&[("key_algorithm", Value::from("DSA"))], "key_algorithm"),
        (
            &[
                ("key_algorithm", Value::from("ECDSA")),
                ("ecdsa_curve", Value::from("P521")),
            ],
            "ecdsa_curve",
        ),
        (
            &[
                ("validity_period_hours", Value::from(100)),
                ("early_renewal_hours", Value::from(100)),
            ],
            "early_renewal_hours",
        ),
    ];
    for (pairs, at) in cases {
        let diags = validate(&mut p.client, ROOT_CA, dv(&root_ca_config(pairs), &ty)).await;
        assert_eq!(error_paths(&diags), [at], "{}", show(&diags));
    }

    // A value of the wrong type is reported on its path, not as an opaque failure.
    let config = raw_object(&ty, vec![("rsa_bits", true.into())]);
    let diags = validate(&mut p.client, ROOT_CA, dv_raw(config)).await;
    assert_eq!(error_paths(&diags), ["rsa_bits"], "{}", show(&diags));
}

#[tokio::test]
async fn validate_checks_timeouts_on_their_path() {
    let mut p = serve_test().await.0;
    let ty = thing_type();
    // Single blocks travel as lists of at most one element, as Terraform sends them.
    let bad = Value::object([(
        "timeouts",
        Value::List(vec![Value::object([
            ("create", Value::from("soon")),
            ("delete", Value::from("5m")),
        ])]),
    )]);
    let diags = validate(&mut p.client, THING, dv(&bad, &ty)).await;
    assert_eq!(diags.len(), 1, "{}", show(&diags));
    assert!(is_error(&diags[0]));
    // The resource reports `timeouts.create`; Terraform gets the list element's path.
    assert_eq!(error_paths(&diags), ["timeouts[0].create"]);

    let good = Value::object([(
        "timeouts",
        Value::List(vec![Value::object([("create", Value::from("90s"))])]),
    )]);
    let diags = validate(&mut p.client, THING, dv(&good, &ty)).await;
    assert!(diags.is_empty(), "{}", show(&diags));
}

// ---------------------------------------------------------------------------------------------
// Data sources

#[tokio::test]
async fn data_sources_are_listed_with_their_schema() {
    let mut p = serve_test().await.0;
    let meta = p
        .client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(meta.data_sources.iter().any(|d| d.type_name == LOOKUP));
    let resp = p
        .client
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    // Data sources are not resources, and the other way round.
    assert!(!resp.resource_schemas.contains_key(LOOKUP));
    assert!(!resp.data_source_schemas.contains_key(THING));
    let block = resp.data_source_schemas[LOOKUP].block.clone().unwrap();
    let attr = |n: &str| block.attributes.iter().find(|a| a.name == n).unwrap();
    assert!(attr("name").required && !attr("name").computed);
    assert!(attr("greeting").computed && !attr("greeting").optional);
    assert_eq!(attr("labels").r#type, br#"["list","string"]"#);
    // The single timeouts block travels as a list block of at most one, like resources'.
    let timeouts = &block.block_types[0];
    assert_eq!(timeouts.type_name, "timeouts");
    assert_eq!(
        timeouts.nesting,
        pb::schema::nested_block::NestingMode::List as i32
    );
    assert_eq!((timeouts.min_items, timeouts.max_items), (0, 1));
    let mut problems = Vec::new();
    check_block(&block, LOOKUP, &mut problems);
    assert_eq!(problems, Vec::<String>::new());
}

#[tokio::test]
async fn data_source_validation_reports_wire_paths_and_accepts_unknowns() {
    let mut p = serve_test().await.0;
    let ty = lookup_type();
    let bad = Value::object([
        ("name", Value::from("")),
        (
            "timeouts",
            Value::List(vec![Value::object([("read", Value::from("soon"))])]),
        ),
    ]);
    let diags = validate_data(&mut p.client, LOOKUP, dv(&bad, &ty)).await;
    let mut paths = error_paths(&diags);
    paths.sort();
    assert_eq!(paths, ["name", "timeouts[0].read"], "{}", show(&diags));

    let unknown = raw_object(&ty, vec![("name", unknown())]);
    let diags = validate_data(&mut p.client, LOOKUP, dv_raw(unknown)).await;
    assert!(diags.is_empty(), "{}", show(&diags));

    // A value of the wrong type is reported on its attribute.
    let wrong = raw_object(&ty, vec![("name", rmpv::Value::Array(vec![]))]);
    let diags = validate_data(&mut p.client, LOOKUP, dv_raw(wrong)).await;
    assert_eq!(error_paths(&diags), ["name"], "{}", show(&diags));
}

#[tokio::test]
async fn read_data_source_returns_the_full_object_with_warnings() {
    let mut p = serve_test().await.0;
    let ty = lookup_type();
    let config = Value::object([
        ("name", Value::from("east")),
        (
            "timeouts",
            Value::List(vec![Value::object([("read", Value::from("30s"))])]),
        ),
    ]);
    let resp = read_data(&mut p.client, LOOKUP, dv(&config, &ty)).await;
    assert!(
        !resp.diagnostics.iter().any(is_error),
        "{}",
        show(&resp.diagnostics)
    );
    let state = decode(&resp.state, &ty);
    assert_eq!(state.get("name").as_str(), Some("east"));
    assert_eq!(state.get("greeting").as_str(), Some("hello east"));
    assert_eq!(state.get("labels"), &Value::List(vec![Value::from("a")]));
    // The block comes back in wire shape, as configured.
    assert_eq!(state.get("timeouts"), config.get("timeouts"));
    let warnings: Vec<_> = resp
        .diagnostics
        .iter()
        .map(|d| d.summary.as_str())
        .collect();
    assert_eq!(warnings, ["Looked up"]);
}

#[tokio::test]
async fn read_data_source_errors_are_diagnostics() {
    let mut p = serve_test().await.0;
    let ty = lookup_type();
    let with_name = |n: &str| dv(&Value::object([("name", Value::from(n))]), &ty);

    let resp = read_data(&mut p.client, LOOKUP, with_name(LOOKUP_FAILS)).await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert_eq!(resp.diagnostics[0].summary, "Lookup failed");
    assert!(resp.state.is_none());

    // Answers Terraform would reject are refused here, naming the data source.
    for (name, summary) in [
        (
            LOOKUP_LEAVES_UNKNOWN,
            "test_lookup returned an incomplete object",
        ),
        (LOOKUP_RENAMES, "test_lookup changed a configured value"),
    ] {
        let resp = read_data(&mut p.client, LOOKUP, with_name(name)).await;
        let errors: Vec<_> = resp
            .diagnostics
            .iter()
            .filter(|d| is_error(d))
            .map(|d| d.summary.as_str())
            .collect();
        assert_eq!(errors, [summary], "{}", show(&resp.diagnostics));
        assert!(resp.state.is_none());
    }

    // Terraform reads only known configurations; an unknown one is refused clearly.
    let unknown = raw_object(&ty, vec![("name", unknown())]);
    let resp = read_data(&mut p.client, LOOKUP, dv_raw(unknown)).await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert!(
        resp.diagnostics[0]
            .detail
            .contains("only known after apply"),
        "{}",
        show(&resp.diagnostics)
    );
}

#[tokio::test]
async fn unknown_data_source_types_get_a_diagnostic() {
    let mut p = serve_test().await.0;
    let config = dv(&Value::object([("name", Value::from("x"))]), &lookup_type());
    let diags = validate_data(&mut p.client, "test_nothing", config.clone()).await;
    assert_eq!(diags.len(), 1, "{}", show(&diags));
    assert!(is_error(&diags[0]));
    assert_eq!(diags[0].summary, "Data Source Type Not Found");
    assert!(
        diags[0].detail.contains("\"test_nothing\""),
        "{}",
        diags[0].detail
    );

    let resp = read_data(&mut p.client, "test_nothing", config.clone()).await;
    assert_eq!(resp.diagnostics.len(), 1);
    assert_eq!(resp.diagnostics[0].summary, "Data Source Type Not Found");
    // A resource type is not a data source type.
    let resp = read_data(&mut p.client, THING, config).await;
    assert_eq!(resp.diagnostics[0].summary, "Data Source Type Not Found");
}

// ---------------------------------------------------------------------------------------------
// Hostile wire input: every RPC that decodes a value answers an error diagnostic, never a gRPC
// status or a silently different value.

/// Each position in which an RPC decodes a DynamicValue.
#[derive(Clone, Copy, Debug)]
enum Slot {
    ValidateResource,
    PlanProposed,
    PlanConfig,
    ApplyPlanned,
    ReadState,
    ValidateData,
    ReadData,
    ValidateProvider,
    ConfigureProvider,
}

const SLOTS: [Slot; 9] = [
    Slot::ValidateResource,
    Slot::PlanProposed,
    Slot::PlanConfig,
    Slot::ApplyPlanned,
    Slot::ReadState,
    Slot::ValidateData,
    Slot::ReadData,
    Slot::ValidateProvider,
    Slot::ConfigureProvider,
];

impl Slot {
    /// The value type decoded in this slot.
    fn ty(self) -> Type {
        match self {
            Slot::ValidateData | Slot::ReadData => lookup_type(),
            Slot::ValidateProvider | Slot::ConfigureProvider => Type::Object(Default::default()),
            _ => thing_type(),
        }
    }

    /// Sends `value` in this slot (every other value valid) and returns the diagnostics; a gRPC
    /// error fails the test.
    async fn send(
        self,
        client: &mut ProviderClient,
        value: Option<pb::DynamicValue>,
    ) -> Vec<pb::Diagnostic> {
        let ty = self.ty();
        let empty = dv(&Value::object([("name", Value::from("x"))]), &ty);
        match self {
            Slot::ValidateResource => validate(client, THING, value).await,
            Slot::PlanProposed => {
                plan(client, THING, dv_null(), value, empty)
                    .await
                    .diagnostics
            }
            Slot::PlanConfig => {
                plan(client, THING, dv_null(), empty.clone(), value)
                    .await
                    .diagnostics
            }
            Slot::ApplyPlanned => {
                apply(client, THING, dv_null(), value, empty, vec![])
                    .await
                    .diagnostics
            }
            Slot::ReadState => read(client, THING, value, vec![]).await.diagnostics,
            Slot::ValidateData => validate_data(client, LOOKUP, value).await,
            Slot::ReadData => read_data(client, LOOKUP, value).await.diagnostics,
            Slot::ValidateProvider => {
                client
                    .validate_provider_config(pb::validate_provider_config::Request {
                        config: value,
                    })
                    .await
                    .expect("ValidateProviderConfig")
                    .into_inner()
                    .diagnostics
            }
            Slot::ConfigureProvider => {
                client
                    .configure_provider(pb::configure_provider::Request {
                        terraform_version: "1.11.4".into(),
                        config: value,
                        client_capabilities: None,
                    })
                    .await
                    .expect("ConfigureProvider")
                    .into_inner()
                    .diagnostics
            }
        }
    }
}

fn msgpack_dv(bytes: Vec<u8>) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: bytes,
        json: vec![],
    })
}

/// Bad DynamicValues for `ty` with what the error detail must say about each.
fn hostile_values(ty: &Type) -> Vec<(&'static str, Option<pb::DynamicValue>, &'static str)> {
    let valid = value::to_msgpack(&Value::object::<&str>([]), ty);
    let mut trailing = valid.clone();
    trailing.push(0xc0);
    vec![
        ("never-used byte", msgpack_dv(vec![0xc1]), "0xc1"),
        (
            // A map of one entry whose 4-byte key is cut after two bytes.
            "truncated",
            msgpack_dv(vec![0x81, 0xa4, b'n', b'a']),
            "ends early",
        ),
        (
            "trailing bytes",
            msgpack_dv(trailing),
            "unexpected bytes after the value",
        ),
        (
            "JSON in msgpack",
            msgpack_dv(br#"{"name":"x"}"#.to_vec()),
            "holds JSON text",
        ),
        (
            "msgpack in JSON",
            Some(pb::DynamicValue {
                msgpack: vec![],
                json: valid.clone(),
            }),
            "holds msgpack",
        ),
        (
            "unknown attribute",
            dv_raw(rmpv::Value::Map(vec![("nonexistent".into(), "x".into())])),
            r#"unsupported attribute "nonexistent""#,
        ),
        (
            "wrong type",
            dv_raw("x".into()),
            "expected object, found string",
        ),
        ("empty", Some(pb::DynamicValue::default()), "is empty"),
        ("absent", None, "carries no"),
        (
            "both forms",
            Some(pb::DynamicValue {
                msgpack: valid,
                json: b"{}".to_vec(),
            }),
            "both msgpack and JSON",
        ),
    ]
}

#[tokio::test]
async fn hostile_values_are_error_diagnostics_in_every_rpc() {
    let mut p = serve_test().await.0;
    for slot in SLOTS {
        for (case, value, want) in hostile_values(&slot.ty()) {
            let diags = slot.send(&mut p.client, value).await;
            let errors: Vec<_> = diags.iter().filter(|d| is_error(d)).collect();
            assert_eq!(errors.len(), 1, "{slot:?}, {case}: {}", show(&diags));
            assert!(
                errors[0].summary.starts_with("Invalid "),
                "{slot:?}, {case}: {}",
                show(&diags)
            );
            assert!(
                errors[0].detail.contains(want),
                "{slot:?}, {case}: {}",
                show(&diags)
            );
        }
    }
}

#[tokio::test]
async fn wrong_types_deep_inside_are_reported_on_their_wire_path() {
    let mut p = serve_test().await.0;
    let ty = thing_type();
    // `timeouts` is a single block: a list of one object on the wire.
    let config = raw_object(
        &ty,
        vec![(
            "timeouts",
            rmpv::Value::Array(vec![rmpv::Value::Map(vec![("create".into(), 5.into())])]),
        )],
    );
    for slot in [Slot::ValidateResource, Slot::PlanConfig, Slot::ReadState] {
        let diags = slot.send(&mut p.client, dv_raw(config.clone())).await;
        assert_eq!(
            error_paths(&diags),
            ["timeouts[0].create"],
            "{slot:?}: {}",
            show(&diags)
        );
        assert!(
            diags[0].detail.contains("expected string, found number"),
            "{}",
            show(&diags)
        );
    }
}

#[tokio::test]
async fn json_dynamic_values_are_accepted_as_terraform_plugin_go_does() {
    let mut p = serve_test().await.0;
    let json = |text: &str| {
        Some(pb::DynamicValue {
            msgpack: vec![],
            json: text.as_bytes().to_vec(),
        })
    };
    let diags = validate(
        &mut p.client,
        THING,
        json(r#"{"name": "a", "timeouts": []}"#),
    )
    .await;
    assert!(diags.is_empty(), "{}", show(&diags));
    let resp = read_data(&mut p.client, LOOKUP, json(r#"{"name": "east"}"#)).await;
    assert!(
        !resp.diagnostics.iter().any(is_error),
        "{}",
        show(&resp.diagnostics)
    );
    // The answer is msgpack, whatever the request used.
    let state = decode(&resp.state, &lookup_type());
    assert_eq!(state.get("greeting").as_str(), Some("hello east"));
}

#[tokio::test]
async fn unknown_resource_types_get_a_diagnostic_in_every_rpc() {
    let mut p = serve_test().await.0;
    const NONE: &str = "test_nothing";
    let config = dv(&Value::object([("name", Value::from("x"))]), &thing_type());
    let answers = [
        (
            "validate",
            validate(&mut p.client, NONE, config.clone()).await,
        ),
        (
            "plan",
            plan(
                &mut p.client,
                NONE,
                dv_null(),
                config.clone(),
                config.clone(),
            )
            .await
            .diagnostics,
        ),
        (
            "apply",
            apply(
                &mut p.client,
                NONE,
                dv_null(),
                config.clone(),
                config.clone(),
                vec![],
            )
            .await
            .diagnostics,
        ),
        (
            "read",
            read(&mut p.client, NONE, config.clone(), vec![])
                .await
                .diagnostics,
        ),
        ("import", import(&mut p.client, NONE, "x").await.diagnostics),
        (
            "upgrade",
            upgrade_of(&mut p.client, NONE, 0, &serde_json::json!({}))
                .await
                .diagnostics,
        ),
        // A data source type is not a resource type.
        (
            "validate data as resource",
            validate(&mut p.client, LOOKUP, config).await,
        ),
    ];
    for (rpc, diags) in answers {
        assert_eq!(diags.len(), 1, "{rpc}: {}", show(&diags));
        assert!(is_error(&diags[0]));
        assert_eq!(diags[0].summary, "Resource Type Not Found", "{rpc}");
        assert!(diags[0].detail.contains("No resource type named"), "{rpc}");
    }
}

#[tokio::test]
async fn upgrade_refuses_msgpack_or_missing_raw_state() {
    let mut p = serve_test().await.0;
    let mut send = async |raw_state: Option<pb::RawState>| {
        p.client
            .upgrade_resource_state(pb::upgrade_resource_state::Request {
                type_name: THING.into(),
                version: 0,
                raw_state,
            })
            .await
            .expect("UpgradeResourceState")
            .into_inner()
    };
    let packed = value::to_msgpack(&Value::object([("name", Value::from("a"))]), &thing_type());
    let resp = send(Some(pb::RawState {
        json: packed,
        flatmap: Default::default(),
    }))
    .await;
    assert_eq!(
        resp.diagnostics[0].summary,
        "Stored state is not valid JSON"
    );
    assert!(
        resp.diagnostics[0].detail.contains("holds msgpack"),
        "{}",
        show(&resp.diagnostics)
    );
    assert!(resp.upgraded_state.is_none());
    for raw in [None, Some(pb::RawState::default())] {
        let resp = send(raw).await;
        assert_eq!(resp.diagnostics[0].summary, "Missing stored state");
        assert!(resp.upgraded_state.is_none());
    }
    // Raw state may still hold attributes a later schema dropped: they are ignored, as
    // terraform-plugin-framework ignores them, so old state keeps loading.
    let resp = send(Some(pb::RawState {
        json: br#"{"name": "a", "dropped_long_ago": 1}"#.to_vec(),
        flatmap: Default::default(),
    }))
    .await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    assert_eq!(
        decode(&resp.upgraded_state, &thing_type())
            .get("name")
            .as_str(),
        Some("a")
    );
}

/// Arbitrary bytes through gRPC: the call always succeeds, and exactly what does not decode
/// locally is refused with an error diagnostic.
#[test]
fn arbitrary_bytes_over_grpc_are_answered_with_diagnostics() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let p = rt.block_on(serve_test()).0;
    let ty = thing_type();
    let valid = value::to_msgpack(&Value::object([("name", Value::from("x"))]), &ty);
    // Random bytes, and the valid encoding with random bytes spliced in.
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..64),
        (
            any::<proptest::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..4)
        )
            .prop_map(move |(at, junk)| {
                let mut b = valid.clone();
                let i = at.index(b.len());
                b.splice(i..i, junk);
                b
            }),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&bytes, |bytes| {
            let mut client = p.client.clone();
            let decodes = value::from_msgpack(&bytes, &ty).is_ok();
            let diags = rt.block_on(validate(&mut client, THING, msgpack_dv(bytes)));
            let refused = diags
                .iter()
                .any(|d| is_error(d) && d.summary == "Invalid configuration");
            prop_assert_eq!(refused, !decodes, "{}", show(&diags));
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Plan, apply, read

#[tokio::test]
async fn plan_create_fills_defaults_and_leaves_computed_unknown() {
    let mut p = serve_real().await;
    let ty = root_ca_type();
    // `resource "mesh_root_ca" "root" {}`: every attribute nil, as Terraform sends it.
    let config = raw_object(&ty, vec![]);
    let resp = plan(
        &mut p.client,
        ROOT_CA,
        dv_null(),
        dv_raw(config.clone()),
        dv_raw(config),
    )
    .await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    assert!(resp.requires_replace.is_empty());

    let planned = raw(&resp.planned_state);
    let mut keys = raw_keys(&planned);
    keys.sort();
    let Type::Object(attrs) = &ty else { panic!() };
    assert_eq!(keys, attrs.keys().cloned().collect::<Vec<_>>());
    for name in ROOT_CA_COMPUTED {
        assert!(
            matches!(raw_get(&planned, name), rmpv::Value::Ext(0, _)),
            "{name} should be planned unknown: {}",
            raw_get(&planned, name)
        );
    }
    let v = decode(&resp.planned_state, &ty);
    assert_eq!(v.get("key_algorithm").as_str(), Some("RSA"));
    assert_eq!(v.get("rsa_bits").as_i64(), Some(4096));
    assert_eq!(v.get("ecdsa_curve").as_str(), Some("P256"));
    assert_eq!(v.get("common_name").as_str(), Some("Root CA"));
    assert_eq!(v.get("validity_period_hours").as_i64(), Some(87600));
    assert_eq!(v.get("ready_for_renewal").as_bool(), Some(false));
}

#[tokio::test]
async fn root_ca_lifecycle_apply_read_and_replan() {
    let mut p = serve_real().await;
    let ty = root_ca_type();
    let config = root_ca_config(&[
        ("common_name", Value::from("Mesh Root")),
        ("key_algorithm", Value::from("ECDSA")),
    ]);

    // Create.
    let planned = plan(
        &mut p.client,
        ROOT_CA,
        dv_null(),
        dv(&config, &ty),
        dv(&config, &ty),
    )
    .await;
    assert!(
        planned.diagnostics.is_empty(),
        "{}",
        show(&planned.diagnostics)
    );
    let planned_value = decode(&planned.planned_state, &ty);
    let applied = apply(
        &mut p.client,
        ROOT_CA,
        dv_null(),
        planned.planned_state.clone(),
        dv(&config, &ty),
        planned.planned_private.clone(),
    )
    .await;
    assert!(
        applied.diagnostics.is_empty(),
        "{}",
        show(&applied.diagnostics)
    );
    let state = decode(&applied.new_state, &ty);
    assert!(state.is_wholly_known(), "{state:?}");
    // Every value known at plan time is kept (Terraform checks this too).
    for (name, v) in planned_value.as_map().unwrap() {
        if !v.is_unknown() {
            assert_eq!(state.get(name), v, "{name} changed during apply");
        }
    }
    let cert = pki::inspect_cert(state.get("cert_pem").as_str().unwrap()).unwrap();
    assert!(cert.is_ca);
    assert!(cert.self_signed);
    assert_eq!(cert.key_algorithm, "ECDSA P-256");
    assert!(cert.subject.contains("CN=Mesh Root"), "{}", cert.subject);
    assert_eq!(
        state.get("fingerprint_sha256").as_str(),
        Some(cert.fingerprint_sha256.as_str())
    );
    assert_eq!(state.get("id"), state.get("fingerprint_sha256"));
    assert!(state
        .get("private_key_pem")
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    assert_eq!(state.get("ready_for_renewal").as_bool(), Some(false));

    // Refresh returns the same state.
    let refreshed = read(
        &mut p.client,
        ROOT_CA,
        applied.new_state.clone(),
        applied.private.clone(),
    )
    .await;
    assert!(refreshed.diagnostics.is_empty());
    assert_eq!(decode(&refreshed.new_state, &ty), state);
    assert_eq!(refreshed.private, applied.private);

    // No change: the plan is the prior state, nothing to replace.
    let again = plan(
        &mut p.client,
        ROOT_CA,
        dv(&state, &ty),
        dv(&state, &ty),
        dv(&config, &ty),
    )
    .await;
    assert!(again.diagnostics.is_empty());
    assert_eq!(decode(&again.planned_state, &ty), state);
    assert!(again.requires_replace.is_empty());

    // Changing any input (a different algorithm, say) replaces the CA, and only names it.
    let changes = [
        ("key_algorithm", Value::from("RSA")),
        ("common_name", Value::from("Other Root")),
        ("organization", Value::from("Other")),
        ("rsa_bits", Value::from(2048)),
        ("ecdsa_curve", Value::from("P384")),
        ("validity_period_hours", Value::from(1000)),
        ("early_renewal_hours", Value::from(10)),
    ];
    assert_eq!(changes.len(), ROOT_CA_INPUTS.len());
    for (name, value) in changes {
        let (mut changed_config, mut proposed) = (config.clone(), state.clone());
        changed_config.set(name, value.clone());
        proposed.set(name, value);
        let replace = plan(
            &mut p.client,
            ROOT_CA,
            dv(&state, &ty),
            dv(&proposed, &ty),
            dv(&changed_config, &ty),
        )
        .await;
        assert!(
            replace.diagnostics.is_empty(),
            "{}",
            show(&replace.diagnostics)
        );
        assert_eq!(
            replace.requires_replace,
            [attr_path(&[name])],
            "changing {name}"
        );
    }

    // A refresh that found the certificate due for renewal plans its replacement.
    let mut due = state.clone();
    due.set("ready_for_renewal", Value::Bool(true));
    let renew = plan(
        &mut p.client,
        ROOT_CA,
        dv(&due, &ty),
        dv(&due, &ty),
        dv(&config, &ty),
    )
    .await;
    assert_eq!(renew.requires_replace, [attr_path(&["ready_for_renewal"])]);
    assert_eq!(
        decode(&renew.planned_state, &ty)
            .get("ready_for_renewal")
            .as_bool(),
        Some(false)
    );
}

// ---------------------------------------------------------------------------------------------
// UpgradeResourceState, ImportResourceState

fn stored_root_ca() -> Value {
    Value::object([
        ("common_name", Value::from("Root CA")),
        ("organization", Value::from("Istio")),
        ("key_algorithm", Value::from("ECDSA")),
        ("rsa_bits", Value::from(4096)),
        ("ecdsa_curve", Value::from("P256")),
        ("validity_period_hours", Value::from(87600)),
        ("early_renewal_hours", Value::from(0)),
        ("id", Value::from("ab12")),
        (
            "cert_pem",
            Value::from("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
        ),
        (
            "private_key_pem",
            Value::from("-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"),
        ),
        ("not_before", Value::from("2026-01-01T00:00:00Z")),
        ("not_after", Value::from("2036-01-01T00:00:00Z")),
        ("fingerprint_sha256", Value::from("ab12")),
        ("ready_for_renewal", Value::Bool(false)),
    ])
}

async fn upgrade(
    client: &mut ProviderClient,
    version: i64,
    json: &serde_json::Value,
) -> pb::upgrade_resource_state::Response {
    upgrade_of(client, ROOT_CA, version, json).await
}

async fn upgrade_of(
    client: &mut ProviderClient,
    type_name: &str,
    version: i64,
    json: &serde_json::Value,
) -> pb::upgrade_resource_state::Response {
    client
        .upgrade_resource_state(pb::upgrade_resource_state::Request {
            type_name: type_name.into(),
            version,
            raw_state: Some(pb::RawState {
                json: serde_json::to_vec(json).unwrap(),
                flatmap: Default::default(),
            }),
        })
        .await
        .expect("UpgradeResourceState")
        .into_inner()
}

#[tokio::test]
async fn upgrade_state_turns_raw_json_into_msgpack() {
    let mut p = serve_real().await;
    let ty = root_ca_type();
    let stored = stored_root_ca();
    let mut json = to_json(&stored);
    json["attribute_from_an_older_release"] = serde_json::json!("dropped");

    // Terraform 1.0.3 calls this on every refresh, with the current version.
    let resp = upgrade(&mut p.client, 0, &json).await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    let upgraded = raw(&resp.upgraded_state);
    let mut keys = raw_keys(&upgraded);
    keys.sort();
    let Type::Object(attrs) = &ty else { panic!() };
    assert_eq!(keys, attrs.keys().cloned().collect::<Vec<_>>());
    assert_eq!(decode(&resp.upgraded_state, &ty), stored);

    // A state written by a newer provider cannot be read.
    let resp = upgrade(&mut p.client, 1, &json).await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert!(resp.upgraded_state.is_none());
}

/// A test resource at schema version 2 with the step-wise upgrades: v0 had `name`, v1 renamed
/// it `title`, v2 added `tags`.
struct Versioned;

const VERSIONED: &str = "test_versioned";

fn rename_name_to_title(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
    let obj = v.as_object_mut().ok_or("not an object")?;
    let name = obj.remove("name").ok_or("no `name`")?;
    obj.insert("title".into(), name);
    Ok(v)
}

fn add_tags(mut v: serde_json::Value) -> Result<serde_json::Value, String> {
    v["tags"] = serde_json::json!(["migrated"]);
    Ok(v)
}

#[tonic::async_trait]
impl Resource for Versioned {
    fn type_name(&self) -> &'static str {
        VERSIONED
    }
    fn schema(&self) -> Schema {
        Schema::new(
            2,
            Block::new("A resource for state upgrade tests.")
                .attr(Attribute::string("id", "Identifier.").computed())
                .attr(Attribute::string("title", "Title.").optional())
                .attr(Attribute::string_list("tags", "Tags.").optional()),
        )
    }
    fn upgrade_steps(&self) -> &[UpgradeStep] {
        &[rename_name_to_title, add_tags]
    }
    async fn create(&self, _ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        Ok(Applied::new(change.planned.clone()))
    }
    async fn delete(&self, _ctx: &Ctx, _prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        Ok(())
    }
    async fn read(
        &self,
        _ctx: &Ctx,
        state: &Value,
        _private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        Ok(Some(Applied::new(state.clone())))
    }
}

#[tokio::test]
async fn upgrade_state_applies_the_steps_from_the_stored_version() {
    let mut provider = terraform_provider_mesh::provider();
    provider.resources.push(Arc::new(Versioned));
    let mut p = serve(provider).await;
    let ty = Versioned.schema().value_type();
    let v0 = serde_json::json!({"id": "a", "name": "first"});

    // Version 0 → 1 → 2, then decoded against the current schema.
    let resp = upgrade_of(&mut p.client, VERSIONED, 0, &v0).await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    let state = decode(&resp.upgraded_state, &ty);
    assert_eq!(state.get("id").as_str(), Some("a"));
    assert_eq!(state.get("title").as_str(), Some("first"));
    assert_eq!(
        state.get("tags").as_list().map(|l| l.len()),
        Some(1),
        "{state:?}"
    );

    // Version 1 runs only the last step; version 2 none (the tags stay as stored).
    let v1 = serde_json::json!({"id": "a", "title": "first"});
    let state = decode(
        &upgrade_of(&mut p.client, VERSIONED, 1, &v1)
            .await
            .upgraded_state,
        &ty,
    );
    assert_eq!(state.get("title").as_str(), Some("first"));
    let v2 = serde_json::json!({"id": "a", "title": "t", "tags": []});
    let state = decode(
        &upgrade_of(&mut p.client, VERSIONED, 2, &v2)
            .await
            .upgraded_state,
        &ty,
    );
    assert_eq!(state.get("tags").as_list().map(|l| l.len()), Some(0));

    // Newer than ours, or a step that fails: an error, no state.
    for (version, json, says) in [
        (3, &v2, "newer than version 2"),
        (0, &v1, "from schema version 0 to 1: no `name`"),
    ] {
        let resp = upgrade_of(&mut p.client, VERSIONED, version, json).await;
        assert!(resp.upgraded_state.is_none(), "version {version}");
        assert!(
            show(&resp.diagnostics).contains(says),
            "{}",
            show(&resp.diagnostics)
        );
    }
}

#[tokio::test]
async fn import_is_refused_for_root_ca_and_passthrough_for_others() {
    let mut p = serve_test().await.0;
    let resp = import(&mut p.client, ROOT_CA, "anything").await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert!(resp.imported_resources.is_empty());

    let ty = thing_type();
    let resp = import(&mut p.client, THING, "abc").await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    let [imported] = resp.imported_resources.as_slice() else {
        panic!("one imported resource expected")
    };
    assert_eq!(imported.type_name, THING);
    let state = decode(&imported.state, &ty);
    assert_eq!(state.get("id").as_str(), Some("abc"));
    assert!(state.get("name").is_null());

    // Terraform reads the imported object next; Read fills it in.
    let refreshed = read(
        &mut p.client,
        THING,
        imported.state.clone(),
        imported.private.clone(),
    )
    .await;
    let state = decode(&refreshed.new_state, &ty);
    assert_eq!(state.get("id").as_str(), Some("abc"));
    assert_eq!(state.get("name").as_str(), Some("read-abc"));
}

// ---------------------------------------------------------------------------------------------
// Delete, StopProvider, large messages, Shutdown

#[tokio::test]
async fn failed_delete_keeps_the_resource_and_successful_delete_returns_null() {
    let mut p = serve_test().await.0;
    let ty = thing_type();
    let state = |fail: bool| {
        Value::object([
            ("id", Value::from("thing-a")),
            ("name", Value::from("a")),
            ("fail_delete", Value::Bool(fail)),
            // Terraform's state never holds a null block: an absent one is an empty list.
            ("timeouts", Value::List(vec![])),
        ])
    };

    let prior = dv(&state(true), &ty);
    let resp = apply(
        &mut p.client,
        THING,
        prior.clone(),
        dv_null(),
        dv_null(),
        b"private".to_vec(),
    )
    .await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert_eq!(resp.diagnostics[0].summary, "Cannot delete thing");
    // The prior state comes back as it was sent: the resource stays in state.
    assert_eq!(resp.new_state, prior);
    assert_eq!(resp.private, b"private");

    let resp = apply(
        &mut p.client,
        THING,
        dv(&state(false), &ty),
        dv_null(),
        dv_null(),
        vec![],
    )
    .await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    assert_eq!(resp.new_state.unwrap().msgpack, [0xc0]);
}

/// Starts a create that waits for StopProvider, calls StopProvider, and returns the apply's
/// response (bounded: a create that ignores the stop fails the test).
async fn stop_during_apply(
    p: &mut InProcess,
    waiting: &Notify,
) -> pb::apply_resource_change::Response {
    let ty = thing_type();
    let config = Value::object([("name", Value::from(WAIT_FOR_STOP))]);
    let mut planned = config.clone();
    planned.set("id", Value::Unknown);

    let mut client = p.client.clone();
    let (cfg, pl) = (dv(&config, &ty), dv(&planned, &ty));
    let in_flight =
        tokio::spawn(async move { apply(&mut client, THING, dv_null(), pl, cfg, vec![]).await });
    within(TIMEOUT, "the create to start", waiting.notified()).await;

    let stopped = p
        .client
        .stop_provider(pb::stop_provider::Request {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.error, "");
    within(Duration::from_secs(5), "the stopped apply", in_flight)
        .await
        .unwrap()
}

#[tokio::test]
async fn stop_provider_cancels_an_apply_in_flight() {
    let (mut p, waiting) = serve_test().await;
    let resp = stop_during_apply(&mut p, &waiting).await;
    assert_eq!(error_paths(&resp.diagnostics), ["(root)"]);
    assert!(
        resp.diagnostics[0].summary.contains("stop"),
        "{}",
        show(&resp.diagnostics)
    );
    // Nothing was created, so nothing enters the state.
    assert_eq!(resp.new_state.unwrap().msgpack, [0xc0]);

    // StopProvider is not a shutdown: the server still answers.
    p.client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .expect("serving after StopProvider");
    assert!(!p.server.is_finished());
}

/// A provider reattached with `--debug` outlives a Ctrl-C'd apply, so StopProvider must only
/// cancel the operations in flight (terraform-plugin-go re-arms its stop channel), not every
/// later one.
#[tokio::test]
async fn operations_after_stop_provider_are_not_cancelled() {
    let (mut p, waiting) = serve_test().await;
    stop_during_apply(&mut p, &waiting).await;

    // A later create (Thing's create gives up at once when the stop token is cancelled).
    let ty = thing_type();
    let config = Value::object([("name", Value::from("after"))]);
    let mut planned = config.clone();
    planned.set("id", Value::Unknown);
    let applied = apply(
        &mut p.client,
        THING,
        dv_null(),
        dv(&planned, &ty),
        dv(&config, &ty),
        vec![],
    )
    .await;
    assert!(
        applied.diagnostics.is_empty(),
        "{}",
        show(&applied.diagnostics)
    );
    assert_eq!(
        decode(&applied.new_state, &ty).get("id").as_str(),
        Some("thing-after")
    );
}

#[tokio::test]
async fn requests_larger_than_four_mebibytes_round_trip() {
    let mut p = serve_test().await.0;
    let ty = thing_type();
    let payload = "x".repeat(5 << 20);
    let config = Value::object([
        ("name", Value::from("big")),
        ("payload", Value::from(payload.as_str())),
    ]);
    let resp = plan(
        &mut p.client,
        THING,
        dv_null(),
        dv(&config, &ty),
        dv(&config, &ty),
    )
    .await;
    assert!(resp.diagnostics.is_empty(), "{}", show(&resp.diagnostics));
    let planned = decode(&resp.planned_state, &ty);
    assert_eq!(planned.get("payload").as_str().map(str::len), Some(5 << 20));
    assert_eq!(planned.get("payload").as_str(), Some(payload.as_str()));
    assert!(planned.get("id").is_unknown());
}

#[tokio::test]
async fn grpc_controller_shutdown_stops_the_server() {
    let mut p = serve_real().await;
    p.client
        .get_metadata(pb::get_metadata::Request {})
        .await
        .unwrap();
    p.controller
        .shutdown(terraform_provider_mesh::plugin::proto::go_plugin::Empty {})
        .await
        .expect("Shutdown");
    // The client keeps its channel open, as go-plugin's does until Kill returns.
    let served = within(TIMEOUT, "serve_listener after Shutdown", &mut p.server).await;
    served
        .expect("server task")
        .expect("serve_listener ends cleanly");
}
