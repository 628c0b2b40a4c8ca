#!/usr/bin/env python3
"""Release packaging for terraform-provider-mesh, standard library only (no network).

  release.py version                 the version in Cargo.toml
  release.py package  --binary B --out DIR [--gpg-key FPR]
                                     the registry's release files for B in DIR
  release.py install  --dist DIR | --binary B  [--plugins-dir DIR] [--packed]
                                     the release zip of DIR (or B) laid into a filesystem
                                     mirror, ~/.terraform.d/plugins by default
  release.py glibc    --binary B --max 2.17
                                     fails when B needs a newer glibc symbol version

`make release`, `make install`, `make demo` and the acceptance test
(acceptance/tests/install.rs) all go through this file, so what the test installs is
packaged exactly as a release is.

Same inputs, same bytes: zip entries get a fixed timestamp (SOURCE_DATE_EPOCH, else the
commit time of HEAD, else 1980-01-01), fixed permissions and a fixed order.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAME = "terraform-provider-mesh"
NAMESPACE = "tfmesh"
TYPE = "mesh"
# Terraform reads registry.terraform.io; OpenTofu expands the short `tfmesh/mesh` to
# registry.opentofu.org. Both read ~/.terraform.d/plugins.
HOSTS = ("registry.terraform.io", "registry.opentofu.org")
PROTOCOL_VERSIONS = ["6.0"]
ZIP_EPOCH_MIN = 315532800  # 1980-01-01T00:00:00Z, the earliest time a zip entry can hold


def cargo_version(root=ROOT):
    """The `version` of the [package] table of Cargo.toml."""
    text = (root / "Cargo.toml").read_text()
    section = re.search(r"^\[package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    match = section and re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
    if not match:
        sys.exit("release: no version in the [package] table of Cargo.toml")
    return match.group(1)


def os_arch():
    """Terraform's name for this platform; releases are built for linux_amd64 only."""
    machine = os.uname().machine
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return f"{os.uname().sysname.lower()}_{arch}"


def names(version, platform):
    """The registry's file names for one version (hashicorp/terraform-provider-scaffolding)."""
    base = f"{NAME}_{version}"
    return {
        "zip": f"{base}_{platform}.zip",
        "binary": f"{NAME}_v{version}",
        "sums": f"{base}_SHA256SUMS",
        "manifest": f"{base}_manifest.json",
    }


def source_date_epoch():
    """SOURCE_DATE_EPOCH, else the commit time of HEAD, else the zip format's first day."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        try:
            raw = subprocess.run(
                ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            raw = ""
    try:
        epoch = int(raw)
    except ValueError:
        epoch = ZIP_EPOCH_MIN
    return max(epoch, ZIP_EPOCH_MIN)


def write_zip(path, members, epoch):
    """A zip of (name, bytes, mode) members, identical for identical inputs."""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).timetuple()[:6]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in sorted(members):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.create_system = 3  # Unix, so that external_attr carries the mode
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compresslevel=6)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package(binary, out, gpg_key=None, version=None, platform=None):
    """Writes the zip, the manifest, the SHA256SUMS over both and, with a key, its signature."""
    version = version or cargo_version()
    platform = platform or os_arch()
    n = names(version, platform)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{NAME}_{version}_*"):
        stale.unlink()

    write_zip(out / n["zip"], [(n["binary"], binary.read_bytes(), 0o755)], source_date_epoch())
    manifest = {"version": 1, "metadata": {"protocol_versions": PROTOCOL_VERSIONS}}
    (out / n["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
    # The manifest is covered too: HCP Terraform rejects a release whose SUMS omit it.
    sums = "".join(f"{sha256_file(out / f)}  {f}\n" for f in sorted([n["zip"], n["manifest"]]))
    (out / n["sums"]).write_text(sums)

    if gpg_key:
        subprocess.run(
            ["gpg", "--batch", "--yes", "--local-user", gpg_key,
             "--output", str(out / (n["sums"] + ".sig")), "--detach-sign", str(out / n["sums"])],
            check=True,
        )
    for f in sorted(out.glob(f"{NAME}_{version}_*")):
        print(f"{f.stat().st_size:>12}  {f}")


def verified_zip(dist, version, platform):
    """The release zip of `dist`, checked against its SHA256SUMS as Terraform checks a download."""
    n = names(version, platform)
    archive = dist / n["zip"]
    sums_file = dist / n["sums"]
    if not archive.is_file() or not sums_file.is_file():
        sys.exit(f"release: no {n['zip']} with {n['sums']} in {dist}: run `make release` first")
    listed = dict(reversed(line.split(None, 1)) for line in sums_file.read_text().splitlines())
    if listed.get(n["zip"]) != sha256_file(archive):
        sys.exit(f"release: {archive} does not match {sums_file}: rebuild with `make release`")
    return archive


def install(plugins_dir, dist=None, binary=None, packed=False, version=None, platform=None):
    """Lays a release into a filesystem mirror under every registry host.

    From `dist` (the release zip, checked against its SUMS) or from a bare `binary` (the demo's
    debug build). Unpacked (the default): HOST/NAMESPACE/TYPE/VERSION/OS_ARCH/ holding exactly
    the zip's files, since Terraform's h1: hash covers every file of that directory. Packed:
    the zip itself in HOST/NAMESPACE/TYPE/.
    """
    version = version or cargo_version()
    platform = platform or os_arch()
    if binary is not None:
        if packed:
            sys.exit("release: --packed needs the release zip (--dist), not --binary")
        members = [(names(version, platform)["binary"], binary.read_bytes(), 0o755)]
    else:
        archive = verified_zip(dist, version, platform)
        with zipfile.ZipFile(archive) as zf:
            members = [
                (i.filename, zf.read(i), (i.external_attr >> 16) & 0o777 or 0o644)
                for i in zf.infolist()
            ]
    for host in HOSTS:
        provider_dir = plugins_dir / host / NAMESPACE / TYPE
        if packed:
            provider_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, provider_dir / archive.name)
            print(f"installed {provider_dir / archive.name}")
            continue
        target = provider_dir / version / platform
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name, data, mode in members:
            (target / name).write_bytes(data)
            (target / name).chmod(mode)
        print(f"installed {target}")


def glibc_check(binary, maximum):
    """Fails unless every GLIBC_x.y symbol version `binary` needs is at most `maximum`."""
    try:
        dump = subprocess.run(
            ["objdump", "-T", str(binary)], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"release: cannot read the dynamic symbols of {binary} with objdump: {e}")
    needed = {
        tuple(int(p) for p in v.split("."))
        for v in re.findall(r"\bGLIBC_([0-9]+(?:\.[0-9]+)+)\b", dump)
    }
    if not needed:
        sys.exit(f"release: {binary} references no GLIBC_ symbol version: not a glibc binary?")
    highest = max(needed)
    limit = tuple(int(p) for p in maximum.split("."))
    shown = ".".join(map(str, highest))
    if highest > limit:
        culprits = sorted({
            line.split()[-1] for line in dump.splitlines() if f"GLIBC_{shown}" in line
        })
        sys.exit(
            f"release: {binary} needs glibc {shown} (symbols: {', '.join(culprits)}), "
            f"more than {maximum}: build it with `make release` (cargo-zigbuild)"
        )
    print(f"glibc check: {binary} needs at most GLIBC_{shown} (limit {maximum})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version")
    p = sub.add_parser("package")
    p.add_argument("--binary", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpg-key", default=os.environ.get("GPG_FINGERPRINT") or None)
    p = sub.add_parser("install")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dist", type=Path)
    source.add_argument("--binary", type=Path)
    p.add_argument("--plugins-dir", type=Path,
                   default=Path.home() / ".terraform.d" / "plugins")
    p.add_argument("--packed", action="store_true")
    p = sub.add_parser("glibc")
    p.add_argument("--binary", type=Path, required=True)
    p.add_argument("--max", required=True)
    args = parser.parse_args()

    if args.command == "version":
        print(cargo_version())
    elif args.command == "package":
        if not args.binary.is_file():
            sys.exit(f"release: no provider binary at {args.binary}")
        package(args.binary, args.out, args.gpg_key)
    elif args.command == "install":
        install(args.plugins_dir, args.dist, args.binary, args.packed)
    elif args.command == "glibc":
        glibc_check(args.binary, args.max)


if __name__ == "__main__":
    main()
