//! Validating a bring-your-own CA bundle the way istiod and Envoy will use it.

use std::fmt;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::*;

/// Facts about a user-supplied CA bundle that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundleInfo {
    /// The signing (intermediate) certificate.
    pub cert: CertInfo,
    /// The chain, in order (starting with the signing certificate).
    pub chain: Vec<CertInfo>,
    /// The root certificate the chain ends at.
    pub root: CertInfo,
    /// The bundle to write into `cacerts`, normalised for istiod.
    pub pem: CaBundlePem,
}

/// A validated bundle re-encoded the way istiod reads it: canonical PEM (Go finds
/// `-----BEGIN` only at the start of a line, so indentation is gone), only the key block in
/// the key (istiod reads the first block), and only the signing certificate in `cert_pem`
/// (any chain given after it is in `cert_chain_pem`). `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundlePem {
    /// `ca-cert.pem`: the signing certificate alone.
    pub cert_pem: String,
    /// `ca-key.pem`: its private key, one PEM block.
    pub private_key_pem: String,
    /// `cert-chain.pem`: the signing certificate first, then up towards the root.
    pub cert_chain_pem: String,
    /// `root-cert.pem`: the root certificate(s).
    pub root_cert_pem: String,
}

impl fmt::Debug for CaBundlePem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundlePem")
            .field("cert_pem", &self.cert_pem)
            .field("private_key_pem", &"[redacted]")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("root_cert_pem", &self.root_cert_pem)
            .finish()
    }
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

/// Validates a bring-your-own CA bundle (`cacerts` inputs) the way istiod loads it and
/// Envoy then verifies workload certificates: the key matches the CA certificate (the first
/// of `cert_pem`), which is a CA valid at `now`; `cert_chain_pem` starts with that
/// certificate, each certificate is signed by the next, and the chain ends at (or is signed
/// by) one of the certificates in `root_cert_pem`; every certificate parses in Go (positive
/// serial) and every one on the path is valid at `now`, signed with SHA-256 or stronger
/// (RSA-PSS with Go's parameters included), within pathlen limits and free of an
/// extendedKeyUsage that would fail Go's or Envoy's purpose checks. Returns the bundle
/// normalised for writing ([`CaBundlePem`]).
pub fn validate_ca_bundle_at(
    cert_pem: &str,
    private_key_pem: &str,
    cert_chain_pem: &str,
    root_cert_pem: &str,
    now: OffsetDateTime,
) -> Result<CaBundleInfo, FieldError> {
    let mut given = parse_certs_pem(cert_pem).map_err(at(Field::CertPem))?;
    let key = parse_private_key_pem(private_key_pem).map_err(at(Field::PrivateKeyPem))?;
    let chain = parse_certs_pem(cert_chain_pem).map_err(at(Field::CertChainPem))?;
    let roots = parse_certs_pem(root_cert_pem).map_err(at(Field::RootCertPem))?;
    for (field, certs) in [
        (Field::CertPem, &given),
        (Field::CertChainPem, &chain),
        (Field::RootCertPem, &roots),
    ] {
        for c in certs {
            c.check_serial_positive().map_err(at(field))?;
        }
    }
    let cert = given.remove(0);

    key.check_matches(&cert).map_err(at(Field::PrivateKeyPem))?;
    cert.check_is_ca().map_err(at(Field::CertPem))?;
    cert.check_valid_at(now).map_err(at(Field::CertPem))?;

    if chain[0].der != cert.der {
        return Err(at(Field::CertChainPem)(PkiError::ChainMustStartWithCert {
            expected: cert.info.subject.clone(),
            found: chain[0].info.subject.clone(),
        }));
    }
    let chain = merge_chain(&cert, given, chain)?;
    let root = verify_path(&chain, &roots, now)?;
    let pem = CaBundlePem {
        cert_pem: cert.to_pem(),
        private_key_pem: key.to_pem(),
        cert_chain_pem: chain.iter().map(Certificate::to_pem).collect(),
        root_cert_pem: roots.iter().map(Certificate::to_pem).collect(),
    };
    Ok(CaBundleInfo {
        cert: cert.info,
        chain: chain.into_iter().map(|c| c.info).collect(),
        root: root.info.clone(),
        pem,
    })
}

/// Folds the certificates that followed the signing certificate in `cert_pem` (a full-chain
/// file, which istiod accepts by reading only the first) into the chain: they become the
/// chain when it holds the signing certificate alone, and must otherwise be its next
/// certificates, since two different chains mean one of the inputs is wrong.
fn merge_chain(
    cert: &Certificate,
    extra: Vec<Certificate>,
    mut chain: Vec<Certificate>,
) -> Result<Vec<Certificate>, FieldError> {
    if extra.is_empty() {
        return Ok(chain);
    }
    if chain.len() == 1 {
        chain.extend(extra);
        return Ok(chain);
    }
    let agrees =
        chain.len() > extra.len() && extra.iter().zip(&chain[1..]).all(|(e, c)| e.der == c.der);
    if agrees {
        Ok(chain)
    } else {
        Err(at(Field::CertPem)(PkiError::ExtraCertificatesDisagree {
            subject: cert.info.subject.clone(),
            extra: extra.len(),
        }))
    }
}

/// Checks the path chain[0] → ... → root and returns the root it ends at.
pub(super) fn verify_path<'r>(
    chain: &[Certificate],
    roots: &'r [Certificate],
    now: OffsetDateTime,
) -> Result<&'r Certificate, FieldError> {
    // Refuse algorithms istiod rejects before looking for the root, so that a refused
    // signature is reported as such rather than as a chain that does not reach a root.
    // Go never checks a root's own signature, so a root included in the chain is exempt.
    for cert in chain
        .iter()
        .filter(|c| !roots.iter().any(|r| r.der == c.der))
    {
        check_signature_algorithm(cert).map_err(at(Field::CertChainPem))?;
    }
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
    // Problems of the signing certificate itself belong to `cert_pem`.
    let field_of = |cert: &Certificate| {
        if cert.der == root.der {
            Field::RootCertPem
        } else if cert.der == chain[0].der {
            Field::CertPem
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
    }

    // Go's remaining rules: validity, pathlen, extendedKeyUsage (with Envoy's stricter one). istiod's own check puts
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
        check_extended_key_usage(cert).map_err(at(field))?;
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
        (OID_RSASSA_PSS, _) => pss_hash(cert)?.verifier(),
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

/// Signatures istiod cannot use: SHA-1 or older, and RSA-PSS with parameters Go refuses.
pub(super) fn check_signature_algorithm(cert: &Certificate) -> Result<(), PkiError> {
    let oid = cert.x509().signature_algorithm.algorithm.to_id_string();
    if let Some((_, name)) = WEAK_SIGNATURE_OIDS.iter().find(|(id, _)| *id == oid) {
        return Err(PkiError::WeakSignature {
            subject: cert.info.subject.clone(),
            algorithm: name.to_string(),
        });
    }
    if oid == OID_RSASSA_PSS {
        pss_hash(&cert.x509()).map_err(|found| PkiError::UnsupportedPssParameters {
            subject: cert.info.subject.clone(),
            found,
        })?;
    }
    Ok(())
}

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";

/// The hash of an RSA-PSS signature that Go's x509 accepts.
#[derive(Debug, Clone, Copy)]
pub(super) enum PssHash {
    Sha256,
    Sha384,
    Sha512,
}

impl PssHash {
    fn from_oid(oid: &str) -> Option<Self> {
        match oid {
            "2.16.840.1.101.3.4.2.1" => Some(PssHash::Sha256),
            "2.16.840.1.101.3.4.2.2" => Some(PssHash::Sha384),
            "2.16.840.1.101.3.4.2.3" => Some(PssHash::Sha512),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            PssHash::Sha256 => "SHA-256",
            PssHash::Sha384 => "SHA-384",
            PssHash::Sha512 => "SHA-512",
        }
    }

    fn len(self) -> u32 {
        match self {
            PssHash::Sha256 => 32,
            PssHash::Sha384 => 48,
            PssHash::Sha512 => 64,
        }
    }

    fn verifier(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as sig;
        // aws-lc verifies PSS with the salt as long as the digest, which is Go's rule too.
        match self {
            PssHash::Sha256 => &sig::RSA_PSS_2048_8192_SHA256,
            PssHash::Sha384 => &sig::RSA_PSS_2048_8192_SHA384,
            PssHash::Sha512 => &sig::RSA_PSS_2048_8192_SHA512,
        }
    }
}

/// The hash of `cert`'s RSA-PSS signature when its parameters are ones Go accepts (a SHA-2
/// hash, MGF1 over the same hash, salt length equal to the hash length, trailer field 1);
/// otherwise a description of what was found, for the error.
pub(super) fn pss_hash(cert: &X509Certificate<'_>) -> Result<PssHash, String> {
    let Ok(SignatureAlgorithm::RSASSA_PSS(params)) =
        SignatureAlgorithm::try_from(&cert.signature_algorithm)
    else {
        return Err("with missing or unreadable parameters".to_string());
    };
    let hash_oid = params.hash_algorithm_oid().to_id_string();
    let Some(hash) = PssHash::from_oid(&hash_oid) else {
        return Err(format!("with hash {hash_oid} (SHA-1 when absent)"));
    };
    let mgf_ok = params
        .mask_gen_algorithm()
        .is_ok_and(|m| m.mgf.to_id_string() == OID_MGF1 && m.hash.to_id_string() == hash_oid);
    if !mgf_ok {
        return Err(format!(
            "with {} but a mask generation other than MGF1 over it",
            hash.name()
        ));
    }
    if params.salt_length() != hash.len() || params.trailer_field() != 1 {
        return Err(format!(
            "with {} and a {}-byte salt (trailer field {})",
            hash.name(),
            params.salt_length(),
            params.trailer_field()
        ));
    }
    Ok(hash)
}

/// A CA's extendedKeyUsage, when present, constrains what it may issue for. Go (istiod)
/// accepts serverAuth or anyExtendedKeyUsage; Envoy (BoringSSL) checks the ssl_server and
/// ssl_client purposes on each certificate of the chain, where anyExtendedKeyUsage counts
/// for neither. mTLS needs both, so only a CA listing serverAuth and clientAuth passes both.
pub(super) fn check_extended_key_usage(cert: &Certificate) -> Result<(), PkiError> {
    let x509 = cert.x509();
    let Ok(Some(eku)) = x509.extended_key_usage() else {
        return Ok(());
    };
    let eku = &eku.value;
    if eku.server_auth && eku.client_auth {
        return Ok(());
    }
    let named = [
        (eku.any, "anyExtendedKeyUsage"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ];
    let mut found: Vec<String> = named
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_string())
        .collect();
    found.extend(eku.other.iter().map(|o| o.to_id_string()));
    Err(PkiError::ForbiddenExtendedKeyUsage {
        subject: cert.info.subject.clone(),
        found: if found.is_empty() {
            "empty".to_string()
        } else {
            found.join(", ")
        },
    })
}

/// Whether `chain` (a signing certificate, then its issuers) is anchored in `roots`: one of its
/// certificates is one of the roots, or was signed by one. What a peer holding `roots` as its
/// trust bundle needs to accept certificates issued under `chain[0]`.
pub fn chain_anchored_in(chain: &[Certificate], roots: &[Certificate]) -> bool {
    chain
        .iter()
        .any(|c| roots.iter().any(|r| r.der == c.der || signs(r, c).is_ok()))
}
