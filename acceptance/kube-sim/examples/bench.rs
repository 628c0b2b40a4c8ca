//! Throughput of one kube-sim cluster through kube-rs on loopback.
//!
//! `cargo run --release -p kube-sim --example bench -- [OBJECTS] [CONCURRENCY]`
//! (defaults 3000 objects, 32 concurrent requests). Prints requests per second for create, get,
//! server-side apply and list, and the latency of a full list.

use std::time::Instant;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(i: usize, rev: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("bench-{i:05}"), "labels": {"bench": "yes", "shard": (i % 10).to_string()}},
        "data": {"rev": rev, "payload": "x".repeat(512)}
    }))
    .unwrap()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3000);
    let conc: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let sim = kube_sim::Sim::start(kube_sim::Options {
        clusters: vec!["bench".into()],
        ..Default::default()
    })
    .await?;
    let kc = kube::config::Kubeconfig::from_yaml(&sim.kubeconfig_yaml())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let phase = |name: &str, count: usize, t0: Instant| {
        let s = t0.elapsed().as_secs_f64();
        println!(
            "{name:<28} {count:>6} requests in {s:>6.2}s = {:>7.0} req/s",
            count as f64 / s
        );
    };

    let t0 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &cm(i, "1")).await }
        })
        .buffer_unordered(conc)
        .for_each(|r| async move {
            r.expect("create");
        })
        .await;
    phase("create", n, t0);

    let t0 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move { api.get(&format!("bench-{i:05}")).await }
        })
        .buffer_unordered(conc)
        .for_each(|r| async move {
            r.expect("get");
        })
        .await;
    phase("get", n, t0);

    let t0 = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.patch(
                    &format!("bench-{i:05}"),
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(cm(i, "2")),
                )
                .await
            }
        })
        .buffer_unordered(conc)
        .for_each(|r| async move {
            r.expect("apply");
        })
        .await;
    phase("server-side apply", n, t0);

    let lists = 200;
    let t0 = Instant::now();
    stream::iter(0..lists)
        .map(|i| {
            let api = api.clone();
            async move {
                api.list(&ListParams::default().labels(&format!("shard={}", i % 10)))
                    .await
            }
        })
        .buffer_unordered(conc)
        .for_each(|r| async move {
            assert!(!r.expect("list").items.is_empty());
        })
        .await;
    phase("list (label selector)", lists, t0);

    let t0 = Instant::now();
    let all = api.list(&ListParams::default()).await?;
    println!(
        "full list of {} objects: {:.1} ms",
        all.items.len(),
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let counters = sim.cluster("bench").control().counters().await?;
    println!(
        "server counted {} requests; {} objects stored",
        counters.total,
        sim.cluster("bench").object_count()
    );
    sim.shutdown();
    Ok(())
}
