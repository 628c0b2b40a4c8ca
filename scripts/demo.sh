#!/usr/bin/env bash
# make demo: the provider driven by real Terraform, end to end, in a scratch directory.
# Today it applies the root CA example; the multi-cluster mesh demo builds on it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tf=${TF_ACC_TERRAFORM_PATH:-$(command -v terraform || command -v tofu)}
provider_dir=${MESH_PROVIDER_DIR:-$root/target/debug}
work=$root/.tools/demo
rm -rf "$work" && mkdir -p "$work"

cat > "$work/dev.tfrc" <<TFRC
provider_installation {
  dev_overrides {
    "registry.terraform.io/tfmesh/mesh" = "$provider_dir"
  }
  direct {}
}
TFRC
export TF_CLI_CONFIG_FILE=$work/dev.tfrc TF_IN_AUTOMATION=1 TF_INPUT=0 CHECKPOINT_DISABLE=1
cp "$root/examples/provider/provider.tf" "$root/examples/resources/mesh_root_ca/resource.tf" "$work/"
cd "$work"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { "$tf" "$@" -no-color > "$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }; }

step "terraform apply ($("$tf" version | head -1))"
start=$(date +%s%N)
run apply -auto-approve
echo "    $(grep -o 'Apply complete.*' last.log) ($(( ($(date +%s%N) - start) / 1000000 )) ms)"

step "the root CA Terraform created"
"$tf" output -raw root_cert_pem > root.pem
openssl x509 -in root.pem -noout -subject -dates -fingerprint -sha256 | sed 's/^/    /'
openssl x509 -in root.pem -noout -ext basicConstraints,keyUsage,subjectKeyIdentifier | sed 's/^/    /'

step "terraform plan again: nothing to do"
set +e
"$tf" plan -detailed-exitcode -no-color > last.log 2>&1
code=$?
set -e
if [ "$code" -ne 0 ]; then cat last.log; echo "    re-plan was not empty (exit $code)"; exit 1; fi
echo "    No changes. Your infrastructure matches the configuration."

step "terraform destroy"
run destroy -auto-approve
echo "    $(grep -o 'Destroy complete.*' last.log)"
