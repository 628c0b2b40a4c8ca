#!/usr/bin/env python3
"""Start-up time of a provider binary: from exec to the go-plugin handshake line, as
Terraform waits for it (magic cookie, protocol 6, no AutoMTLS), over N runs.

  scripts/startup-time.py BINARY [N]      prints size, median and 90th percentile
"""

import os
import statistics
import subprocess
import sys
import time

COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"


def one_start(binary):
    env = dict(os.environ, TF_PLUGIN_MAGIC_COOKIE=COOKIE, PLUGIN_PROTOCOL_VERSIONS="6")
    env.pop("PLUGIN_CLIENT_CERT", None)
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.terminate()
    proc.wait()
    if not line.startswith(b"1|6|"):
        sys.exit(f"startup-time: no handshake line from {binary}: {line!r}")
    return elapsed


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    one_start(binary)  # warm the page cache
    times = sorted(one_start(binary) for _ in range(runs))
    p90 = times[int(0.9 * (runs - 1))]
    size = os.path.getsize(binary)
    print(f"{binary}: {size / 1e6:.1f} MB, start to handshake: median "
          f"{statistics.median(times) * 1e3:.1f} ms, p90 {p90 * 1e3:.1f} ms (n={runs})")


if __name__ == "__main__":
    main()
