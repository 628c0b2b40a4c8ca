//! Serving a provider the way go-plugin servers do: magic cookie, protocol negotiation, a Unix
//! socket in a private directory, AutoMTLS with the client certificate pinned, the handshake
//! line on stdout, SIGINT ignored (Terraform stops us itself), and a `--debug` mode for
//! `TF_REATTACH_PROVIDERS`.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use super::proto::go_plugin as gp;
use super::proto::health;
use super::proto::tfplugin6::provider_server::ProviderServer;
use super::server::ProviderService;
use super::Provider;

/// go-plugin's handshake cookie for Terraform providers (a UX guard, not a secret).
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// The provider's release version (from Cargo.toml), as in the release's file names.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the binary was built from (build.rs), "unknown" outside a git checkout.
pub const COMMIT: &str = env!("MESH_BUILD_COMMIT");
/// The plugin protocol served, as the registry manifest writes it (`protocol_versions`).
pub const PROTOCOL_VERSION: &str = "6.0";

/// What `terraform-provider-mesh --version` prints.
pub fn version_text() -> String {
    format!(
        "terraform-provider-mesh v{VERSION}\nplugin protocol {PROTOCOL_VERSION} \
         (Terraform >= 1.0, OpenTofu)\ncommit {COMMIT}\n"
    )
}

/// Terraform's client keeps the Go default receive limit on old versions, but requests (plans
/// of large configurations) can be big: accept up to 256 MiB like terraform-plugin-go.
const MAX_MESSAGE: usize = 256 << 20;

/// Runs the provider until Terraform shuts it down. This is all `main` does.
pub fn run(provider: Provider) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Terraform starts plugins without arguments, so this never meets the handshake path.
    if args.iter().any(|a| a == "--version" || a == "-version") {
        print!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    let debug = args.iter().any(|a| a == "--debug" || a == "-debug");
    if !debug {
        if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
            eprintln!(
                "This binary is a plugin for Terraform and OpenTofu (terraform-provider-mesh).\n\
                 It is not meant to be run directly: install it and use it from a Terraform \
                 configuration.\nTo debug it, run it with --debug and follow the printed \
                 instructions. --version prints the version."
            );
            return ExitCode::from(1);
        }
        let versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default();
        if !versions.split(',').any(|v| v.trim() == "6") {
            eprintln!(
                "terraform-provider-mesh speaks plugin protocol 6, which this client does not \
                 offer (it offered {versions:?}). Use Terraform >= 1.0 or any OpenTofu release."
            );
            return ExitCode::from(1);
        }
    }
    super::log::init();
    exit_with_parent();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("terraform-provider-mesh: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(provider, debug)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("provider failed: {e:#}");
            eprintln!("terraform-provider-mesh: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(provider: Provider, debug: bool) -> anyhow::Result<()> {
    let address = provider.address;
    let dir = SocketDir::create()?;
    let socket = dir.path.join("plugin.sock");
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;

    let tls = match std::env::var("PLUGIN_CLIENT_CERT") {
        Ok(pem) if !debug && !pem.trim().is_empty() => Some(AutoMtls::new(&pem)?),
        _ => None,
    };

    let shutdown = CancellationToken::new();
    let server_cert_der = tls.as_ref().map(|t| t.server_cert_der.clone());
    let server = serve_listener(provider, listener, tls, shutdown.clone());

    let cert = server_cert_der
        .as_ref()
        .map(|der| base64::engine::general_purpose::STANDARD_NO_PAD.encode(der))
        .unwrap_or_default();
    // Handlers first: Terraform may send Ctrl-C as soon as it has read the handshake line,
    // and the default SIGINT action would kill us.
    let signals = Signals::install()?;
    let mut out = std::io::stdout().lock();
    if debug {
        let reattach = serde_json::json!({
            address: {
                "Protocol": "grpc",
                "ProtocolVersion": 6,
                "Pid": std::process::id(),
                "Test": true,
                "Addr": {"Network": "unix", "String": socket.display().to_string()},
            }
        });
        writeln!(
            out,
            "Provider started in debug mode. To attach Terraform, run in your shell:\n\n    \
             export TF_REATTACH_PROVIDERS='{reattach}'\n\nStop the provider with Ctrl-C."
        )?;
    } else {
        // The handshake: the only thing this process ever prints on stdout.
        writeln!(out, "1|6|unix|{}|grpc|{cert}", socket.display())?;
    }
    out.flush()?;
    drop(out);

    tokio::spawn(handle_signals(signals, debug, shutdown.clone()));
    tracing::info!(
        version = VERSION,
        commit = COMMIT,
        socket = %socket.display(),
        tls = server_cert_der.is_some(),
        "provider serving"
    );

    let served = tokio::spawn(server);
    shutdown.cancelled().await;
    // Graceful shutdown ends once Terraform closes its connection, which it does right after
    // Shutdown; the bound only protects against a client that never does.
    match tokio::time::timeout(Duration::from_secs(2), served).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => bail!("gRPC server task failed: {e}"),
        Err(_) => tracing::debug!("client kept its connection open; exiting anyway"),
    }
    drop(dir);
    Ok(())
}

/// Serves the provider's gRPC services on `listener` until `shutdown` is cancelled (by the
/// GRPCController Shutdown call or by the caller). Used by `run` and by in-process tests.
pub async fn serve_listener(
    provider: Provider,
    listener: UnixListener,
    tls: Option<AutoMtls>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let service = ProviderService::new(provider, stop);
    let incoming = accept_loop(listener, tls.map(|t| t.acceptor), shutdown.clone());
    tonic::transport::Server::builder()
        .add_service(
            ProviderServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(gp::grpc_controller_server::GrpcControllerServer::new(
            Controller {
                shutdown: shutdown.clone(),
            },
        ))
        .add_service(gp::grpc_stdio_server::GrpcStdioServer::new(Stdio {
            shutdown: shutdown.clone(),
        }))
        .add_service(health::health_server::HealthServer::new(Health))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
        .context("serving gRPC")
}

/// SIGINT and SIGTERM streams, registered (and so no longer fatal) from creation on.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }
}

async fn handle_signals(signals: Signals, debug: bool, shutdown: CancellationToken) {
    let Signals { mut int, mut term } = signals;
    loop {
        tokio::select! {
            _ = int.recv() => {
                if debug {
                    shutdown.cancel();
                    return;
                }
                // Ctrl-C reaches the whole process group. Terraform answers it with
                // StopProvider and waits for in-flight calls; dying here would lose them.
                tracing::info!("interrupt received; waiting for Terraform to stop the provider");
            }
            _ = term.recv() => {
                shutdown.cancel();
                return;
            }
        }
    }
}

/// If Terraform dies without shutting us down (crash, SIGKILL), there is nobody left to talk
/// to: ask the kernel for a SIGTERM, which ends the process cleanly, instead of lingering.
fn exit_with_parent() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on the calling process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
}

/// A private directory for the socket, removed on drop.
struct SocketDir {
    path: PathBuf,
}

impl SocketDir {
    fn create() -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        for _ in 0..16 {
            let mut suffix = [0u8; 6];
            aws_lc_rs::rand::fill(&mut suffix).map_err(|_| anyhow!("no randomness"))?;
            let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            let path = base.join(format!("tfmesh-{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!("cannot create a socket directory in {}", base.display())
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Connections

/// Accepts connections and completes TLS handshakes off the accept path, so one slow client
/// cannot hold up another.
fn accept_loop(
    listener: UnixListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shutdown.cancelled() => return,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let tx = tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let conn = match tls {
                    None => Conn::Plain(stream),
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => Conn::Tls(Box::new(s)),
                        Err(e) => {
                            tracing::warn!("TLS handshake with the client failed: {e}");
                            return;
                        }
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A client connection, plain (debug mode, `TF_DISABLE_PLUGIN_TLS`) or mutual TLS.
pub enum Conn {
    Plain(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<UnixStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AutoMTLS

/// The TLS side of go-plugin's AutoMTLS: a fresh server certificate for this process, and the
/// client certificate Terraform passed in `PLUGIN_CLIENT_CERT` required and pinned.
pub struct AutoMtls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub server_cert_der: Vec<u8>,
}

impl AutoMtls {
    pub fn new(client_cert_pem: &str) -> anyhow::Result<Self> {
        let client_der = pem_certificate(client_cert_pem)
            .context("PLUGIN_CLIENT_CERT does not hold a PEM certificate")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

        // Terraform pins this certificate as its only root and connects as "localhost".
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "terraform-provider-mesh");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let server_cert_der = cert.der().to_vec();

        let verifier = Arc::new(PinnedClientCert {
            expected: client_der,
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            server_cert_der,
        })
    }
}

fn pem_certificate(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END CERTIFICATE-----"))
        .collect();
    if body.is_empty() {
        bail!("no CERTIFICATE block");
    }
    Ok(base64::engine::general_purpose::STANDARD.decode(body.trim())?)
}

/// Accepts exactly the certificate Terraform generated for this run (ECDSA P-521, self-signed
/// and marked CA, which webpki's chain building would refuse as an end entity), and checks the
/// handshake signature with its key. The aws-lc-rs provider verifies P-521; ring cannot.
#[derive(Debug)]
struct PinnedClientCert {
    expected: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // No hints: Go's client then offers its only certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_slice() {
            Ok(rustls::server::danger::ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "client certificate is not the one in PLUGIN_CLIENT_CERT".into(),
            ))
        }
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

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// go-plugin side services

struct Controller {
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl gp::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _req: Request<gp::Empty>) -> Result<Response<gp::Empty>, Status> {
        tracing::debug!("shutdown requested by Terraform");
        self.shutdown.cancel();
        Ok(Response::new(gp::Empty {}))
    }
}

struct Stdio {
    shutdown: CancellationToken,
}

/// An idle stdio stream that ends when the provider shuts down (our logs go to stderr
/// directly, which go-plugin reads as well).
pub struct UntilShutdown(Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>);

impl tokio_stream::Stream for UntilShutdown {
    type Item = Result<gp::StdioData, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll(cx).map(|()| None)
    }
}

#[tonic::async_trait]
impl gp::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = UntilShutdown;
    async fn stream_stdio(
        &self,
        _req: Request<gp::Empty>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(UntilShutdown(Box::pin(
            self.shutdown.clone().cancelled_owned(),
        ))))
    }
}

struct Health;

#[tonic::async_trait]
impl health::health_server::Health for Health {
    async fn check(
        &self,
        req: Request<health::HealthCheckRequest>,
    ) -> Result<Response<health::HealthCheckResponse>, Status> {
        use health::health_check_response::ServingStatus;
        let status = match req.get_ref().service.as_str() {
            "" | "plugin" => ServingStatus::Serving,
            _ => ServingStatus::ServiceUnknown,
        };
        Ok(Response::new(health::HealthCheckResponse {
            status: status as i32,
        }))
    }
}
