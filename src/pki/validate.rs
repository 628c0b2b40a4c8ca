//! Validating a bring-your-own CA bundle the way istiod and Envoy will use it.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::*;

/// Facts about a user-supplied CA bundle that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundleInfo {
    /// The signing (intermediate) certificate.
    pub cert: CertInfo,
    /// The chain, in the given order (starting with the signing certificate).
    pub chain: Vec<CertInfo>,
    /// The root certificate the chain ends at.
    pub root: CertInfo,
}

/// Validates a bring-your-own CA bundle as of now; see [`validate_ca_bundle_at`].
pub fn validate_ca_bundle(
    cert_pem: &str,
    private_key_pem: &str,
    cert_chain_pem: &str,
    root_cert_pem: &str,
) -> Result<CaBundleInfo, FieldError> {
    validate_ca_bundle_at(
        cert_pem,
        private_key_pem,
        cert_chain_pem,
        root_cert_pem,
        OffsetDateTime::now_utc(),
    )
}

/// Validates a bring-your-own CA bundle (`cacerts` inputs) the way istiod will:
/// the key matches the CA certificate, which is a CA valid at `now`; `cert_chain_pem`
/// starts with that certificate, each certificate is signed by the next, and the chain
/// ends at (or is signed by) one of the certificates in `root_cert_pem`; every certificate
/// on the path is valid at `now`, signed with SHA-256 or stronger, within pathlen limits
/// and free of an extendedKeyUsage that would make Go's verification fail.
pub fn validate_ca_bundle_at(
    cert_pem: &str,
    private_key_pem: &str,
    cert_chain_pem: &str,
    root_cert_pem: &str,
    now: OffsetDateTime,
) -> Result<CaBundleInfo, FieldError> {
    let cert = parse_cert_pem(cert_pem).map_err(at(Field::CertPem))?;
    let key = parse_private_key_pem(private_key_pem).map_err(at(Field::PrivateKeyPem))?;
    let chain = parse_certs_pem(cert_chain_pem).map_err(at(Field::CertChainPem))?;
    let roots = parse_certs_pem(root_cert_pem).map_err(at(Field::RootCertPem))?;

    key.check_matches(&cert).map_err(at(Field::PrivateKeyPem))?;
    cert.check_is_ca().map_err(at(Field::CertPem))?;
    cert.check_valid_at(now).map_err(at(Field::CertPem))?;

    if chain[0].der != cert.der {
        return Err(at(Field::CertChainPem)(PkiError::ChainMustStartWithCert {
            expected: cert.info.subject.clone(),
            found: chain[0].info.subject.clone(),
        }));
    }
    let root = verify_path(&chain, &roots, now)?;
    Ok(CaBundleInfo {
        cert: cert.info,
        chain: chain.into_iter().map(|c| c.info).collect(),
        root: root.info.clone(),
    })
}

/// Checks the path chain[0] → ... → root and returns the root it ends at.
pub(super) fn verify_path<'r>(
    chain: &[Certificate],
    roots: &'r [Certificate],
    now: OffsetDateTime,
) -> Result<&'r Certificate, FieldError> {
    let last = chain
        .last()
        .expect("parse_certs_pem returns at least one certificate");
    // The chain may end with the root itself, or with a certificate the root signed.
    let root = match roots.iter().find(|r| r.der == last.der) {
        Some(root) => root,
        None => roots
            .iter()
            .find(|r| signs(r, last).is_ok())
            .ok_or_else(|| {
                at(Field::RootCertPem)(PkiError::ChainNotRooted {
                    subject: last.info.subject.clone(),
                    issuer: last.info.issuer.clone(),
                    roots: roots
                        .iter()
                        .map(|r| format!("{:?}", r.info.subject))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })?,
    };
    let mut path: Vec<&Certificate> = chain.iter().collect();
    if last.der != root.der {
        path.push(root);
    }
    let field_of = |cert: &Certificate| {
        if cert.der == root.der {
            Field::RootCertPem
        } else {
            Field::CertChainPem
        }
    };

    for (i, pair) in path.windows(2).enumerate() {
        let (child, parent) = (pair[0], pair[1]);
        signs(parent, child).map_err(|reason| {
            at(Field::CertChainPem)(PkiError::ChainLinkBroken {
                position: i + 1,
                subject: child.info.subject.clone(),
                next: parent.info.subject.clone(),
                reason,
            })
        })?;
        parent.check_is_ca().map_err(at(field_of(parent)))?;
        // Go never checks a root's own signature, but rejects SHA-1 on every link below it.
        reject_weak_signature(child).map_err(at(Field::CertChainPem))?;
    }

    // Go's remaining rules: validity, pathlen, extendedKeyUsage. istiod's own check puts
    // the signing certificate in the leaf position, but that certificate then signs
    // workload certificates, which peers verify through it: so count it as one of the CAs
    // below each parent (k of them below path[k]), or istiod would start and mTLS fail.
    for (k, cert) in path.iter().enumerate() {
        let field = field_of(cert);
        cert.check_valid_at(now).map_err(at(field))?;
        if let Some(len) = cert.info.path_len {
            let below = k;
            if below > len as usize {
                return Err(at(field)(PkiError::PathLenExceeded {
                    subject: cert.info.subject.clone(),
                    path_len: len,
                    below,
                }));
            }
        }
        if let Ok(Some(eku)) = cert.x509().extended_key_usage() {
            if !eku.value.any && !eku.value.server_auth {
                return Err(at(field)(PkiError::ForbiddenExtendedKeyUsage {
                    subject: cert.info.subject.clone(),
                }));
            }
        }
    }
    Ok(root)
}

/// Ok if `parent` issued `child`: names match byte for byte (as Go requires) and the
/// signature verifies with the parent's key. The error is a user-facing reason.
pub(super) fn signs(parent: &Certificate, child: &Certificate) -> Result<(), String> {
    let (p, c) = (parent.x509(), child.x509());
    if c.issuer().as_raw() != p.subject().as_raw() {
        return Err(format!("it names {:?} as its issuer", child.info.issuer));
    }
    verify_signature(&c, p.public_key())
}

/// Verifies `cert`'s signature with `signer`'s public key using aws-lc-rs directly (no
/// dependency on x509-parser's optional verify features). The error is a user-facing reason.
pub(super) fn verify_signature(
    cert: &X509Certificate<'_>,
    signer: &SubjectPublicKeyInfo<'_>,
) -> Result<(), String> {
    use aws_lc_rs::signature as sig;
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    let curve = signer
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let verifier: &dyn sig::VerificationAlgorithm = match (algorithm.as_str(), curve.as_deref()) {
        ("1.2.840.113549.1.1.11", _) => &sig::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &sig::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &sig::RSA_PKCS1_2048_8192_SHA512,
        // Verified only so that the weak-signature check can say precisely what is wrong.
        ("1.2.840.113549.1.1.5" | "1.3.14.3.2.29", _) => {
            &sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        ("1.2.840.10045.4.3.2", Some(P256)) => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some(P256)) => &sig::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", Some(P384)) => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some(P384)) => &sig::ECDSA_P384_SHA384_ASN1,
        _ => {
            return Err(format!(
                "its signature algorithm ({algorithm}) with that key type is not supported"
            ))
        }
    };
    sig::UnparsedPublicKey::new(verifier, signer.subject_public_key.data.as_ref())
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .map_err(|_| "the signature does not verify with that certificate's key".to_string())
}

pub(super) fn reject_weak_signature(cert: &Certificate) -> Result<(), PkiError> {
    let oid = cert.x509().signature_algorithm.algorithm.to_id_string();
    match WEAK_SIGNATURE_OIDS.iter().find(|(id, _)| *id == oid) {
        Some((_, name)) => Err(PkiError::WeakSignature {
            subject: cert.info.subject.clone(),
            algorithm: name.to_string(),
        }),
        None => Ok(()),
    }
}
