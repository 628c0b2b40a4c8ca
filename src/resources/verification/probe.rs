//! Calling HelloWorld from every client, as the seed does with `kubectl exec ... curl`, until
//! every cluster has answered every client or time runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::apply::Site;
use super::Config;
use crate::istio::verification as hello;
use crate::kube::{pod_exec, Deadline, KubeError};

/// Time kept back from the probing for explaining a failure.
const DIAGNOSIS_RESERVE: Duration = Duration::from_secs(20);
/// Pause after a round of requests that did not complete the set, growing to the maximum:
/// a cluster that is still syncing gets time, and a broken one is not hammered.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Longest answer kept for the error message.
const MAX_ANSWER: usize = 300;

/// What the clients saw.
#[derive(Default, Debug)]
pub(super) struct Outcome {
    /// Client cluster → versions (cluster names) that answered it.
    pub seen: BTreeMap<String, BTreeSet<String>>,
    /// Client cluster → requests sent.
    pub sent: BTreeMap<String, u32>,
    /// Client cluster → the last answer that was not HelloWorld's (Envoy's 503 text, a curl
    /// error), or why the request could not be run.
    pub last_failure: BTreeMap<String, String>,
}

impl Outcome {
    /// The (client, server) pairs where the server never answered the client.
    pub fn missing(&self, config: &Config) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for client in &config.clusters {
            let seen = self.seen.get(&client.name);
            for server in &config.clusters {
                if !seen.is_some_and(|s| s.contains(&server.name)) {
                    out.push((client.name.clone(), server.name.clone()));
                }
            }
        }
        out
    }
}

/// The probing deadline: the operation's, less time to explain a failure.
fn probing_deadline(deadline: &Deadline) -> Deadline {
    let reserve = DIAGNOSIS_RESERVE.min(deadline.remaining() / 4);
    let mut d = deadline.clone();
    d.until = deadline
        .until
        .checked_sub(reserve)
        .unwrap_or(deadline.until);
    d
}

/// Runs every client's requests in parallel.
pub(super) async fn reachability(config: &Config, sites: &[Site], deadline: &Deadline) -> Outcome {
    let want: BTreeSet<String> = config.clusters.iter().map(|c| c.name.clone()).collect();
    let probing = probing_deadline(deadline);
    let started = Instant::now();
    let runs = sites
        .iter()
        .map(|site| probe_client(config, site, &want, &probing));
    let mut outcome = Outcome::default();
    for (name, seen, sent, failure) in futures::future::join_all(runs).await {
        outcome.seen.insert(name.clone(), seen);
        outcome.sent.insert(name.clone(), sent);
        if let Some(f) = failure {
            outcome.last_failure.insert(name, f);
        }
    }
    tracing::info!(
        clients = sites.len(),
        requests = outcome.sent.values().sum::<u32>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "verification requests sent"
    );
    outcome
}

/// One client's requests: at least `config.requests`, then on until every version in `want`
/// has answered or the deadline passes.
async fn probe_client(
    config: &Config,
    site: &Site,
    want: &BTreeSet<String>,
    deadline: &Deadline,
) -> (String, BTreeSet<String>, u32, Option<String>) {
    let name = site.config.name.clone();
    let command = hello::request_command(&config.namespace);
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    let mut last_failure = None;
    let mut sent = 0u32;
    let mut pause = FIRST_PAUSE;
    loop {
        if deadline.remaining().is_zero() || deadline.cancel.is_cancelled() {
            break;
        }
        let answer = pod_exec::run(
            &site.cluster,
            &config.namespace,
            &site.client_pod,
            hello::CLIENT,
            &argv,
            deadline,
        )
        .await;
        sent += 1;
        match answer {
            Ok(out) => match hello::parse_hello(&out.stdout) {
                Some(version) => {
                    seen.insert(version.to_string());
                }
                None => last_failure = Some(describe_failure(&out)),
            },
            Err(e) => {
                let fatal = !matches!(e, KubeError::Timeout { .. } | KubeError::Cancelled { .. });
                last_failure = Some(e.to_string());
                // A refused or impossible exec (403, pod gone) will not get better by retrying.
                if fatal && matches!(e, KubeError::Api { .. }) {
                    break;
                }
            }
        }
        if sent >= config.requests && want.is_subset(&seen) {
            break;
        }
        if sent.is_multiple_of(config.requests) {
            let wait = pause.min(deadline.remaining());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = deadline.cancel.cancelled() => break,
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
    (name, seen, sent, last_failure)
}

fn describe_failure(out: &pod_exec::Output) -> String {
    let text = match out.exit_code {
        Some(0) => format!("answer {:?}", out.stdout.trim()),
        Some(code) => format!("curl exited with {code}: {}", out.stderr.trim()),
        None => format!("the command could not run: {}", out.stderr.trim()),
    };
    let mut text = text;
    if text.len() > MAX_ANSWER {
        let mut cut = MAX_ANSWER;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
