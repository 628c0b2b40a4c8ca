//! Shared helpers for the protocol tests: a tfplugin6 client on a Unix socket (as Terraform's
//! go-plugin client connects), msgpack DynamicValues both typed and hand-crafted, diagnostics
//! and bounded waits.
#![allow(dead_code)] // each test file uses its own subset

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use terraform_provider_mesh::plugin::diag::AttributePath;
use terraform_provider_mesh::plugin::proto::go_plugin as gp;
pub use terraform_provider_mesh::plugin::proto::tfplugin6 as pb;
use terraform_provider_mesh::plugin::value::{self, Type};
use terraform_provider_mesh::plugin::{Provider, Resource, Value};
use terraform_provider_mesh::resources::root_ca::RootCa;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, Endpoint};

/// Generous bound for anything that should take milliseconds; a hang fails the test instead of
/// blocking the suite.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Newer Terraform's client limits (256 MiB), so large-message tests measure the server only.
pub const MAX_MESSAGE: usize = 256 << 20;

pub type ProviderClient = pb::provider_client::ProviderClient<Channel>;
pub type ControllerClient = gp::grpc_controller_client::GrpcControllerClient<Channel>;

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary directories

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tfmesh-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A plaintext gRPC channel over a Unix socket.
pub async fn try_unix_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

pub async fn unix_channel(path: &Path) -> Channel {
    try_unix_channel(path)
        .await
        .expect("connecting to the provider socket")
}

pub fn provider_client(channel: Channel) -> ProviderClient {
    ProviderClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A provider served in-process by `serve_listener`, with connected clients. Dropping it stops
/// the server.
pub struct InProcess {
    pub client: ProviderClient,
    pub controller: ControllerClient,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<anyhow::Result<()>>,
    pub socket: PathBuf,
    _stop_on_drop: DropGuard,
    _dir: TempDir,
}

pub async fn serve(provider: Provider) -> InProcess {
    let dir = TempDir::new("inproc");
    let socket = dir.path().join("plugin.sock");
    let listener = UnixListener::bind(&socket).expect("binding the test socket");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(terraform_provider_mesh::plugin::serve::serve_listener(
        provider,
        listener,
        None,
        shutdown.clone(),
    ));
    let channel = unix_channel(&socket).await;
    InProcess {
        client: provider_client(channel.clone()),
        controller: ControllerClient::new(channel),
        _stop_on_drop: shutdown.clone().drop_guard(),
        shutdown,
        server,
        socket,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------------------
// DynamicValues

/// msgpack bytes of a raw msgpack value.
pub fn mp(v: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).expect("encoding into a Vec");
    out
}

/// A hand-crafted DynamicValue, exactly the msgpack given.
pub fn dv_raw(v: rmpv::Value) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: mp(&v),
        json: vec![],
    })
}

/// A DynamicValue encoded with the provider's own encoder for `ty`.
pub fn dv(v: &Value, ty: &Type) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: value::to_msgpack(v, ty),
        json: vec![],
    })
}

/// A null object (msgpack nil, `c0`): a prior state on create, a planned state on delete.
pub fn dv_null() -> Option<pb::DynamicValue> {
    dv_raw(rmpv::Value::Nil)
}

/// Decodes a DynamicValue from the provider, which must be msgpack.
pub fn decode(dv: &Option<pb::DynamicValue>, ty: &Type) -> Value {
    let dv = dv.as_ref().expect("a DynamicValue");
    assert!(dv.json.is_empty(), "providers must answer in msgpack");
    value::from_msgpack(&dv.msgpack, ty).expect("decodable msgpack")
}

/// The raw msgpack inside a DynamicValue.
pub fn raw(dv: &Option<pb::DynamicValue>) -> rmpv::Value {
    let bytes = &dv.as_ref().expect("a DynamicValue").msgpack;
    rmpv::decode::read_value(&mut bytes.as_slice()).expect("valid msgpack")
}

/// The entry `key` of a raw msgpack map.
pub fn raw_get<'a>(map: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
    map.as_map()
        .expect("a msgpack map")
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no key {key:?} in {map}"))
}

/// The keys of a raw msgpack map, in wire order.
pub fn raw_keys(map: &rmpv::Value) -> Vec<String> {
    map.as_map()
        .expect("a msgpack map")
        .iter()
        .map(|(k, _)| k.as_str().expect("string key").to_string())
        .collect()
}

/// cty's plain unknown: ext 0 with a zero byte (`d4 00 00`).
pub fn unknown() -> rmpv::Value {
    rmpv::Value::Ext(0, vec![0])
}

/// cty's refined unknown (ext 12): "definitely not null" (`{1: false}` as the payload map).
pub fn refined_unknown() -> rmpv::Value {
    rmpv::Value::Ext(12, mp(&rmpv::Value::Map(vec![(1.into(), false.into())])))
}

/// A raw msgpack object with every attribute of `ty`, nil unless given, as Terraform sends one.
pub fn raw_object(ty: &Type, given: Vec<(&str, rmpv::Value)>) -> rmpv::Value {
    let Type::Object(attrs) = ty else {
        panic!("not an object type")
    };
    for (k, _) in &given {
        assert!(attrs.contains_key(*k), "{k} is not in the schema");
    }
    rmpv::Value::Map(
        attrs
            .keys()
            .map(|name| {
                let v = given
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(rmpv::Value::Nil);
                (rmpv::Value::from(name.as_str()), v)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// Diagnostics

pub fn attr_path(names: &[&str]) -> pb::AttributePath {
    AttributePath::attrs(names).to_proto()
}

pub fn is_error(d: &pb::Diagnostic) -> bool {
    d.severity == pb::diagnostic::Severity::Error as i32
}

/// Paths of the error diagnostics, rendered like HCL references (`(root)` when pathless).
pub fn error_paths(diags: &[pb::Diagnostic]) -> Vec<String> {
    diags
        .iter()
        .filter(|d| is_error(d))
        .map(|d| match &d.attribute {
            Some(p) => AttributePath::from_proto(p).to_string(),
            None => "(root)".into(),
        })
        .collect()
}

/// Renders diagnostics for assertion messages.
pub fn show(diags: &[pb::Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("[{}] {}: {}", d.severity, d.summary, d.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// RPC shorthands

pub async fn validate(
    client: &mut ProviderClient,
    type_name: &str,
    config: Option<pb::DynamicValue>,
) -> Vec<pb::Diagnostic> {
    client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: type_name.into(),
            config,
            client_capabilities: None,
        })
        .await
        .expect("ValidateResourceConfig")
        .into_inner()
        .diagnostics
}

pub async fn plan(
    client: &mut ProviderClient,
    type_name: &str,
    prior: Option<pb::DynamicValue>,
    proposed: Option<pb::DynamicValue>,
    config: Option<pb::DynamicValue>,
) -> pb::plan_resource_change::Response {
    client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: type_name.into(),
            prior_state: prior,
            proposed_new_state: proposed,
            config,
            prior_private: vec![],
            provider_meta: None,
            client_capabilities: None,
        })
        .await
        .expect("PlanResourceChange")
        .into_inner()
}

pub async fn apply(
    client: &mut ProviderClient,
    type_name: &str,
    prior: Option<pb::DynamicValue>,
    planned: Option<pb::DynamicValue>,
    config: Option<pb::DynamicValue>,
    planned_private: Vec<u8>,
) -> pb::apply_resource_change::Response {
    client
        .apply_resource_change(pb::apply_resource_change::Request {
            type_name: type_name.into(),
            prior_state: prior,
            planned_state: planned,
            config,
            planned_private,
            provider_meta: None,
        })
        .await
        .expect("ApplyResourceChange")
        .into_inner()
}

pub async fn read(
    client: &mut ProviderClient,
    type_name: &str,
    state: Option<pb::DynamicValue>,
    private: Vec<u8>,
) -> pb::read_resource::Response {
    client
        .read_resource(pb::read_resource::Request {
            type_name: type_name.into(),
            current_state: state,
            private,
            provider_meta: None,
            client_capabilities: None,
        })
        .await
        .expect("ReadResource")
        .into_inner()
}

pub async fn import(
    client: &mut ProviderClient,
    type_name: &str,
    id: &str,
) -> pb::import_resource_state::Response {
    client
        .import_resource_state(pb::import_resource_state::Request {
            type_name: type_name.into(),
            id: id.into(),
            client_capabilities: None,
        })
        .await
        .expect("ImportResourceState")
        .into_inner()
}

pub async fn validate_data(
    client: &mut ProviderClient,
    type_name: &str,
    config: Option<pb::DynamicValue>,
) -> Vec<pb::Diagnostic> {
    client
        .validate_data_resource_config(pb::validate_data_resource_config::Request {
            type_name: type_name.into(),
            config,
        })
        .await
        .expect("ValidateDataResourceConfig")
        .into_inner()
        .diagnostics
}

pub async fn read_data(
    client: &mut ProviderClient,
    type_name: &str,
    config: Option<pb::DynamicValue>,
) -> pb::read_data_source::Response {
    client
        .read_data_source(pb::read_data_source::Request {
            type_name: type_name.into(),
            config,
            provider_meta: None,
            client_capabilities: None,
        })
        .await
        .expect("ReadDataSource")
        .into_inner()
}

/// The value type of mesh_root_ca.
pub fn root_ca_type() -> Type {
    RootCa.schema().value_type()
}

/// A mesh_root_ca configuration: the given attributes, everything else null.
pub fn root_ca_config(pairs: &[(&str, Value)]) -> Value {
    Value::object(pairs.iter().cloned())
}
