//! Provider benchmarks (`make bench`, release build). Prints figures; asserts nothing.
//!
//! - start to handshake line: the process Terraform launches (3× per `terraform plan`);
//! - GetProviderSchema latency over the Unix socket;
//! - root CA generation (RSA-4096, ECDSA-P256) against `openssl req -x509 -newkey` doing the
//!   same on the same machine;
//! - an intermediate issued from a root (what `mesh_cluster` does per cluster with `root_ca`):
//!   key generation and signing, RSA-4096 and ECDSA-P256, each signed by a root of its kind.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use terraform_provider_mesh::pki::{self, CaSpec, EcdsaCurve, KeyAlgorithm};
use terraform_provider_mesh::plugin::proto::tfplugin6 as pb;
use terraform_provider_mesh::plugin::serve::{
    serve_listener, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE,
};

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    println!(
        "{name:<46} n={n:<4} median {:>9.3} ms   p90 {:>9.3} ms   min {:>9.3} ms   max {:>9.3} ms",
        ms(samples[n / 2]),
        ms(samples[(n * 9 / 10).min(n - 1)]),
        ms(samples[0]),
        ms(samples[n - 1])
    );
}

fn client_cert_pem() -> String {
    // Terraform's client certificate is ECDSA P-521, like this one.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn handshake(tls: bool, runs: usize) -> Vec<Duration> {
    let cert = client_cert_pem();
    (0..runs)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_terraform-provider-mesh"));
            cmd.env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
                .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
                .env_remove("TF_LOG")
                .env_remove("TF_LOG_PROVIDER")
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if tls {
                cmd.env("PLUGIN_CLIENT_CERT", &cert);
            } else {
                cmd.env_remove("PLUGIN_CLIENT_CERT");
            }
            let start = Instant::now();
            let mut child = cmd.spawn().unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let took = start.elapsed();
            assert!(line.starts_with("1|6|unix|"), "bad handshake: {line}");
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
            took
        })
        .collect()
}

fn schema_latency(runs: usize) -> Vec<Duration> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plugin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve_listener(
            terraform_provider_mesh::provider(),
            listener,
            None,
            stop.clone(),
        ));
        let channel = tonic::transport::Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        let mut client = pb::provider_client::ProviderClient::new(channel);
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            let resp = client
                .get_provider_schema(pb::get_provider_schema::Request {})
                .await
                .unwrap();
            samples.push(start.elapsed());
            assert!(resp.get_ref().resource_schemas.contains_key("mesh_root_ca"));
        }
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
        samples
    })
}

fn ours(algorithm: KeyAlgorithm, runs: usize) -> Vec<Duration> {
    let spec = CaSpec {
        key_algorithm: algorithm,
        ..CaSpec::istio_root()
    };
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            pki::generate_root(&spec).unwrap();
            start.elapsed()
        })
        .collect()
}

/// Issuing the intermediate (Istio's defaults, `algorithm`) from a root of the same algorithm.
fn intermediate(algorithm: KeyAlgorithm, runs: usize) -> Vec<Duration> {
    let root = pki::generate_root(&CaSpec {
        key_algorithm: algorithm,
        ..CaSpec::istio_root()
    })
    .unwrap();
    let signer = root.signer().unwrap();
    let spec = CaSpec {
        key_algorithm: algorithm,
        ..CaSpec::istio_intermediate("cluster1", "istio-system")
    };
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            pki::issue_intermediate(&signer, &spec).unwrap();
            start.elapsed()
        })
        .collect()
}

fn openssl(newkey: &[&str], runs: usize) -> Option<Vec<Duration>> {
    let dir = std::env::temp_dir().join(format!("mesh-bench-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let status = Command::new("openssl")
            .args(["req", "-x509"])
            .args(newkey)
            .args(["-nodes", "-days", "3650", "-subj", "/O=Istio/CN=Root CA"])
            .arg("-keyout")
            .arg(dir.join("k.pem"))
            .arg("-out")
            .arg(dir.join("c.pem"))
            .stderr(Stdio::null())
            .status()
            .ok()?;
        samples.push(start.elapsed());
        assert!(status.success());
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some(samples)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported, everything runs.
    println!(
        "terraform-provider-mesh benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    stats("start → handshake line (AutoMTLS)", handshake(true, 30));
    stats("start → handshake line (plaintext)", handshake(false, 30));
    stats(
        "GetProviderSchema over the Unix socket",
        schema_latency(500),
    );
    // RSA key generation time varies a lot from key to key: interleave and take many runs.
    let runs = 16;
    stats(
        "root CA RSA-4096, ours",
        ours(KeyAlgorithm::Rsa(pki::RsaBits::B4096), runs),
    );
    match openssl(&["-newkey", "rsa:4096"], runs) {
        Some(s) => stats("root CA RSA-4096, openssl req -x509 -newkey", s),
        None => println!("openssl not found: no comparison"),
    }
    stats(
        "root CA ECDSA-P256, ours",
        ours(KeyAlgorithm::Ecdsa(EcdsaCurve::P256), runs * 4),
    );
    if let Some(s) = openssl(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        runs * 4,
    ) {
        stats("root CA ECDSA-P256, openssl req -x509 -newkey", s);
    }
    stats(
        "intermediate RSA-4096 issued from a root",
        intermediate(KeyAlgorithm::Rsa(pki::RsaBits::B4096), runs),
    );
    stats(
        "intermediate ECDSA-P256 issued from a root",
        intermediate(KeyAlgorithm::Ecdsa(EcdsaCurve::P256), runs * 4),
    );
}
