variable "kubeconfig_path" {
  description = "Kubeconfig holding a context for each cluster."
  type        = string
  default     = "~/.kube/config"
}

variable "cluster1_context" {
  description = "Kubeconfig context of cluster1."
  type        = string
  default     = "cluster1"
}

variable "cluster2_context" {
  description = "Kubeconfig context of cluster2."
  type        = string
  default     = "cluster2"
}

variable "istio_version" {
  description = "Istio version to install."
  type        = string
  default     = "1.30.3"
}

variable "key_algorithm" {
  description = "Key algorithm of the root and intermediate CAs: RSA (Istio's tooling default) or ECDSA."
  type        = string
  default     = "RSA"
}

variable "remote_servers" {
  description = "Cluster name (cluster1, cluster2) => the API server URL the other cluster's istiod uses to reach it, written into its remote secret. Default: the kubeconfig's server, which on kind is 127.0.0.1 and unreachable from the other cluster; there use the control-plane container's address, e.g. https://cluster2-control-plane:6443."
  type        = map(string)
  default     = {}
}
