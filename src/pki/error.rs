//! Errors of the PKI module; their messages are safe to show to end users.

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
    /// A CA carries an extendedKeyUsage that istiod's or Envoy's chain checks reject.
    #[error(
        "certificate {subject:?} has an extendedKeyUsage ({found}) without both serverAuth \
         and clientAuth: Envoy checks the ssl_server and ssl_client purposes on every \
         certificate of the chain (anyExtendedKeyUsage satisfies neither), so mTLS between \
         workloads would fail; CA certificates should carry no extendedKeyUsage, or both"
    )]
    ForbiddenExtendedKeyUsage {
        /// Subject of the certificate.
        subject: String,
        /// The purposes it lists, e.g. "serverAuth".
        found: String,
    },
    /// A certificate has a negative serial number.
    #[error(
        "certificate {subject:?} has a negative serial number, which Go 1.23 and later (so \
         istiod) refuse to parse: re-issue it with a positive serial"
    )]
    NegativeSerial {
        /// Subject of the certificate.
        subject: String,
    },
    /// An RSA-PSS signature uses parameters Go's x509 (so istiod) does not accept.
    #[error(
        "certificate {subject:?} is signed with RSA-PSS {found}, which istiod rejects: Go \
         accepts only SHA-256, SHA-384 or SHA-512 with MGF1 over the same hash and a salt as \
         long as the hash (openssl: -sigopt rsa_pss_saltlen:digest)"
    )]
    UnsupportedPssParameters {
        /// Subject of the certificate.
        subject: String,
        /// The parameters found, e.g. "with SHA-256 and a 222-byte salt".
        found: String,
    },
    /// `cert_pem` holds more than one certificate, and the extra ones contradict the chain.
    #[error(
        "expected the signing CA certificate, optionally followed by its chain, but the {extra} \
         certificate(s) after {subject:?} are not the start of the certificate chain given: \
         istiod uses only the first certificate here, so put the chain in the chain input only"
    )]
    ExtraCertificatesDisagree {
        /// Subject of the signing (first) certificate.
        subject: String,
        /// How many certificates follow it.
        extra: usize,
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

pub(super) fn at(field: Field) -> impl Fn(PkiError) -> FieldError {
    move |error| FieldError { field, error }
}
