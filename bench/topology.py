#!/usr/bin/env python3
"""Benchmark: `terraform plan` and `apply` of examples/topology at N clusters on kube-sim,
with and without injected API latency, with the provider's API request counts.

Usage: bench/topology.py [N ...] [--latency-ms 50]   (run `make build` first)
Prints one line per run; see bench/README.md for recorded figures.
"""
import json, os, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MESH_PROVIDER_DIR", os.path.join(ROOT, "target", "debug"))
TF = os.environ.get("TF_ACC_TERRAFORM_PATH") or shutil.which("terraform") or shutil.which("tofu")


def control(info, name, method, path, body=None):
    c = info[name]
    ctx = ssl.create_default_context(cadata=c["ca_pem"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(c["url"] + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + c["control_token"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.load(r)


def tf(work, *args):
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.path.join(work, "dev.tfrc"), TF_IN_AUTOMATION="1",
               TF_INPUT="0", CHECKPOINT_DISABLE="1")
    start = time.monotonic()
    out = subprocess.run([TF, *args, "-no-color"], cwd=work, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if out.returncode not in (0, 2):
        sys.exit(f"terraform {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return took


def run(n, latency_ms):
    work = tempfile.mkdtemp(prefix=f"mesh-bench-{n}-")
    shutil.copytree(os.path.join(ROOT, "examples", "topology"), work, dirs_exist_ok=True)
    names = [f"c{i:02d}" for i in range(n)]
    sim = subprocess.Popen([os.path.join(BIN, "kube-sim"), "--clusters", ",".join(names),
                            "--kubeconfig", os.path.join(work, "kubeconfig"), "--info", os.path.join(work, "sim.json")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        sim.stdout.readline()  # the "ready" line
        info = json.load(open(os.path.join(work, "sim.json")))["clusters"]
        with open(os.path.join(work, "dev.tfrc"), "w") as f:
            f.write('provider_installation {\n  dev_overrides {\n    "registry.terraform.io/tfmesh/mesh" = "%s"\n  }\n  direct {}\n}\n' % BIN)
        clusters = "".join(f'  "{c}" = {{ context = "{c}", network = "net{i % 2}" }}\n' for i, c in enumerate(names))
        with open(os.path.join(work, "terraform.tfvars"), "w") as f:
            f.write(f'kubeconfig_path = "{work}/kubeconfig"\nkey_algorithm = "ECDSA"\nclusters = {{\n{clusters}}}\n')
        tf(work, "get")
        if latency_ms:
            for c in names:
                control(info, c, "POST", "/_sim/faults", {"path": "*", "latency_ms": latency_ms})
        for c in names:
            control(info, c, "POST", "/_sim/counters/reset", {})
        plan = tf(work, "plan", "-out", "plan.bin")
        plan_requests = sum(control(info, c, "GET", "/_sim/counters")["total"] for c in names)
        apply = tf(work, "apply", "-auto-approve", "plan.bin")
        apply_requests = sum(control(info, c, "GET", "/_sim/counters")["total"] for c in names)
        replan = tf(work, "plan", "-detailed-exitcode")
        resources = 1 + 2 * n + n * (n - 1)
        print(f"N={n:<3} latency={latency_ms:>3}ms resources={resources:<4} plan={plan:6.2f}s "
              f"(requests {plan_requests})  apply={apply:6.2f}s (requests {apply_requests}, "
              f"{apply_requests / resources:.1f}/resource)  re-plan with refresh={replan:6.2f}s", flush=True)
        tf(work, "destroy", "-auto-approve")
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    latencies = [0, 50]
    if "--latency-ms" in args:
        i = args.index("--latency-ms")
        latencies = [int(args[i + 1])]
        del args[i:i + 2]
    for n in [int(a) for a in args] or [3, 10, 30]:
        for lat in latencies:
            run(n, lat)
