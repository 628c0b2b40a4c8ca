//! Logs as hclog JSON lines on stderr, which go-plugin parses and re-logs through Terraform's
//! provider logger. Filtered by `TF_LOG_PROVIDER`, then `TF_LOG`, exactly like Terraform filters
//! provider output, so nothing is formatted that would be thrown away.
//!
//! Nothing secret is ever passed to a log macro in this code base; this layer does not try to
//! redact.

use std::fmt::Write as _;
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The level Terraform would display for the provider, from the environment.
pub fn level_from_env() -> LevelFilter {
    level_from(
        std::env::var("TF_LOG_PROVIDER").ok().as_deref(),
        std::env::var("TF_LOG").ok().as_deref(),
    )
}

/// The level for the values of `TF_LOG_PROVIDER` and `TF_LOG`: the first one set and non-empty
/// decides.
pub fn level_from(tf_log_provider: Option<&str>, tf_log: Option<&str>) -> LevelFilter {
    let raw = tf_log_provider
        .filter(|v| !v.is_empty())
        .or(tf_log.filter(|v| !v.is_empty()));
    match raw.map(|v| v.to_ascii_uppercase()).as_deref() {
        Some("TRACE") | Some("JSON") => LevelFilter::TRACE,
        Some("DEBUG") => LevelFilter::DEBUG,
        Some("INFO") => LevelFilter::INFO,
        Some("WARN") => LevelFilter::WARN,
        Some("ERROR") => LevelFilter::ERROR,
        Some("OFF") => LevelFilter::OFF,
        // Terraform treats any other non-empty value as TRACE.
        Some(_) => LevelFilter::TRACE,
        // Terraform discards provider logs when TF_LOG is unset; keep only what matters.
        None => LevelFilter::WARN,
    }
}

/// Installs the global logger. Safe to call more than once (later calls do nothing).
pub fn init() {
    let subscriber = tracing_subscriber::registry()
        .with(level_from_env())
        .with(HclogLayer);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Formats events as hclog JSON.
pub struct HclogLayer;

impl<S: Subscriber> Layer<S> for HclogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_event(event);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
    }
}

/// One hclog JSON line (with the trailing newline) for `event`.
pub fn format_event(event: &Event<'_>) -> String {
    let meta = event.metadata();
    let mut fields = FieldVisitor::default();
    event.record(&mut fields);
    let mut obj = serde_json::Map::new();
    obj.insert("@level".into(), level_name(*meta.level()).into());
    obj.insert("@message".into(), fields.message.into());
    obj.insert("@timestamp".into(), timestamp().into());
    obj.insert("@module".into(), module(meta.target()).into());
    for (k, v) in fields.extra {
        obj.insert(k, v.into());
    }
    let mut line = serde_json::Value::Object(obj).to_string();
    line.push('\n');
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `mesh` for our own code (`mesh.kube` for `terraform_provider_mesh::kube::...`), `mesh.<crate>`
/// for libraries such as kube-client.
fn module(target: &str) -> String {
    let mut parts = target.split("::");
    match parts.next() {
        Some("terraform_provider_mesh") => match parts.next() {
            Some(m) => format!("mesh.{m}"),
            None => "mesh".into(),
        },
        Some(krate) => format!("mesh.{krate}"),
        None => "mesh".into(),
    }
}

/// `2006-01-02T15:04:05.000000Z07:00` in Go's layout: exactly six fractional digits, or
/// go-plugin shows the whole line as unparsed text.
fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    );
    s
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    extra: Vec<(String, String)>,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.message = v;
        } else {
            self.extra.push((field.name().to_string(), v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Capture(Arc<Mutex<Vec<String>>>);
    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(format_event(event));
        }
    }

    #[test]
    fn lines_are_hclog_json_with_microsecond_timestamps() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sub = tracing_subscriber::registry().with(Capture(lines.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(cluster = "east", attempt = 2, "waiting for istiod");
        });
        let line = lines.lock().unwrap()[0].clone();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@level"], "info");
        assert_eq!(v["@message"], "waiting for istiod");
        assert_eq!(v["@module"], "mesh.plugin");
        assert_eq!(v["cluster"], "east");
        assert_eq!(v["attempt"], "2");
        let ts = v["@timestamp"].as_str().unwrap();
        // 2026-11-23T18:00:00.123456Z
        assert_eq!(ts.len(), 27, "{ts}");
        assert_eq!(&ts[19..20], ".");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn tf_log_provider_takes_precedence_over_tf_log() {
        assert_eq!(level_from(Some("ERROR"), Some("TRACE")), LevelFilter::ERROR);
        assert_eq!(level_from(Some("debug"), None), LevelFilter::DEBUG);
        assert_eq!(level_from(Some("off"), Some("TRACE")), LevelFilter::OFF);
        // Empty means unset, as in Terraform: TF_LOG decides.
        assert_eq!(level_from(Some(""), Some("INFO")), LevelFilter::INFO);
        assert_eq!(level_from(None, Some("json")), LevelFilter::TRACE);
        assert_eq!(level_from(None, Some("verbose")), LevelFilter::TRACE);
        assert_eq!(level_from(None, Some("")), LevelFilter::WARN);
        assert_eq!(level_from(None, None), LevelFilter::WARN);
    }

    #[test]
    fn module_names_follow_the_code_layout() {
        assert_eq!(module("terraform_provider_mesh::kube::client"), "mesh.kube");
        assert_eq!(module("kube_client::client"), "mesh.kube_client");
    }
}
