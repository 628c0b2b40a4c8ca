//! Generating root and intermediate CAs, and loading a CA to issue from.

use std::fmt;

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::asn1_rs::Tag;
use x509_parser::x509::X509Name;

use super::*;

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
    pub(super) fn params(
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
pub(super) fn random_serial() -> Result<SerialNumber, PkiError> {
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
// Issuers and user-supplied CA bundles
// ---------------------------------------------------------------------------------------

/// A CA certificate with its private key, checked and ready to sign intermediates.
pub struct CaSigner {
    pub(super) cert: Certificate,
    pub(super) key: PrivateKey,
    /// The issuer name rebuilt for rcgen; checked to re-encode to the exact same bytes.
    pub(super) name: DistinguishedName,
    pub(super) key_id: KeyIdMethod,
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
    /// keyCertSign, valid at `now`, a positive serial, and able to have an intermediate CA below it.
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
        // The root goes into root-cert.pem, which istiod must be able to parse.
        cert.check_serial_positive().map_err(at(Field::CertPem))?;
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
pub(super) fn rcgen_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
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
