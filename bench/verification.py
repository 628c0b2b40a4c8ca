#!/usr/bin/env python3
"""Benchmark: how long `mesh_verification` takes over N clusters on kube-sim, and how many
requests each client sends. examples/topology is applied at N clusters on two networks
without the check, then with `verify = true`: the second apply is the check alone (deploy
HelloWorld and curl everywhere, wait for them, N x N pairs probed through pod exec, clean up).

Usage: bench/verification.py [N ...]   (run `make build` first; default N = 3 10)
Prints one line per N; see bench/README.md for recorded figures.
"""
import json, os, signal, shutil, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from topology import TF, control, tf, topology_work  # noqa: E402


def execs(info, name):
    """pods/exec requests `name` served since its counters were reset."""
    counts = control(info, name, "GET", "/_sim/counters")["counts"]
    return sum(c["count"] for c in counts if c["resource"] == "pods/exec")


def run(n):
    work = tempfile.mkdtemp(prefix=f"mesh-bench-verify-{n}-")
    names = [f"c{i:02d}" for i in range(n)]
    sim, info = topology_work(work, names)
    try:
        tf(work, "apply", "-auto-approve")
        for c in names:
            control(info, c, "POST", "/_sim/counters/reset", {})
        check = tf(work, "apply", "-auto-approve", "-var", "verify=true")
        per_cluster = [execs(info, c) for c in names]
        out = subprocess.run([TF, "output", "-json", "reachability"], cwd=work, capture_output=True,
                             text=True, env=dict(os.environ, TF_CLI_CONFIG_FILE=os.path.join(work, "dev.tfrc")))
        seen = json.loads(out.stdout)
        complete = all(sorted(v) == names for v in seen.values()) and len(seen) == n
        print(f"N={n:<3} pairs={n * n:<4} check apply={check.wall:6.2f}s  exec requests per client: "
              f"min {min(per_cluster)} max {max(per_cluster)}  complete={complete}  "
              f"provider CPU {check.provider_cpu:.1f}s  load {os.getloadavg()[0]:.1f}", flush=True)
        tf(work, "destroy", "-auto-approve")
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [3, 10]:
        run(n)
