# The east-west gateway of the primary cluster: exposes its services to the other
# network and istiod to a remote cluster, and exports the load balancer address.
resource "mesh_eastwest_gateway" "primary" {
  network       = "network1"
  expose_istiod = true

  kubernetes {
    config_context = "cluster-east-1"
  }

  # Istio's CRDs and injector must exist first: depend on whatever installs istiod,
  # e.g. depends_on = [helm_release.istiod_east]
}

# A remote cluster on another network reaches istiod through it, in the same plan:
#
#   resource "mesh_cluster" "west" {
#     ...
#     control_plane {
#       role                 = "remote"
#       remote_pilot_address = mesh_eastwest_gateway.primary.address
#     }
#   }

# On AWS, an NLB, and two gateway pods:
resource "mesh_eastwest_gateway" "west" {
  network  = "network2"
  replicas = 2

  service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type" = "nlb"
  }

  kubernetes {
    config_context = "cluster-west-1"
  }

  timeouts {
    create = "20m"
  }
}
