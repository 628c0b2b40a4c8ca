#!/usr/bin/env python3
"""Flat and inclusive profile of a stripped Go binary (Terraform's release builds) from
`perf script` output, its functions named from the binary's .gopclntab (Go >= 1.18), which
stripping keeps. Used for the Terraform side of bench/README.md's profiles.

  perf record -F 1999 -g -o perf.data -- terraform apply ...
  perf script -i perf.data -F comm,ip,sym,dso | bench/gosym.py $(command -v terraform) [TOP]

Samples of other processes (the provider, `tokio-rt-worker` threads) count as one entry each.

  ... | bench/gosym.py $(command -v terraform) --parts

instead counts each sample once, in the first of PARTS (the parts of a `terraform plan`) its
stack passes through, other processes by name: the table of bench/README.md's seventh round.
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


# --parts: a part's name and the functions that mark it, tried in this order (a sample inside
# the human plan output is counted there, not in the plan walk that called it).
PARTS = [
    ("garbage collection", ["runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge"]),
    ("human plan output", ["views.(*OperationHuman).Plan"]),
    ("plan file", ["planfile.Create"]),
    ("apply graph checked at plan", ["terraform.(*Context).checkApplyGraph"]),
    ("planning the instances", ["terraform.(*NodeAbstractResourceInstance).plan"]),
    ("rest of the plan walk", ["terraform.(*ContextGraphWalker).Execute"]),
    ("graph building", ["terraform.(*BasicGraphBuilder).Build"]),
    ("validation", ["terraform.(*Context).Validate"]),
    ("start (package init)", ["runtime.doInit"]),
]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    want_parts = "--parts" in sys.argv[2:]
    rest = [a for a in sys.argv[2:] if a != "--parts"]
    top = int(rest[0]) if rest else 40
    funcs = functions(binary)
    starts = [f[0] for f in funcs]
    # perf prints a non-PIE binary's addresses relative to its first mapping (0x400000).
    load = 0x400000

    def name(addr):
        i = bisect.bisect_right(starts, addr + load) - 1
        return funcs[i][1] if i >= 0 else "?"

    flat, inclusive, total, stack, comm = collections.Counter(), collections.Counter(), 0, [], None
    by_part = collections.Counter()
    def sample():
        nonlocal total
        if comm is None:
            return
        frames = stack if comm == "terraform" else [f"<{comm}>"]
        total += 1
        if comm != "terraform":
            by_part[f"<{comm}>"] += 1
        else:
            by_part[next((part for part, marks in PARTS
                          if any(m in f for f in frames for m in marks)), "other")] += 1
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
    if want_parts:
        for part, count in by_part.most_common():
            print(f"{count:7} {count * 100 / total:5.1f}% {part}")
        return
    for title, counts in (("flat", flat), ("inclusive", inclusive)):
        print(f"-- {title}")
        for f, c in counts.most_common(top):
            print(f"{c:7} {c * 100 / total:5.1f}% {f}")


if __name__ == "__main__":
    main()
