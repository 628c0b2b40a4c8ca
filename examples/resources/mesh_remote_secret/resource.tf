# Lets istiod in cluster-east-1 discover endpoints in cluster-west-1: mints a
# reader token in west and writes istio-remote-secret-cluster-west-1 into
# east's istio-system namespace. For a multi-primary mesh, add the mirror
# resource (east's secret in west) as well.
resource "mesh_remote_secret" "west_in_east" {
  # The target: where istiod reads the secret.
  kubernetes {
    config_context = "cluster-east-1"
  }

  remote {
    # Must equal the remote's values.global.multiCluster.clusterName.
    cluster_name = "cluster-west-1"

    # The address istiod in the *target* cluster uses to reach west's API
    # server. Defaults to the connection's host below; set it when that is a
    # loopback (kind) or a public address istiod should not use.
    server = "https://10.0.2.15:6443"

    kubernetes {
      config_context = "cluster-west-1"
    }
  }

  # Change it (e.g. from a time_rotating resource) to rotate the token.
  token_rotation = "2026-11"

  # Install Istio in both clusters first, so the reader ServiceAccount exists:
  # depends_on = [mesh_cluster.east, mesh_cluster.west]
}

# The same with the connections the clusters' resources already hold: each
# `connection` stands for that cluster's kubernetes block, and referencing the
# mesh_cluster orders the secret after both control planes.
resource "mesh_remote_secret" "east_in_west" {
  namespace         = mesh_cluster.west.namespace
  connection        = mesh_cluster.west.connection
  remote_connection = mesh_cluster.east.connection

  remote {
    cluster_name = mesh_cluster.east.cluster_name
    server       = "https://10.0.2.16:6443"
  }
}
