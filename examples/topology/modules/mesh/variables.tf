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

variable "gateway_service_type" {
  description = "Type of the east-west gateways' Service: LoadBalancer (needs a load balancer implementation, e.g. cloud-provider-kind or MetalLB on kind), NodePort or ClusterIP."
  type        = string
  default     = "LoadBalancer"
}

variable "gateway_wait_for_address" {
  description = "Wait until each east-west gateway's LoadBalancer Service has an address. Set false where no load balancer implementation runs."
  type        = bool
  default     = true
}

variable "kubeconfig_path" {
  description = "Kubeconfig file for the clusters that do not name their own (`kubeconfig_path` or `connection.config_path`). Default: the provider's (KUBECONFIG, then ~/.kube/config)."
  type        = string
  default     = null
}

variable "clusters" {
  description = <<-EOT
    The clusters of the mesh, by cluster name (a DNS-1123 label). Each entry is an object with:
      network         (required) the network its pods are on; clusters whose pods reach
                      each other directly share one. With more than one network, every
                      cluster gets an east-west gateway.
      context         a kubeconfig context reaching the cluster, with
      kubeconfig_path the kubeconfig file holding it (default: var.kubeconfig_path);
      connection      or/and a connection: any attributes of the provider's `kubernetes`
                      block (host, cluster_ca_certificate, token, client_certificate,
                      client_key, insecure, tls_server_name, proxy_url, config_path,
                      config_context, exec = { api_version, command, args, env }). Its
                      values override `context` and `kubeconfig_path`.
      server          the API server URL the other clusters' istiod use to reach this one,
                      written into their remote secrets (default: the connection's host).
                      Needed when that host is only reachable from here (kind: 127.0.0.1).
    Values may be unknown at plan time (clusters created in the same apply); names,
    networks and whether `exec` is set must be known.
  EOT
  # `any`, not an object type: entries differ in which attributes they set, and optional
  # object attributes need Terraform 1.3. local.clusters normalises them.
  type = any

  validation {
    condition     = alltrue([for c in values(var.clusters) : can(c.network) && (can(c.context) || can(c.connection))])
    error_message = "Every cluster needs a network and either a context or a connection."
  }

  # With `type = any` Terraform checks no attribute names: catch typos here.
  validation {
    condition     = alltrue([for c in values(var.clusters) : length(setsubtract(keys(c), ["network", "context", "kubeconfig_path", "connection", "server"])) == 0])
    error_message = "A cluster entry has an unknown attribute: the attributes are network, context, kubeconfig_path, connection and server."
  }

  validation {
    condition = alltrue([for c in values(var.clusters) : length(setsubtract(keys(try(c.connection, {})), [
      "host", "cluster_ca_certificate", "token", "client_certificate", "client_key", "insecure",
      "tls_server_name", "proxy_url", "config_path", "config_context", "exec",
    ])) == 0])
    error_message = "A cluster connection has an unknown attribute: it takes those of the provider's kubernetes block (host, cluster_ca_certificate, token, client_certificate, client_key, insecure, tls_server_name, proxy_url, config_path, config_context, exec)."
  }
}

variable "verify" {
  description = "Add a mesh_verification over every cluster: HelloWorld in each, called from every cluster until each has answered each (the Istio guides' \"Verify the installation\")."
  type        = bool
  default     = false
}

variable "verify_hub" {
  description = "Registry holding the HelloWorld and curl sample images for the verification (null: Docker Hub)."
  type        = string
  default     = null
}
