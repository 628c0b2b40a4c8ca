//! One retry policy for every API call: transient failures (5xx, 429, dropped or refused
//! connections, timeouts) are retried with exponential backoff and jitter, honouring
//! Retry-After, within the operation's deadline; everything else fails at once.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::error::KubeError;

/// The time limit of one Terraform operation and its StopProvider cancellation.
#[derive(Clone, Debug)]
pub struct Deadline {
    pub started: Instant,
    pub until: Instant,
    pub cancel: CancellationToken,
}

impl Deadline {
    pub fn new(timeout: Duration, cancel: CancellationToken) -> Self {
        let started = Instant::now();
        Self {
            started,
            until: started + timeout,
            cancel,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A deadline starting now that ends at most `max` from now, never after this one, with
    /// the same cancellation: for a step that must not take the whole operation's time.
    pub fn capped(&self, max: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            started: now,
            until: self.until.min(now + max),
            cancel: self.cancel.clone(),
        }
    }
}

/// Runs `work` (one step of `action` in `cluster`) until it ends or `deadline` passes;
/// running out of time or a StopProvider ends it with the matching error.
pub async fn bounded<T>(
    cluster: &str,
    action: &str,
    deadline: &Deadline,
    work: impl Future<Output = Result<T, KubeError>>,
) -> Result<T, KubeError> {
    tokio::select! {
        r = tokio::time::timeout(deadline.remaining(), work) => match r {
            Ok(r) => r,
            Err(_) => Err(KubeError::Timeout {
                cluster: cluster.to_string(),
                action: action.to_string(),
                waited: deadline.elapsed(),
            }),
        },
        () = deadline.cancel.cancelled() => Err(KubeError::Cancelled {
            cluster: cluster.to_string(),
            action: action.to_string(),
        }),
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What to do after a failed attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Retry, waiting at least this long (the server's Retry-After) when given.
    Retry(Option<Duration>),
    Fail,
}

/// Classifies a kube error: transient or final.
pub fn classify(err: &kube::Error) -> Verdict {
    match err {
        // The server's wait, from the Status or (see retry_after.rs) the Retry-After header.
        kube::Error::Api(status) => match status.code {
            429 | 500..=599 => Verdict::Retry(
                status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(u64::from(s))),
            ),
            _ => Verdict::Fail,
        },
        // A certificate that does not verify will not verify on the next attempt either.
        kube::Error::HyperError(_) | kube::Error::Service(_)
            if super::error::is_tls_problem(&super::error::error_chain(err)) =>
        {
            Verdict::Fail
        }
        // Connection refused/reset, broken streams, client-side timeouts.
        kube::Error::HyperError(_) | kube::Error::Service(_) => Verdict::Retry(None),
        _ => Verdict::Fail,
    }
}

/// Exponential backoff with full jitter: a random wait in [d/2, d] for the attempt's d.
pub fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF);
    let mut r = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut r);
    let frac = 0.5 + f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX) / 2.0;
    base.mul_f64(frac)
}

/// Runs `op` until it succeeds, fails for good, or the deadline passes. `action` says what is
/// being done ("reading secret istio-system/cacerts") for logs and errors.
pub async fn retry<T, F, Fut>(
    cluster: &str,
    action: &str,
    deadline: &Deadline,
    mut op: F,
) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0u32;
    loop {
        if deadline.cancel.is_cancelled() {
            return Err(KubeError::Cancelled {
                cluster: cluster.into(),
                action: action.into(),
            });
        }
        // One attempt never outlives the deadline, and a stop request ends it at once.
        let err = tokio::select! {
            r = tokio::time::timeout(deadline.remaining(), op()) => match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(KubeError::Timeout {
                        cluster: cluster.into(),
                        action: action.into(),
                        waited: deadline.elapsed(),
                    })
                }
            },
            () = deadline.cancel.cancelled() => {
                return Err(KubeError::Cancelled {
                    cluster: cluster.into(),
                    action: action.into(),
                })
            }
        };
        let wait = match classify(&err) {
            Verdict::Fail => {
                return Err(KubeError::from_kube(
                    cluster,
                    action,
                    &err,
                    deadline.elapsed(),
                ))
            }
            Verdict::Retry(after) => after.unwrap_or_else(|| backoff(attempt)),
        };
        if wait >= deadline.remaining() {
            return Err(KubeError::from_kube(
                cluster,
                action,
                &err,
                deadline.elapsed(),
            ));
        }
        attempt += 1;
        tracing::warn!(
            cluster,
            action,
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            "transient error, retrying: {}",
            super::error::error_chain(&err)
        );
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = deadline.cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;
    use kube::core::Status;

    fn api(code: u16, retry_after: Option<i32>) -> kube::Error {
        let mut s = Status::failure("x", "y").with_code(code);
        if let Some(r) = retry_after {
            s = s.with_details(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: r as u32,
            });
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn transient_statuses_retry_and_client_errors_fail() {
        assert_eq!(classify(&api(503, None)), Verdict::Retry(None));
        assert_eq!(
            classify(&api(503, Some(2))),
            Verdict::Retry(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            classify(&api(429, Some(3))),
            Verdict::Retry(Some(Duration::from_secs(3)))
        );
        for code in [400, 401, 403, 404, 409, 422] {
            assert_eq!(classify(&api(code, None)), Verdict::Fail, "{code}");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let base = FIRST_BACKOFF
                .saturating_mul(1 << attempt.min(10))
                .min(MAX_BACKOFF);
            assert!(d >= base / 2 && d <= base, "{attempt}: {d:?}");
        }
    }
}
