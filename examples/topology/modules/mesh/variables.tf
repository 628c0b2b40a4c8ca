variable "mesh_id" {
  description = "The mesh ID, the same on every cluster."
  type        = string
}

variable "istio_version" {
  description = "Istio version to install on every cluster."
  type        = string
  default     = "1.30.3"
}

variable "istio_hub" {
  description = "Image repository of Istio's images (a mirror for air-gapped clusters)."
  type        = string
  default     = "docker.io/istio"
}

variable "root_ca_key_algorithm" {
  description = "Key algorithm of the mesh root CA: RSA or ECDSA."
  type        = string
  default     = "RSA"
}

variable "root_ca_validity_hours" {
  description = "Validity of the mesh root CA, in hours."
  type        = number
  default     = 87600
}

variable "intermediate_key_algorithm" {
  description = "Key algorithm of each cluster's intermediate CA: RSA or ECDSA."
  type        = string
  default     = "RSA"
}

variable "clusters" {
  description = <<-EOT
    The clusters of the mesh, by cluster name (a DNS-1123 label): the kubeconfig file and
    context that reach each one, and the network its pods are on. Clusters whose pods reach
    each other directly share a network; with more than one network, every cluster gets an
    east-west gateway.
  EOT
  type = map(object({
    kubeconfig_path = string
    context         = string
    network         = string
  }))
}
