//! Planning of the control plane block (never contacts a cluster).

use super::*;

/// `control_plane_version` is unknown whenever the installer will run: on create, when the
/// control plane settings or the identity it is installed with change, or when Read found
/// istiod missing.
pub(super) fn plan_control_plane(plan: &mut Plan<'_>) {
    let version = if plan.planned.get("control_plane").is_null() {
        Value::Null
    } else if plan.is_create()
        || plan.prior.get("control_plane") != plan.planned.get("control_plane")
        || plan.prior.get("control_plane_version").is_null()
        || ["mesh_id", "network"]
            .iter()
            .any(|k| plan.prior.get(k) != plan.planned.get(k))
    {
        Value::Unknown
    } else {
        plan.prior.get("control_plane_version").clone()
    };
    plan.planned.set("control_plane_version", version);
}
