//! Waiting for a condition on one object, on a watch: no polling, no sleeps. Progress is logged
//! at INFO while waiting (what, where, how long so far); the wait ends at the operation's
//! deadline or when Terraform asks the provider to stop.

use std::fmt::Debug;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::wait::{await_condition, Condition};
use serde::de::DeserializeOwned;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::{backoff, classify, Deadline, Verdict};

/// How often a long wait says it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Waits until `cond` holds for object `name` (the object as last seen is returned; `None`
/// when the condition holds for an absent object, e.g. deletion). `what` completes the
/// sentence "waiting for ...".
pub async fn wait_for<K, C>(
    cluster: &Cluster,
    api: Api<K>,
    name: &str,
    what: &str,
    cond: C,
    deadline: &Deadline,
) -> Result<Option<K>, KubeError>
where
    K: kube::Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    C: Condition<K> + Clone,
{
    let started = std::time::Instant::now();
    let until = tokio::time::Instant::from_std(deadline.until);
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let mut failures = 0u32;
    loop {
        let watch = await_condition(api.clone(), name, cond.clone());
        tokio::pin!(watch);
        let result = loop {
            tokio::select! {
                r = &mut watch => break r,
                () = tokio::time::sleep_until(until) => {
                    return Err(KubeError::Timeout {
                        cluster: cluster.name.clone(),
                        action: format!("waiting for {what}"),
                        waited: started.elapsed(),
                    });
                }
                () = deadline.cancel.cancelled() => {
                    return Err(KubeError::Cancelled {
                        cluster: cluster.name.clone(),
                        action: format!("waiting for {what}"),
                    });
                }
                _ = progress.tick() => {
                    tracing::info!(
                        cluster = %cluster.name,
                        waited_s = started.elapsed().as_secs(),
                        "waiting for {what}"
                    );
                }
            }
        };
        match result {
            Ok(obj) => {
                crate::timing::wait("watch", what, started.elapsed(), None);
                return Ok(obj);
            }
            Err(e) => {
                // A list or watch the server refuses for good (401, 403, 404 of the kind) is
                // reported at once with the same advice as any other call, not retried and
                // then passed off as the server being unreachable.
                if let Some(api) = final_api_error(&e) {
                    return Err(KubeError::from_kube(
                        &cluster.name,
                        &format!("waiting for {what}"),
                        api,
                        started.elapsed(),
                    ));
                }
                // The watch broke (connection reset, API restart): resume it after a backoff
                // within the deadline; give up after a few failures in a row.
                failures += 1;
                let wait = backoff(failures);
                if failures > 8 || wait >= deadline.remaining() {
                    return Err(KubeError::Unreachable {
                        cluster: cluster.name.clone(),
                        action: format!("waiting for {what}"),
                        message: format!(
                            "the watch failed {failures} times; last error: {}",
                            super::error::error_chain(&e)
                        ),
                    });
                }
                tracing::warn!(cluster = %cluster.name, "watch for {what} failed, resuming: {e}");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = deadline.cancel.cancelled() => {}
                }
            }
        }
    }
}

/// The API error behind a failed wait when retrying cannot help (see `retry::classify`).
fn final_api_error(err: &kube::runtime::wait::Error) -> Option<&kube::Error> {
    use kube::runtime::watcher::Error as W;
    let kube::runtime::wait::Error::ProbeFailed(w) = err;
    let inner = match w {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => e,
        _ => return None,
    };
    (matches!(inner, kube::Error::Api(_)) && classify(inner) == Verdict::Fail).then_some(inner)
}
