# A multi-primary Istio mesh over any number of clusters, on one or several networks:
# one root CA, then per cluster its trust and control plane, an east-west gateway when
# the mesh spans networks, and a full mesh of remote secrets (every istiod reads every
# other cluster's API server). One provider block serves all clusters: each resource
# carries its own connection.

terraform {
  required_providers {
    mesh = {
      source = "registry.terraform.io/tfmesh/mesh"
    }
  }
}

locals {
  networks      = distinct([for c in var.clusters : c.network])
  multi_network = length(local.networks) > 1

  # "<target>/<remote>": the secret in <target> that lets its istiod read <remote>.
  pairs = {
    for pair in setproduct(keys(var.clusters), keys(var.clusters)) :
    "${pair[0]}/${pair[1]}" => { target = pair[0], remote = pair[1] }
    if pair[0] != pair[1]
  }
}

resource "mesh_root_ca" "root" {
  key_algorithm         = var.root_ca_key_algorithm
  validity_period_hours = var.root_ca_validity_hours
}

resource "mesh_cluster" "this" {
  for_each = var.clusters

  cluster_name = each.key
  mesh_id      = var.mesh_id
  network      = each.value.network

  kubernetes {
    config_path    = each.value.kubeconfig_path
    config_context = each.value.context
  }

  root_ca {
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }

  intermediate {
    key_algorithm = var.intermediate_key_algorithm
  }

  control_plane {
    version = var.istio_version
    hub     = var.istio_hub
  }
}

resource "mesh_eastwest_gateway" "this" {
  for_each = local.multi_network ? var.clusters : {}

  # Referencing the cluster orders the gateway after its control plane.
  namespace = mesh_cluster.this[each.key].namespace
  network   = mesh_cluster.this[each.key].network

  kubernetes {
    config_path    = each.value.kubeconfig_path
    config_context = each.value.context
  }
}

resource "mesh_remote_secret" "this" {
  for_each = local.pairs

  namespace = mesh_cluster.this[each.value.target].namespace

  kubernetes {
    config_path    = var.clusters[each.value.target].kubeconfig_path
    config_context = var.clusters[each.value.target].context
  }

  remote {
    cluster_name = mesh_cluster.this[each.value.remote].cluster_name
    kubernetes {
      config_path    = var.clusters[each.value.remote].kubeconfig_path
      config_context = var.clusters[each.value.remote].context
    }
  }
}
