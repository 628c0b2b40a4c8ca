//! CA generation and validation for the mesh's trust chain.
//!
//! Pure PKI: no Terraform or Kubernetes knowledge. It generates the mesh root CA and
//! per-cluster intermediate CAs the way Istio's `tools/certs` Makefiles do, and validates
//! user-supplied CA material the way istiod does when it loads `cacerts` (Go `x509.Verify`
//! with default options), so bad input is rejected at plan time rather than by istiod.
//!
//! Error messages never contain key material or PEM text: they name certificates by
//! subject and give dates, sizes and algorithm names only.
//!
//! Typical use:
//! - `mesh_root_ca`: [`generate_root`] with a [`CaSpec`] (defaults: [`CaSpec::istio_root`]).
//! - `mesh_cluster` with `root_ca`: [`CaSigner::from_pem`] (validates the root; a
//!   [`FieldError`] says which input is wrong), then [`issue_intermediate`] with
//!   [`CaSpec::istio_intermediate`]; `cacerts` is `ca-cert.pem` = intermediate cert,
//!   `ca-key.pem` = its key, `cert-chain.pem` = [`concat_pem`] of intermediate and
//!   [`CaSigner::cert_pem`], `root-cert.pem` = [`CaSigner::cert_pem`].
//! - `mesh_cluster` with `ca` (bring your own): [`validate_ca_bundle`], then write
//!   [`CaBundleInfo::pem`] (the bundle normalised the way istiod reads it).
//!
//! Layout: `error` (what can go wrong), `generate` (new CAs and issuers), `inspect`
//! (parsing certificates and keys), `validate` (bring-your-own bundles, as istiod and Envoy
//! will use them), `pem` (PEM framing, fingerprints, timestamps).

use time::Duration;

mod error;
mod generate;
mod inspect;
mod pem;
mod validate;

pub use error::*;
pub use generate::*;
pub use inspect::*;
pub use pem::*;
pub use validate::*;

/// Generated certificates start this long before "now", so a cluster whose clock is a
/// little behind the machine running Terraform does not reject them as not yet valid.
pub const BACKDATE: Duration = Duration::minutes(5);

/// Smallest RSA key accepted from users (Go and aws-lc reject smaller CA keys anyway).
const MIN_RSA_BITS: usize = 2048;

/// X.520 upper bound for CN, O and L; openssl refuses longer values.
const MAX_NAME_LEN: usize = 64;

/// Signature algorithms based on SHA-1 (or older): Go's x509 (so istiod) rejects them.
const WEAK_SIGNATURE_OIDS: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.3.14.3.2.29", "sha1WithRSAEncryption"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-sha1"),
];

#[cfg(test)]
mod tests;
