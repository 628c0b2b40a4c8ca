#!/usr/bin/env bash
# make demo: the provider applying the seed's three-cluster, two-network Istio mesh
# (examples/topology) with real Terraform, then re-planning (nothing to do) and destroying.
#
# Clusters: by default three loopback kube-sim clusters started here. With
# CONTEXTS="ctx-a=network-1 ctx-b=network-1 ctx-c=network-2" (and optionally KUBECONFIG),
# the same plan runs against those kubeconfig contexts instead (kind, EKS, ...); each
# cluster is named after its context, made a DNS label (kind-east1, arn-aws-eks-...).
# DEMO_DIR chooses the scratch directory (default .tools/demo). The plan ends with
# mesh_verification (HelloWorld in every cluster, called from every cluster); VERIFY=false
# leaves it out (clusters that cannot pull the samples' images).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tf=${TF_ACC_TERRAFORM_PATH:-$(command -v terraform || command -v tofu || true)}
[ -x "$tf" ] || { echo "demo: no terraform or tofu found (make demo installs one)" >&2; exit 1; }
bin_dir=${MESH_PROVIDER_DIR:-$root/target/debug}
work=${DEMO_DIR:-$root/.tools/demo}
rm -rf "$work" && mkdir -p "$work"
cp -r "$root/examples/topology/." "$work/"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
note() { printf '    %s\n' "$*"; }
fail() { note "$*" >&2; exit 1; }
# Terraform's own output goes to last.log, shown only when a command fails.
run_tf() { "$tf" "$@" -no-color > "$work/last.log" 2>&1 || { cat "$work/last.log"; fail "terraform $1 failed"; }; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

sim_pid=""
cleanup() {
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  # A flattened copy of the user's kubeconfig holds credentials: do not leave it behind.
  rm -f "$work/kubeconfig.flat"
}
trap cleanup EXIT

# A kubeconfig context name as a mesh cluster name: a DNS-1123 label.
label() { printf '%s' "$1" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9-' '-' | sed -e 's/^-*//' -e 's/-*$//' | cut -c1-63; }

if [ -n "${CONTEXTS:-}" ]; then
  kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
  if [[ $kubeconfig == *:* ]]; then
    # The provider reads one file: merge the list as kubectl would.
    command -v kubectl >/dev/null || fail "KUBECONFIG lists several files: merging them needs kubectl"
    (umask 077; kubectl config view --flatten > "$work/kubeconfig.flat")
    kubeconfig=$work/kubeconfig.flat
  fi
  # Terraform runs in $work: a relative path must not be resolved from there.
  case $kubeconfig in /*|"~"*) ;; *) kubeconfig=$PWD/$kubeconfig ;; esac
  clusters=""
  step "using kubeconfig contexts of $kubeconfig"
  for pair in $CONTEXTS; do
    ctx=${pair%%=*}; net=${pair#*=}
    [ "$ctx" != "$pair" ] && [ -n "$net" ] || fail "CONTEXTS entries are context=network, got \"$pair\""
    name=$(label "$ctx")
    [ -n "$name" ] || fail "context \"$ctx\" gives no usable cluster name"
    clusters+="  \"$name\" = { context = \"$ctx\", network = \"$net\" }"$'\n'
    note "$name: context $ctx, network $net"
  done
else
  kubeconfig=$work/kubeconfig
  names="cluster-east-1,cluster-east-2,cluster-west-1"
  step "starting three loopback Kubernetes clusters (kube-sim)"
  "$bin_dir/kube-sim" --clusters "$names" --kubeconfig "$kubeconfig" --info "$work/sim.json" > "$work/sim.log" 2>&1 &
  sim_pid=$!
  # kube-sim prints "kube-sim ready" once every cluster serves.
  for _ in $(seq 1 600); do
    grep -q "ready" "$work/sim.log" 2>/dev/null && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.log"; fail "kube-sim exited"; }
    sleep 0.05
  done
  grep -q "ready" "$work/sim.log" || { cat "$work/sim.log"; fail "kube-sim not ready after 30 s"; }
  python3 -c '
import json, sys
clusters = json.load(open(sys.argv[1]))["clusters"]
print("    " + ", ".join(sorted(clusters)) + " (API servers on 127.0.0.1)")
' "$work/sim.json"
  clusters='  "cluster-east-1" = { context = "cluster-east-1", network = "network-east" }
  "cluster-east-2" = { context = "cluster-east-2", network = "network-east" }
  "cluster-west-1" = { context = "cluster-west-1", network = "network-west" }
'
fi

# The provider is installed as `make install` installs a release: laid into a filesystem
# mirror (here the build in $bin_dir, in the demo's own directory) and picked up by
# `terraform init`, which records its hash in .terraform.lock.hcl.
python3 "$root/scripts/release.py" install --binary "$bin_dir/terraform-provider-mesh" \
  --plugins-dir "$work/plugins" > /dev/null
cat > "$work/demo.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$work/plugins"
    include = ["registry.terraform.io/tfmesh/mesh"]
  }
  direct {
    exclude = ["registry.terraform.io/tfmesh/mesh"]
  }
}
TFRC
verify=${VERIFY:-true}
cat > "$work/terraform.tfvars" <<TFVARS
kubeconfig_path = "$kubeconfig"
key_algorithm   = "ECDSA"
verify          = $verify
clusters = {
$clusters}
TFVARS
export TF_CLI_CONFIG_FILE=$work/demo.tfrc TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
cd "$work"
run_tf init

step "terraform apply ($("$tf" version | head -1)): the whole mesh in one plan"
start=$(date +%s%N)
run_tf apply -auto-approve
note "$(grep -o 'Resources: [0-9]* added' last.log) in $(ms_since "$start") ms"

step "what Terraform built, and what each istiod reports (data source mesh_status)"
"$tf" output -json clusters | python3 -c '
import json, sys
rows = json.load(sys.stdin)
head = ("CLUSTER", "NETWORK", "ISTIOD", "GATEWAY", "REMOTE CLUSTERS (istiod sync status)")
def remotes(c):
    return ", ".join(r + " " + (c["remote_sync"].get(r) or "not-seen") for r in c["remote_secrets"]) or "-"
table = [head] + [
    (name, c["network"], c["control_plane_version"] or "-", c["gateway_address"] or "-", remotes(c))
    for name, c in sorted(rows.items())]
widths = [max(len(r[i]) for r in table) for i in range(4)]
for r in table:
    print("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) + "  " + r[4])
sick = {name: c["problems"] for name, c in rows.items() if not c["healthy"]}
for name, problems in sorted(sick.items()):
    for p in problems:
        print(f"    {name}: {p}")
print("    every istiod has synced every remote cluster" if not sick else f"    {len(sick)} cluster(s) unhealthy")
sys.exit(1 if sick else 0)
' || fail "the mesh is not healthy"

if [ "$verify" = true ]; then
  step "traffic: HelloWorld in every cluster, called from every cluster (mesh_verification)"
  "$tf" output -json reachability | python3 -c '
import json, sys
seen = json.load(sys.stdin)
names = sorted(seen)
print("    " + "CLIENT".ljust(max(map(len, names))) + "  ANSWERED BY")
for c in names:
    print("    " + c.ljust(max(map(len, names))) + "  " + " ".join(seen[c]))
full = all(sorted(seen[c]) == names for c in names)
n = len(names)
print(f"    every client reached every cluster ({n} x {n})" if full else "    some pairs did not connect")
sys.exit(0 if full else 1)
' || fail "the mesh does not carry traffic everywhere"
fi

step "terraform plan again"
set +e
"$tf" plan -detailed-exitcode -no-color > last.log 2>&1
code=$?
set -e
[ "$code" -eq 0 ] || { cat last.log; fail "the re-plan was not empty (exit $code)"; }
note "no changes"

step "terraform destroy"
start=$(date +%s%N)
run_tf destroy -auto-approve
note "$(grep -o 'Resources: [0-9]* destroyed' last.log) in $(ms_since "$start") ms"

if [ -z "${CONTEXTS:-}" ]; then
  step "what the clusters still hold of ours"
  python3 - "$work/sim.json" <<'PY'
import json, ssl, sys, urllib.request
info = json.load(open(sys.argv[1]))["clusters"]
left, counts = 0, []
for name, c in sorted(info.items()):
    ctx = ssl.create_default_context(cadata=c["ca_pem"])
    req = urllib.request.Request(c["url"] + "/_sim/dump", headers={"Authorization": "Bearer " + c["control_token"]})
    objects = json.load(urllib.request.urlopen(req, context=ctx))["objects"]
    ours = [o for o in objects if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "terraform-provider-mesh"]
    left += len(ours)
    counts.append(f"{name} {len(ours)}")
print("    objects of ours left: " + ", ".join(counts))
sys.exit(1 if left else 0)
PY
  # kube-sim stops on exit (the trap above).
fi
