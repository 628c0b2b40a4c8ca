//! Workload certificates and the mutual TLS check between two sidecars.
//!
//! A sidecar gets its certificate from its cluster's istiod when the pod starts (pilot-agent's
//! CSR): a leaf with the pod's SPIFFE identity, signed by the signing certificate istiod holds at
//! that moment (plug-in `ca-cert.pem` with `cert-chain.pem` appended, or the self-signed root),
//! kept until the pod is replaced. The roots a sidecar trusts are the bundle its istiod serves
//! now. A handshake holds when each side's chain verifies (signatures, CA constraints, validity,
//! the clientAuth/serverAuth purposes) up to a root of the other side's bundle — checked here
//! with rustls' webpki verifier on real certificates, so two clusters with different roots fail
//! as Envoy would.

use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{CertificateDer, UnixTime};

use crate::istiod::ca::Signer;

/// A workload's certificate chain (leaf first).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadCert {
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
}

/// The DER certificates of a PEM bundle (blocks at the start of a line, as Go's `pem.Decode`).
pub fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines() {
        let l = line.trim_end();
        if l == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if l == "-----END CERTIFICATE-----" {
            if let Some(b) = body.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b) {
                    out.push(CertificateDer::from(der));
                }
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(l.trim());
        }
    }
    out
}

/// Issue a workload certificate for `spiffe` (e.g. `spiffe://cluster.local/ns/sample/sa/default`)
/// with `signer`. `None` when the signer's certificate or key cannot be used.
pub fn issue(signer: &Signer, spiffe: &str) -> Option<WorkloadCert> {
    let ca_key = rcgen::KeyPair::from_pem(&signer.key_pem).ok()?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&signer.cert_pem, ca_key).ok()?;
    let key = rcgen::KeyPair::generate().ok()?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(spiffe.to_string()).ok()?,
    )];
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(24);
    let leaf = params.signed_by(&key, &issuer).ok()?;
    let mut intermediates = certs_of(&signer.cert_pem);
    intermediates.truncate(1);
    intermediates.extend(certs_of(&signer.chain_pem));
    Some(WorkloadCert {
        leaf: leaf.der().clone(),
        intermediates,
    })
}

/// Whether a peer presenting `cert` is trusted by a sidecar whose root bundle is `bundle_pem`.
pub fn trusts(bundle_pem: &str, cert: &WorkloadCert) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for der in certs_of(bundle_pem) {
        let _ = roots.add(der);
    }
    if roots.is_empty() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    verifier
        .verify_client_cert(&cert.leaf, &cert.intermediates, UnixTime::now())
        .is_ok()
}

/// Why a handshake between a client and a server sidecar fails, as the client's Envoy reports
/// it (BoringSSL's packed error codes), or `None` when it holds.
pub fn handshake(
    client: Option<&WorkloadCert>,
    client_bundle: &str,
    server: Option<&WorkloadCert>,
    server_bundle: &str,
) -> Option<&'static str> {
    // The client verifies the server's certificate first (it arrives in the server's flight).
    if !server.is_some_and(|s| trusts(client_bundle, s)) {
        return Some(
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end",
        );
    }
    // Then the server verifies the client's and answers an unknown issuer with an alert.
    if !client.is_some_and(|c| trusts(server_bundle, c)) {
        return Some(
            "TLS_error:|268436504:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA:TLS_error_end",
        );
    }
    None
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A root and its key (PEM), named `o`.
    pub fn root(o: &str) -> (String, rcgen::KeyPair, rcgen::CertificateParams) {
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o.to_string());
        let k = rcgen::KeyPair::generate().unwrap();
        let c = p.self_signed(&k).unwrap();
        (c.pem(), k, p)
    }

    /// A plug-in signer: an intermediate under a root, with `cert-chain.pem` = intermediate +
    /// root (as Istio's Makefile writes it). Returns (root PEM, signer).
    pub fn plug_in(o: &str) -> (String, Signer) {
        let (root_pem, root_key, root_params) = root(o);
        let issuer = rcgen::Issuer::new(root_params, root_key);
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, format!("{o} intermediate"));
        let k = rcgen::KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &issuer).unwrap();
        let signer = Signer {
            cert_pem: c.pem(),
            key_pem: k.serialize_pem(),
            chain_pem: format!("{}{root_pem}", c.pem()),
        };
        (root_pem, signer)
    }

    const ID: &str = "spiffe://cluster.local/ns/sample/sa/default";

    #[test]
    fn a_certificate_chains_only_to_the_root_that_signed_it() {
        let (root_a, signer_a) = plug_in("A");
        let (root_b, signer_b) = plug_in("B");
        let a = issue(&signer_a, ID).unwrap();
        let b = issue(&signer_b, ID).unwrap();
        assert!(trusts(&root_a, &a));
        assert!(!trusts(&root_b, &a));
        assert!(!trusts(&root_a, &b));
        // A multi-root bundle {A, B} trusts both.
        let both = format!("{root_a}{root_b}");
        assert!(trusts(&both, &a) && trusts(&both, &b));
        assert!(!trusts("", &a));
    }

    #[test]
    fn self_signed_roots_sign_directly() {
        let (root_pem, key, _) = root("c1");
        let signer = Signer {
            cert_pem: root_pem.clone(),
            key_pem: key.serialize_pem(),
            chain_pem: String::new(),
        };
        let c = issue(&signer, ID).unwrap();
        assert!(trusts(&root_pem, &c));
        let (other, _, _) = root("c1");
        assert!(!trusts(&other, &c), "same name, different key: not trusted");
    }

    #[test]
    fn handshakes_report_the_side_that_failed() {
        let (root_a, signer_a) = plug_in("A");
        let (root_b, signer_b) = plug_in("B");
        let a = issue(&signer_a, ID).unwrap();
        let b = issue(&signer_b, ID).unwrap();
        assert_eq!(handshake(Some(&a), &root_a, Some(&a), &root_a), None);
        assert!(handshake(Some(&a), &root_a, Some(&b), &root_b)
            .unwrap()
            .contains("CERTIFICATE_VERIFY_FAILED"));
        // The client trusts both roots, the server only its own: the server refuses the client.
        let both = format!("{root_a}{root_b}");
        assert!(handshake(Some(&a), &both, Some(&b), &root_b)
            .unwrap()
            .contains("TLSV1_ALERT_UNKNOWN_CA"));
        assert_eq!(handshake(Some(&a), &both, Some(&b), &both), None);
    }
}
