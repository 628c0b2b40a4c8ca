#!/usr/bin/env python3
"""Flat and inclusive profile of a stripped Go binary (Terraform's release builds) from
`perf script` output, its functions named from the binary's .gopclntab (Go >= 1.18), which
stripping keeps. Used for the Terraform side of bench/README.md's profiles.

  perf record -F 1999 -g -o perf.data -- terraform apply ...
  perf script -i perf.data -F comm,ip,sym,dso | bench/gosym.py $(command -v terraform) [TOP]

Samples of other processes (the provider, `tokio-rt-worker` threads) count as one entry each.
"""
import bisect
import collections
import struct
import subprocess
import sys


def functions(binary):
    """(start address, name) of every function, sorted, from .gopclntab."""
    data = open(binary, "rb").read()
    sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout
    line = next(l for l in sections.splitlines() if ".gopclntab" in l)
    base = int(line.split("]")[1].split()[3], 16)  # the section's file offset
    magic, = struct.unpack_from("<I", data, base)
    if magic not in (0xFFFFFFF0, 0xFFFFFFF1):
        sys.exit(f"{binary}: unknown .gopclntab magic {magic:#x} (Go 1.18 or later expected)")
    # pcHeader: magic, 2 pad bytes, minLC, ptrSize, then 8-byte words.
    nfunc, _nfiles, text_start, funcname_off, _cu, _filetab, _pctab, pcln_off = (
        struct.unpack_from("<Q", data, base + 8 + i * 8)[0] for i in range(8))
    table = base + pcln_off
    out = []
    for i in range(nfunc):
        entry, func = struct.unpack_from("<II", data, table + i * 8)
        name_off, = struct.unpack_from("<i", data, table + func + 4)
        start = base + funcname_off + name_off
        out.append((text_start + entry, data[start:data.index(b"\0", start)].decode(errors="replace")))
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    funcs = functions(binary)
    starts = [f[0] for f in funcs]
    # perf prints a non-PIE binary's addresses relative to its first mapping (0x400000).
    load = 0x400000

    def name(addr):
        i = bisect.bisect_right(starts, addr + load) - 1
        return funcs[i][1] if i >= 0 else "?"

    flat, inclusive, total, stack, comm = collections.Counter(), collections.Counter(), 0, [], None
    def sample():
        nonlocal total
        if comm is None:
            return
        frames = stack if comm == "terraform" else [f"<{comm}>"]
        total += 1
        if frames:
            flat[frames[0]] += 1
        for f in set(frames):
            inclusive[f] += 1

    for line in sys.stdin:
        if not line.strip():
            sample()
            stack, comm = [], None
        elif line[0] in " \t":
            parts = line.split()
            try:
                addr = int(parts[0], 16)
            except ValueError:
                continue
            dso = parts[-1]
            stack.append(name(addr) if dso.endswith(binary.rsplit("/", 1)[-1] + ")") else " ".join(parts[1:-1]))
        else:
            comm = line.split()[0]
    sample()
    print(f"samples {total}")
    for title, counts in (("flat", flat), ("inclusive", inclusive)):
        print(f"-- {title}")
        for f, c in counts.most_common(top):
            print(f"{c:7} {c * 100 / total:5.1f}% {f}")


if __name__ == "__main__":
    main()
