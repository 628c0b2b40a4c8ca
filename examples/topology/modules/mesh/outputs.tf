output "root_cert_pem" {
  description = "The mesh root certificate."
  value       = mesh_root_ca.root.cert_pem
}

output "clusters" {
  description = "Per cluster: network, Istio version running, east-west gateway address (null on a single network), the clusters whose endpoints it discovers, and what its istiod reports (mesh_status): each remote cluster's sync status, the gateways it routes through, healthy and problems."
  value = {
    for name, c in mesh_cluster.this : name => {
      network               = c.network
      control_plane_version = c.control_plane_version
      gateway_address       = local.multi_network ? mesh_eastwest_gateway.this[name].address : null
      remote_secrets        = sort([for k, s in mesh_remote_secret.this : s.remote[0].cluster_name if split("/", k)[0] == name])
      remote_sync           = { for r in data.mesh_status.this[name].remote_clusters : r.cluster_id => r.sync_status }
      istiod_gateways       = sort([for g in data.mesh_status.this[name].eastwest_gateways : "${g.network}=${g.address}:${g.port}"])
      healthy               = data.mesh_status.this[name].healthy
      problems              = data.mesh_status.this[name].problems
    }
  }
}

output "reachability" {
  description = "With verify = true: for each client cluster, the clusters whose HelloWorld answered it (every cluster, when the mesh works). Null otherwise."
  value       = var.verify ? mesh_verification.this[0].reachability : null
}
