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
  description = "Kubeconfig holding a context per cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "clusters" {
  description = "Cluster name => kubeconfig context and network."
  type = map(object({
    context = string
    network = string
  }))
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

module "mesh" {
  source = "./modules/mesh"

  mesh_id                    = "mesh1"
  istio_version              = var.istio_version
  root_ca_key_algorithm      = var.key_algorithm
  intermediate_key_algorithm = var.key_algorithm
  clusters = {
    for name, c in var.clusters : name => {
      kubeconfig_path = var.kubeconfig_path
      context         = c.context
      network         = c.network
    }
  }
}

output "clusters" {
  description = "What was built, per cluster."
  value       = module.mesh.clusters
}
