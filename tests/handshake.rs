//! The real binary, launched the way Terraform's go-plugin client launches it: magic cookie,
//! protocol negotiation, the stdout handshake line, AutoMTLS with a P-521 client certificate,
//! SIGINT handling, GRPCController.Shutdown, hclog logs on stderr and `--debug` reattach.

mod common;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use terraform_provider_mesh::plugin::proto::go_plugin as gp;
use terraform_provider_mesh::plugin::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-mesh");
/// Terraform's handshake cookie (the same in OpenTofu).
const COOKIE: (&str, &str) = (
    "TF_PLUGIN_MAGIC_COOKIE",
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
);
const VERSIONS: (&str, &str) = ("PLUGIN_PROTOCOL_VERSIONS", "5,6");
/// How long a process may take to exit once told to.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Launching the plugin

/// The binary with a clean plugin environment and its socket directory under `dir`.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        COOKIE.0,
        VERSIONS.0,
        "PLUGIN_CLIENT_CERT",
        "TF_LOG",
        "TF_LOG_PROVIDER",
        "TF_REATTACH_PROVIDERS",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("PLUGIN_UNIX_SOCKET_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to completion (for launches that must fail fast).
async fn run_to_exit(env: &[(&str, &str)]) -> std::process::Output {
    let dir = TempDir::new("exit");
    let output = command(dir.path(), &[], env).output();
    within(EXIT_WITHIN, "the provider to exit", output)
        .await
        .expect("running the provider")
}

/// A running provider process, its stdout lines and its stderr lines as they arrive.
struct Plugin {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: watch::Receiver<Vec<String>>,
    dir: TempDir,
}

impl Plugin {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("plugin");
        let mut child = command(dir.path(), args, env)
            .spawn()
            .expect("starting the provider");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, stderr) = watch::channel(Vec::new());
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr_lines.next_line().await {
                tx.send_modify(|lines| lines.push(line));
            }
        });
        Self {
            child,
            stdout,
            stderr,
            dir,
        }
    }

    /// Starts the provider as Terraform does, with AutoMTLS, and reads the handshake.
    async fn launch(client: &Identity, extra_env: &[(&str, &str)]) -> (Self, Handshake) {
        let mut env = vec![
            COOKIE,
            VERSIONS,
            ("PLUGIN_CLIENT_CERT", client.pem.as_str()),
        ];
        env.extend_from_slice(extra_env);
        let mut plugin = Self::start(&[], &env);
        let line = plugin.next_line().await.expect("a handshake line");
        let handshake = Handshake::parse(&line);
        assert!(
            handshake.socket.starts_with(plugin.dir.path()),
            "socket {} is not under PLUGIN_UNIX_SOCKET_DIR",
            handshake.socket.display()
        );
        (plugin, handshake)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the provider is running")
    }

    async fn next_line(&mut self) -> Option<String> {
        within(TIMEOUT, "a line on stdout", self.stdout.next_line())
            .await
            .expect("reading stdout")
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0, "kill -INT failed");
    }

    /// Waits until a stderr line contains `needle`.
    async fn wait_for_stderr(&mut self, needle: &str) {
        let found = self
            .stderr
            .wait_for(|lines| lines.iter().any(|l| l.contains(needle)));
        within(TIMEOUT, &format!("{needle:?} on stderr"), found)
            .await
            .expect("stderr open");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        within(EXIT_WITHIN, "the provider to exit", self.child.wait())
            .await
            .expect("waiting for the provider")
    }

    /// After exit: whatever else the process printed on stdout, and all of stderr.
    async fn outputs(mut self) -> (Vec<String>, Vec<String>) {
        let mut rest = Vec::new();
        while let Some(line) = self.next_line().await {
            rest.push(line);
        }
        let stderr = within(TIMEOUT, "stderr to close", async {
            let _ = self.stderr.wait_for(|_| false).await; // returns once the sender is gone
            self.stderr.borrow().clone()
        })
        .await;
        (rest, stderr)
    }
}

/// The parsed go-plugin handshake line.
struct Handshake {
    socket: PathBuf,
    server_cert: Vec<u8>,
}

impl Handshake {
    /// `CORE|APP|NETWORK|ADDR|PROTOCOL|CERT`, checked field by field.
    fn parse(line: &str) -> Self {
        let fields: Vec<&str> = line.split('|').collect();
        let [core, app, network, addr, protocol, cert] = fields[..] else {
            panic!("handshake line must have 6 fields: {line:?}");
        };
        assert_eq!((core, app, network, protocol), ("1", "6", "unix", "grpc"));
        assert!(!cert.contains('='), "the certificate must be unpadded");
        let server_cert = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(cert)
            .expect("base64 DER");
        let socket = PathBuf::from(addr);
        assert!(socket.is_absolute());
        Self {
            socket,
            server_cert,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AutoMTLS, client side

/// A client certificate as go-plugin generates one: self-signed ECDSA P-521, CA, SAN localhost.
struct Identity {
    pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn client_identity() -> Identity {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "HashiCorp");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyAgreement,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).unwrap();
    Identity {
        pem: cert.pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Trusts exactly the certificate from the handshake, for "localhost", as go-plugin's client
/// does by making it the only root. (webpki would refuse it as a CA used as an end entity;
/// Go's verifier accepts a root as its own chain.)
#[derive(Debug)]
struct PinnedServerCert {
    der: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedServerCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let general = |m: &str| Err(rustls::Error::General(m.into()));
        if end_entity.as_ref() != self.der.as_slice() {
            return general("not the certificate from the handshake");
        }
        if server_name.to_str() != "localhost" {
            return general("unexpected server name");
        }
        let cert = terraform_provider_mesh::pki::Certificate::from_der(self.der.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if !cert.info().dns_names.iter().any(|n| n == "localhost") {
            return general("certificate not valid for localhost");
        }
        cert.check_valid_at(time::OffsetDateTime::now_utc())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls_config(server_cert: &[u8], client: Option<&Identity>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerCert {
            der: server_cert.to_vec(),
            provider,
        }));
    let mut config = match client {
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(id.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_der.clone())),
            )
            .expect("a usable P-521 client key"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// A gRPC channel over TLS on the Unix socket, connecting as "localhost".
async fn tls_channel(
    socket: &Path,
    config: rustls::ClientConfig,
) -> Result<Channel, tonic::transport::Error> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .expect("static endpoint")
        .connect_with_connector(tower::service_fn(move |_| {
            let (connector, socket) = (connector.clone(), socket.clone());
            async move {
                let stream = UnixStream::connect(socket).await?;
                let name = ServerName::try_from("localhost").expect("a DNS name");
                let tls = connector.connect(name, stream).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

/// Connects with mutual TLS as Terraform does.
async fn terraform_channel(handshake: &Handshake, client: &Identity) -> Channel {
    let config = tls_config(&handshake.server_cert, Some(client));
    within(
        TIMEOUT,
        "the mTLS connection",
        tls_channel(&handshake.socket, config),
    )
    .await
    .expect("mTLS connection with the pinned client certificate")
}

async fn schema_names(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let resp = provider_client(channel)
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await?
        .into_inner();
    let mut names: Vec<String> = resp.resource_schemas.into_keys().collect();
    names.sort();
    Ok(names)
}

/// Every resource type the provider registers, sorted: what the binary must serve.
fn registered() -> Vec<String> {
    let mut names: Vec<String> = terraform_provider_mesh::provider()
        .resources
        .iter()
        .map(|r| r.type_name().to_string())
        .collect();
    names.sort();
    assert!(names.contains(&"mesh_root_ca".to_string()));
    names
}

/// Shuts the provider down as go-plugin's Kill does: Shutdown, then close the connection.
async fn shut_down(channel: Channel) {
    gp::grpc_controller_client::GrpcControllerClient::new(channel)
        .shutdown(gp::Empty {})
        .await
        .expect("GRPCController.Shutdown");
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn refuses_to_run_without_the_magic_cookie() {
    let out = run_to_exit(&[VERSIONS]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("plugin"), "stderr: {stderr}");
    assert!(stderr.contains("Terraform"), "stderr: {stderr}");
}

#[tokio::test]
async fn refuses_clients_without_protocol_6() {
    let out = run_to_exit(&[COOKIE, ("PLUGIN_PROTOCOL_VERSIONS", "5")]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("protocol 6"), "stderr: {stderr}");
    assert!(stderr.contains("\"5\""), "stderr: {stderr}");
}

#[tokio::test]
async fn automtls_serves_only_the_pinned_client_certificate() {
    let client = client_identity();
    let (mut plugin, handshake) = Plugin::launch(&client, &[]).await;
    let server = terraform_provider_mesh::pki::Certificate::from_der(handshake.server_cert.clone())
        .expect("the handshake carries a DER certificate");
    assert!(server.info().dns_names.contains(&"localhost".to_string()));

    let channel = terraform_channel(&handshake, &client).await;
    let names = schema_names(channel.clone())
        .await
        .expect("GetProviderSchema");
    assert_eq!(names, registered());

    // Another client certificate, or none, gets nothing.
    let strangers = [
        tls_config(&handshake.server_cert, Some(&client_identity())),
        tls_config(&handshake.server_cert, None),
    ];
    for config in strangers {
        let attempt = async {
            match tls_channel(&handshake.socket, config).await {
                Ok(ch) => schema_names(ch).await.map_err(|s| s.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let result = within(TIMEOUT, "a refused connection", attempt).await;
        assert!(result.is_err(), "a stranger was served: {result:?}");
    }
    // Plaintext is refused too.
    let plain = within(TIMEOUT, "a plaintext attempt", async {
        let channel = try_unix_channel(&handshake.socket)
            .await
            .map_err(|e| e.to_string())?;
        schema_names(channel).await.map_err(|s| s.to_string())
    })
    .await;
    assert!(plain.is_err(), "a plaintext client was served");

    // The legitimate client is unaffected.
    assert!(schema_names(channel.clone()).await.is_ok());
    shut_down(channel).await;
    assert!(plugin.wait_exit().await.success());
    let (rest, _) = plugin.outputs().await;
    assert_eq!(rest, Vec::<String>::new(), "stdout after the handshake");
}

#[tokio::test]
async fn sigint_is_ignored_and_shutdown_exits_cleanly() {
    let client = client_identity();
    let (mut plugin, handshake) = Plugin::launch(&client, &[("TF_LOG_PROVIDER", "INFO")]).await;
    let channel = terraform_channel(&handshake, &client).await;
    assert!(schema_names(channel.clone()).await.is_ok());

    // Ctrl-C reaches the whole process group; the provider must outlive it.
    plugin.interrupt();
    plugin.wait_for_stderr("interrupt received").await;
    assert_eq!(schema_names(channel.clone()).await.unwrap(), registered());
    assert!(plugin.child.try_wait().unwrap().is_none(), "died on SIGINT");

    let socket_dir = handshake.socket.parent().unwrap().to_path_buf();
    assert!(socket_dir.is_dir());
    shut_down(channel).await;
    let status = plugin.wait_exit().await;
    assert!(status.success(), "{status:?}");
    assert!(!socket_dir.exists(), "socket directory left behind");
}

/// Terraform may forward a Ctrl-C the moment it has read the handshake line (it launches the
/// provider several times per command), so the handler must be in place before that line.
#[tokio::test]
async fn sigint_right_after_the_handshake_is_ignored() {
    let client = client_identity();
    let (mut plugin, handshake) = Plugin::launch(&client, &[]).await;
    plugin.interrupt();
    let channel = terraform_channel(&handshake, &client).await;
    assert_eq!(schema_names(channel.clone()).await.unwrap(), registered());
    assert!(plugin.child.try_wait().unwrap().is_none(), "died on SIGINT");
    shut_down(channel).await;
    assert!(plugin.wait_exit().await.success());
}

#[tokio::test]
async fn logs_are_hclog_json_without_private_keys() {
    let client = client_identity();
    let (mut plugin, handshake) = Plugin::launch(&client, &[("TF_LOG_PROVIDER", "TRACE")]).await;
    let channel = terraform_channel(&handshake, &client).await;
    let mut provider = provider_client(channel.clone());

    let ty = root_ca_type();
    let config = root_ca_config(&[("key_algorithm", Value::from("ECDSA"))]);
    let planned = plan(
        &mut provider,
        "mesh_root_ca",
        dv_null(),
        dv(&config, &ty),
        dv(&config, &ty),
    )
    .await;
    let applied = apply(
        &mut provider,
        "mesh_root_ca",
        dv_null(),
        planned.planned_state,
        dv(&config, &ty),
        planned.planned_private,
    )
    .await;
    assert!(
        applied.diagnostics.is_empty(),
        "{}",
        show(&applied.diagnostics)
    );
    let state = decode(&applied.new_state, &ty);
    assert!(state
        .get("private_key_pem")
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));

    drop(provider);
    shut_down(channel).await;
    assert!(plugin.wait_exit().await.success());
    let (_, stderr) = plugin.outputs().await;

    assert!(stderr.iter().any(|l| l.contains("generating root CA")));
    let timestamp = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    for line in &stderr {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let field = |k: &str| entry[k].as_str().unwrap_or_else(|| panic!("{k}: {line}"));
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&field("@level")),
            "{line}"
        );
        field("@message");
        assert!(field("@module").starts_with("mesh"), "{line}");
        time::PrimitiveDateTime::parse(field("@timestamp"), timestamp)
            .unwrap_or_else(|e| panic!("@timestamp not in Go's hclog layout ({e}): {line}"));
        assert!(
            !line.contains("PRIVATE KEY"),
            "a key reached the logs: {line}"
        );
    }
}

#[tokio::test]
async fn debug_mode_prints_reattach_config_and_stops_on_sigint() {
    let mut plugin = Plugin::start(&["--debug"], &[]);
    let reattach = loop {
        let line = plugin
            .next_line()
            .await
            .expect("the TF_REATTACH_PROVIDERS line");
        if let Some(rest) = line.split("TF_REATTACH_PROVIDERS='").nth(1) {
            let json = rest.strip_suffix('\'').expect("quoted JSON");
            break serde_json::from_str::<serde_json::Value>(json).expect("reattach JSON");
        }
    };
    let entry = &reattach["registry.terraform.io/tfmesh/mesh"];
    assert_eq!(entry["Protocol"], "grpc");
    assert_eq!(entry["ProtocolVersion"], 6);
    assert_eq!(entry["Pid"], plugin.pid());
    assert_eq!(entry["Addr"]["Network"], "unix");
    let socket = PathBuf::from(entry["Addr"]["String"].as_str().unwrap());
    assert!(socket.starts_with(plugin.dir.path()));

    // Plaintext, as Terraform talks to a reattached provider.
    let names = schema_names(unix_channel(&socket).await).await.unwrap();
    assert_eq!(names, registered());

    plugin.interrupt();
    let status = plugin.wait_exit().await;
    assert!(status.success(), "{status:?}");
    assert!(
        !socket.parent().unwrap().exists(),
        "socket directory left behind"
    );
}
