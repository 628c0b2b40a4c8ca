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
//! - `mesh_cluster` with `ca` (bring your own): [`validate_ca_bundle`].

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PublicKeyData, RsaKeySize, SanType, SerialNumber,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

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

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong in this module; messages are safe to show to end users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// `key_algorithm` is not one of the supported names.
    #[error("unknown key algorithm {value:?}: expected one of \"RSA\", \"ECDSA\"")]
    UnknownKeyAlgorithm {
        /// The rejected value.
        value: String,
    },
    /// `rsa_bits` is not a supported size.
    #[error("unsupported RSA key size {bits}: expected one of 2048, 3072, 4096")]
    UnsupportedRsaBits {
        /// The rejected value.
        bits: i64,
    },
    /// `ecdsa_curve` is not one of the supported names.
    #[error("unknown ECDSA curve {value:?}: expected one of \"P256\", \"P384\"")]
    UnknownEcdsaCurve {
        /// The rejected value.
        value: String,
    },
    /// A certificate setting (name, validity, SAN) is unusable.
    #[error("invalid certificate settings: {0}")]
    InvalidSpec(String),
    /// The input holds no PEM block at all.
    #[error("no PEM data found: expected a \"-----BEGIN {expected}-----\" block{hint}")]
    NoPem {
        /// The PEM label that was expected.
        expected: &'static str,
        /// Extra advice for a common mistake (may be empty).
        hint: &'static str,
    },
    /// The PEM framing or its base64 is broken.
    #[error("malformed PEM: {0}")]
    MalformedPem(String),
    /// A PEM block of the wrong kind was given (e.g. a key where a certificate belongs).
    #[error("expected a PEM \"{expected}\" block, found \"{found}\"")]
    UnexpectedPemLabel {
        /// The PEM label that was expected.
        expected: &'static str,
        /// The PEM label that was found.
        found: String,
    },
    /// Several certificates were given where exactly one is expected.
    #[error("expected exactly one certificate, found {count}")]
    TooManyCertificates {
        /// How many certificates were found.
        count: usize,
    },
    /// Several private keys were given where exactly one is expected.
    #[error("expected exactly one private key, found {count}")]
    TooManyKeys {
        /// How many keys were found.
        count: usize,
    },
    /// The DER inside a CERTIFICATE block is not an X.509 certificate.
    #[error("not a valid X.509 certificate: {reason}")]
    InvalidCertificate {
        /// What the parser objected to.
        reason: String,
    },
    /// The private key is password-protected.
    #[error(
        "encrypted private keys are not supported: decrypt it first \
         (e.g. `openssl pkey -in key.pem -out key-decrypted.pem`)"
    )]
    EncryptedKey,
    /// The private key could not be parsed.
    #[error(
        "not a valid or not a supported private key: expected an unencrypted PKCS#8 \
         (\"PRIVATE KEY\"), PKCS#1 (\"RSA PRIVATE KEY\") or SEC1 (\"EC PRIVATE KEY\") key, \
         RSA of 2048 bits or more or ECDSA on P-256 or P-384"
    )]
    InvalidPrivateKey,
    /// The key (or certificate key) is of a type istiod cannot use for a CA.
    #[error(
        "unsupported CA key type {found}: use RSA (2048 bits or more) or ECDSA (P-256, P-384)"
    )]
    UnsupportedKeyType {
        /// Description of the key, e.g. "Ed25519" or "RSA 1024".
        found: String,
    },
    /// The private key is not the key of the certificate.
    #[error(
        "the private key does not match the certificate {subject:?} (their public keys differ)"
    )]
    KeyMismatch {
        /// Subject of the certificate.
        subject: String,
    },
    /// The certificate cannot sign certificates.
    #[error("certificate {subject:?} is not a CA certificate: {reason}")]
    NotCa {
        /// Subject of the certificate.
        subject: String,
        /// Which constraint is missing.
        reason: String,
    },
    /// The certificate's validity starts in the future.
    #[error(
        "certificate {subject:?} is not valid yet: it is valid from {not_before} (now is {now})"
    )]
    NotYetValid {
        /// Subject of the certificate.
        subject: String,
        /// Start of validity, RFC 3339.
        not_before: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The certificate's validity has ended.
    #[error("certificate {subject:?} expired at {not_after} (now is {now})")]
    Expired {
        /// Subject of the certificate.
        subject: String,
        /// End of validity, RFC 3339.
        not_after: String,
        /// The time of the check, RFC 3339.
        now: String,
    },
    /// The chain does not begin with the signing certificate.
    #[error(
        "the certificate chain must start with the CA certificate itself ({expected:?}), \
         but its first certificate is {found:?}"
    )]
    ChainMustStartWithCert {
        /// Subject of the CA certificate.
        expected: String,
        /// Subject of the first certificate of the chain.
        found: String,
    },
    /// Two consecutive certificates of the chain are not issuer and issued.
    #[error(
        "certificate #{position} of the chain ({subject:?}) is not signed by the certificate \
         after it ({next:?}): {reason}"
    )]
    ChainLinkBroken {
        /// 1-based position in the chain.
        position: usize,
        /// Subject of the certificate.
        subject: String,
        /// Subject of the next certificate.
        next: String,
        /// Why the link fails.
        reason: String,
    },
    /// The chain's last certificate is neither a root nor signed by one.
    #[error(
        "the certificate chain ends with {subject:?} (issued by {issuer:?}), which is neither \
         one of the root certificates nor signed by one of them (roots: {roots})"
    )]
    ChainNotRooted {
        /// Subject of the last certificate of the chain.
        subject: String,
        /// Its issuer.
        issuer: String,
        /// Subjects of the given roots, comma separated.
        roots: String,
    },
    /// A certificate is signed with an algorithm istiod rejects.
    #[error("certificate {subject:?} is signed with {algorithm}, which istiod rejects: re-issue it with SHA-256 or stronger")]
    WeakSignature {
        /// Subject of the certificate.
        subject: String,
        /// Name of the signature algorithm.
        algorithm: String,
    },
    /// A CA's pathLenConstraint forbids the chain below it.
    #[error("certificate {subject:?} has pathlen:{path_len}, which forbids the {below} CA certificate(s) below it")]
    PathLenExceeded {
        /// Subject of the constrained CA.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u32,
        /// How many CA certificates sit below it.
        below: usize,
    },
    /// A CA carries an extendedKeyUsage that Go's verification rejects.
    #[error(
        "certificate {subject:?} has an extendedKeyUsage without serverAuth, so istiod's \
         chain verification (Go x509, default options) rejects it; CA certificates should \
         carry no extendedKeyUsage"
    )]
    ForbiddenExtendedKeyUsage {
        /// Subject of the certificate.
        subject: String,
    },
    /// The issuer's subject cannot be copied byte-for-byte into a child certificate.
    #[error(
        "the issuing certificate's subject {subject:?} uses a multi-valued or repeated \
         attribute, or an unsupported string type, which cannot be reproduced exactly as the \
         issuer name of new certificates"
    )]
    UnsupportedIssuerName {
        /// Subject of the issuing certificate.
        subject: String,
    },
    /// Key or certificate generation failed in the crypto library.
    #[error("could not generate the certificate: {0}")]
    Generation(String),
    /// A timestamp is not RFC 3339.
    #[error("invalid timestamp {value:?}: expected RFC 3339, e.g. 2026-11-23T18:00:00Z")]
    InvalidTimestamp {
        /// The rejected value.
        value: String,
    },
}

/// Which input of a CA bundle an error belongs to, so the caller can point at the attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The CA (signing) certificate.
    CertPem,
    /// The CA's private key.
    PrivateKeyPem,
    /// The chain from the signing certificate up to the root.
    CertChainPem,
    /// The trust anchor(s).
    RootCertPem,
}

impl Field {
    /// Conventional attribute name of this input (`cert_pem`, `private_key_pem`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Field::CertPem => "cert_pem",
            Field::PrivateKeyPem => "private_key_pem",
            Field::CertChainPem => "cert_chain_pem",
            Field::RootCertPem => "root_cert_pem",
        }
    }
}

/// A [`PkiError`] tagged with the input it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct FieldError {
    /// The input at fault.
    pub field: Field,
    /// What is wrong with it.
    pub error: PkiError,
}

fn at(field: Field) -> impl Fn(PkiError) -> FieldError {
    move |error| FieldError { field, error }
}

// ---------------------------------------------------------------------------------------
// Key algorithms
// ---------------------------------------------------------------------------------------

/// RSA modulus sizes offered for generated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaBits {
    /// 2048-bit modulus.
    B2048,
    /// 3072-bit modulus.
    B3072,
    /// 4096-bit modulus (Istio's tooling default).
    B4096,
}

impl RsaBits {
    /// Parses a bit count (2048, 3072 or 4096).
    pub fn from_bits(bits: i64) -> Result<Self, PkiError> {
        match bits {
            2048 => Ok(RsaBits::B2048),
            3072 => Ok(RsaBits::B3072),
            4096 => Ok(RsaBits::B4096),
            _ => Err(PkiError::UnsupportedRsaBits { bits }),
        }
    }

    /// The modulus size in bits.
    pub fn bits(self) -> u32 {
        match self {
            RsaBits::B2048 => 2048,
            RsaBits::B3072 => 3072,
            RsaBits::B4096 => 4096,
        }
    }
}

/// ECDSA curves offered for generated keys (the ones istiod mirrors for its own certs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdsaCurve {
    /// NIST P-256, signed with SHA-256.
    P256,
    /// NIST P-384, signed with SHA-384.
    P384,
}

impl EcdsaCurve {
    /// Parses "P256" or "P384" (the spelling used by hashicorp/tls).
    pub fn parse(value: &str) -> Result<Self, PkiError> {
        match value {
            "P256" => Ok(EcdsaCurve::P256),
            "P384" => Ok(EcdsaCurve::P384),
            _ => Err(PkiError::UnknownEcdsaCurve {
                value: value.to_string(),
            }),
        }
    }

    /// The schema spelling ("P256" / "P384").
    pub fn as_str(self) -> &'static str {
        match self {
            EcdsaCurve::P256 => "P256",
            EcdsaCurve::P384 => "P384",
        }
    }
}

/// The family names accepted for `key_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithmName {
    /// "RSA".
    Rsa,
    /// "ECDSA".
    Ecdsa,
}

impl KeyAlgorithmName {
    /// Parses "RSA" or "ECDSA" (exact spelling, as hashicorp/tls).
    pub fn parse(value: &str) -> Result<Self, PkiError> {
        match value {
            "RSA" => Ok(KeyAlgorithmName::Rsa),
            "ECDSA" => Ok(KeyAlgorithmName::Ecdsa),
            _ => Err(PkiError::UnknownKeyAlgorithm {
                value: value.to_string(),
            }),
        }
    }
}

/// Key type and size for a generated CA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA, signed with PKCS#1 v1.5 SHA-256.
    Rsa(RsaBits),
    /// ECDSA, signed with SHA-256 (P-256) or SHA-384 (P-384).
    Ecdsa(EcdsaCurve),
}

impl KeyAlgorithm {
    /// Istio's tooling default: RSA 4096.
    pub const ISTIO_DEFAULT: KeyAlgorithm = KeyAlgorithm::Rsa(RsaBits::B4096);

    /// Builds from schema values; `rsa_bits` defaults to 4096 and `ecdsa_curve` to P256,
    /// and the one that does not apply to the chosen family is ignored.
    pub fn parse(
        algorithm: &str,
        rsa_bits: Option<i64>,
        ecdsa_curve: Option<&str>,
    ) -> Result<Self, PkiError> {
        match KeyAlgorithmName::parse(algorithm)? {
            KeyAlgorithmName::Rsa => Ok(KeyAlgorithm::Rsa(RsaBits::from_bits(
                rsa_bits.unwrap_or(4096),
            )?)),
            KeyAlgorithmName::Ecdsa => Ok(KeyAlgorithm::Ecdsa(EcdsaCurve::parse(
                ecdsa_curve.unwrap_or("P256"),
            )?)),
        }
    }

    fn generate_key(self) -> Result<KeyPair, PkiError> {
        let key = match self {
            KeyAlgorithm::Rsa(bits) => {
                let size = match bits {
                    RsaBits::B2048 => RsaKeySize::_2048,
                    RsaBits::B3072 => RsaKeySize::_3072,
                    RsaBits::B4096 => RsaKeySize::_4096,
                };
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
            }
            KeyAlgorithm::Ecdsa(EcdsaCurve::P256) => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            }
            KeyAlgorithm::Ecdsa(EcdsaCurve::P384) => {
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
            }
        };
        key.map_err(|e| PkiError::Generation(format!("key generation failed: {e}")))
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::Rsa(bits) => write!(f, "RSA {}", bits.bits()),
            KeyAlgorithm::Ecdsa(EcdsaCurve::P256) => f.write_str("ECDSA P-256"),
            KeyAlgorithm::Ecdsa(EcdsaCurve::P384) => f.write_str("ECDSA P-384"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// What to generate
// ---------------------------------------------------------------------------------------

/// Subject, key and constraints of a CA certificate to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O; empty means no O attribute.
    pub organization: String,
    /// Subject L (Istio puts the cluster name here); `None` means no L attribute.
    pub locality: Option<String>,
    /// Key type and size.
    pub key_algorithm: KeyAlgorithm,
    /// Requested validity in hours (an intermediate is clipped to its issuer's validity).
    pub validity_hours: i64,
    /// basicConstraints pathLenConstraint; `None` leaves the path unconstrained.
    pub path_len: Option<u8>,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
}

impl CaSpec {
    /// Istio's root defaults: O=Istio, CN=Root CA, RSA 4096, 87600 h, no pathlen, no SAN.
    pub fn istio_root() -> Self {
        CaSpec {
            common_name: "Root CA".to_string(),
            organization: "Istio".to_string(),
            locality: None,
            key_algorithm: KeyAlgorithm::ISTIO_DEFAULT,
            validity_hours: 87600,
            path_len: None,
            dns_names: Vec::new(),
        }
    }

    /// Istio's per-cluster intermediate defaults (`tools/certs` `<cluster>-cacerts`):
    /// O=Istio, CN=Intermediate CA, `L=<cluster>`, RSA 4096, 87600 h, pathlen 0,
    /// SAN DNS `istiod.<namespace>.svc`.
    pub fn istio_intermediate(cluster_name: &str, namespace: &str) -> Self {
        CaSpec {
            common_name: "Intermediate CA".to_string(),
            organization: "Istio".to_string(),
            locality: Some(cluster_name.to_string()),
            key_algorithm: KeyAlgorithm::ISTIO_DEFAULT,
            validity_hours: 87600,
            path_len: Some(0),
            dns_names: vec![format!("istiod.{namespace}.svc")],
        }
    }

    fn distinguished_name(&self) -> Result<DistinguishedName, PkiError> {
        let check = |what: &str, value: &str| {
            if value.is_empty() || value.chars().count() > MAX_NAME_LEN {
                Err(PkiError::InvalidSpec(format!(
                    "{what} must be 1 to {MAX_NAME_LEN} characters long"
                )))
            } else {
                Ok(())
            }
        };
        let mut dn = DistinguishedName::new();
        // Same attribute order as Istio's openssl configs: O, CN, L.
        if !self.organization.is_empty() {
            check("organization", &self.organization)?;
            dn.push(DnType::OrganizationName, self.organization.as_str());
        }
        check("common_name", &self.common_name)?;
        dn.push(DnType::CommonName, self.common_name.as_str());
        if let Some(locality) = &self.locality {
            check("locality", locality)?;
            dn.push(DnType::LocalityName, locality.as_str());
        }
        Ok(dn)
    }

    /// CA parameters valid from `now - BACKDATE` for `validity_hours`, clipped to `max_not_after`.
    fn params(
        &self,
        now: OffsetDateTime,
        max_not_after: Option<OffsetDateTime>,
    ) -> Result<CertificateParams, PkiError> {
        if self.validity_hours <= 0 {
            return Err(PkiError::InvalidSpec(format!(
                "validity must be a positive number of hours, got {}",
                self.validity_hours
            )));
        }
        let not_before = truncate_to_seconds(now) - BACKDATE;
        // Bounded first so Duration::hours cannot overflow; the year check does the rest.
        let mut not_after = Some(self.validity_hours)
            .filter(|h| *h <= 24 * 366 * 10_000)
            .and_then(|h| not_before.checked_add(Duration::hours(h)))
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| {
                PkiError::InvalidSpec(format!(
                    "a validity of {} hours ends after the year 9999",
                    self.validity_hours
                ))
            })?;
        // A CA cannot be trusted past its issuer's end: clip rather than issue a
        // certificate whose advertised not_after is a lie.
        if let Some(max) = max_not_after {
            not_after = not_after.min(max);
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = self.distinguished_name()?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::Ca(match self.path_len {
            Some(n) => BasicConstraints::Constrained(n),
            None => BasicConstraints::Unconstrained,
        });
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        // No extendedKeyUsage: Go's default verification would demand serverAuth in it.
        params.extended_key_usages = Vec::new();
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.subject_alt_names = self
            .dns_names
            .iter()
            .map(|name| {
                Ia5String::try_from(name.as_str())
                    .map(SanType::DnsName)
                    .map_err(|_| PkiError::InvalidSpec(format!("{name:?} is not a valid DNS name")))
            })
            .collect::<Result<_, _>>()?;
        Ok(params)
    }
}

/// A random positive 128-bit serial (RFC 5280 asks for unpredictable, at most 20 octets).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| PkiError::Generation("the random number generator failed".to_string()))?;
    // Clear the sign bit (serials must be positive) and set the next one so the DER
    // encoding always has the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

// ---------------------------------------------------------------------------------------
// Generated output
// ---------------------------------------------------------------------------------------

/// A freshly generated CA: certificate, key and the facts Terraform stores.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCa {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, unencrypted PKCS#8 PEM ("PRIVATE KEY"), which istiod accepts.
    pub private_key_pem: String,
    /// Start of validity (as written in the certificate).
    pub not_before: OffsetDateTime,
    /// End of validity (as written in the certificate).
    pub not_after: OffsetDateTime,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub fingerprint_sha256: String,
}

impl fmt::Debug for IssuedCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCa")
            .field("cert_pem", &self.cert_pem)
            .field("private_key_pem", &"[redacted]")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint_sha256", &self.fingerprint_sha256)
            .finish()
    }
}

impl IssuedCa {
    fn new(der: &[u8], key: &KeyPair) -> Result<Self, PkiError> {
        let cert = Certificate::from_der(der.to_vec())?;
        Ok(IssuedCa {
            cert_pem: cert.to_pem(),
            private_key_pem: key.serialize_pem(),
            not_before: cert.info.not_before,
            not_after: cert.info.not_after,
            fingerprint_sha256: cert.info.fingerprint_sha256.clone(),
        })
    }

    /// Loads this CA back as an issuer (for signing intermediates below it).
    pub fn signer(&self) -> Result<CaSigner, FieldError> {
        CaSigner::from_pem(&self.cert_pem, &self.private_key_pem)
    }
}

/// Generates a self-signed root CA valid from now (minus [`BACKDATE`]).
pub fn generate_root(spec: &CaSpec) -> Result<IssuedCa, PkiError> {
    generate_root_at(spec, OffsetDateTime::now_utc())
}

/// Generates a self-signed root CA as if the time were `now` (tests, reproducible callers).
pub fn generate_root_at(spec: &CaSpec, now: OffsetDateTime) -> Result<IssuedCa, PkiError> {
    let params = spec.params(now, None)?;
    let key = spec.key_algorithm.generate_key()?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| PkiError::Generation(e.to_string()))?;
    IssuedCa::new(cert.der(), &key)
}

/// Issues an intermediate CA signed by `issuer`, valid from now (minus [`BACKDATE`]).
pub fn issue_intermediate(issuer: &CaSigner, spec: &CaSpec) -> Result<IssuedCa, PkiError> {
    issue_intermediate_at(issuer, spec, OffsetDateTime::now_utc())
}

/// Issues an intermediate CA signed by `issuer` as if the time were `now`.
///
/// The intermediate's not_after is clipped to the issuer's: a chain is only as valid as its
/// shortest-lived link, so promising more would make `not_after` (and renewal) misleading.
pub fn issue_intermediate_at(
    issuer: &CaSigner,
    spec: &CaSpec,
    now: OffsetDateTime,
) -> Result<IssuedCa, PkiError> {
    let issuer_info = &issuer.cert.info;
    issuer.cert.check_valid_at(now)?;
    // The new CA and every CA it may sign must fit under the issuer's pathlen.
    match (issuer_info.path_len, spec.path_len) {
        (Some(limit), None) => {
            return Err(PkiError::InvalidSpec(format!(
                "the issuing CA {:?} has pathlen:{limit}, so the new CA needs a path length \
                 below {limit}",
                issuer_info.subject
            )))
        }
        (Some(limit), Some(n)) if u32::from(n) >= limit => {
            return Err(PkiError::PathLenExceeded {
                subject: issuer_info.subject.clone(),
                path_len: limit,
                below: usize::from(n) + 1,
            })
        }
        _ => {}
    }

    let mut params = spec.params(now, Some(issuer_info.not_after))?;
    // Nor can it be valid before its issuer.
    params.not_before = params.not_before.max(issuer_info.not_before);
    params.use_authority_key_identifier_extension = true;
    let key = spec.key_algorithm.generate_key()?;
    let cert = params
        .signed_by(&key, &issuer.rcgen_issuer())
        .map_err(|e| PkiError::Generation(e.to_string()))?;

    // Go matches issuer to parent by raw bytes: make sure we reproduced the name exactly,
    // and that the signature checks out, before handing the certificate out.
    let der = cert.der().to_vec();
    let child = parse_der(&der)?;
    let parent = issuer.cert.x509();
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return Err(PkiError::UnsupportedIssuerName {
            subject: issuer_info.subject.clone(),
        });
    }
    verify_signature(&child, parent.public_key()).map_err(|reason| {
        PkiError::Generation(format!(
            "the new certificate's signature is wrong: {reason}"
        ))
    })?;
    IssuedCa::new(&der, &key)
}

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
    der: Vec<u8>,
    info: CertInfo,
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

    fn x509(&self) -> X509Certificate<'_> {
        parse_der(&self.der).expect("DER was parsed successfully when the Certificate was built")
    }
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
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

fn cert_info(x509: &X509Certificate<'_>, der: &[u8]) -> CertInfo {
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

fn name_string(name: &X509Name<'_>) -> String {
    let s = name.to_string();
    if s.is_empty() {
        "(empty subject)".to_string()
    } else {
        s
    }
}

fn describe_public_key(spki: &SubjectPublicKeyInfo<'_>) -> String {
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

fn bit_length(big_endian: &[u8]) -> usize {
    let bytes = trim_leading_zeros(big_endian);
    match bytes.first() {
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
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
    key: KeyPair,
    description: String,
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
    // openssl's `ecparam -genkey` emits an "EC PARAMETERS" block before the key: skip it.
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
    Ok(PrivateKey { key, description })
}

// ---------------------------------------------------------------------------------------
// Issuers and user-supplied CA bundles
// ---------------------------------------------------------------------------------------

/// A CA certificate with its private key, checked and ready to sign intermediates.
pub struct CaSigner {
    cert: Certificate,
    key: PrivateKey,
    /// The issuer name rebuilt for rcgen; checked to re-encode to the exact same bytes.
    name: DistinguishedName,
    key_id: KeyIdMethod,
}

impl fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaSigner")
            .field("cert", &self.cert.info)
            .field("key", &self.key)
            .finish()
    }
}

impl CaSigner {
    /// Loads and checks a CA (cert + key) as of now; see [`CaSigner::from_pem_at`].
    pub fn from_pem(cert_pem: &str, private_key_pem: &str) -> Result<Self, FieldError> {
        Self::from_pem_at(cert_pem, private_key_pem, OffsetDateTime::now_utc())
    }

    /// Loads a CA: exactly one certificate, a supported key matching it, CA:true with
    /// keyCertSign, valid at `now`, and able to have an intermediate CA below it.
    pub fn from_pem_at(
        cert_pem: &str,
        private_key_pem: &str,
        now: OffsetDateTime,
    ) -> Result<Self, FieldError> {
        let cert = parse_cert_pem(cert_pem).map_err(at(Field::CertPem))?;
        let key = parse_private_key_pem(private_key_pem).map_err(at(Field::PrivateKeyPem))?;
        key.check_matches(&cert).map_err(at(Field::PrivateKeyPem))?;
        cert.check_is_ca().map_err(at(Field::CertPem))?;
        cert.check_valid_at(now).map_err(at(Field::CertPem))?;
        if cert.info.path_len == Some(0) {
            return Err(at(Field::CertPem)(PkiError::PathLenExceeded {
                subject: cert.info.subject.clone(),
                path_len: 0,
                below: 1,
            }));
        }
        let (name, key_id) = {
            let x509 = cert.x509();
            let name = rcgen_name(x509.subject()).map_err(at(Field::CertPem))?;
            // The child's authorityKeyIdentifier must equal the issuer's subjectKeyIdentifier
            // (Go skips a parent whose SKI differs), whatever method the issuer used.
            let key_id = x509
                .iter_extensions()
                .find_map(|ext| match ext.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                        Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                    }
                    _ => None,
                })
                .unwrap_or(KeyIdMethod::Sha256);
            (name, key_id)
        };
        Ok(CaSigner {
            cert,
            key,
            name,
            key_id,
        })
    }

    /// The CA certificate.
    pub fn cert(&self) -> &Certificate {
        &self.cert
    }

    /// The CA certificate as canonical PEM (use it for `root-cert.pem` / chains).
    pub fn cert_pem(&self) -> String {
        self.cert.to_pem()
    }

    fn rcgen_issuer(&self) -> rcgen::Issuer<'static, &KeyPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name = self.name.clone();
        params.key_identifier_method = self.key_id.clone();
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        rcgen::Issuer::new(params, &self.key.key)
    }
}

/// Rebuilds a parsed name for rcgen, keeping each attribute's string type so the issued
/// certificate's issuer field encodes to the same bytes as the parent's subject.
fn rcgen_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    let unsupported = || PkiError::UnsupportedIssuerName {
        subject: name_string(name),
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported()); // multi-valued RDN
        };
        let oid: Vec<u64> = attr.attr_type().iter().ok_or_else(unsupported)?.collect();
        let ty = DnType::from_oid(&oid);
        if dn.get(&ty).is_some() {
            return Err(unsupported()); // rcgen keeps one value per attribute type
        }
        let value = attr.attr_value();
        let text = || std::str::from_utf8(value.data).map_err(|_| unsupported());
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => DnValue::PrintableString(
                PrintableString::try_from(text()?).map_err(|_| unsupported())?,
            ),
            Tag::Ia5String => {
                DnValue::Ia5String(Ia5String::try_from(text()?).map_err(|_| unsupported())?)
            }
            Tag::T61String => {
                DnValue::TeletexString(TeletexString::try_from(text()?).map_err(|_| unsupported())?)
            }
            Tag::BmpString => DnValue::BmpString(
                BmpString::from_utf16be(value.data.to_vec()).map_err(|_| unsupported())?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                UniversalString::from_utf32be(value.data.to_vec()).map_err(|_| unsupported())?,
            ),
            _ => return Err(unsupported()),
        };
        dn.push(ty, dn_value);
    }
    Ok(dn)
}

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
fn verify_path<'r>(
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
fn signs(parent: &Certificate, child: &Certificate) -> Result<(), String> {
    let (p, c) = (parent.x509(), child.x509());
    if c.issuer().as_raw() != p.subject().as_raw() {
        return Err(format!("it names {:?} as its issuer", child.info.issuer));
    }
    verify_signature(&c, p.public_key())
}

/// Verifies `cert`'s signature with `signer`'s public key using aws-lc-rs directly (no
/// dependency on x509-parser's optional verify features). The error is a user-facing reason.
fn verify_signature(
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

fn reject_weak_signature(cert: &Certificate) -> Result<(), PkiError> {
    let oid = cert.x509().signature_algorithm.algorithm.to_id_string();
    match WEAK_SIGNATURE_OIDS.iter().find(|(id, _)| *id == oid) {
        Some((_, name)) => Err(PkiError::WeakSignature {
            subject: cert.info.subject.clone(),
            algorithm: name.to_string(),
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// PEM, fingerprints, timestamps
// ---------------------------------------------------------------------------------------

struct PemBlock {
    label: String,
    der: Vec<u8>,
}

/// Splits PEM text into blocks. Tolerates text around blocks, CRLF and indentation (an
/// indented heredoc), which stricter parsers reject; never echoes the input in errors.
fn pem_blocks(input: &str, expected: &'static str) -> Result<Vec<PemBlock>, PkiError> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None; // (label, base64 so far)
    for line in input.lines().map(str::trim) {
        match &mut open {
            None => {
                if let Some(label) = pem_marker(line, "BEGIN") {
                    open = Some((label.to_string(), String::new()));
                }
            }
            Some((label, body)) => {
                if let Some(end) = pem_marker(line, "END") {
                    if end != label {
                        return Err(PkiError::MalformedPem(format!(
                            "block \"{label}\" ends with an END \"{end}\" line"
                        )));
                    }
                    let der = BASE64.decode(body.as_bytes()).map_err(|_| {
                        PkiError::MalformedPem(format!(
                            "the base64 content of the \"{label}\" block is invalid"
                        ))
                    })?;
                    blocks.push(PemBlock {
                        label: std::mem::take(label),
                        der,
                    });
                    open = None;
                } else if pem_marker(line, "BEGIN").is_some() {
                    return Err(PkiError::MalformedPem(format!(
                        "block \"{label}\" has no END line before the next BEGIN line"
                    )));
                } else if line.starts_with("Proc-Type:") && line.contains("ENCRYPTED") {
                    return Err(PkiError::EncryptedKey);
                } else if !line.contains(':') {
                    // RFC 1421 headers ("Name: value") carry no base64: skip them.
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((label, _)) = open {
        return Err(PkiError::MalformedPem(format!(
            "block \"{label}\" has no END line"
        )));
    }
    if blocks.is_empty() {
        let hint = if input.contains("\\n") {
            " (the value contains literal \\n sequences; use real line breaks, e.g. a heredoc or file())"
        } else {
            ""
        };
        return Err(PkiError::NoPem { expected, hint });
    }
    Ok(blocks)
}

fn pem_marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Concatenates PEM texts, making sure each ends with a newline (for `cert-chain.pem`).
pub fn concat_pem(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        out.push_str(part);
        if !part.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// SHA-256 of `der` as lowercase hex without separators.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn truncate_to_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}

/// Formats a timestamp as RFC 3339 in UTC with whole seconds, e.g. `2026-11-23T18:00:00Z`.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    let t = truncate_to_seconds(t.to_offset(time::UtcOffset::UTC));
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Parses an RFC 3339 timestamp (as stored by [`format_rfc3339`]).
pub fn parse_rfc3339(value: &str) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| PkiError::InvalidTimestamp {
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;
    use time::macros::datetime;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::oid_registry::{
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
    };

    fn spec(alg: KeyAlgorithm) -> CaSpec {
        CaSpec {
            key_algorithm: alg,
            ..CaSpec::istio_root()
        }
    }

    const P256: KeyAlgorithm = KeyAlgorithm::Ecdsa(EcdsaCurve::P256);
    const P384: KeyAlgorithm = KeyAlgorithm::Ecdsa(EcdsaCurve::P384);
    const RSA2048: KeyAlgorithm = KeyAlgorithm::Rsa(RsaBits::B2048);

    fn der_of(pem: &str) -> Vec<u8> {
        parse_cert_pem(pem).unwrap().der
    }

    fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
        match cert
            .get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .expect("subjectKeyIdentifier present")
            .parsed_extension()
        {
            ParsedExtension::SubjectKeyIdentifier(id) => id.0.to_vec(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Asserts the extension profile shared by roots and intermediates.
    fn assert_ca_profile(cert: &X509Certificate<'_>, path_len: Option<u32>) {
        let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
        assert!(bc.critical, "basicConstraints must be critical");
        assert!(bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, path_len);
        let ku = cert.key_usage().unwrap().expect("keyUsage");
        assert!(ku.critical, "keyUsage must be critical");
        assert!(ku.value.digital_signature() && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.key_encipherment() && !ku.value.non_repudiation());
        assert!(!ski(cert).is_empty());
        assert!(cert
            .get_extension_unique(&OID_X509_EXT_EXTENDED_KEY_USAGE)
            .unwrap()
            .is_none());
        assert_eq!(cert.version().0, 2, "X.509 v3");
        let critical: Vec<_> = cert.extensions().iter().filter(|e| e.critical).collect();
        assert!(critical
            .iter()
            .all(|e| e.oid == OID_X509_EXT_BASIC_CONSTRAINTS || e.oid == OID_X509_EXT_KEY_USAGE));
    }

    fn check_root(alg: KeyAlgorithm, sig_oid: &str, key_desc: &str) {
        let now = OffsetDateTime::now_utc();
        let root = generate_root_at(&spec(alg), now).unwrap();
        let der = der_of(&root.cert_pem);
        let x509 = parse_der(&der).unwrap();
        assert_ca_profile(&x509, None);
        assert_eq!(x509.subject().to_string(), "O=Istio, CN=Root CA");
        assert_eq!(x509.issuer().as_raw(), x509.subject().as_raw());
        assert!(verify_signature(&x509, x509.public_key()).is_ok());
        assert_eq!(x509.signature_algorithm.algorithm.to_id_string(), sig_oid);
        // No AKI on a self-signed root (optional per RFC 5280, Istio's tooling omits it).
        assert!(x509
            .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .is_none());
        let serial = x509.raw_serial();
        assert_eq!(serial.len(), 16);
        assert!(serial[0] & 0x80 == 0, "serial must be positive");

        let expected_nb = truncate_to_seconds(now) - BACKDATE;
        assert_eq!(root.not_before, expected_nb);
        assert_eq!(root.not_after, expected_nb + Duration::hours(87600));
        assert_eq!(x509.validity().not_before.to_datetime(), root.not_before);
        assert_eq!(x509.validity().not_after.to_datetime(), root.not_after);
        assert_eq!(root.fingerprint_sha256, fingerprint_sha256(&der));
        assert_eq!(root.fingerprint_sha256.len(), 64);

        assert!(root
            .private_key_pem
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = parse_private_key_pem(&root.private_key_pem).unwrap();
        assert_eq!(key.algorithm(), key_desc);
        key.check_matches(&parse_cert_pem(&root.cert_pem).unwrap())
            .unwrap();

        let info = inspect_cert(&root.cert_pem).unwrap();
        assert_eq!(info.key_algorithm, key_desc);
        assert!(info.is_ca && info.self_signed);
        assert_eq!(info.path_len, None);
        assert_eq!(info.key_cert_sign, Some(true));
        assert_eq!(info.serial, hex(serial));
    }

    #[test]
    fn root_rsa_2048() {
        check_root(RSA2048, "1.2.840.113549.1.1.11", "RSA 2048");
    }

    #[test]
    fn root_ecdsa_p256() {
        check_root(P256, "1.2.840.10045.4.3.2", "ECDSA P-256");
    }

    #[test]
    fn root_ecdsa_p384() {
        check_root(P384, "1.2.840.10045.4.3.3", "ECDSA P-384");
    }

    #[test]
    fn root_path_len_and_two_roots_differ() {
        let s = CaSpec {
            path_len: Some(2),
            ..spec(P256)
        };
        let a = generate_root(&s).unwrap();
        let b = generate_root(&s).unwrap();
        assert_eq!(inspect_cert(&a.cert_pem).unwrap().path_len, Some(2));
        assert_ne!(a.fingerprint_sha256, b.fingerprint_sha256);
        assert_ne!(
            inspect_cert(&a.cert_pem).unwrap().serial,
            inspect_cert(&b.cert_pem).unwrap().serial
        );
    }

    /// The Istio defaults end to end, with RSA 4096 as in Istio's Makefiles.
    #[test]
    fn istio_default_root_and_intermediate_rsa_4096() {
        let root = generate_root(&CaSpec::istio_root()).unwrap();
        let signer = root.signer().unwrap();
        let inter = issue_intermediate(
            &signer,
            &CaSpec::istio_intermediate("cluster1", "istio-system"),
        )
        .unwrap();

        let root_der = der_of(&root.cert_pem);
        let inter_der = der_of(&inter.cert_pem);
        let (r, i) = (
            parse_der(&root_der).unwrap(),
            parse_der(&inter_der).unwrap(),
        );
        assert_ca_profile(&i, Some(0));
        assert_eq!(
            i.subject().to_string(),
            "O=Istio, CN=Intermediate CA, L=cluster1"
        );
        assert_eq!(i.issuer().as_raw(), r.subject().as_raw());
        assert!(verify_signature(&i, r.public_key()).is_ok());
        match i
            .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .expect("authorityKeyIdentifier")
            .parsed_extension()
        {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                assert_eq!(aki.key_identifier.as_ref().unwrap().0, ski(&r).as_slice())
            }
            other => panic!("unexpected {other:?}"),
        }
        let info = inspect_cert(&inter.cert_pem).unwrap();
        assert_eq!(info.dns_names, vec!["istiod.istio-system.svc".to_string()]);
        assert_eq!(info.key_algorithm, "RSA 4096");
        assert_eq!(
            inspect_cert(&root.cert_pem).unwrap().key_algorithm,
            "RSA 4096"
        );
        assert_eq!(info.path_len, Some(0));
        assert!(!info.self_signed);
        // Same requested validity as the root, issued a moment later: clipped to the root.
        assert_eq!(inter.not_after, root.not_after);
        assert!(inter.not_after - inter.not_before <= Duration::hours(87600));
        assert!(inter.not_after - inter.not_before > Duration::hours(87599));

        // What istiod will load from cacerts validates.
        let chain = concat_pem(&[&inter.cert_pem, &root.cert_pem]);
        let bundle = validate_ca_bundle(
            &inter.cert_pem,
            &inter.private_key_pem,
            &chain,
            &root.cert_pem,
        )
        .unwrap();
        assert_eq!(bundle.root.fingerprint_sha256, root.fingerprint_sha256);
        assert_eq!(bundle.chain.len(), 2);

        if let Some(dir) = openssl_dir("rsa4096") {
            std::fs::write(dir.join("root.pem"), &root.cert_pem).unwrap();
            std::fs::write(dir.join("inter.pem"), &inter.cert_pem).unwrap();
            let out = openssl(&dir, &["verify", "-CAfile", "root.pem", "inter.pem"]);
            assert!(out.contains("inter.pem: OK"), "{out}");
        }
    }

    #[test]
    fn intermediate_is_clipped_to_issuer_and_ecdsa_chain_validates() {
        let root = generate_root(&CaSpec {
            validity_hours: 48,
            ..spec(P384)
        })
        .unwrap();
        let inter = issue_intermediate(
            &root.signer().unwrap(),
            &CaSpec {
                key_algorithm: P256,
                ..CaSpec::istio_intermediate("east", "mesh")
            },
        )
        .unwrap();
        assert_eq!(inter.not_after, root.not_after);
        let info = inspect_cert(&inter.cert_pem).unwrap();
        assert_eq!(info.key_algorithm, "ECDSA P-256");
        assert_eq!(info.dns_names, vec!["istiod.mesh.svc".to_string()]);
        // Chain given without the root is fine too (the root signs its last certificate).
        validate_ca_bundle(
            &inter.cert_pem,
            &inter.private_key_pem,
            &inter.cert_pem,
            &root.cert_pem,
        )
        .unwrap();
    }

    // ---- key algorithm strings -------------------------------------------------------

    #[test]
    fn key_algorithm_parsing() {
        assert_eq!(
            KeyAlgorithm::parse("RSA", None, None).unwrap(),
            KeyAlgorithm::ISTIO_DEFAULT
        );
        assert_eq!(
            KeyAlgorithm::parse("RSA", Some(3072), Some("P384")).unwrap(),
            KeyAlgorithm::Rsa(RsaBits::B3072)
        );
        assert_eq!(KeyAlgorithm::parse("ECDSA", Some(1), None).unwrap(), P256);
        assert_eq!(
            KeyAlgorithm::parse("ECDSA", None, Some("P384")).unwrap(),
            P384
        );
        assert_eq!(P384.to_string(), "ECDSA P-384");

        let err = KeyAlgorithm::parse("rsa", None, None).unwrap_err();
        assert_eq!(
            err,
            PkiError::UnknownKeyAlgorithm {
                value: "rsa".into()
            }
        );
        assert_eq!(
            err.to_string(),
            r#"unknown key algorithm "rsa": expected one of "RSA", "ECDSA""#
        );
        let err = KeyAlgorithm::parse("RSA", Some(1024), None).unwrap_err();
        assert_eq!(err, PkiError::UnsupportedRsaBits { bits: 1024 });
        assert!(err.to_string().contains("2048, 3072, 4096"));
        let err = KeyAlgorithm::parse("ECDSA", None, Some("P521")).unwrap_err();
        assert!(matches!(err, PkiError::UnknownEcdsaCurve { .. }));
        assert!(err.to_string().contains(r#""P256", "P384""#));
        assert!(KeyAlgorithmName::parse("Ed25519").is_err());
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let bad = |s: CaSpec| match generate_root(&s).unwrap_err() {
            PkiError::InvalidSpec(msg) => msg,
            other => panic!("unexpected {other:?}"),
        };
        assert!(bad(CaSpec {
            validity_hours: 0,
            ..spec(P256)
        })
        .contains("positive"));
        assert!(bad(CaSpec {
            validity_hours: i64::MAX,
            ..spec(P256)
        })
        .contains("9999"));
        assert!(bad(CaSpec {
            common_name: String::new(),
            ..spec(P256)
        })
        .contains("common_name"));
        assert!(bad(CaSpec {
            dns_names: vec!["bad name é".into()],
            ..spec(P256)
        })
        .contains("DNS"));
    }

    // ---- malformed input ---------------------------------------------------------------

    #[test]
    fn garbage_pem_is_rejected_without_echoing_it() {
        let root = generate_root(&spec(P256)).unwrap();
        let body_line = root.cert_pem.lines().nth(1).unwrap().to_string();

        let err = parse_cert_pem("hello world").unwrap_err();
        assert!(matches!(
            err,
            PkiError::NoPem {
                expected: "CERTIFICATE",
                ..
            }
        ));
        let err = parse_cert_pem(&root.cert_pem.replace('\n', "\\n")).unwrap_err();
        assert!(err.to_string().contains("literal \\n"), "{err}");
        assert!(!err.to_string().contains(&body_line));

        let truncated: String = root.cert_pem.lines().take(3).collect::<Vec<_>>().join("\n");
        let err = parse_cert_pem(&truncated).unwrap_err();
        assert!(matches!(err, PkiError::MalformedPem(_)), "{err:?}");
        assert!(!err.to_string().contains(&body_line));

        let bad_b64 = root.cert_pem.replacen(&body_line, "!!!not base64!!!", 1);
        assert!(matches!(
            parse_cert_pem(&bad_b64).unwrap_err(),
            PkiError::MalformedPem(m) if m.contains("base64")
        ));

        let not_der = pem_encode("CERTIFICATE", b"definitely not DER");
        assert!(matches!(
            parse_cert_pem(&not_der).unwrap_err(),
            PkiError::InvalidCertificate { .. }
        ));

        let err = parse_cert_pem(&root.private_key_pem).unwrap_err();
        assert_eq!(
            err,
            PkiError::UnexpectedPemLabel {
                expected: "CERTIFICATE",
                found: "PRIVATE KEY".into()
            }
        );
        assert!(!err.to_string().contains("MII"));

        let two = concat_pem(&[&root.cert_pem, &root.cert_pem]);
        assert_eq!(
            parse_cert_pem(&two).unwrap_err(),
            PkiError::TooManyCertificates { count: 2 }
        );
        assert_eq!(parse_certs_pem(&two).unwrap().len(), 2);

        // Keys.
        assert_eq!(
            parse_private_key_pem(&root.cert_pem).unwrap_err(),
            PkiError::UnexpectedPemLabel {
                expected: "PRIVATE KEY",
                found: "CERTIFICATE".into()
            }
        );
        assert_eq!(
            parse_private_key_pem(&pem_encode("PRIVATE KEY", b"junk")).unwrap_err(),
            PkiError::InvalidPrivateKey
        );
        assert_eq!(
            parse_private_key_pem(&pem_encode("ENCRYPTED PRIVATE KEY", b"junk")).unwrap_err(),
            PkiError::EncryptedKey
        );
        let two_keys = concat_pem(&[&root.private_key_pem, &root.private_key_pem]);
        assert_eq!(
            parse_private_key_pem(&two_keys).unwrap_err(),
            PkiError::TooManyKeys { count: 2 }
        );
    }

    #[test]
    fn pem_tolerates_indentation_crlf_and_surrounding_text() {
        let root = generate_root(&spec(P256)).unwrap();
        let messy = format!(
            "subject=O=Istio, CN=Root CA\r\n{}",
            root.cert_pem
                .lines()
                .map(|l| format!("    {l}\r\n"))
                .collect::<String>()
        );
        let cert = parse_cert_pem(&messy).unwrap();
        assert_eq!(cert.to_pem(), root.cert_pem, "canonical re-encoding");
    }

    #[test]
    fn key_not_matching_cert_is_rejected() {
        let a = generate_root(&spec(P256)).unwrap();
        let b = generate_root(&spec(P256)).unwrap();
        let err = CaSigner::from_pem(&a.cert_pem, &b.private_key_pem).unwrap_err();
        assert_eq!(err.field, Field::PrivateKeyPem);
        assert_eq!(
            err.error,
            PkiError::KeyMismatch {
                subject: "O=Istio, CN=Root CA".into()
            }
        );
        // Different algorithm altogether.
        let c = generate_root(&spec(P384)).unwrap();
        let err = CaSigner::from_pem(&a.cert_pem, &c.private_key_pem).unwrap_err();
        assert!(matches!(err.error, PkiError::KeyMismatch { .. }));
        // And in a BYO bundle.
        let err = validate_ca_bundle(&a.cert_pem, &b.private_key_pem, &a.cert_pem, &a.cert_pem)
            .unwrap_err();
        assert_eq!(err.field, Field::PrivateKeyPem);
    }

    #[test]
    fn non_ca_cert_is_rejected_as_root() {
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["leaf.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = CaSigner::from_pem(&leaf.pem(), &key.serialize_pem()).unwrap_err();
        assert_eq!(err.field, Field::CertPem);
        assert!(
            matches!(&err.error, PkiError::NotCa { reason, .. } if reason.contains("CA:TRUE")),
            "{err:?}"
        );

        // CA:true but keyUsage without keyCertSign.
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        let err = CaSigner::from_pem(&cert.pem(), &key.serialize_pem()).unwrap_err();
        assert!(
            matches!(&err.error, PkiError::NotCa { reason, .. } if reason.contains("keyCertSign")),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("certificate \"CN=rcgen self signed cert\" is not a CA"));
    }

    #[test]
    fn expired_and_not_yet_valid_certs_are_rejected_with_dates() {
        let now = OffsetDateTime::now_utc();
        let short = CaSpec {
            validity_hours: 24,
            ..spec(P256)
        };
        let old = generate_root_at(&short, now - Duration::days(3)).unwrap();
        let err = CaSigner::from_pem_at(&old.cert_pem, &old.private_key_pem, now).unwrap_err();
        assert_eq!(err.field, Field::CertPem);
        assert!(matches!(err.error, PkiError::Expired { .. }));
        let msg = err.to_string();
        assert!(msg.contains(&format_rfc3339(old.not_after)), "{msg}");
        assert!(msg.contains(&format_rfc3339(now)), "{msg}");
        assert!(msg.contains("expired at"), "{msg}");

        let future = generate_root_at(&short, now + Duration::days(3)).unwrap();
        let err =
            CaSigner::from_pem_at(&future.cert_pem, &future.private_key_pem, now).unwrap_err();
        assert!(matches!(err.error, PkiError::NotYetValid { .. }));
        assert!(err.to_string().contains(&format_rfc3339(future.not_before)));

        // Issuing from a signer checked while it was valid, but expired since.
        assert!(old.signer().is_err());
        let then = old.not_before + Duration::hours(1);
        let signer = CaSigner::from_pem_at(&old.cert_pem, &old.private_key_pem, then).unwrap();
        let err = issue_intermediate_at(&signer, &CaSpec::istio_intermediate("c", "ns"), now)
            .unwrap_err();
        assert!(matches!(err, PkiError::Expired { .. }));
    }

    #[test]
    fn chain_problems_are_rejected() {
        let root_a = generate_root(&spec(P256)).unwrap();
        let root_b = generate_root(&CaSpec {
            common_name: "Other Root".into(),
            ..spec(P256)
        })
        .unwrap();
        let inter = issue_intermediate(
            &root_a.signer().unwrap(),
            &CaSpec {
                key_algorithm: P256,
                ..CaSpec::istio_intermediate("c1", "istio-system")
            },
        )
        .unwrap();
        let chain = concat_pem(&[&inter.cert_pem, &root_a.cert_pem]);
        let key = &inter.private_key_pem;

        // Chain ends at A, but the root given is B.
        let err = validate_ca_bundle(&inter.cert_pem, key, &chain, &root_b.cert_pem).unwrap_err();
        assert_eq!(err.field, Field::RootCertPem);
        assert!(
            matches!(err.error, PkiError::ChainNotRooted { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Other Root"), "{err}");

        // Several roots: the matching one is found.
        let roots = concat_pem(&[&root_b.cert_pem, &root_a.cert_pem]);
        let ok = validate_ca_bundle(&inter.cert_pem, key, &chain, &roots).unwrap();
        assert_eq!(ok.root.fingerprint_sha256, root_a.fingerprint_sha256);

        // Chain that does not start with the CA certificate.
        let err = validate_ca_bundle(&inter.cert_pem, key, &root_a.cert_pem, &root_a.cert_pem)
            .unwrap_err();
        assert_eq!(err.field, Field::CertChainPem);
        assert!(matches!(err.error, PkiError::ChainMustStartWithCert { .. }));

        // Broken link: intermediate followed by a root that did not sign it.
        let wrong = concat_pem(&[&inter.cert_pem, &root_b.cert_pem]);
        let err = validate_ca_bundle(&inter.cert_pem, key, &wrong, &root_b.cert_pem).unwrap_err();
        assert_eq!(err.field, Field::CertChainPem);
        assert!(
            matches!(&err.error, PkiError::ChainLinkBroken { position: 1, reason, .. }
                if reason.contains("names \"O=Istio, CN=Root CA\" as its issuer")),
            "{err:?}"
        );

        // Same names, different key: the signature check catches it.
        let root_a2 = generate_root(&spec(P256)).unwrap();
        let err = validate_ca_bundle(&inter.cert_pem, key, &inter.cert_pem, &root_a2.cert_pem)
            .unwrap_err();
        assert!(
            matches!(err.error, PkiError::ChainNotRooted { .. }),
            "{err:?}"
        );
        let forged = concat_pem(&[&inter.cert_pem, &root_a2.cert_pem]);
        let err = validate_ca_bundle(&inter.cert_pem, key, &forged, &root_a2.cert_pem).unwrap_err();
        assert!(
            matches!(&err.error, PkiError::ChainLinkBroken { reason, .. } if reason.contains("signature")),
            "{err:?}"
        );
    }

    #[test]
    fn path_len_and_eku_rules() {
        // An issuer with pathlen 0 cannot have a CA below it.
        let tight = generate_root(&CaSpec {
            path_len: Some(0),
            ..spec(P256)
        })
        .unwrap();
        let err = tight.signer().unwrap_err();
        assert!(matches!(
            err.error,
            PkiError::PathLenExceeded { path_len: 0, .. }
        ));

        // pathlen 1 root: an intermediate with pathlen 0 fits, one without pathlen does not.
        let root = generate_root(&CaSpec {
            path_len: Some(1),
            ..spec(P256)
        })
        .unwrap();
        let signer = root.signer().unwrap();
        let open_spec = CaSpec {
            path_len: None,
            key_algorithm: P256,
            ..CaSpec::istio_intermediate("c", "ns")
        };
        assert!(matches!(
            issue_intermediate(&signer, &open_spec).unwrap_err(),
            PkiError::InvalidSpec(m) if m.contains("pathlen:1")
        ));
        let err = issue_intermediate(
            &signer,
            &CaSpec {
                path_len: Some(1),
                ..open_spec.clone()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate \"O=Istio, CN=Root CA\" has pathlen:1, which forbids the 2 CA \
             certificate(s) below it"
        );
        let inter = issue_intermediate(
            &signer,
            &CaSpec {
                path_len: Some(0),
                ..open_spec
            },
        )
        .unwrap();
        // A second-level CA below a pathlen:0 intermediate breaks the chain.
        let ikey = KeyPair::from_pem(&inter.private_key_pem).unwrap();
        let mut params = CaSpec::istio_intermediate("deep", "ns")
            .params(OffsetDateTime::now_utc(), None)
            .unwrap();
        params.use_authority_key_identifier_extension = true;
        let issuer_signer = inter.signer();
        // Loading the pathlen:0 intermediate as an issuer is refused up front...
        assert!(matches!(
            issuer_signer.unwrap_err().error,
            PkiError::PathLenExceeded { .. }
        ));
        // ...and a bundle built around one anyway is refused by validation.
        let name = rcgen_name(parse_der(&der_of(&inter.cert_pem)).unwrap().subject()).unwrap();
        let mut ip = CertificateParams::default();
        ip.distinguished_name = name;
        let issuer = rcgen::Issuer::new(ip, &ikey);
        let deep_key = KeyPair::generate().unwrap();
        let deep = params.signed_by(&deep_key, &issuer).unwrap();
        let chain = concat_pem(&[&deep.pem(), &inter.cert_pem, &root.cert_pem]);
        let err = validate_ca_bundle(
            &deep.pem(),
            &deep_key.serialize_pem(),
            &chain,
            &root.cert_pem,
        )
        .unwrap_err();
        assert!(
            matches!(&err.error, PkiError::PathLenExceeded { subject, path_len: 0, below: 1 }
                if subject.contains("Intermediate CA")),
            "{err:?}"
        );

        // A CA with an EKU lacking serverAuth fails Go's default verification.
        let key = KeyPair::generate().unwrap();
        let mut params = spec(P256).params(OffsetDateTime::now_utc(), None).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.self_signed(&key).unwrap();
        let err = validate_ca_bundle(&cert.pem(), &key.serialize_pem(), &cert.pem(), &cert.pem())
            .unwrap_err();
        assert!(
            matches!(err.error, PkiError::ForbiddenExtendedKeyUsage { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn debug_output_redacts_keys() {
        let root = generate_root(&spec(P256)).unwrap();
        let key = parse_private_key_pem(&root.private_key_pem).unwrap();
        let signer = root.signer().unwrap();
        for shown in [
            format!("{root:?}"),
            format!("{key:?}"),
            format!("{signer:?}"),
            format!("{root:#?}"),
        ] {
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        let key_body = root.private_key_pem.lines().nth(1).unwrap();
        assert!(!format!("{root:?}").contains(key_body));
    }

    #[test]
    fn fingerprints_and_timestamps() {
        assert_eq!(
            fingerprint_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            format_rfc3339(datetime!(2026-11-23 18:00:00.75 UTC)),
            "2026-11-23T18:00:00Z"
        );
        assert_eq!(
            format_rfc3339(datetime!(2026-11-23 20:00:00 +02:00)),
            "2026-11-23T18:00:00Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T18:00:00Z").unwrap(),
            datetime!(2026-11-23 18:00:00 UTC)
        );
        assert!(matches!(
            parse_rfc3339("yesterday"),
            Err(PkiError::InvalidTimestamp { .. })
        ));
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01, 0x00]), 9);
    }

    // ---- interop with openssl-made material ----------------------------------------------

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    /// A scratch directory, or `None` (test part skipped) when openssl is not installed.
    fn openssl_dir(name: &str) -> Option<TempDir> {
        let found = Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            eprintln!("openssl not found: skipping the openssl part of this test");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("pki-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(TempDir(dir))
    }

    fn openssl(dir: &std::path::Path, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An openssl root from `key_args`; returns (cert_pem, key_pem).
    fn openssl_root(dir: &std::path::Path, key_args: &[&str], subj: &str) -> (String, String) {
        let mut args = key_args.to_vec();
        args.extend(["-out", "key.pem"]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "key.pem",
                "-sha256",
                "-days",
                "30",
                "-subj",
                subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "cert.pem",
            ],
        );
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        (read("cert.pem"), read("key.pem"))
    }

    fn issue_from_foreign_root(dir: &std::path::Path, cert: &str, key: &str) {
        let signer = CaSigner::from_pem(cert, key).unwrap();
        let inter = issue_intermediate(
            &signer,
            &CaSpec {
                key_algorithm: P256,
                ..CaSpec::istio_intermediate("c1", "istio-system")
            },
        )
        .unwrap();
        // openssl does not backdate, so the backdated start is raised to the root's.
        assert_eq!(inter.not_before, signer.cert().info().not_before);
        let chain = concat_pem(&[&inter.cert_pem, cert]);
        validate_ca_bundle(&inter.cert_pem, &inter.private_key_pem, &chain, cert).unwrap();
        std::fs::write(dir.join("inter.pem"), &inter.cert_pem).unwrap();
        let out = openssl(dir, &["verify", "-CAfile", "cert.pem", "inter.pem"]);
        assert!(out.contains("inter.pem: OK"), "{out}");
    }

    #[test]
    fn pkcs1_rsa_key_from_openssl_is_accepted() {
        let Some(dir) = openssl_dir("pkcs1") else {
            return;
        };
        let (cert, key) = openssl_root(
            &dir,
            &["genrsa", "-traditional"],
            "/C=US/O=Example Corp/CN=Corp Root",
        );
        assert!(key.contains("BEGIN RSA PRIVATE KEY"), "PKCS#1 expected");
        assert_eq!(parse_private_key_pem(&key).unwrap().algorithm(), "RSA 2048");
        issue_from_foreign_root(&dir, &cert, &key);

        // An intermediate signed with SHA-1 is refused (istiod would refuse it too).
        std::fs::write(
            dir.join("ext.cnf"),
            "[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
        )
        .unwrap();
        openssl(&dir, &["genrsa", "-out", "weak.key", "2048"]);
        openssl(
            &dir,
            &[
                "req", "-new", "-key", "weak.key", "-subj", "/CN=Weak", "-out", "weak.csr",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "weak.csr",
                "-CA",
                "cert.pem",
                "-CAkey",
                "key.pem",
                "-sha1",
                "-days",
                "10",
                "-extfile",
                "ext.cnf",
                "-extensions",
                "v3",
                "-out",
                "weak.pem",
            ],
        );
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let weak = read("weak.pem");
        let err = validate_ca_bundle(&weak, &read("weak.key"), &weak, &cert).unwrap_err();
        assert_eq!(
            err.error,
            PkiError::WeakSignature {
                subject: "CN=Weak".into(),
                algorithm: "sha1WithRSAEncryption".into()
            }
        );

        // RSA keys under 2048 bits are refused (aws-lc will not even load them).
        openssl(&dir, &["genrsa", "-out", "small.key", "1024"]);
        let err = parse_private_key_pem(&read("small.key")).unwrap_err();
        assert_eq!(err, PkiError::InvalidPrivateKey);
        assert!(err.to_string().contains("RSA of 2048 bits or more"));
    }

    #[test]
    fn sec1_ec_key_from_openssl_is_accepted() {
        let Some(dir) = openssl_dir("sec1") else {
            return;
        };
        // With the EC PARAMETERS block openssl writes by default.
        let (cert, key) = openssl_root(
            &dir,
            &["ecparam", "-name", "secp384r1", "-genkey"],
            "/O=Example/CN=EC Root",
        );
        assert!(key.contains("BEGIN EC PARAMETERS") && key.contains("BEGIN EC PRIVATE KEY"));
        assert_eq!(
            parse_private_key_pem(&key).unwrap().algorithm(),
            "ECDSA P-384"
        );
        issue_from_foreign_root(&dir, &cert, &key);
    }

    #[test]
    fn openssl_ed25519_and_repeated_name_roots_are_refused() {
        let Some(dir) = openssl_dir("odd") else {
            return;
        };
        let (_, key) = openssl_root(&dir, &["genpkey", "-algorithm", "ed25519"], "/CN=Ed");
        assert_eq!(
            parse_private_key_pem(&key).unwrap_err(),
            PkiError::UnsupportedKeyType {
                found: "Ed25519".into()
            }
        );
        let (_, key) = openssl_root(
            &dir,
            &["ecparam", "-name", "secp521r1", "-genkey", "-noout"],
            "/CN=P521",
        );
        let err = parse_private_key_pem(&key).unwrap_err();
        assert_eq!(
            err,
            PkiError::UnsupportedKeyType {
                found: "ECDSA P-521".into()
            }
        );
        assert!(err.to_string().contains("ECDSA (P-256, P-384)"));
        let (cert, key) = openssl_root(
            &dir,
            &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
            "/DC=example/DC=com/CN=DC Root",
        );
        let err = CaSigner::from_pem(&cert, &key).unwrap_err();
        assert_eq!(err.field, Field::CertPem);
        assert!(
            matches!(err.error, PkiError::UnsupportedIssuerName { .. }),
            "{err:?}"
        );
    }
}
