//! The provider's notion of "now" for plan-time decisions that depend on time (certificate
//! renewal windows). `MESH_PROVIDER_NOW` (RFC 3339) replaces the system clock: acceptance
//! tests use it to put a plan inside a renewal window without waiting for one.

use time::OffsetDateTime;

/// The environment variable that overrides the clock.
pub const NOW_ENV: &str = "MESH_PROVIDER_NOW";

/// Now, or the time `MESH_PROVIDER_NOW` gives when it is set and parses.
pub fn now() -> OffsetDateTime {
    std::env::var(NOW_ENV)
        .ok()
        .and_then(|v| crate::pki::parse_rfc3339(v.trim()).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
}
