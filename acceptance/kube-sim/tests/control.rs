//! The control endpoint: fault injection, counters, dumps; several clusters; the CLI.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use common::{client, sim};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube_sim::Fault;
use serde_json::json;

fn fault(path: &str) -> Fault {
    Fault {
        path: path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn faults_fail_then_recover() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let control = sim.cluster("c1").control();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // Two 500s on secrets, then recovery; other paths unaffected.
    control
        .add_fault(&Fault {
            status: Some(500),
            count: Some(2),
            ..fault("/api/v1/namespaces/*/secrets*")
        })
        .await
        .unwrap();
    cms.list(&ListParams::default()).await.unwrap();
    for _ in 0..2 {
        match secrets.list(&ListParams::default()).await.unwrap_err() {
            kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
            other => panic!("{other:?}"),
        }
    }
    secrets.list(&ListParams::default()).await.unwrap();

    // 503s are retried by kube-rs: the counters show the attempts.
    control.reset_counters().await.unwrap();
    control
        .add_fault(&Fault {
            status: Some(503),
            count: Some(2),
            ..fault("/api/v1/namespaces/default/secrets")
        })
        .await
        .unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    assert_eq!(control.counters().await.unwrap().get("list", "secrets"), 3);

    // 429 with Retry-After, only for the create verb (raw request to see the header).
    control
        .add_fault(&Fault {
            verb: Some("create".into()),
            status: Some(429),
            retry_after_s: Some(7),
            count: Some(1),
            ..fault("*")
        })
        .await
        .unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    let c1 = sim.cluster("c1");
    let raw = kube_sim::Control::new(&c1.url, &c1.ca_pem, &c1.admin_token).unwrap();
    let body = json!({"metadata": {"name": "x"}});
    let (code, headers, status) = raw
        .raw_response("POST", "/api/v1/namespaces/default/configmaps", Some(&body))
        .await
        .unwrap();
    assert_eq!(code, 429);
    assert_eq!(headers["retry-after"], "7");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 7);
    let (code, _, _) = raw
        .raw_response("POST", "/api/v1/namespaces/default/configmaps", Some(&body))
        .await
        .unwrap();
    assert_eq!(code, 201);

    // The same 429 as kube-apiserver's overload filters send it: text, the header, no Status.
    control
        .add_fault(&Fault {
            verb: Some("create".into()),
            status: Some(429),
            retry_after_s: Some(3),
            plain_text: Some(true),
            count: Some(1),
            ..fault("*")
        })
        .await
        .unwrap();
    let body = json!({"metadata": {"name": "y"}});
    let (code, headers, text) = raw
        .raw_response("POST", "/api/v1/namespaces/default/configmaps", Some(&body))
        .await
        .unwrap();
    assert_eq!(code, 429);
    assert_eq!(headers["retry-after"], "3");
    assert!(
        headers["content-type"].starts_with("text/plain"),
        "{headers:?}"
    );
    assert_eq!(
        text["raw"], "Too many requests, please try again later.\n",
        "not a Status: {text}"
    );

    // Connection drop once.
    control
        .add_fault(&Fault {
            drop: Some(true),
            count: Some(1),
            ..fault("/api/v1/namespaces/default/configmaps/x")
        })
        .await
        .unwrap();
    let err = cms.get("x").await.unwrap_err();
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "a transport error, got {err:?}"
    );
    cms.get("x").await.unwrap();

    // Global latency applies to every API request; clearing removes it.
    control.set_global_latency(150).await.unwrap();
    let t0 = Instant::now();
    cms.get("x").await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
    control.clear_faults().await.unwrap();
    let listed = control.request("GET", "/_sim/faults", None).await.unwrap();
    assert_eq!(listed["faults"], json!([]));
}

/// What one raw request got: status, Retry-After, whether the body was plain text; `None`
/// for a reset connection.
type Outcome = Option<(u16, Option<String>, bool)>;

async fn chaos_round(raw: &kube_sim::Control, n: usize) -> Vec<Outcome> {
    let mut out = Vec::new();
    for _ in 0..n {
        let got = raw
            .raw_response("GET", "/api/v1/namespaces/default/configmaps", None)
            .await;
        out.push(got.ok().map(|(code, headers, body)| {
            let plain = headers
                .get("content-type")
                .is_some_and(|t| t.starts_with("text/plain"));
            if code != 200 && !plain {
                // A Status as kube-apiserver writes it, with the header copied from details.
                assert_eq!(body["kind"], "Status", "{body}");
                assert_eq!(body["code"], code, "{body}");
                assert_eq!(
                    body["details"]["retryAfterSeconds"].as_u64(),
                    headers.get("retry-after").map(|s| s.parse().unwrap()),
                    "{body}"
                );
            }
            (code, headers.get("retry-after").cloned(), plain)
        }));
    }
    out
}

/// What `chaos_pick` says request `i` should have got.
fn expected(setting: &kube_sim::ChaosSetting, i: u64) -> Outcome {
    use kube_sim::ChaosFault::*;
    let one = Some("1".to_string());
    match kube_sim::chaos_pick(setting, "c1", i) {
        None | Some(Latency(_)) => Some((200, None, false)),
        Some(InternalError) => Some((500, None, false)),
        Some(Unavailable) => Some((503, None, false)),
        Some(TooManyRequests) => Some((429, one, false)),
        Some(TooManyRequestsPlain) => Some((429, one, true)),
        Some(Reset) => None,
    }
}

#[tokio::test]
async fn chaos_mode_injects_its_share_and_replays_by_seed() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let raw = kube_sim::Control::new(&c1.url, &c1.ca_pem, &c1.admin_token).unwrap();
    let setting = kube_sim::ChaosSetting {
        share: 0.2,
        seed: 11,
    };
    control.set_chaos(&setting).await.unwrap();
    let n = 300;
    let first = chaos_round(&raw, n).await;
    for (i, got) in first.iter().enumerate() {
        assert_eq!(*got, expected(&setting, i as u64), "request {i}");
    }
    // The counts match what the client saw; control calls are not API requests.
    let counts = control.chaos_counts().await.unwrap();
    let seen = |f: &dyn Fn(&Outcome) -> bool| first.iter().filter(|o| f(o)).count() as u64;
    assert_eq!(counts.requests, n as u64);
    assert_eq!(counts.reset, seen(&|o| o.is_none()));
    assert_eq!(
        counts.internal_error,
        seen(&|o| matches!(o, Some((500, ..))))
    );
    assert_eq!(counts.unavailable, seen(&|o| matches!(o, Some((503, ..)))));
    assert_eq!(
        counts.too_many_requests,
        seen(&|o| matches!(o, Some((429, _, false))))
    );
    assert_eq!(
        counts.too_many_requests_plain,
        seen(&|o| matches!(o, Some((429, _, true))))
    );
    let faults = counts.total() as f64 / n as f64;
    assert!((0.1..0.3).contains(&faults), "{counts:?}");
    assert!(counts.latency > 0, "{counts:?}");
    // The other cluster is untouched.
    let c2 = sim.cluster("c2").control().chaos_counts().await.unwrap();
    assert_eq!(c2, kube_sim::ChaosCounts::default());

    // Setting the same seed again replays the same faults.
    control.set_chaos(&setting).await.unwrap();
    assert_eq!(chaos_round(&raw, n).await, first);

    // Off: every request answers normally; counts stay until reset.
    control
        .request("DELETE", "/_sim/chaos", None)
        .await
        .unwrap();
    assert!(chaos_round(&raw, 50)
        .await
        .iter()
        .all(|o| *o == Some((200, None, false))));
    assert_eq!(control.chaos_counts().await.unwrap().requests, 2 * n as u64);
    control.reset_chaos_counts().await.unwrap();
    assert_eq!(
        control.chaos_counts().await.unwrap(),
        kube_sim::ChaosCounts::default()
    );

    // A share outside 0..1 is refused, naming the attribute, on both routes.
    let bad = json!({"share": 1.5, "seed": 1});
    let (code, body) = control
        .raw("POST", "/_sim/chaos", Some(&bad))
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("chaos.share"),
        "{body}"
    );
    let (code, body) = control
        .raw("POST", "/_sim/settings", Some(&json!({"chaos": bad})))
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("chaos.share"),
        "{body}"
    );
}

/// The chaos setting given at start (as the CLI's flags do) applies from the first request.
#[tokio::test]
async fn chaos_from_settings() {
    let mut settings = kube_sim::Settings::default();
    settings.chaos.share = 1.0;
    settings.chaos.seed = 5;
    let sim = common::sim_with(&["c1"], settings).await;
    let c1 = sim.cluster("c1");
    let raw = kube_sim::Control::new(&c1.url, &c1.ca_pem, &c1.admin_token).unwrap();
    let got = chaos_round(&raw, 40).await;
    let counts = c1.control().chaos_counts().await.unwrap();
    assert_eq!((counts.requests, counts.total()), (40, 40), "{counts:?}");
    let normal = got
        .iter()
        .filter(|o| **o == Some((200, None, false)))
        .count() as u64;
    assert_eq!(
        normal, counts.latency,
        "only latency faults answer normally"
    );
}

#[tokio::test]
async fn counters_and_dump() {
    let sim = sim(&["c1", "c2"]).await;
    let c = client(&sim, "c1").await;
    let control = sim.cluster("c1").control();
    control.reset_counters().await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "counted"}, "stringData": {"k": "v"}}))
            .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    for _ in 0..3 {
        secrets.list(&ListParams::default()).await.unwrap();
    }
    let got = secrets.get("counted").await.unwrap();
    assert_eq!(
        got.data.unwrap()["k"].0,
        b"v",
        "stringData folded into data"
    );
    let counters = control.counters().await.unwrap();
    assert_eq!(counters.get("create", "secrets"), 1);
    assert_eq!(counters.get("list", "secrets"), 3);
    assert_eq!(counters.get("get", "secrets"), 1);
    assert_eq!(counters.total, 5);
    // The other cluster counted nothing of this.
    let other = sim.cluster("c2").control().counters().await.unwrap();
    assert_eq!(other.get("list", "secrets"), 0);
    control.reset_counters().await.unwrap();
    assert_eq!(control.counters().await.unwrap().total, 0);

    let dump = control.dump().await.unwrap();
    assert!(dump
        .iter()
        .any(|o| o["kind"] == "Secret" && o["metadata"]["name"] == "counted"));
    assert!(dump
        .iter()
        .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "kube-system"));
    let c2_dump = sim.cluster("c2").control().dump().await.unwrap();
    assert!(!c2_dump.iter().any(|o| o["metadata"]["name"] == "counted"));
}

/// Starts the CLI, checks it serves, sends `signal` (`TERM`, `INT`) and expects a clean exit.
async fn cli_serves_until(signal: &str) {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("kube-sim-cli-{}-{signal}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let info = dir.join("info.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--clusters", "east,west", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--info")
        .arg(&info)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("ready line in time")
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("kube-sim ready:"), "{ready}");

    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&info).unwrap()).unwrap();
    let west = &info["clusters"]["west"];
    let control = kube_sim::Control::new(
        west["url"].as_str().unwrap(),
        west["ca_pem"].as_str().unwrap(),
        west["control_token"].as_str().unwrap(),
    )
    .unwrap();
    assert!(!control.dump().await.unwrap().is_empty());
    let yaml = std::fs::read_to_string(&kubeconfig).unwrap();
    let client = common::client_from_yaml(&yaml, "west-cert").await;
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    nss.get("kube-system").await.unwrap();
    assert!(yaml.contains("current-context: east"));

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap_or_else(|_| panic!("exits after SIG{signal}"))
        .unwrap();
    assert!(status.success(), "SIG{signal}: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn cli_serves_until_sigterm() {
    cli_serves_until("TERM").await;
}

/// Ctrl-C in the terminal running `kube-sim` stops it just as cleanly.
#[tokio::test]
async fn cli_serves_until_sigint() {
    cli_serves_until("INT").await;
}

#[tokio::test]
async fn thousands_of_objects() {
    use futures::{stream, StreamExt};
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let n = 1500;
    stream::iter(0..n)
        .map(|i| {
            let cms = cms.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("cm-{i:04}"), "labels": {"shard": (i % 3).to_string()}},
                    "data": {"i": i.to_string()}
                }))
                .unwrap();
                cms.create(&PostParams::default(), &cm).await
            }
        })
        .buffer_unordered(16)
        .for_each(|r| async move {
            r.unwrap();
        })
        .await;
    let shard = cms
        .list(&ListParams::default().labels("shard=1"))
        .await
        .unwrap();
    assert_eq!(shard.items.len(), n / 3);
    let mut paged = 0;
    let mut lp = ListParams::default().limit(400);
    loop {
        let page = cms.list(&lp).await.unwrap();
        paged += page.items.len();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(paged, n + 1, "all ConfigMaps plus kube-root-ca.crt");
    let counters = sim.cluster("c1").control().counters().await.unwrap();
    assert_eq!(counters.get("create", "configmaps"), n as u64);
}

/// A chaos share outside 0..1 on the command line is refused before anything starts.
#[test]
fn cli_refuses_a_bad_chaos_share() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--clusters", "c1", "--kubeconfig", "/nonexistent/kc"])
        .args(["--chaos-share", "20", "--chaos-seed", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--chaos-share") && err.contains("chaos.share"),
        "{err}"
    );
}

/// Polls `GET /_sim/holds` (every 10 ms, at most 10 s) until `waiting` is `want`.
async fn holds_reach(control: &kube_sim::Control, want: u64) -> (u64, u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = control.holds().await.unwrap();
        if counts.0 == want {
            return counts;
        }
        assert!(
            Instant::now() < until,
            "held requests stayed at {counts:?}, expected {want} waiting"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hold_stops_matching_requests_until_released_or_the_client_leaves() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let control = sim.cluster("c1").control();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    control
        .add_fault(&Fault {
            verb: Some("list".into()),
            hold: Some(true),
            ..fault("/api/v1/namespaces/default/configmaps")
        })
        .await
        .unwrap();

    // A matching list waits; other verbs and paths pass meanwhile.
    let held = tokio::spawn({
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default())
                .await
                .map(|l| l.items.len())
        }
    });
    assert_eq!(holds_reach(&control, 1).await, (1, 1));
    cms.get("kube-root-ca.crt").await.unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
    assert!(!held.is_finished(), "the held list was answered");

    // Released: the held request is served normally, and the rule is gone.
    assert_eq!(control.release_holds().await.unwrap(), 1);
    let items = common::within("the released list", held).await.unwrap();
    assert_eq!(items.unwrap(), 1, "kube-root-ca.crt");
    assert_eq!(holds_reach(&control, 0).await, (0, 1));
    cms.list(&ListParams::default()).await.unwrap();
    let listed = control.request("GET", "/_sim/faults", None).await.unwrap();
    assert_eq!(listed["faults"], json!([]));

    // A client that goes away while held no longer counts as waiting.
    control
        .add_fault(&Fault {
            hold: Some(true),
            ..fault("/api/v1/namespaces/default/secrets")
        })
        .await
        .unwrap();
    let c1 = sim.cluster("c1");
    let raw = kube_sim::Control::new(&c1.url, &c1.ca_pem, &c1.admin_token).unwrap();
    let gone = tokio::spawn(async move {
        raw.raw("GET", "/api/v1/namespaces/default/secrets", None)
            .await
    });
    assert_eq!(holds_reach(&control, 1).await, (1, 2));
    gone.abort();
    assert_eq!(holds_reach(&control, 0).await, (0, 2));
    assert_eq!(control.release_holds().await.unwrap(), 0);
}

/// A TLS connection to `c`'s API server offering `alpn` (e.g. `h2` alone), or the handshake's
/// error.
async fn tls_to(
    c: &kube_sim::ClusterHandle,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(c.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let addr = c.url.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
}

/// An HTTP/2 connection to `c`'s API server, offering `h2` alone.
async fn h2_to(
    c: &kube_sim::ClusterHandle,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tls = tls_to(c, &[b"h2"])
        .await
        .expect("handshake offering h2 alone");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET` of namespace kube-system on `c` with bearer `token`.
fn get_kube_system(c: &kube_sim::ClusterHandle, token: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(format!("{}/api/v1/namespaces/kube-system", c.url))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap()
}

/// As kube-apiserver, the API server speaks HTTP/2 to a client asking for it in ALPN, with
/// many requests over the one connection; `http2: false` makes it a HTTP/1.1-only server
/// (no common protocol with a client asking for h2 alone). The counters count the TLS
/// connections that carried API requests, and which spoke HTTP/2.
#[tokio::test]
async fn http2_is_offered_and_connections_are_counted() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    control.reset_counters().await.unwrap();

    let mut send = h2_to(c1).await;
    // Concurrent streams with different credentials, each answered for its own.
    let (ok, denied) = tokio::join!(
        send.clone()
            .send_request(get_kube_system(c1, &c1.admin_token)),
        send.send_request(get_kube_system(c1, "not-a-token"))
    );
    let ok = ok.unwrap();
    assert_eq!(ok.status(), 200);
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    let ns: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(ns["metadata"]["name"], "kube-system");
    assert_eq!(denied.unwrap().status(), 401);

    // Plain kube-rs (HTTP/1.1) opens connections of its own.
    let c = client(&sim, "c1").await;
    let secrets: Api<Secret> = Api::namespaced(c, "default");
    secrets.list(&ListParams::default()).await.unwrap();
    let counters = control.counters().await.unwrap();
    assert_eq!(counters.total, 3);
    assert!(counters.connections >= 2, "{counters:?}");
    assert_eq!(counters.connections_http2, 1, "{counters:?}");

    // HTTP/1.1 only: a client asking for h2 alone finds no common protocol; HTTP/1.1 works.
    control.settings(&json!({"http2": false})).await.unwrap();
    assert!(tls_to(c1, &[b"h2"]).await.is_err(), "no common protocol");
    let tls = tls_to(c1, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    control.settings(&json!({"http2": true})).await.unwrap();
    let tls = tls_to(c1, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

/// `connect_latency_ms` stands for the round trips a network charges to open a connection (TCP,
/// then TLS): each new connection is held that long before its handshake, and only new ones,
/// so a request over a connection already open is answered at once.
#[tokio::test]
async fn connect_latency_holds_new_connections_only() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let hold = Duration::from_millis(1500);
    // A connection opened before the setting.
    let mut send = h2_to(c1).await;
    control
        .settings(&json!({"connect_latency_ms": hold.as_millis() as u64}))
        .await
        .unwrap();

    let started = Instant::now();
    let _fresh = tls_to(c1, &[b"h2"]).await.expect("handshake");
    let opening = started.elapsed();
    assert!(opening >= hold, "a new connection is held: {opening:?}");

    let started = Instant::now();
    let get = get_kube_system(c1, &c1.admin_token);
    assert_eq!(send.send_request(get).await.unwrap().status(), 200);
    let request = started.elapsed();
    assert!(
        request < hold,
        "an open connection is not held: {request:?}"
    );

    control
        .settings(&json!({"connect_latency_ms": 0}))
        .await
        .unwrap();
    let started = Instant::now();
    tls_to(c1, &[b"h2"]).await.expect("handshake");
    let opening = started.elapsed();
    assert!(opening < hold, "0 holds nothing: {opening:?}");
}
