#!/usr/bin/env python3
"""Benchmark: `terraform plan` and `apply` of examples/topology at N clusters on kube-sim,
with and without injected API latency, with the provider's API request counts, peak memory
and CPU next to Terraform's; and the same graph's Terraform floor: the same nodes and edges
made of `terraform_data` (no provider process, no cluster), planned and applied the same way;
and its plugin floor: those nodes served by a provider process that does nothing
(bench/floor_provider.rs, built here), what any plugin provider costs Terraform; and its
state-sized floor: the plugin floor with each node's instance in the state padded to the size
of this build's (measured in the run before it), what our state's bytes alone cost Terraform.

Usage: bench/topology.py [N ...] [--latency-ms 50] [--connect-latency-ms 100] [--no-floor] [--details]
                        [--without-sync-wait] [--baseline DIR] [--repeat R]   (run `make build` first)
       bench/topology.py --chaos [N ...] [--seed S] [--share 0.05 ...]
       bench/topology.py --plan-only [N ...] [--repeat R] [--graphs this,plugin,terraform_data]
Prints one line per run; see bench/README.md for recorded figures.

--details: also the provider's own records (MESH_PROVIDER_TIMINGS): per RPC and resource type
the count and server-side time of plan, apply and re-plan, the share of the wall time any RPC
was in flight, the waits on the apply path, and the state bytes per resource type.
--without-sync-wait: also the same graph with wait_for_sync = false on the remote secrets.
--connect-latency-ms C: in the runs with latency, kube-sim also holds each new connection C ms
before its TLS handshake (kube-sim's connect_latency_ms): the round trips of TCP and TLS, which
per-request latency leaves out (2 × the latency with TLS 1.3).
--baseline DIR: also run the provider and kube-sim built in DIR (e.g. a build from before a
change; with DIR/examples/topology, that module) before this build's, in the same session. --repeat R: every run R times.
With the floors, each N ends with this build's ratios to each floor (run by run, without latency):
the median and range over the repeats, next to issue 17's targets (single runs move by 10-20 %).

--plan-only: only `terraform plan -out` from an empty state (default N = 10, R = 5), of this
build's graph and of the terraform_data and plugin floors' (or those --graphs names), one after
the other R times: wall time and CPU per graph, and this build's ratios run by run. Wrap it in
`perf record -g` with one graph for a profile of Terraform planning that graph.

--chaos: the chaos soak. kube-sim gives a share (5 % and 20 %) of every cluster's API requests
a seeded random fault (500/503, 429 with Retry-After as Status or plain text, connection reset,
50-300 ms latency) while Terraform applies the N-cluster topology (default N = 10): up to 3
applies until one succeeds, each failure's error summary checked for being a clear error;
`plan -detailed-exitcode` until it is 0 (up to 3); destroy up to 3 times; then faults off and
the objects of ours left counted. Exits 1 if any run failed those checks.
"""
import functools, json, os, resource, shutil, signal, ssl, statistics, string, subprocess, sys, tempfile, threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("MESH_PROVIDER_DIR", os.path.join(ROOT, "target", "debug"))
TF = os.environ.get("TF_ACC_TERRAFORM_PATH") or shutil.which("terraform") or shutil.which("tofu")
TICK = os.sysconf("SC_CLK_TCK")
PROVIDER = "terraform-provider-mesh"


def control(info, name, method, path, body=None):
    c = info[name]
    ctx = ssl.create_default_context(cadata=c["ca_pem"])
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(c["url"] + path, data=data, method=method,
                                 headers={"Authorization": "Bearer " + c["control_token"],
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx) as r:
        return json.load(r)


def proc_stat(pid):
    """(ppid, utime+stime in seconds) of pid, from /proc/<pid>/stat; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # Fields after the command (which may hold spaces), from field 3 (state) on.
    rest = raw[raw.rindex(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / TICK


def vm_hwm_mb(pid):
    """Peak resident set (VmHWM) of pid in MB, or 0."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """While Terraform runs: its provider processes (descendants running the mesh provider),
    their peak RSS and CPU, and Terraform's own peak RSS (Terraform < 1.3 runs as a panicwrap
    parent and a child doing the work: the larger of the two). Every 50 ms: a provider's CPU in
    its last 50 ms of life is not counted, so the provider figure is a slight lower bound."""

    def __init__(self, tf_pid):
        super().__init__(daemon=True)
        self.tf_pid = tf_pid
        self.stop = threading.Event()
        self.terraform = {tf_pid}  # Terraform's own processes
        self.provider_cpu = {}  # provider pid -> last seen utime+stime
        self.provider_rss = 0.0
        self.tf_rss = 0.0

    def classify(self, pid):
        st = proc_stat(pid)
        if st is None or st[0] not in self.terraform:
            return
        try:
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return
        if exe.startswith(PROVIDER):
            self.provider_cpu[pid] = st[1]
        else:
            self.terraform.add(pid)

    def run(self):
        while not self.stop.is_set():
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in self.terraform and int(entry) not in self.provider_cpu:
                    self.classify(int(entry))
            for pid in self.terraform:
                self.tf_rss = max(self.tf_rss, vm_hwm_mb(pid))
            for pid in self.provider_cpu:
                st = proc_stat(pid)
                if st is not None:
                    self.provider_cpu[pid] = st[1]
                    self.provider_rss = max(self.provider_rss, vm_hwm_mb(pid))
            self.stop.wait(0.05)


class Run:
    """One timed Terraform command: wall time, CPU of Terraform and of the provider, peaks."""

    def __init__(self, wall, tf_cpu, provider_cpu, tf_rss, provider_rss):
        self.wall, self.tf_cpu, self.provider_cpu = wall, tf_cpu, provider_cpu
        self.tf_rss, self.provider_rss = tf_rss, provider_rss

    def cores(self):
        """(Terraform, provider) average cores over the run's wall time."""
        return self.tf_cpu / self.wall, self.provider_cpu / self.wall


def tf(work, *args, timings=None):
    """Runs one Terraform command and measures it; `timings` names the file the provider
    appends its per-RPC and wait records to (MESH_PROVIDER_TIMINGS), None for none."""
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.path.join(work, "dev.tfrc"), TF_IN_AUTOMATION="1",
               TF_INPUT="0", CHECKPOINT_DISABLE="1")
    env.pop("MESH_PROVIDER_TIMINGS", None)
    if timings:
        env["MESH_PROVIDER_TIMINGS"] = timings
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen([TF, *args, "-no-color"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    out, err = proc.communicate()
    wall = time.monotonic() - start
    sampler.stop.set()
    sampler.join()
    if proc.returncode not in (0, 2):
        sys.exit(f"terraform {' '.join(args)} failed:\n{out}\n{err}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Terraform reaps its provider processes: their CPU is inside Terraform's children total.
    total = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    provider = sum(sampler.provider_cpu.values())
    return Run(wall, max(total - provider, 0.0), provider, sampler.tf_rss, sampler.provider_rss)


def load_timings(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0


def rpc_summary(path, wall):
    """Per RPC and resource type: count, total server-side time, median and p90, mean request
    size; then the time the provider served nothing while Terraform ran (Terraform's own work
    and the gaps between provider processes)."""
    lines = []
    records = [r for r in load_timings(path) if "rpc" in r]
    groups = {}
    for r in records:
        groups.setdefault((r["rpc"], r["type"]), []).append(r)
    for (rpc, ty), rs in sorted(groups.items(), key=lambda kv: -sum(r["us"] for r in kv[1])):
        us = [r["us"] for r in rs]
        lines.append(f"      {rpc:<27} {ty or '-':<22} n={len(rs):<5} total={sum(us) / 1e6:7.2f}s "
                     f"median={pct(us, 0.5) / 1e3:7.2f}ms p90={pct(us, 0.9) / 1e3:8.2f}ms "
                     f"request={sum(r['req_bytes'] for r in rs) / len(rs) / 1024:6.1f} KiB")
    if records:
        # Wall time with at least one RPC in flight in any provider process.
        spans = sorted((r["start_us"], r["start_us"] + r["us"]) for r in records)
        busy, end = 0, 0
        for a, b in spans:
            if b > end:
                busy += b - max(a, end)
                end = b
        lines.append(f"      at least one RPC in flight {busy / 1e6:.2f}s of {wall:.2f}s "
                     f"({busy / 1e6 / wall:.0%}); RPCs: {len(records)}")
    return lines


def wait_summary(path):
    """The waits on the apply path by kind (watches by what they wait for)."""
    groups = {}
    for r in load_timings(path):
        if "wait" not in r:
            continue
        what = r["what"]
        if r["wait"] == "watch":
            # "the token controller to populate Secret ns/name" -> its first words.
            what = " ".join(w for w in what.split()[:6] if "/" not in w)
        else:
            what = ""
        groups.setdefault((r["wait"], what), []).append(r)
    lines = []
    for (kind, what), rs in sorted(groups.items(), key=lambda kv: -sum(r["us"] for r in kv[1])):
        us = [r["us"] for r in rs]
        polls = [r["polls"] for r in rs if r.get("polls") is not None]
        extra = f" polls: median {pct(polls, 0.5)}, max {max(polls)}" if polls else ""
        lines.append(f"      wait {kind:<12} {what[:48]:<48} n={len(rs):<4} total={sum(us) / 1e6:7.2f}s "
                     f"median={pct(us, 0.5) / 1e3:7.1f}ms max={max(us) / 1e3:7.1f}ms{extra}")
    return lines


def state_sizes(work):
    """(the state file's size, {type: [bytes of each instance]}) after an apply: the instances
    as Terraform writes them (the file is rewritten whole after every resource an apply
    completes); None without a state."""
    try:
        with open(os.path.join(work, "terraform.tfstate")) as f:
            raw = f.read()
    except OSError:
        return None
    groups = {}
    for r in json.loads(raw).get("resources", []):
        for inst in r["instances"]:
            key = ("data." if r["mode"] == "data" else "") + r["type"]
            groups.setdefault(key, []).append(len(json.dumps(inst, indent=2)))
    return len(raw), groups


def mean_bytes(groups):
    """{type: mean bytes of an instance} of `state_sizes`' groups."""
    return {k: sum(v) // len(v) for k, v in groups.items()}


def state_summary(work):
    """Bytes of state per resource instance, by type, and the file's size."""
    sizes = state_sizes(work)
    if sizes is None:
        return "state: none"
    size, groups = sizes
    per = ", ".join(f"{k} {mean:,} B (n={len(groups[k])})" for k, mean in sorted(mean_bytes(groups).items()))
    return f"state file {size / 1024:,.0f} KiB; per instance: {per}"


def dev_tfrc(work, bin_dir=None, floor_dir=None):
    floor = '    "registry.terraform.io/tfmesh/floor" = "%s"\n' % floor_dir if floor_dir else ""
    with open(os.path.join(work, "dev.tfrc"), "w") as f:
        f.write('provider_installation {\n  dev_overrides {\n    "registry.terraform.io/tfmesh/mesh" = "%s"\n%s  }\n  direct {}\n}\n'
                % (bin_dir or BIN, floor))


def start_topology(work, names, bin_dir=None):
    """kube-sim serving clusters `names`, and `work` (a copy of examples/topology) set up to
    apply them on two networks: the dev overrides and terraform.tfvars. Returns the kube-sim
    process (stop it with SIGTERM) and its clusters' info."""
    sim = subprocess.Popen([os.path.join(bin_dir or BIN, "kube-sim"), "--clusters", ",".join(names),
                            "--kubeconfig", os.path.join(work, "kubeconfig"), "--info", os.path.join(work, "sim.json")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        sim.stdout.readline()  # the "ready" line
        info = json.load(open(os.path.join(work, "sim.json")))["clusters"]
        dev_tfrc(work, bin_dir)
        clusters = "".join(f'  "{c}" = {{ context = "{c}", network = "net{i % 2}" }}\n' for i, c in enumerate(names))
        with open(os.path.join(work, "terraform.tfvars"), "w") as f:
            f.write(f'kubeconfig_path = "{work}/kubeconfig"\nkey_algorithm = "ECDSA"\nclusters = {{\n{clusters}}}\n')
    except BaseException:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        raise
    return sim, info


def topology_work(work, names, bin_dir=None):
    """`work` made a copy of examples/topology (a baseline directory may bring the module of its
    own version) set up for clusters `names` by start_topology, its modules got. Returns
    start_topology's kube-sim process and clusters' info."""
    example = os.path.join(bin_dir or "", "examples", "topology")
    if not (bin_dir and os.path.isdir(example)):
        example = os.path.join(ROOT, "examples", "topology")
    shutil.copytree(example, work, dirs_exist_ok=True)
    sim, info = start_topology(work, names, bin_dir)
    try:
        tf(work, "get")
    except BaseException:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        raise
    return sim, info


def resources(n):
    return 1 + 2 * n + n * (n - 1)


# --connect-latency-ms: what each new connection to an API server costs in the runs with latency.
CONNECT_LATENCY_MS = 0


def run(n, latency_ms, sync_wait=True, details=False, bin_dir=None, label=""):
    """One run of examples/topology at N clusters with the provider (and kube-sim) of
    `bin_dir` (default: BIN); `label` names that build in the output."""
    work = tempfile.mkdtemp(prefix=f"mesh-bench-{n}-")
    names = [f"c{i:02d}" for i in range(n)]
    sim, info = topology_work(work, names, bin_dir)
    try:
        if not sync_wait:
            # The same graph without the product's wait for istiod (wait_for_sync = false).
            module = os.path.join(work, "modules", "mesh", "main.tf")
            with open(module) as f:
                text = f.read()
            marker = 'resource "mesh_remote_secret" "this" {\n  for_each = local.pairs\n'
            assert marker in text, "the remote secret block of examples/topology changed"
            with open(module, "w") as f:
                f.write(text.replace(marker, marker + "  wait_for_sync = false\n"))
        if latency_ms:
            for c in names:
                control(info, c, "POST", "/_sim/faults", {"path": "*", "latency_ms": latency_ms})
                if CONNECT_LATENCY_MS:
                    control(info, c, "POST", "/_sim/settings", {"connect_latency_ms": CONNECT_LATENCY_MS})
        for c in names:
            control(info, c, "POST", "/_sim/counters/reset", {})
        timings = {step: os.path.join(work, f"timings-{step}.jsonl") if details else None
                   for step in ("plan", "apply", "replan")}
        plan = tf(work, "plan", "-out", "plan.bin", timings=timings["plan"])
        plan_requests = sum(control(info, c, "GET", "/_sim/counters")["total"] for c in names)
        sim_before = proc_stat(sim.pid)[1]
        apply = tf(work, "apply", "-auto-approve", "plan.bin", timings=timings["apply"])
        # The clusters' side of the apply: kube-sim serving all N API servers on this machine.
        sim_cores = (proc_stat(sim.pid)[1] - sim_before) / apply.wall
        counters = [control(info, c, "GET", "/_sim/counters") for c in names]
        apply_requests = sum(c["total"] for c in counters) - plan_requests
        # TLS connections to the API servers that carried requests (the plan opens none).
        apply_connections = sum(c.get("connections", 0) for c in counters)
        for c in names:
            control(info, c, "POST", "/_sim/counters/reset", {})
        replan = tf(work, "plan", "-detailed-exitcode", timings=timings["replan"])
        replan_requests = sum(control(info, c, "GET", "/_sim/counters")["total"] for c in names)
        tf_cores, provider_cores = apply.cores()
        variant = (f" [{label}]" if label else "") + ("" if sync_wait else " wait_for_sync=false")
        if latency_ms and CONNECT_LATENCY_MS:
            variant += f" +{CONNECT_LATENCY_MS}ms per new connection"
        print(f"N={n:<3} latency={latency_ms:>3}ms{variant} resources={resources(n):<4} plan={plan.wall:6.2f}s "
              f"(requests {plan_requests})  apply={apply.wall:6.2f}s (requests {apply_requests}, "
              f"{apply_requests / resources(n):.1f}/resource, TLS connections {apply_connections})  "
              f"re-plan with refresh={replan.wall:6.2f}s "
              f"(requests {replan_requests})  "
              f"apply CPU: terraform {apply.tf_cpu:.1f}s ({tf_cores:.2f} cores, peak RSS {apply.tf_rss:.0f} MB), "
              f"provider {apply.provider_cpu:.1f}s ({provider_cores:.2f} cores, peak RSS {apply.provider_rss:.0f} MB), "
              f"kube-sim {sim_cores:.2f} cores  "
              f"plan CPU: terraform {plan.tf_cpu:.1f}s (peak RSS {plan.tf_rss:.0f} MB), "
              f"provider {plan.provider_cpu:.1f}s (peak RSS {plan.provider_rss:.0f} MB)  "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if details:
            print(f"    {state_summary(work)}", flush=True)
            for step, r in (("plan", plan), ("apply", apply), ("re-plan", replan)):
                print(f"    {step}: provider RPCs (server-side time)", flush=True)
                for line in rpc_summary(timings[step.replace("-", "")], r.wall):
                    print(line, flush=True)
            for line in wait_summary(timings["apply"]):
                print(line, flush=True)
        sizes = state_sizes(work)
        tf(work, "destroy", "-auto-approve")
        return plan.wall, apply.wall, mean_bytes(sizes[1] if sizes else {})
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)


# The topology module's graph with every node a terraform_data: the same for_each keys and
# the same references (root CA -> clusters -> gateways; both clusters -> each remote secret),
# inside a module as there. What Terraform spends on this is its own floor for the graph.
# `$node` is the resource type; the plugin floor's `floor_node` takes its input as a string,
# hence `$enc` and `$end` around each input (`jsonencode(` and `)` there, nothing for
# terraform_data, whose module stays as it was).
FLOOR_MODULE = string.Template("""
$required
variable "clusters" {
  type = map(object({ network = string }))
}

locals {
  pairs = {
    for pair in setproduct(keys(var.clusters), keys(var.clusters)) :
    "$${pair[0]}/$${pair[1]}" => { target = pair[0], remote = pair[1] }
    if pair[0] != pair[1]
  }
}

resource "$node" "root_ca" {
  input = $root_input
}

resource "$node" "cluster" {
  for_each = var.clusters
  input    = $enc{ root = $node.root_ca.id, name = each.key, network = each.value.network$pad_cluster }$end
}

# As examples/topology reads the clusters: through one small local, not each instance
# referencing the whole resource with a dynamic key.
locals {
  joined = { for name, c in $node.cluster : name => c.id }
}

resource "$node" "gateway" {
  for_each = var.clusters
  input    = $enc{ cluster = local.joined[each.key], network = each.value.network$pad_gateway }$end
}

resource "$node" "remote_secret" {
  for_each = local.pairs
  input = $enc{
    target = local.joined[each.value.target]
    remote = local.joined[each.value.remote]$pad_secret
  }$end
}

# The per-cluster status read (data.mesh_status): a data node per cluster read after every
# remote secret and gateway, and an output over all nodes, as in examples/topology.
data "terraform_remote_state" "status" {
  for_each = var.clusters
  backend  = "local"
  config = {
    path = "$${path.module}/status.tfstate"
  }
  depends_on = [$node.remote_secret, $node.gateway]
}

output "clusters" {
  value = {
    for name, c in $node.cluster : name => {
      gateway        = $node.gateway[name].id
      remote_secrets = sort([for k, s in $node.remote_secret : k if split("/", k)[0] == name])
      status         = data.terraform_remote_state.status[name].outputs
    }
  }
}
""")

# The floors: Terraform's built-in terraform_data (no provider process at all); the plugin
# floor: the same nodes served by bench/floor_provider.rs, a provider process whose one resource
# does nothing (what any plugin provider costs Terraform for this graph); and the state-sized
# floor: the plugin floor with each node's input padded so that its instance in the state is as
# large as this build's instance of the same role (what Terraform costs for our state's bytes
# alone, with a provider and clusters that cost nothing; our sensitive paths and nesting not
# modelled, so a lower bound).
NO_PAD = dict(root_input='"root"', pad_cluster="", pad_gateway="", pad_secret="")
PLUGIN_FLOOR = dict(node="floor_node", enc="jsonencode(", end=")", required="""
terraform {
  required_providers {
    floor = {
      source = "registry.terraform.io/tfmesh/floor"
    }
  }
}
""")
# The floors' module parameters; the state-sized floor's come from `padded`, per run.
FLOORS = {
    "terraform_data": dict(node="terraform_data", enc="", end="", required="", **NO_PAD),
    "plugin": dict(PLUGIN_FLOOR, **NO_PAD),
}
FLOOR_KINDS = (*FLOORS, "state-sized")
# Which of this build's types each node of the floor stands for; a floor_node instance's bytes
# without padding (it stores its input twice: input and output), and a status node's.
ROLES = {"root": "mesh_root_ca", "cluster": "mesh_cluster", "gateway": "mesh_eastwest_gateway",
         "secret": "mesh_remote_secret", "status": "data.mesh_status"}
FLOOR_NODE_BYTES, FLOOR_STATUS_BYTES = 482, 449


def padded(sizes):
    """The state-sized floor's module parameters and status state for this build's per-instance
    state sizes (`sizes`: type -> bytes)."""
    def pad(role, base, copies):
        return "p" * max(0, (sizes.get(ROLES[role], base) - base) // copies)
    params = dict(PLUGIN_FLOOR,
                  root_input=f'jsonencode({{ x = "root", pad = "{pad("root", FLOOR_NODE_BYTES, 2)}" }})',
                  pad_cluster=f', pad = "{pad("cluster", FLOOR_NODE_BYTES, 2)}"',
                  pad_gateway=f', pad = "{pad("gateway", FLOOR_NODE_BYTES, 2)}"',
                  pad_secret=f'\n    pad = "{pad("secret", FLOOR_NODE_BYTES, 2)}"')
    status = json.loads(FLOOR_STATUS_STATE)
    # An output in the status state costs about 40 bytes besides its value.
    status["outputs"] = {"pad": {"value": pad("status", FLOOR_STATUS_BYTES + 40, 1), "type": "string"}}
    return params, json.dumps(status)

# The state file the floor's status nodes read: no outputs.
FLOOR_STATUS_STATE = json.dumps({"version": 4, "terraform_version": "1.4.0", "serial": 1,
                                 "lineage": "00000000-0000-0000-0000-000000000000",
                                 "outputs": {}, "resources": []})


def banner(baseline=None, mode=None):
    """The first line of every mode's output: Terraform's version, the provider's directory (and
    the baseline's), the CPUs, and the mode."""
    version = subprocess.run([TF, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"{version}, provider from {BIN}{f', baseline from {baseline}' if baseline else ''}, "
          f"{os.cpu_count()} CPUs{f', {mode}' if mode else ''}", flush=True)


def floor_skipped(n, kind):
    """True, saying so, when this Terraform cannot run the floor `kind` (terraform_data: 1.4+)."""
    if kind != "terraform_data":
        return False
    version, text = tf_version()
    if version is None or version < (1, 4):
        print(f"N={n:<3} floor: skipped, terraform_data needs Terraform 1.4+ (this is {text})", flush=True)
        return True
    return False


def tf_version():
    out = subprocess.run([TF, "version", "-json"], capture_output=True, text=True)
    try:
        v = json.loads(out.stdout)["terraform_version"]
    except (ValueError, KeyError):
        return None, out.stdout.strip()
    return tuple(int(x) for x in v.split("-")[0].split(".")[:2]), v


@functools.cache
def floor_provider_dir():
    """Builds bench/floor_provider.rs (release), once per run of this script, and returns the
    directory of its binary."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "terraform-provider-floor"],
                   cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "examples")


def floor_work(work, n, kind, sizes=None):
    """Sets up `work` (an empty directory) to plan the floor `kind` at N clusters."""
    os.makedirs(os.path.join(work, "modules", "floor"))
    params, status = (padded(sizes or {}) if kind == "state-sized"
                      else (FLOORS[kind], FLOOR_STATUS_STATE))
    with open(os.path.join(work, "modules", "floor", "main.tf"), "w") as f:
        f.write(FLOOR_MODULE.substitute(params))
    with open(os.path.join(work, "modules", "floor", "status.tfstate"), "w") as f:
        f.write(status)
    clusters = "".join(f'    "c{i:02d}" = {{ network = "net{i % 2}" }}\n' for i in range(n))
    with open(os.path.join(work, "main.tf"), "w") as f:
        f.write(f'module "mesh" {{\n  source = "./modules/floor"\n  clusters = {{\n{clusters}  }}\n}}\n'
                'output "clusters" {\n  value = module.mesh.clusters\n}\n')
    if kind != "terraform_data":
        dev_tfrc(work, floor_dir=floor_provider_dir())
        tf(work, "get")  # a development override needs no init, and init would query the registry
    else:
        dev_tfrc(work)
        tf(work, "init", "-input=false")


def floor(n, details=False, kind="terraform_data", sizes=None):
    """The floor `kind` at N clusters: (plan, apply) wall times, None when skipped. The
    state-sized floor takes this build's per-instance state sizes (`sizes`, from `run`)."""
    if floor_skipped(n, kind):
        return
    work = tempfile.mkdtemp(prefix=f"mesh-bench-floor-{n}-")
    try:
        floor_work(work, n, kind, sizes)
        plan = tf(work, "plan", "-out", "plan.bin")
        apply = tf(work, "apply", "-auto-approve", "plan.bin")
        replan = tf(work, "plan", "-detailed-exitcode")
        tf_cores, _ = apply.cores()
        label = {"terraform_data": "floor (terraform_data)", "plugin": "plugin floor (floor_node)",
                 "state-sized": "state-sized plugin floor"}[kind]
        print(f"N={n:<3} {label} resources={resources(n):<4} plan={plan.wall:6.2f}s  "
              f"apply={apply.wall:6.2f}s  re-plan with refresh={replan.wall:6.2f}s  "
              f"apply CPU: terraform {apply.tf_cpu:.1f}s ({tf_cores:.2f} cores, peak RSS {apply.tf_rss:.0f} MB)  "
              f"plan CPU: terraform {plan.tf_cpu:.1f}s (peak RSS {plan.tf_rss:.0f} MB)  "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        if details:
            print(f"    {state_summary(work)}", flush=True)
        tf(work, "destroy", "-auto-approve")
        return plan.wall, apply.wall
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spread(values):
    """The median and range of `values`, as "median M (min-max)"."""
    v = sorted(values)
    return f"median {statistics.median(v):.2f} ({v[0]:.2f}-{v[-1]:.2f})"


# --plan-only: the graphs that can be planned side by side, and their names in the output.
PLAN_GRAPHS = {"this": "this build", "plugin": "plugin floor", "terraform_data": "terraform_data floor"}


def plan_only(n, repeat, graphs):
    """`terraform plan -out` from an empty state of this build's graph and of the fixed floors',
    one after the other, `repeat` rounds: each graph's wall time and CPU (Terraform with its
    provider processes), and this build's ratio to each floor run by run. A plan contacts no
    cluster, so kube-sim only runs to write the clusters' kubeconfig."""
    graphs = [g for g in graphs if not floor_skipped(n, g)]
    base = tempfile.mkdtemp(prefix=f"mesh-bench-plans-{n}-")
    try:
        works = {}
        for graph in graphs:
            work = works[graph] = os.path.join(base, graph)
            if graph == "this":
                sim, _ = topology_work(work, [f"c{i:02d}" for i in range(n)])
                sim.send_signal(signal.SIGTERM)
                sim.wait()
            else:
                os.makedirs(work)
                floor_work(work, n, graph)
        runs = {graph: [] for graph in graphs}
        for _ in range(repeat):
            for graph in graphs:
                runs[graph].append(tf(works[graph], "plan", "-out", "plan.bin"))
        for graph in graphs:
            print(f"N={n:<3} plan of {PLAN_GRAPHS[graph]} over {repeat} run(s): wall {spread(r.wall for r in runs[graph])} s, "
                  f"CPU of Terraform and its provider processes {spread(r.tf_cpu + r.provider_cpu for r in runs[graph])} s",
                  flush=True)
        for graph in graphs:
            if graph != "this" and "this" in runs:
                target = " (target <= 1.5)" if graph == "terraform_data" else ""
                print(f"N={n:<3} plan, this build / {PLAN_GRAPHS[graph]}, run by run: "
                      f"{spread(o.wall / f.wall for o, f in zip(runs['this'], runs[graph]))}{target}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def ratio_summary(n, ours, floors):
    """Lines comparing this build's runs without latency with each floor's, run by run (the
    floors ran right after each): the median ratio and its range, next to issue 17's targets;
    then the state-sized floor against the terraform_data floor (what our state's bytes alone
    cost Terraform)."""
    def span(pairs, i):
        return spread(o[i] / f[i] for o, f in pairs)
    lines = []
    for kind, theirs in floors.items():
        pairs = [(o, f) for o, f in zip(ours, theirs) if f]
        if not pairs:
            continue
        # Issue 17's targets are set against the terraform_data floor.
        plan_t, apply_t = (" (target <= 1.5)", " (target <= 2)") if kind == "terraform_data" else ("", "")
        lines.append(f"N={n:<3} this build / {kind} floor over {len(pairs)} run(s): "
                     f"plan {span(pairs, 0)}{plan_t}, apply {span(pairs, 1)}{apply_t}")
    pairs = [(s, f) for s, f in zip(floors.get("state-sized", []), floors.get("terraform_data", []))
             if s and f]
    if pairs:
        lines.append(f"N={n:<3} state-sized floor / terraform_data floor over {len(pairs)} run(s): "
                     f"plan {span(pairs, 0)}, apply {span(pairs, 1)}")
    return lines


# What a failed Terraform command must never say under API faults: a crash of the provider or
# of Terraform, a broken plugin connection, or a provider result Terraform refuses.
NOT_CLEAR = ["panic", "inconsistent result", "Plugin did not respond",
             "plugin encountered an error", "rpc error"]
# A command running this long under faults is a hang (the provider's own timeouts are shorter).
CHAOS_COMMAND_TIMEOUT_S = 1200
MANAGED_BY = ("app.kubernetes.io/managed-by", "terraform-provider-mesh")
OWNING_RESOURCE = "install.operator.istio.io/owning-resource"


def tf_try(work, *args):
    """Runs one Terraform command; (exit code, stdout + stderr, wall seconds); code None = hang."""
    env = dict(os.environ, TF_CLI_CONFIG_FILE=os.path.join(work, "dev.tfrc"), TF_IN_AUTOMATION="1",
               TF_INPUT="0", CHECKPOINT_DISABLE="1")
    start = time.monotonic()
    proc = subprocess.Popen([TF, *args, "-no-color"], cwd=work, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=CHAOS_COMMAND_TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # let Terraform stop the provider and write its state
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        code = None
    return code, out + err, time.monotonic() - start


def error_summary(output):
    """The `Error:` lines of a failed command, one per diagnostic, deduplicated."""
    lines = [l.strip() for l in output.splitlines() if l.strip().startswith("Error:")]
    return sorted(set(lines)) or [output.strip().splitlines()[-1] if output.strip() else "(no output)"]


def plan_changes(output):
    """What a plan wants to change: its resource headers and changed attributes."""
    keep = [l.strip() for l in output.splitlines()
            if l.strip().startswith("#") or "->" in l or l.startswith("Plan:")]
    return keep[:40]


def unclear(output):
    """The markers of an unclear failure found in `output` (case-insensitive)."""
    low = output.lower()
    return [m for m in NOT_CLEAR if m.lower() in low]


class Attempts:
    """Up to 3 tries of one Terraform step under faults: each failure's errors and verdict."""

    def __init__(self, step):
        self.step, self.tries, self.failures, self.problems, self.wall = step, 0, [], [], 0.0
        self.done = False

    def run(self, work, args, ok_codes=(0,)):
        while self.tries < 3 and not self.done:
            self.tries += 1
            code, output, wall = tf_try(work, *args)
            self.wall += wall
            if code in ok_codes:
                self.done = True
                return code
            if code is None:
                self.problems.append(f"{self.step} #{self.tries}: no result after {CHAOS_COMMAND_TIMEOUT_S} s (hang)")
            else:
                errors = error_summary(output)
                self.failures.append(errors)
                bad = unclear(output)
                if bad:
                    self.problems.append(f"{self.step} #{self.tries}: unclear failure ({', '.join(bad)}): {errors}")
                # A failed detailed-exitcode plan (1) is an error; 2 (changes) is no error but not converged.
                if code == 2:
                    self.failures[-1] = ["plan shows changes:"] + plan_changes(output)
        if not self.done:
            self.problems.append(f"{self.step}: not done in 3 tries")
        return None


def leftovers(info, name):
    """Objects of ours (managed-by label) and of the installer (CRDs aside) left in a cluster."""
    left = []
    for o in control(info, name, "GET", "/_sim/dump")["objects"]:
        labels = o.get("metadata", {}).get("labels") or {}
        ours = labels.get(MANAGED_BY[0]) == MANAGED_BY[1]
        installed = OWNING_RESOURCE in labels and o.get("kind") != "CustomResourceDefinition"
        if ours or installed:
            left.append(f"{name}:{o.get('kind')}/{o['metadata'].get('name')}")
    return left


CHAOS_KINDS = ["internal_error", "unavailable", "too_many_requests", "too_many_requests_plain",
               "reset", "latency"]


def chaos_run(n, share, seed):
    """One chaos soak; returns the list of problems found (empty = passed)."""
    work = tempfile.mkdtemp(prefix=f"mesh-chaos-{n}-")
    names = [f"c{i:02d}" for i in range(n)]
    sim, info = topology_work(work, names)
    try:
        for c in names:
            control(info, c, "POST", "/_sim/chaos", {"share": share, "seed": seed})
            control(info, c, "POST", "/_sim/chaos/reset", {})
        apply = Attempts("apply")
        apply.run(work, ["apply", "-auto-approve"])
        plan = Attempts("plan")
        if apply.done:
            plan.run(work, ["plan", "-detailed-exitcode"])
        destroy = Attempts("destroy")
        destroy.run(work, ["destroy", "-auto-approve"])
        injected = {k: 0 for k in CHAOS_KINDS + ["requests"]}
        for c in names:
            got = control(info, c, "DELETE", "/_sim/chaos")["injected"]
            for k in injected:
                injected[k] += got.get(k, 0)
        left = [o for c in names for o in leftovers(info, c)]
        faults = sum(injected[k] for k in CHAOS_KINDS)
        problems = apply.problems + plan.problems + destroy.problems
        if left:
            problems.append(f"{len(left)} objects left after destroy: {left[:10]}")
        by_kind = ", ".join(f"{k} {injected[k]}" for k in CHAOS_KINDS)
        print(f"N={n:<3} chaos share={share:.0%} seed={seed}: faults injected {faults} of {injected['requests']} "
              f"requests ({by_kind}); applies needed {apply.tries if apply.done else 'FAILED'} ({apply.wall:.1f} s), "
              f"plans to exit 0 {plan.tries if plan.done else 'FAILED'}, "
              f"destroys needed {destroy.tries if destroy.done else 'FAILED'} ({destroy.wall:.1f} s), "
              f"objects leaked {len(left)}  load {os.getloadavg()[0]:.1f}", flush=True)
        for step in (apply, plan, destroy):
            for i, errors in enumerate(step.failures, 1):
                print(f"    {step.step} #{i} failed: {' | '.join(errors)[:600]}", flush=True)
        for p in problems:
            print(f"    PROBLEM: {p}", flush=True)
        return problems
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait()
        if "MESH_BENCH_KEEP" not in os.environ:
            shutil.rmtree(work, ignore_errors=True)


def take(args, name):
    """Removes every `name VALUE` pair from the command line `args`; the values, in order."""
    values = []
    while name in args:
        i = args.index(name)
        if i + 1 == len(args):
            sys.exit(f"{name} needs a value")
        values.append(args[i + 1])
        del args[i:i + 2]
    return values


def chaos_main(args):
    seed = int((take(args, "--seed") or [1])[-1])
    shares = [float(s) for s in take(args, "--share")]
    banner(mode="chaos soak")
    problems = []
    for n in [int(a) for a in args] or [10]:
        for share in shares or [0.05, 0.2]:
            problems += chaos_run(n, share, seed)
    if problems:
        sys.exit(f"chaos soak: {len(problems)} problem(s), see PROBLEM lines above")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--chaos" in args:
        chaos_main([a for a in args if a != "--chaos"])
        sys.exit(0)
    if "--plan-only" in args:
        args.remove("--plan-only")
        repeat = int((take(args, "--repeat") or [5])[-1])
        graphs = (take(args, "--graphs") or [",".join(PLAN_GRAPHS)])[-1].split(",")
        if unknown := [g for g in graphs if g not in PLAN_GRAPHS]:
            sys.exit(f"--graphs: unknown {unknown}; choose from {', '.join(PLAN_GRAPHS)}")
        banner(mode="plans only")
        for n in [int(a) for a in args] or [10]:
            plan_only(n, repeat, graphs)
        sys.exit(0)
    latencies = [0, 50]
    with_floor = "--no-floor" not in args
    details = "--details" in args
    # Also the graph without the sync wait (wait_for_sync = false), to show what it costs.
    no_sync_too = "--without-sync-wait" in args
    args = [a for a in args if a not in ("--no-floor", "--details", "--without-sync-wait")]
    if given := take(args, "--latency-ms"):
        latencies = [int(given[-1])]
    CONNECT_LATENCY_MS = int((take(args, "--connect-latency-ms") or [0])[-1])
    # Another build (e.g. before a change), run next to this one in the same session.
    baseline = os.path.abspath(given[-1]) if (given := take(args, "--baseline")) else None
    repeat = int((take(args, "--repeat") or [1])[-1])
    banner(baseline)
    for n in [int(a) for a in args] or [3, 10, 30]:
        ours, floors = [], {kind: [] for kind in FLOOR_KINDS}
        for _ in range(repeat):
            sizes = None
            for lat in latencies:
                if baseline:
                    run(n, lat, details=details, bin_dir=baseline, label="baseline")
                plan_wall, apply_wall, sizes = run(n, lat, details=details,
                                                   label="this build" if baseline else "")
                if lat == 0:
                    ours.append((plan_wall, apply_wall))
                if no_sync_too:
                    run(n, lat, sync_wait=False, details=details)
            if with_floor:
                for kind in floors:
                    floors[kind].append(floor(n, details=details, kind=kind, sizes=sizes))
        if ours and with_floor:
            for line in ratio_summary(n, ours, floors):
                print(line, flush=True)
