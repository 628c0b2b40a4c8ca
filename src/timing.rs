//! Opt-in timing records for benchmarks (`bench/topology.py`): with `MESH_PROVIDER_TIMINGS`
//! naming a file, every provider process appends one JSON line per plugin RPC (its name, start
//! as Unix microseconds, duration, request and response sizes) and per wait on the apply path
//! (a watch waiting for a condition, istiod polled for a remote's sync). Without the variable
//! nothing is measured or written. Lines carry no values, only names and numbers.

use std::io::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the file the records are appended to.
pub const TIMINGS_ENV: &str = "MESH_PROVIDER_TIMINGS";

fn sink() -> Option<&'static Mutex<std::fs::File>> {
    static SINK: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    SINK.get_or_init(|| {
        let path = std::env::var_os(TIMINGS_ENV).filter(|p| !p.is_empty())?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    })
    .as_ref()
}

/// Whether records are being written.
pub fn enabled() -> bool {
    sink().is_some()
}

fn unix_micros(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

fn write(line: serde_json::Value) {
    if let Some(file) = sink() {
        let mut text = line.to_string();
        text.push('\n');
        // One write per line on an O_APPEND file: lines of concurrent processes do not mix.
        let _ = file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(text.as_bytes());
    }
}

/// One RPC being served; recorded when dropped (whichever way the handler returns).
pub struct Rpc {
    name: &'static str,
    type_name: String,
    start: SystemTime,
    started: Instant,
    request_bytes: usize,
}

/// Starts timing RPC `name` about `type_name` (may be empty) whose request is
/// `request_bytes()` long; `None` (nothing measured) when timings are off.
pub fn rpc(
    name: &'static str,
    type_name: &str,
    request_bytes: impl FnOnce() -> usize,
) -> Option<Rpc> {
    enabled().then(|| Rpc {
        name,
        type_name: type_name.to_string(),
        start: SystemTime::now(),
        started: Instant::now(),
        request_bytes: request_bytes(),
    })
}

impl Drop for Rpc {
    fn drop(&mut self) {
        write(serde_json::json!({
            "rpc": self.name,
            "type": self.type_name,
            "pid": std::process::id(),
            "start_us": unix_micros(self.start) as u64,
            "us": self.started.elapsed().as_micros() as u64,
            "req_bytes": self.request_bytes,
        }));
    }
}

/// Records a wait of `kind` (e.g. `watch`, `istiod_sync`) that began `waited` ago; `polls` is
/// how many times the condition was checked, when known.
pub fn wait(kind: &str, what: &str, waited: Duration, polls: Option<u32>) {
    if !enabled() {
        return;
    }
    let start = SystemTime::now().checked_sub(waited).unwrap_or(UNIX_EPOCH);
    write(serde_json::json!({
        "wait": kind,
        "what": what,
        "pid": std::process::id(),
        "start_us": unix_micros(start) as u64,
        "us": waited.as_micros() as u64,
        "polls": polls,
    }));
}
