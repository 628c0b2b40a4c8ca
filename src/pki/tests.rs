//! Unit tests of the PKI module, including interop with openssl-made material.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
use std::path::PathBuf;
use std::process::Command;
use time::macros::datetime;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
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
    let err =
        validate_ca_bundle(&a.cert_pem, &b.private_key_pem, &a.cert_pem, &a.cert_pem).unwrap_err();
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
    let err = CaSigner::from_pem_at(&future.cert_pem, &future.private_key_pem, now).unwrap_err();
    assert!(matches!(err.error, PkiError::NotYetValid { .. }));
    assert!(err.to_string().contains(&format_rfc3339(future.not_before)));

    // Issuing from a signer checked while it was valid, but expired since.
    assert!(old.signer().is_err());
    let then = old.not_before + Duration::hours(1);
    let signer = CaSigner::from_pem_at(&old.cert_pem, &old.private_key_pem, then).unwrap();
    let err =
        issue_intermediate_at(&signer, &CaSpec::istio_intermediate("c", "ns"), now).unwrap_err();
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
    let err =
        validate_ca_bundle(&inter.cert_pem, key, &root_a.cert_pem, &root_a.cert_pem).unwrap_err();
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
    let err =
        validate_ca_bundle(&inter.cert_pem, key, &inter.cert_pem, &root_a2.cert_pem).unwrap_err();
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

// ---- what istiod and Envoy accept (issue 14, item 6) ---------------------------------

/// An ECDSA P-256 intermediate `name` signed by the root in `dir` (cert.pem, key.pem), with
/// `ext` as its extensions and `x509_args` added to `openssl x509 -req`; returns
/// (cert_pem, key_pem) as openssl wrote them.
fn openssl_intermediate(
    dir: &std::path::Path,
    name: &str,
    ext: &str,
    x509_args: &[&str],
) -> (String, String) {
    let (key, csr, cert, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.cnf"),
    );
    std::fs::write(
        dir.join(&cnf),
        format!("[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n{ext}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &["ecparam", "-name", "prime256v1", "-genkey", "-out", &key],
    );
    let subj = format!("/O=Example/CN={name}");
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", &subj, "-out", &csr],
    );
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "cert.pem",
        "-CAkey",
        "key.pem",
        "-sha256",
        "-days",
        "10",
        "-extfile",
        &cnf,
        "-extensions",
        "v3",
        "-out",
        &cert,
    ];
    args.extend_from_slice(x509_args);
    openssl(dir, &args);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read(&cert), read(&key))
}

/// An openssl ECDSA root in `dir` and an intermediate below it: (root, inter, inter_key).
fn openssl_ecdsa_bundle(dir: &std::path::Path) -> (String, String, String) {
    let (root, _) = openssl_root(
        dir,
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/O=Example/CN=Root",
    );
    let (inter, key) = openssl_intermediate(dir, "Inter", "", &[]);
    (root, inter, key)
}

fn starts_every_block_at_line_start(pem: &str) -> bool {
    pem.lines()
        .all(|l| !l.starts_with(char::is_whitespace) && !l.contains('\r'))
}

#[test]
fn indented_pem_is_written_canonical() {
    let Some(dir) = openssl_dir("indent") else {
        return;
    };
    let (root, inter, key) = openssl_ecdsa_bundle(&dir);
    let chain = concat_pem(&[&inter, &root]);
    // As a heredoc inside an indented HCL block delivers it (Go's pem.Decode finds none).
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("      {l}\r\n")).collect() };
    let ok = validate_ca_bundle(
        &indent(&inter),
        &indent(&key),
        &indent(&chain),
        &indent(&root),
    )
    .unwrap();
    let pem = &ok.pem;
    for written in [
        &pem.cert_pem,
        &pem.private_key_pem,
        &pem.cert_chain_pem,
        &pem.root_cert_pem,
    ] {
        assert!(written.starts_with("-----BEGIN "), "{}", written.len());
        assert!(starts_every_block_at_line_start(written));
    }
    // openssl writes canonical PEM itself: the normalised text is exactly its output.
    assert_eq!(pem.cert_pem, inter);
    assert_eq!(pem.cert_chain_pem, chain);
    assert_eq!(pem.root_cert_pem, root);
    assert!(!format!("{pem:?}").contains("PRIVATE KEY"));
}

#[test]
fn ec_parameters_block_is_dropped_from_the_key() {
    let Some(dir) = openssl_dir("ecparams") else {
        return;
    };
    let (root, inter, key) = openssl_ecdsa_bundle(&dir);
    // `openssl ecparam -genkey` writes EC PARAMETERS first; istiod reads only that block.
    assert!(key.starts_with("-----BEGIN EC PARAMETERS-----"));
    let key_block = &key[key.find("-----BEGIN EC PRIVATE KEY-----").unwrap()..];
    let ok = validate_ca_bundle(&inter, &key, &concat_pem(&[&inter, &root]), &root).unwrap();
    assert_eq!(ok.pem.private_key_pem, key_block);
    assert_eq!(ok.pem.private_key_pem.matches("-----BEGIN").count(), 1);
    // Same key, same certificate: the written key still matches it.
    parse_private_key_pem(&ok.pem.private_key_pem)
        .unwrap()
        .check_matches(&parse_cert_pem(&inter).unwrap())
        .unwrap();
}

#[test]
fn ca_extended_key_usage_must_allow_server_and_client_auth() {
    let Some(dir) = openssl_dir("eku") else {
        return;
    };
    let (root, _, _) = openssl_ecdsa_bundle(&dir);
    let check = |name: &str, eku: &str| {
        let (inter, key) = openssl_intermediate(&dir, name, eku, &[]);
        validate_ca_bundle(&inter, &key, &concat_pem(&[&inter, &root]), &root)
    };
    // Go alone would take these two; Envoy's ssl_client/ssl_server purpose checks do not.
    for (name, eku, found) in [
        ("ServerOnly", "extendedKeyUsage=serverAuth", "serverAuth"),
        (
            "AnyOnly",
            "extendedKeyUsage=anyExtendedKeyUsage",
            "anyExtendedKeyUsage",
        ),
        ("ClientOnly", "extendedKeyUsage=clientAuth", "clientAuth"),
    ] {
        let err = check(name, eku).unwrap_err();
        assert_eq!(err.field, Field::CertPem, "{name}");
        assert_eq!(
            err.error,
            PkiError::ForbiddenExtendedKeyUsage {
                subject: format!("O=Example, CN={name}"),
                found: found.into()
            }
        );
        assert!(err.to_string().contains("Envoy"), "{err}");
    }
    check("Both", "extendedKeyUsage=serverAuth,clientAuth").unwrap();

    // The same rule holds for the root at the end of the chain.
    let sub = dir.join("root-eku");
    std::fs::create_dir_all(&sub).unwrap();
    let (root, _) = openssl_root(
        &sub,
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/CN=Server Root",
    );
    openssl(
        &sub,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Server Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-out",
            "cert.pem",
        ],
    );
    let root_eku = std::fs::read_to_string(sub.join("cert.pem")).unwrap();
    assert_ne!(root, root_eku);
    let (inter, key) = openssl_intermediate(&sub, "Below", "", &[]);
    let err = validate_ca_bundle(&inter, &key, &inter, &root_eku).unwrap_err();
    assert_eq!(err.field, Field::RootCertPem);
    assert!(matches!(
        err.error,
        PkiError::ForbiddenExtendedKeyUsage { .. }
    ));
}

#[test]
fn negative_serial_numbers_are_refused() {
    let Some(dir) = openssl_dir("serial") else {
        return;
    };
    let (root, _, _) = openssl_ecdsa_bundle(&dir);
    let (inter, key) = openssl_intermediate(&dir, "Negative", "", &["-set_serial", "-5"]);
    assert!(inspect_cert(&inter).unwrap().serial.starts_with('f'));
    let err = validate_ca_bundle(&inter, &key, &concat_pem(&[&inter, &root]), &root).unwrap_err();
    assert_eq!(err.field, Field::CertPem);
    assert_eq!(
        err.error,
        PkiError::NegativeSerial {
            subject: "O=Example, CN=Negative".into()
        }
    );
    assert!(err.to_string().contains("Go 1.23"));
    // A positive serial from the same root passes.
    let (inter, key) = openssl_intermediate(&dir, "Positive", "", &["-set_serial", "5"]);
    validate_ca_bundle(&inter, &key, &inter, &root).unwrap();

    // A root with a negative serial: refused in root_cert_pem and as root_ca.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "key.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Neg Root",
            "-set_serial",
            "-7",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "neg-root.pem",
        ],
    );
    let neg_root = std::fs::read_to_string(dir.join("neg-root.pem")).unwrap();
    let err = validate_ca_bundle(&inter, &key, &inter, &neg_root).unwrap_err();
    assert_eq!(err.field, Field::RootCertPem);
    assert!(matches!(err.error, PkiError::NegativeSerial { .. }));
    let root_key = std::fs::read_to_string(dir.join("key.pem")).unwrap();
    let err = CaSigner::from_pem(&neg_root, &root_key).unwrap_err();
    assert_eq!(err.field, Field::CertPem);
    assert!(matches!(err.error, PkiError::NegativeSerial { .. }));
}

#[test]
fn full_chain_in_cert_pem_uses_its_first_certificate() {
    let Some(dir) = openssl_dir("fullchain") else {
        return;
    };
    let (root, inter, key) = openssl_ecdsa_bundle(&dir);
    let full = concat_pem(&[&inter, &root]);
    // Full chain in cert_pem, chain holding the intermediate alone: the rest moves over.
    let ok = validate_ca_bundle(&full, &key, &inter, &root).unwrap();
    assert_eq!(ok.pem.cert_pem, inter);
    assert_eq!(ok.pem.cert_chain_pem, full);
    assert_eq!(ok.chain.len(), 2);
    // The same full chain in both.
    let ok = validate_ca_bundle(&full, &key, &full, &root).unwrap();
    assert_eq!(
        (ok.pem.cert_pem, ok.pem.cert_chain_pem),
        (inter.clone(), full)
    );
    // A cert_pem whose extra certificates contradict the chain is refused.
    std::fs::create_dir_all(dir.join("other")).unwrap();
    let (other, _) = openssl_root(
        &dir.join("other"),
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        "/CN=Other",
    );
    let err = validate_ca_bundle(
        &concat_pem(&[&inter, &other]),
        &key,
        &concat_pem(&[&inter, &root]),
        &root,
    )
    .unwrap_err();
    assert_eq!(err.field, Field::CertPem);
    assert_eq!(
        err.error,
        PkiError::ExtraCertificatesDisagree {
            subject: "O=Example, CN=Inter".into(),
            extra: 1
        }
    );
}

#[test]
fn rsa_pss_signed_intermediate_is_accepted_with_go_parameters() {
    let Some(dir) = openssl_dir("pss") else {
        return;
    };
    let (root, _) = openssl_root(&dir, &["genrsa"], "/O=Example/CN=RSA Root");
    let pss = ["-sigopt", "rsa_padding_mode:pss"];
    let digest_salt = [&pss[..], &["-sigopt", "rsa_pss_saltlen:digest"]].concat();
    let (inter, key) = openssl_intermediate(&dir, "PSS", "", &digest_salt);
    let text = openssl(&dir, &["x509", "-in", "PSS.pem", "-noout", "-text"]);
    assert!(text.contains("rsassaPss"), "openssl did not sign with PSS");
    let ok = validate_ca_bundle(&inter, &key, &concat_pem(&[&inter, &root]), &root).unwrap();
    assert_eq!(ok.root.subject, "O=Example, CN=RSA Root");

    // openssl's default PSS salt is the maximum length, which Go refuses.
    let (inter, key) = openssl_intermediate(&dir, "PSSMax", "", &pss);
    let err = validate_ca_bundle(&inter, &key, &inter, &root).unwrap_err();
    assert_eq!(err.field, Field::CertChainPem);
    assert!(
        matches!(&err.error, PkiError::UnsupportedPssParameters { found, .. }
            if found.contains("SHA-256") && found.contains("222-byte salt")),
        "{err:?}"
    );
}
