//! The provider installed the way users install it, not through `dev_overrides`: packaged
//! by `scripts/release.py` (the code `make release` runs) from the built binary, laid into
//! Terraform's implied local mirror under a scratch `$HOME` (the layout `make install`
//! writes), then `terraform init` with a plain `required_providers` block.
//!
//! The debug build stands in for the release build here (same packaging, same layout): the
//! zig + LTO build takes minutes and stays in `make release`.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use mesh_acceptance::{enabled, enabled_on_one_client, provider_dir, Workspace, PROVIDER_SOURCE};

const ROOT_CA: &str = r#"
resource "mesh_root_ca" "root" {
  common_name = "Installed Mesh Root"
}

output "subject" {
  value = mesh_root_ca.root.common_name
}
"#;

fn release_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/release.py")
}

/// Runs `python3 scripts/release.py <args>` with `env` added and returns its stdout.
fn release_py(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new("python3")
        .arg(release_script())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("GPG_FINGERPRINT")
        .output()
        .expect("python3 runs scripts/release.py");
    assert!(
        out.status.success(),
        "release.py {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The version in Cargo.toml, as the release files are named.
fn cargo_version() -> String {
    release_py(&["version"], &[]).trim().to_string()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Terraform's `h1:` package hash (Go's dirhash Hash1) of a package whose files are `files`
/// (name, content): SHA-256 over the sorted lines "<sha256 hex>  <name>\n", base64.
fn h1(files: &[(&str, &[u8])]) -> String {
    let mut sorted = files.to_vec();
    sorted.sort_by_key(|(name, _)| *name);
    let summary: String = sorted
        .iter()
        .map(|(name, data)| format!("{}  {name}\n", hex(&sha256(data))))
        .collect();
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(sha256(summary.as_bytes()))
    )
}

/// The `version` and `hashes` of our provider's block in a `.terraform.lock.hcl`.
fn locked(lock_file: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(lock_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", lock_file.display()));
    let header = format!("provider \"{PROVIDER_SOURCE}\" {{");
    let block = text
        .split_once(&header)
        .map(|(_, rest)| rest.split("\n}").next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no block for {PROVIDER_SOURCE} in the lock file:\n{text}"));
    let quoted = |line: &str| line.split('"').nth(1).map(str::to_string);
    let version = block
        .lines()
        .find(|l| l.trim_start().starts_with("version"))
        .and_then(quoted)
        .unwrap_or_else(|| panic!("no version in the lock file:\n{text}"));
    let hashes = block
        .split_once("hashes = [")
        .map(|(_, rest)| rest.split(']').next().unwrap_or_default())
        .unwrap_or_default()
        .lines()
        .filter_map(quoted)
        .collect();
    (version, hashes)
}

/// `terraform init` installs the provider from the mirror `make install` lays out, with no
/// CLI configuration at all, records it in the lock file with the hash Terraform computes
/// from the release zip itself, and the installed provider applies a root CA.
#[test]
fn terraform_init_installs_the_release_from_the_local_mirror() {
    if !enabled("terraform_init_installs_the_release_from_the_local_mirror") {
        return;
    }
    let version = cargo_version();
    let binary = provider_dir().join("terraform-provider-mesh");
    let binary_bytes = std::fs::read(&binary).expect("read the provider binary");

    // `make release` then `make install`, with the debug build and a scratch HOME.
    let ws = Workspace::new("install").without_dev_overrides();
    let dist = ws.dir.join("dist");
    let home = ws.dir.join("home");
    let plugins = home.join(".terraform.d").join("plugins");
    release_py(
        &[
            "package",
            "--binary",
            binary.to_str().unwrap(),
            "--out",
            dist.to_str().unwrap(),
        ],
        &[],
    );
    let installed = release_py(
        &[
            "install",
            "--dist",
            dist.to_str().unwrap(),
            "--plugins-dir",
            plugins.to_str().unwrap(),
        ],
        &[],
    );
    for host in ["registry.terraform.io", "registry.opentofu.org"] {
        let dir = plugins.join(format!("{host}/tfmesh/mesh/{version}/linux_amd64"));
        assert!(
            dir.join(format!("terraform-provider-mesh_v{version}"))
                .is_file(),
            "{} not laid out:\n{installed}",
            dir.display()
        );
    }

    let ws = ws
        .env("HOME", home.to_str().unwrap())
        .env("XDG_DATA_HOME", home.join(".local/share").to_str().unwrap())
        .env("TF_PLUGIN_CACHE_DIR", "");
    ws.config(ROOT_CA);
    let init = ws.ok(&["init", "-no-color"]);
    assert!(
        init.contains(&format!("Installed tfmesh/mesh v{version}")),
        "{init}"
    );
    let applied = ws.apply();
    assert!(
        !applied.contains("Provider development overrides"),
        "dev_overrides still in effect:\n{applied}"
    );
    assert!(
        applied.contains("Apply complete! Resources: 1 added"),
        "{applied}"
    );
    assert_eq!(ws.output("subject"), "Installed Mesh Root");

    // What Terraform computes from the release zip itself, through a packed mirror.
    let packed = ws.dir.join("packed");
    release_py(
        &[
            "install",
            "--packed",
            "--dist",
            dist.to_str().unwrap(),
            "--plugins-dir",
            packed.to_str().unwrap(),
        ],
        &[],
    );
    let from_zip = Workspace::new("install-lock")
        .without_dev_overrides()
        .env("HOME", ws.dir.join("empty-home").to_str().unwrap());
    from_zip.config(ROOT_CA);
    from_zip.ok(&[
        "providers",
        "lock",
        "-no-color",
        "-platform=linux_amd64",
        &format!("-fs-mirror={}", packed.display()),
    ]);

    let (init_version, init_hashes) = locked(&ws.dir.join(".terraform.lock.hcl"));
    let (_, zip_hashes) = locked(&from_zip.dir.join(".terraform.lock.hcl"));
    assert_eq!(init_version, version);
    // h1: covers the package's files (for a zip, its contents once unpacked), so the mirror
    // `make install` lays out and the release zip must hash alike; and both must be the
    // hash of exactly one file, the built binary under the registry's name. (zh:, the zip's
    // own SHA-256 as SHA256SUMS lists it, is recorded only when a registry or a network
    // mirror reports it; a filesystem mirror gives h1: alone.)
    let expected = h1(&[(
        &format!("terraform-provider-mesh_v{version}"),
        &binary_bytes,
    )]);
    assert_eq!(init_hashes, vec![expected.clone()], "lock file after init");
    assert_eq!(zip_hashes, vec![expected], "providers lock -fs-mirror");
}

/// The release files: names, manifest, SHA256SUMS over the zip and the manifest, identical
/// bytes when packaged twice at different times, and a signature that verifies when a key
/// is given. A small stand-in binary keeps this quick.
#[test]
fn release_files_are_complete_reproducible_and_signed() {
    if !enabled_on_one_client("release_files_are_complete_reproducible_and_signed") {
        return;
    }
    let version = cargo_version();
    let ws = Workspace::new("release-files");
    let binary = ws.write_file("provider", "#!/bin/sh\necho stand-in\n");
    let package = |out: &str, env: &[(&str, &str)]| {
        let out = ws.dir.join(out);
        release_py(
            &[
                "package",
                "--binary",
                binary.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            env,
        );
        out
    };
    let base = format!("terraform-provider-mesh_{version}");
    let zip = format!("{base}_linux_amd64.zip");
    let manifest = format!("{base}_manifest.json");
    let sums = format!("{base}_SHA256SUMS");

    let first = package("first", &[("SOURCE_DATE_EPOCH", "1700000000")]);
    let mut files: Vec<String> = std::fs::read_dir(&first)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, vec![sums.clone(), zip.clone(), manifest.clone()]);

    let manifest_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join(&manifest)).unwrap()).unwrap();
    assert_eq!(
        manifest_json,
        serde_json::json!({"version": 1, "metadata": {"protocol_versions": ["6.0"]}})
    );
    let sums_text = std::fs::read_to_string(first.join(&sums)).unwrap();
    let expected_sums: String = [&zip, &manifest]
        .iter()
        .map(|f| {
            let digest = sha256(&std::fs::read(first.join(f)).unwrap());
            format!("{}  {f}\n", hex(&digest))
        })
        .collect();
    assert_eq!(sums_text, expected_sums);

    // Later, from a copy with another modification time: the same bytes.
    let copy = ws.dir.join("provider-copy");
    std::fs::copy(&binary, &copy).unwrap();
    std::fs::rename(&copy, &binary).unwrap();
    let second = package("second", &[("SOURCE_DATE_EPOCH", "1700000000")]);
    assert_eq!(
        std::fs::read(second.join(&sums)).unwrap(),
        sums_text.as_bytes()
    );
    // The timestamp is an input: another SOURCE_DATE_EPOCH gives another zip.
    let other = package("other", &[("SOURCE_DATE_EPOCH", "1800000000")]);
    assert_ne!(
        std::fs::read(other.join(&zip)).unwrap(),
        std::fs::read(first.join(&zip)).unwrap()
    );

    // GPG_FINGERPRINT: a detached signature of the SUMS that gpg verifies.
    let gnupg = ws.dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .args(["--batch", "--homedir", gnupg.to_str().unwrap()])
            .args(args)
            .output()
            .expect("gpg is installed (.ci/run installs gnupg)");
        assert!(
            out.status.success(),
            "gpg {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        "mesh release test <release-test@invalid>",
        "ed25519",
        "sign",
        "never",
    ]);
    let fingerprint = gpg(&["--with-colons", "--list-keys"])
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .map(str::to_string)
        .expect("fingerprint of the generated key");
    let signed = ws.dir.join("signed");
    let out = Command::new("python3")
        .arg(release_script())
        .args(["package", "--binary", binary.to_str().unwrap()])
        .arg("--out")
        .arg(&signed)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("GPG_FINGERPRINT", &fingerprint)
        .env("GNUPGHOME", &gnupg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "signed package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = signed.join(format!("{sums}.sig"));
    gpg(&[
        "--verify",
        sig.to_str().unwrap(),
        signed.join(&sums).to_str().unwrap(),
    ]);
    // A signature over other bytes does not verify.
    std::fs::write(signed.join(&sums), "tampered\n").unwrap();
    let tampered = Command::new("gpg")
        .args(["--batch", "--homedir", gnupg.to_str().unwrap(), "--verify"])
        .arg(&sig)
        .arg(signed.join(&sums))
        .output()
        .unwrap();
    assert!(!tampered.status.success(), "a tampered SUMS verified");
    let _ = Command::new("gpgconf")
        .args(["--homedir", gnupg.to_str().unwrap(), "--kill", "all"])
        .status();
}
