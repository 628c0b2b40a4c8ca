# The "simplified multicluster install" of the Istio docs as one plan: three clusters,
# two networks (cluster-east-1 and cluster-east-2 on network-east, cluster-west-1 on
# network-west), a shared root of trust, east-west gateways and endpoint discovery
# between every pair. Edit the map to add or remove clusters.

terraform {
  required_providers {
    mesh = {
      source = "registry.terraform.io/tfmesh/mesh"
    }
  }
}

provider "mesh" {}

variable "kubeconfig_path" {
  description = "Kubeconfig holding the clusters' contexts (entries that give a context)."
  type        = string
  default     = "~/.kube/config"
}

variable "clusters" {
  description = <<-EOT
    Cluster name => { network, and context or connection, optionally server }: `context`
    names a context of `kubeconfig_path`; `connection` takes the attributes of the provider's
    `kubernetes` block (host, cluster_ca_certificate, token, exec, ...); `server` is the API
    address the other clusters' istiod dial (default: the connection's host).
  EOT
  type        = any
  default = {
    "cluster-east-1" = { context = "cluster-east-1", network = "network-east" }
    "cluster-east-2" = { context = "cluster-east-2", network = "network-east" }
    "cluster-west-1" = { context = "cluster-west-1", network = "network-west" }
  }
}

variable "istio_version" {
  description = "Istio version to install."
  type        = string
  default     = "1.30.3"
}

variable "key_algorithm" {
  description = "Key algorithm of the root and intermediate CAs (RSA as Istio's tooling, or ECDSA)."
  type        = string
  default     = "RSA"
}

variable "gateway_wait_for_address" {
  description = "Wait for each east-west gateway's load balancer address. Set false on clusters without a LoadBalancer implementation (plain kind)."
  type        = bool
  default     = true
}

variable "verify" {
  description = "Prove the mesh carries traffic: HelloWorld in every cluster, called from every cluster (mesh_verification)."
  type        = bool
  default     = false
}

module "mesh" {
  source = "./modules/mesh"

  mesh_id                    = "mesh1"
  istio_version              = var.istio_version
  root_ca_key_algorithm      = var.key_algorithm
  intermediate_key_algorithm = var.key_algorithm
  gateway_wait_for_address   = var.gateway_wait_for_address
  kubeconfig_path            = var.kubeconfig_path
  clusters                   = var.clusters
  verify                     = var.verify
}

output "clusters" {
  description = "What was built, per cluster."
  value       = module.mesh.clusters
}

output "reachability" {
  description = "With verify = true: client cluster => the clusters whose HelloWorld answered it."
  value       = module.mesh.reachability
}
