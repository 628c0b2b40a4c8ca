# Istio's "Verify the installation" across two clusters on two networks: HelloWorld in
# each, called from each until both have answered both.
resource "mesh_verification" "mesh" {
  cluster {
    name = "cluster1" # the mesh_cluster's cluster_name
    kubernetes {
      config_context = "cluster1"
    }
  }

  cluster {
    name = "cluster2"
    kubernetes {
      config_context = "cluster2"
    }
  }

  # Run the check again whenever a remote secret is rewritten.
  triggers = {
    secrets = join(",", [for s in mesh_remote_secret.all : s.kubeconfig_sha256])
  }

  # The check makes sense once the remote secrets and gateways exist.
  depends_on = [mesh_remote_secret.all, mesh_eastwest_gateway.all]
}

output "reachability" {
  # { cluster1 = ["cluster1", "cluster2"], cluster2 = ["cluster1", "cluster2"] }
  value = mesh_verification.mesh.reachability
}

# Air-gapped clusters: the samples' images from a mirror.
resource "mesh_verification" "mirrored" {
  hub       = "registry.internal.example.com/istio-samples"
  namespace = "mesh-check"
  requests  = 20

  cluster {
    name     = "cluster1"
    revision = "canary" # the namespace gets istio.io/rev=canary
    kubernetes {
      config_context = "cluster1"
    }
  }
}
