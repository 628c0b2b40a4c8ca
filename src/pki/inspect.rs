//! Parsing certificates and private keys, and describing them.

use std::fmt;

use rcgen::{KeyPair, PublicKeyData};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::*;

// ---------------------------------------------------------------------------------------
// Parsed certificates
// ---------------------------------------------------------------------------------------

/// Human-readable facts about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN, e.g. "O=Istio, CN=Root CA".
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, lowercase hex without leading zeros.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u32>,
    /// keyUsage keyCertSign, or `None` when the certificate has no keyUsage extension.
    pub key_cert_sign: Option<bool>,
    /// Public key description, e.g. "RSA 4096" or "ECDSA P-256".
    pub key_algorithm: String,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// Whether subject equals issuer and the certificate's own key verifies its signature.
    pub self_signed: bool,
}

/// A parsed X.509 certificate (DER plus its facts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub(super) der: Vec<u8>,
    pub(super) info: CertInfo,
}

impl Certificate {
    /// Parses one DER certificate.
    pub fn from_der(der: Vec<u8>) -> Result<Self, PkiError> {
        let info = cert_info(&parse_der(&der)?, &der);
        Ok(Certificate { der, info })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The facts about this certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Canonical PEM (64-column base64, LF line ends), whatever the input's formatting was.
    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    /// Errors unless the certificate is valid at `now`, naming both dates.
    pub fn check_valid_at(&self, now: OffsetDateTime) -> Result<(), PkiError> {
        if now < self.info.not_before {
            return Err(PkiError::NotYetValid {
                subject: self.info.subject.clone(),
                not_before: format_rfc3339(self.info.not_before),
                now: format_rfc3339(now),
            });
        }
        if now > self.info.not_after {
            return Err(PkiError::Expired {
                subject: self.info.subject.clone(),
                not_after: format_rfc3339(self.info.not_after),
                now: format_rfc3339(now),
            });
        }
        Ok(())
    }

    /// Errors unless the certificate may sign certificates (CA:true, keyCertSign if keyUsage).
    pub fn check_is_ca(&self) -> Result<(), PkiError> {
        let not_ca = |reason: &str| PkiError::NotCa {
            subject: self.info.subject.clone(),
            reason: reason.to_string(),
        };
        if !self.info.is_ca {
            return Err(not_ca("basicConstraints CA:TRUE is missing"));
        }
        if self.info.key_cert_sign == Some(false) {
            return Err(not_ca("its keyUsage does not include keyCertSign"));
        }
        Ok(())
    }

    /// Errors if the serial number is negative: Go 1.23 and later refuse to parse such a
    /// certificate, so istiod would fail to load it (zero is still accepted).
    pub fn check_serial_positive(&self) -> Result<(), PkiError> {
        match self.x509().raw_serial().first() {
            Some(first) if first & 0x80 != 0 => Err(PkiError::NegativeSerial {
                subject: self.info.subject.clone(),
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn x509(&self) -> X509Certificate<'_> {
        parse_der(&self.der).expect("DER was parsed successfully when the Certificate was built")
    }
}

pub(super) fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| PkiError::InvalidCertificate {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(PkiError::InvalidCertificate {
            reason: "trailing data after the certificate".to_string(),
        });
    }
    Ok(cert)
}

pub(super) fn cert_info(x509: &X509Certificate<'_>, der: &[u8]) -> CertInfo {
    // Malformed extensions are reported as "absent"; a CA check then fails with a clear reason.
    let bc = x509.basic_constraints().ok().flatten().map(|e| e.value);
    let dns_names = x509
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let serial = hex(trim_leading_zeros(x509.raw_serial()));
    CertInfo {
        subject: name_string(x509.subject()),
        issuer: name_string(x509.issuer()),
        serial: if serial.is_empty() {
            "0".into()
        } else {
            serial
        },
        not_before: x509.validity().not_before.to_datetime(),
        not_after: x509.validity().not_after.to_datetime(),
        is_ca: bc.is_some_and(|b| b.ca),
        path_len: bc.and_then(|b| b.path_len_constraint),
        key_cert_sign: x509
            .key_usage()
            .ok()
            .flatten()
            .map(|ku| ku.value.key_cert_sign()),
        key_algorithm: describe_public_key(x509.public_key()),
        dns_names,
        fingerprint_sha256: fingerprint_sha256(der),
        self_signed: x509.subject().as_raw() == x509.issuer().as_raw()
            && verify_signature(x509, x509.public_key()).is_ok(),
    }
}

pub(super) fn name_string(name: &X509Name<'_>) -> String {
    let s = name.to_string();
    if s.is_empty() {
        "(empty subject)".to_string()
    } else {
        s
    }
}

pub(super) fn describe_public_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}", bit_length(rsa.modulus)),
            _ => "RSA (unreadable key)".to_string(),
        }
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => "ECDSA P-256".to_string(),
            Some(c) if c == OID_NIST_EC_P384 => "ECDSA P-384".to_string(),
            Some(c) if c == OID_NIST_EC_P521 => "ECDSA P-521".to_string(),
            Some(c) => format!("ECDSA (curve {})", c.to_id_string()),
            None => "ECDSA (unknown curve)".to_string(),
        }
    } else if *alg == OID_SIG_ED25519 {
        "Ed25519".to_string()
    } else {
        format!("unknown key type ({})", alg.to_id_string())
    }
}

pub(super) fn bit_length(big_endian: &[u8]) -> usize {
    let bytes = trim_leading_zeros(big_endian);
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

pub(super) fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Parses exactly one PEM certificate.
pub fn parse_cert_pem(pem: &str) -> Result<Certificate, PkiError> {
    let mut certs = parse_certs_pem(pem)?;
    if certs.len() > 1 {
        return Err(PkiError::TooManyCertificates { count: certs.len() });
    }
    Ok(certs.remove(0))
}

/// Parses one or more concatenated PEM certificates, in order.
pub fn parse_certs_pem(pem: &str) -> Result<Vec<Certificate>, PkiError> {
    let blocks = pem_blocks(pem, "CERTIFICATE")?;
    blocks
        .into_iter()
        .map(|block| {
            if block.label != "CERTIFICATE" {
                return Err(PkiError::UnexpectedPemLabel {
                    expected: "CERTIFICATE",
                    found: block.label,
                });
            }
            Certificate::from_der(block.der)
        })
        .collect()
}

/// Parses one PEM certificate and describes it.
pub fn inspect_cert(pem: &str) -> Result<CertInfo, PkiError> {
    Ok(parse_cert_pem(pem)?.info)
}

// ---------------------------------------------------------------------------------------
// Private keys
// ---------------------------------------------------------------------------------------

/// A parsed RSA or ECDSA private key; its `Debug` output never shows the key.
pub struct PrivateKey {
    pub(super) key: KeyPair,
    pub(super) description: String,
    /// The key block alone, re-encoded: what `ca-key.pem` must hold.
    pub(super) pem: String,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.description)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl PrivateKey {
    /// Key description, e.g. "RSA 4096" or "ECDSA P-384".
    pub fn algorithm(&self) -> &str {
        &self.description
    }

    /// The key as canonical PEM: only the key block (istiod reads only the first block of
    /// `ca-key.pem`), with its original label, unindented.
    pub fn to_pem(&self) -> String {
        self.pem.clone()
    }

    /// Errors unless this is the private key of `cert` (compares the public keys).
    pub fn check_matches(&self, cert: &Certificate) -> Result<(), PkiError> {
        let x509 = cert.x509();
        let spki = x509.public_key();
        let ours = self.key.subject_public_key_info();
        let same_alg = SubjectPublicKeyInfo::from_der(&ours)
            .map(|(_, mine)| mine.algorithm.algorithm == spki.algorithm.algorithm)
            .unwrap_or(false);
        if same_alg && self.key.public_key_raw() == spki.subject_public_key.data.as_ref() {
            Ok(())
        } else {
            Err(PkiError::KeyMismatch {
                subject: cert.info.subject.clone(),
            })
        }
    }
}

/// Parses an unencrypted PKCS#8, PKCS#1 or SEC1 PEM private key (RSA or ECDSA).
pub fn parse_private_key_pem(pem: &str) -> Result<PrivateKey, PkiError> {
    // openssl's `ecparam -genkey` emits an "EC PARAMETERS" block before the key: skip it
    // here, and callers write only the key block ([`PrivateKey::to_pem`]), since istiod
    // reads only the first block of `ca-key.pem`.
    let keys: Vec<PemBlock> = pem_blocks(pem, "PRIVATE KEY")?
        .into_iter()
        .filter(|b| b.label != "EC PARAMETERS")
        .collect();
    let block = match keys.as_slice() {
        [one] => one,
        [] => {
            return Err(PkiError::NoPem {
                expected: "PRIVATE KEY",
                hint: "",
            })
        }
        many => return Err(PkiError::TooManyKeys { count: many.len() }),
    };
    match block.label.as_str() {
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => return Err(PkiError::EncryptedKey),
        other => {
            return Err(PkiError::UnexpectedPemLabel {
                expected: "PRIVATE KEY",
                found: other.to_string(),
            })
        }
    }
    // rcgen (aws-lc-rs backend) recognises PKCS#8, PKCS#1 and SEC1 DER by structure.
    let key = KeyPair::try_from(block.der.as_slice()).map_err(|_| PkiError::InvalidPrivateKey)?;
    let spki_der = key.subject_public_key_info();
    let description = SubjectPublicKeyInfo::from_der(&spki_der)
        .map(|(_, spki)| describe_public_key(&spki))
        .map_err(|_| PkiError::InvalidPrivateKey)?;
    let supported = match description.strip_prefix("RSA ") {
        Some(bits) => bits.parse::<usize>().is_ok_and(|b| b >= MIN_RSA_BITS),
        // P-521 would load, but its signatures cannot be verified by our chain checks.
        None => description == "ECDSA P-256" || description == "ECDSA P-384",
    };
    if !supported {
        return Err(PkiError::UnsupportedKeyType { found: description });
    }
    let pem = pem_encode(&block.label, &block.der);
    Ok(PrivateKey {
        key,
        description,
        pem,
    })
}
