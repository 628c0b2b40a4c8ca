output "root_cert_pem" {
  description = "The mesh root certificate."
  value       = mesh_root_ca.root.cert_pem
}

output "clusters" {
  description = "Per cluster: network, Istio version running, east-west gateway address (null on a single network) and the clusters whose endpoints it discovers."
  value = {
    for name, c in mesh_cluster.this : name => {
      network               = c.network
      control_plane_version = c.control_plane_version
      gateway_address       = local.multi_network ? mesh_eastwest_gateway.this[name].address : null
      remote_secrets        = sort([for k, s in mesh_remote_secret.this : s.remote[0].cluster_name if split("/", k)[0] == name])
    }
  }
}
