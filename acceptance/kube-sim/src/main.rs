//! `kube-sim --clusters c1,c2,c3 --kubeconfig PATH [--info PATH]`

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

const USAGE: &str = "usage: kube-sim --clusters c1,c2,... --kubeconfig PATH [--info PATH]
                [--lb-delay-ms N] [--job-delay-ms N] [--lb-hostname]
                [--chaos-share 0..1] [--chaos-seed N]

Starts one HTTPS Kubernetes API server per cluster on 127.0.0.1, writes a kubeconfig with one
context per cluster (plus <name>-cert for client-certificate auth), and serves until SIGINT/SIGTERM.
--info writes JSON with each cluster's url, ca_pem, admin_token and control_token (for /_sim).
--chaos-share gives that share of every cluster's API requests a random fault (5xx, 429 with
Retry-After, connection reset or latency), reproducible with --chaos-seed.";

struct Args {
    clusters: Vec<String>,
    kubeconfig: PathBuf,
    info: Option<PathBuf>,
    settings: kube_sim::Settings,
}

fn parse_args() -> Result<Args> {
    let mut clusters = Vec::new();
    let mut kubeconfig = None;
    let mut info = None;
    let mut settings = kube_sim::Settings::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--clusters" => {
                clusters = value()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--info" => info = Some(PathBuf::from(value()?)),
            "--lb-delay-ms" => settings.loadbalancer.delay_ms = value()?.parse()?,
            "--job-delay-ms" => settings.jobs.delay_ms = value()?.parse()?,
            "--lb-hostname" => settings.loadbalancer.mode = kube_sim::LbMode::Hostname,
            "--chaos-share" => {
                let v = value()?;
                settings.chaos.share = v
                    .parse()
                    .with_context(|| format!("--chaos-share: not a number: {v:?}"))?;
                settings
                    .chaos
                    .validate()
                    .map_err(|e| anyhow!("--chaos-share: {e}"))?;
            }
            "--chaos-seed" => {
                let v = value()?;
                settings.chaos.seed = v
                    .parse()
                    .with_context(|| format!("--chaos-seed: not an unsigned integer: {v:?}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if clusters.is_empty() {
        bail!("--clusters is required\n{USAGE}");
    }
    let kubeconfig = kubeconfig.with_context(|| format!("--kubeconfig is required\n{USAGE}"))?;
    Ok(Args {
        clusters,
        kubeconfig,
        info,
        settings,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kube-sim: {e:#}");
            std::process::exit(2);
        }
    };
    let sim = kube_sim::Sim::start(kube_sim::Options {
        clusters: args.clusters.clone(),
        settings: args.settings,
        ..Default::default()
    })
    .await?;
    sim.write_kubeconfig(&args.kubeconfig)?;
    if let Some(info) = &args.info {
        sim.write_info(info)?;
    }
    // Handlers first: whoever reads the ready line may signal at once.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let urls: Vec<String> = sim
        .clusters()
        .iter()
        .map(|c| format!("{}={}", c.name, c.url))
        .collect();
    println!(
        "kube-sim ready: {} (kubeconfig {})",
        urls.join(" "),
        args.kubeconfig.display()
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown();
    eprintln!("kube-sim: stopped");
    Ok(())
}
