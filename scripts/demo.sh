#!/usr/bin/env bash
# make demo: the provider applying the seed's three-cluster, two-network Istio mesh
# (examples/topology) with real Terraform, then re-planning (nothing to do) and destroying.
#
# Clusters: by default three loopback kube-sim clusters started here. With
# CONTEXTS="ctx-a=network-1 ctx-b=network-1 ctx-c=network-2" (and optionally KUBECONFIG),
# the same plan runs against real clusters (kind, EKS, ...) instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tf=${TF_ACC_TERRAFORM_PATH:-$(command -v terraform || command -v tofu)}
bin_dir=${MESH_PROVIDER_DIR:-$root/target/debug}
work=$root/.tools/demo
rm -rf "$work" && mkdir -p "$work"
cp -r "$root/examples/topology/." "$work/"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
run_tf() { "$tf" "$@" -no-color > "$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }; }

sim_pid=""
cleanup() { if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

if [ -n "${CONTEXTS:-}" ]; then
  kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
  clusters=""
  for pair in $CONTEXTS; do
    ctx=${pair%%=*}; net=${pair#*=}
    clusters+="  \"$ctx\" = { context = \"$ctx\", network = \"$net\" }"$'\n'
  done
  step "using kubeconfig contexts: $CONTEXTS"
else
  kubeconfig=$work/kubeconfig
  names="cluster-east-1,cluster-east-2,cluster-west-1"
  step "starting three loopback Kubernetes clusters (kube-sim): $names"
  "$bin_dir/kube-sim" --clusters "$names" --kubeconfig "$kubeconfig" --info "$work/sim.json" > "$work/sim.log" 2>&1 &
  sim_pid=$!
  for _ in $(seq 1 200); do grep -q "ready" "$work/sim.log" 2>/dev/null && break; kill -0 "$sim_pid" || { cat "$work/sim.log"; exit 1; }; sleep 0.05; done
  note "$(grep ready "$work/sim.log")"
  clusters='  "cluster-east-1" = { context = "cluster-east-1", network = "network-east" }
  "cluster-east-2" = { context = "cluster-east-2", network = "network-east" }
  "cluster-west-1" = { context = "cluster-west-1", network = "network-west" }
'
fi

cat > "$work/dev.tfrc" <<TFRC
provider_installation {
  dev_overrides {
    "registry.terraform.io/tfmesh/mesh" = "$bin_dir"
  }
  direct {}
}
TFRC
cat > "$work/terraform.tfvars" <<TFVARS
kubeconfig_path = "$kubeconfig"
key_algorithm   = "ECDSA"
clusters = {
$clusters}
TFVARS
export TF_CLI_CONFIG_FILE=$work/dev.tfrc TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
cd "$work"
run_tf get

step "terraform apply ($("$tf" version | head -1)): root CA, clusters, gateways, remote secrets in one plan"
start=$(date +%s%N)
run_tf apply -auto-approve
note "$(grep -o 'Apply complete.*' last.log) in $(( ($(date +%s%N) - start) / 1000000 )) ms"

step "what Terraform built"
"$tf" output -json clusters | python3 -c '
import json, sys
rows = json.load(sys.stdin)
fmt = "    {:<16} {:<14} {:<8} {:<16} {}"
print(fmt.format("CLUSTER", "NETWORK", "ISTIOD", "GATEWAY", "REMOTE SECRETS FOR"))
for name, c in sorted(rows.items()):
    print(fmt.format(name, c["network"], c["control_plane_version"] or "-", c["gateway_address"] or "-", ", ".join(c["remote_secrets"]) or "-"))
'

step "terraform plan again: nothing to do"
set +e
"$tf" plan -detailed-exitcode -no-color > last.log 2>&1
code=$?
set -e
if [ "$code" -ne 0 ]; then cat last.log; note "re-plan was not empty (exit $code)"; exit 1; fi
note "No changes. Your infrastructure matches the configuration."

step "terraform destroy"
start=$(date +%s%N)
run_tf destroy -auto-approve
note "$(grep -o 'Destroy complete.*' last.log) in $(( ($(date +%s%N) - start) / 1000000 )) ms"

if [ -z "${CONTEXTS:-}" ]; then
  step "what the clusters still hold of ours"
  python3 - "$work/sim.json" <<'PY'
import json, ssl, sys, urllib.request
info = json.load(open(sys.argv[1]))["clusters"]
for name, c in sorted(info.items()):
    ctx = ssl.create_default_context(cadata=c["ca_pem"])
    req = urllib.request.Request(c["url"] + "/_sim/dump", headers={"Authorization": "Bearer " + c["control_token"]})
    objects = json.load(urllib.request.urlopen(req, context=ctx))["objects"]
    ours = [o for o in objects if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "terraform-provider-mesh"]
    print(f"    {name:<16} {len(ours)} objects")
PY
  step "stopping kube-sim"
fi
