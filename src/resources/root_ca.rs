//! `mesh_root_ca`: the mesh's shared root CA (key and self-signed certificate). Touches no
//! cluster; every `mesh_cluster` issues its intermediate from it.

use time::OffsetDateTime;

use crate::pki::{self, CaSpec, KeyAlgorithm};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, Plan, Resource,
    Schema, Value,
};

pub struct RootCa;

const DESCRIPTION: &str = "Generates the mesh's root certificate authority: a private key and a self-signed CA certificate, with the extensions Istio's certificate tooling uses (critical `CA:TRUE`, key usages `keyCertSign`, `cRLSign`, `digitalSignature`, subject key identifier).

Pass `cert_pem` and `private_key_pem` to the `root_ca` block of each `mesh_cluster`; every cluster then gets its own intermediate CA signed by this root, so workloads in different clusters trust each other.

The private key is stored in the Terraform state (marked sensitive). Protect the state accordingly. With Terraform 1.11 or later, pass it to `mesh_cluster` as the write-only `root_ca.private_key_pem_wo`, so that this resource's state is its only copy. To keep the root key out of Terraform's state altogether, keep the root outside Terraform (e.g. in a secret store) and pass its key write-only from an ephemeral source, or bring your own intermediate CAs with the `ca` block of `mesh_cluster`.

When `early_renewal_hours` is set, the certificate is replaced once it is that close to expiry: a refresh sets `ready_for_renewal` and the next plan replaces the resource (and with it every intermediate issued from it).";

// ---------------------------------------------------------------------------------------------
// Schema

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(
                Attribute::string("common_name", "Subject common name (CN) of the root certificate.")
                    .default("Root CA")
                    .force_new(),
            )
            .attr(
                Attribute::string("organization", "Subject organization (O) of the root certificate.")
                    .default("Istio")
                    .force_new(),
            )
            .attr(
                Attribute::string("key_algorithm", "Key algorithm: `\"RSA\"` or `\"ECDSA\"`.")
                    .default("RSA")
                    .force_new(),
            )
            .attr(
                Attribute::number("rsa_bits", "RSA key size when `key_algorithm` is `\"RSA\"`: 2048, 3072 or 4096.")
                    .default(4096)
                    .force_new(),
            )
            .attr(
                Attribute::string("ecdsa_curve", "Curve when `key_algorithm` is `\"ECDSA\"`: `\"P256\"` or `\"P384\"`.")
                    .default("P256")
                    .force_new(),
            )
            .attr(
                Attribute::number("validity_period_hours", "How long the certificate is valid, in hours (87600 = 10 years, as Istio's tooling).")
                    .default(87600)
                    .force_new(),
            )
            .attr(
                Attribute::number("early_renewal_hours", "Replace the certificate this many hours before it expires (0 = only once expired).")
                    .default(0)
                    .force_new(),
            )
            .attr(
                Attribute::string("id", "SHA-256 fingerprint of the certificate.")
                    .computed()
                    .stable(),
            )
            .attr(
                Attribute::string("cert_pem", "The root certificate, PEM encoded.")
                    .computed()
                    .stable(),
            )
            .attr(
                Attribute::string("private_key_pem", "The root private key, PKCS#8 PEM encoded.")
                    .computed()
                    .stable()
                    .sensitive(),
            )
            .attr(
                Attribute::string("not_before", "Start of validity (RFC 3339).")
                    .computed()
                    .stable(),
            )
            .attr(
                Attribute::string("not_after", "End of validity (RFC 3339).")
                    .computed()
                    .stable(),
            )
            .attr(
                Attribute::string("fingerprint_sha256", "SHA-256 fingerprint of the certificate (DER), lowercase hex.")
                    .computed()
                    .stable(),
            )
            .attr(
                Attribute::bool("ready_for_renewal", "True once the certificate is within `early_renewal_hours` of expiry; the next plan then replaces it.")
                    .computed(),
            ),
    )
}

// ---------------------------------------------------------------------------------------------
// Validate

/// The generation settings, or errors on the attributes at fault. Unknown values are skipped
/// (`None` result without errors).
fn spec_from(config: &Value, diags: &mut Diagnostics) -> Option<CaSpec> {
    let mut spec = CaSpec::istio_root();
    let mut complete = true;

    match config.get("common_name") {
        Value::String(s) if s.trim().is_empty() => diags.error_at(
            AttributePath::attrs(&["common_name"]),
            "Invalid common_name",
            "The common name must not be empty.",
        ),
        Value::String(s) => spec.common_name = s.clone(),
        Value::Unknown => complete = false,
        _ => {}
    }
    match config.get("organization") {
        Value::String(s) => spec.organization = s.clone(),
        Value::Unknown => complete = false,
        _ => {}
    }

    let algorithm = config.get("key_algorithm");
    let bits = config.get("rsa_bits");
    let curve = config.get("ecdsa_curve");
    if algorithm.is_unknown() || bits.is_unknown() || curve.is_unknown() {
        complete = false;
    }
    // Each setting is checked on its own, whichever family is chosen: a wrong value is a
    // mistake worth pointing at even when it would be ignored.
    if let Some(name) = algorithm.as_str() {
        if let Err(e) = pki::KeyAlgorithmName::parse(name) {
            diags.error_at(
                AttributePath::attrs(&["key_algorithm"]),
                "Invalid key_algorithm",
                e.to_string(),
            );
        }
    }
    if let Some(b) = bits.as_i64() {
        if let Err(e) = pki::RsaBits::from_bits(b) {
            diags.error_at(
                AttributePath::attrs(&["rsa_bits"]),
                "Invalid rsa_bits",
                e.to_string(),
            );
        }
    }
    if let Some(c) = curve.as_str() {
        if let Err(e) = pki::EcdsaCurve::parse(c) {
            diags.error_at(
                AttributePath::attrs(&["ecdsa_curve"]),
                "Invalid ecdsa_curve",
                e.to_string(),
            );
        }
    }
    if complete && !diags.has_errors() {
        match KeyAlgorithm::parse(
            algorithm.as_str().unwrap_or("RSA"),
            bits.as_i64(),
            curve.as_str(),
        ) {
            Ok(k) => spec.key_algorithm = k,
            Err(e) => diags.error_at(
                AttributePath::attrs(&["key_algorithm"]),
                "Invalid key settings",
                e.to_string(),
            ),
        }
    }

    let validity = config.get("validity_period_hours");
    let early = config.get("early_renewal_hours");
    if validity.is_unknown() || early.is_unknown() {
        complete = false;
    } else {
        let v = validity.as_i64().unwrap_or(87600);
        let e = early.as_i64().unwrap_or(0);
        if v <= 0 {
            diags.error_at(
                AttributePath::attrs(&["validity_period_hours"]),
                "Invalid validity_period_hours",
                format!("The validity must be a positive number of hours, got {v}."),
            );
        }
        if e < 0 {
            diags.error_at(
                AttributePath::attrs(&["early_renewal_hours"]),
                "Invalid early_renewal_hours",
                format!("Early renewal cannot be negative, got {e}."),
            );
        } else if v > 0 && e >= v {
            diags.error_at(
                AttributePath::attrs(&["early_renewal_hours"]),
                "Invalid early_renewal_hours",
                format!(
                    "early_renewal_hours ({e}) must be less than validity_period_hours ({v}), or the certificate would be due for renewal as soon as it is created."
                ),
            );
        }
        spec.validity_hours = v;
    }
    (complete && !diags.has_errors()).then_some(spec)
}

// ---------------------------------------------------------------------------------------------
// Plan, apply, read

fn ready_for_renewal(not_after: &Value, early_renewal_hours: i64) -> bool {
    let Some(end) = not_after.as_str().and_then(|s| pki::parse_rfc3339(s).ok()) else {
        return false;
    };
    OffsetDateTime::now_utc() + time::Duration::hours(early_renewal_hours) >= end
}

#[tonic::async_trait]
impl Resource for RootCa {
    fn type_name(&self) -> &'static str {
        "mesh_root_ca"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        spec_from(config, diags);
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        if plan.is_create() {
            plan.planned.set("ready_for_renewal", Value::Bool(false));
        } else if plan.prior.get("ready_for_renewal").as_bool() == Some(true) {
            // Read found the certificate due: plan its replacement.
            plan.planned.set("ready_for_renewal", Value::Bool(false));
            plan.require_replace(AttributePath::attrs(&["ready_for_renewal"]));
        }
    }

    async fn create(&self, _ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        let mut diags = Diagnostics::new();
        let Some(spec) = spec_from(change.planned, &mut diags) else {
            if !diags.has_errors() {
                diags.error(
                    "Root CA settings are not known",
                    "All settings must be known at apply time.",
                );
            }
            return Err(diags.into());
        };
        let algorithm = spec.key_algorithm.to_string();
        tracing::info!(algorithm = %algorithm, "generating root CA");
        // Key generation is CPU-bound (RSA 4096 takes a moment): keep it off the async workers.
        // It is not abandoned on StopProvider: it finishes within seconds, and finishing lets
        // Terraform record the root instead of losing an in-flight create.
        let generated = tokio::task::spawn_blocking(move || pki::generate_root(&spec)).await;
        let ca = generated
            .map_err(|e| anyhow::anyhow!("key generation task failed: {e}"))?
            .map_err(|e| anyhow::anyhow!("Cannot generate the root CA: {e}"))?;

        let mut state = change.planned.clone();
        state.set("id", Value::from(ca.fingerprint_sha256.clone()));
        state.set("cert_pem", Value::from(ca.cert_pem.clone()));
        state.set("private_key_pem", Value::from(ca.private_key_pem.clone()));
        state.set(
            "not_before",
            Value::from(pki::format_rfc3339(ca.not_before)),
        );
        state.set("not_after", Value::from(pki::format_rfc3339(ca.not_after)));
        state.set(
            "fingerprint_sha256",
            Value::from(ca.fingerprint_sha256.clone()),
        );
        let early = change
            .planned
            .get("early_renewal_hours")
            .as_i64()
            .unwrap_or(0);
        state.set(
            "ready_for_renewal",
            Value::Bool(ready_for_renewal(state.get("not_after"), early)),
        );
        Ok(Applied::new(state))
    }

    async fn delete(&self, _ctx: &Ctx, _prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        // Nothing outside Terraform's state holds the root; forgetting it is deleting it.
        Ok(())
    }

    async fn read(
        &self,
        _ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        let mut state = state.clone();
        let early = state.get("early_renewal_hours").as_i64().unwrap_or(0);
        let due = ready_for_renewal(state.get("not_after"), early);
        state.set("ready_for_renewal", Value::Bool(due));
        Ok(Some(Applied {
            state,
            private: private.to_vec(),
        }))
    }

    fn import(&self, _id: &str) -> Result<Applied, Diagnostics> {
        let mut d = Diagnostics::new();
        d.error(
            "mesh_root_ca cannot be imported",
            "A root CA's private key cannot be read back from anywhere. To keep an existing root, give its certificate and key to `mesh_cluster.root_ca` directly, or issue intermediates outside Terraform and use `mesh_cluster.ca`.",
        );
        Err(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::schema::lint;

    fn config(pairs: &[(&str, Value)]) -> Value {
        Value::object(pairs.iter().cloned())
    }

    fn errors_at(config: &Value) -> Vec<String> {
        let mut d = Diagnostics::new();
        spec_from(config, &mut d);
        d.0.iter()
            .map(|d| d.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn schema_is_documented_and_consistent() {
        assert_eq!(lint(&schema().block, ""), Vec::<String>::new());
        let s = schema();
        assert!(s.block.attribute("private_key_pem").unwrap().sensitive);
        assert!(s
            .block
            .attributes
            .iter()
            .filter(|a| !a.is_computed() || a.default.is_some())
            .all(|a| a.force_new));
    }

    #[test]
    fn bad_settings_are_reported_on_their_attribute() {
        assert_eq!(
            errors_at(&config(&[("rsa_bits", Value::from(1024))])),
            ["rsa_bits"]
        );
        assert_eq!(
            errors_at(&config(&[("key_algorithm", Value::from("DSA"))])),
            ["key_algorithm"]
        );
        assert_eq!(
            errors_at(&config(&[
                ("key_algorithm", Value::from("ECDSA")),
                ("ecdsa_curve", Value::from("P521"))
            ])),
            ["ecdsa_curve"]
        );
        assert_eq!(
            errors_at(&config(&[("validity_period_hours", Value::from(0))])),
            ["validity_period_hours"]
        );
        assert_eq!(
            errors_at(&config(&[
                ("validity_period_hours", Value::from(10)),
                ("early_renewal_hours", Value::from(10))
            ])),
            ["early_renewal_hours"]
        );
        assert_eq!(
            errors_at(&config(&[("common_name", Value::from(" "))])),
            ["common_name"]
        );
    }

    #[test]
    fn unknown_settings_are_not_errors() {
        let c = config(&[
            ("rsa_bits", Value::Unknown),
            ("validity_period_hours", Value::Unknown),
        ]);
        let mut d = Diagnostics::new();
        assert!(spec_from(&c, &mut d).is_none());
        assert!(d.is_empty());
    }

    #[test]
    fn renewal_is_due_within_the_window() {
        let soon = pki::format_rfc3339(OffsetDateTime::now_utc() + time::Duration::hours(5));
        assert!(ready_for_renewal(&Value::from(soon.clone()), 6));
        assert!(!ready_for_renewal(&Value::from(soon), 4));
        assert!(!ready_for_renewal(&Value::Null, 4));
    }
}
