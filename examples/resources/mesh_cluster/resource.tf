resource "mesh_root_ca" "root" {}

# Joins the cluster of kubeconfig context "cluster-east-1" to the mesh: the
# istio-system namespace labelled with its network, and its own intermediate CA
# (issued from the mesh root) in the cacerts secret, ready for istiod.
resource "mesh_cluster" "east" {
  cluster_name = "cluster-east-1"
  mesh_id      = "mesh1"
  network      = "network-east"

  kubernetes {
    config_context = "cluster-east-1"
  }

  root_ca {
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }
}

# With Terraform >= 1.11, give the root key write-only, so that this resource's
# state holds no copy of it (e.g. from an ephemeral variable or a secret store):
#
#   root_ca {
#     cert_pem           = mesh_root_ca.root.cert_pem
#     private_key_pem_wo = mesh_root_ca.root.private_key_pem
#   }

# Or bring your own intermediate (e.g. from Vault PKI):
#
#   ca {
#     cert_pem        = vault_pki_secret_backend_intermediate_set_signed.east.certificate
#     private_key_pem = ...
#     cert_chain_pem  = ...
#     root_cert_pem   = ...
#   }
