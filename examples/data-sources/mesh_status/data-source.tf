# What istiod in cluster-east-1 sees: its pods, the remote clusters it reads
# and whether it has synced them, and the east-west gateways it routes
# through.
data "mesh_status" "east" {
  kubernetes {
    config_context = "cluster-east-1"
  }
}

output "east_remotes" {
  # e.g. [{ cluster_id = "cluster-west-1", secret_name = "istio-system/istio-remote-secret-cluster-west-1", sync_status = "synced" }]
  value = data.mesh_status.east.remote_clusters
}

# Terraform >= 1.5: assert the mesh's health on every plan. A failed
# assertion is a warning; the plan goes on. A data source inside a check
# block is read on each plan and never blocks one.
check "east_mesh_healthy" {
  data "mesh_status" "east_check" {
    kubernetes {
      config_context = "cluster-east-1"
    }
  }

  assert {
    condition     = data.mesh_status.east_check.healthy
    error_message = join("\n", data.mesh_status.east_check.problems)
  }
}
