//! PEM framing, fingerprints and timestamps.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::*;

// ---------------------------------------------------------------------------------------
// PEM, fingerprints, timestamps
// ---------------------------------------------------------------------------------------

pub(super) struct PemBlock {
    pub(super) label: String,
    pub(super) der: Vec<u8>,
}

/// Splits PEM text into blocks. Tolerates text around blocks, CRLF and indentation (an
/// indented heredoc), which stricter parsers reject; never echoes the input in errors.
pub(super) fn pem_blocks(input: &str, expected: &'static str) -> Result<Vec<PemBlock>, PkiError> {
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

pub(super) fn pem_marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

pub(super) fn pem_encode(label: &str, der: &[u8]) -> String {
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

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn truncate_to_seconds(t: OffsetDateTime) -> OffsetDateTime {
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
