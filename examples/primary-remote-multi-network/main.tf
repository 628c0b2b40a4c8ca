terraform {
  required_providers {
    mesh = {
      source = "registry.terraform.io/tfmesh/mesh"
    }
  }
}

provider "mesh" {}

# Primary-remote on two networks: as primary-remote, and the remote gets its own east-west
# gateway for cross-network traffic to its services.

resource "mesh_root_ca" "root" {
  key_algorithm = var.key_algorithm
}

resource "mesh_cluster" "cluster1" {
  cluster_name = "cluster1"
  mesh_id      = "mesh1"
  network      = "network1"

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.cluster1_context
  }

  root_ca {
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }

  intermediate {
    key_algorithm = var.key_algorithm
  }

  control_plane {
    version = var.istio_version
    # Required for the remote below: without it this istiod never takes the lead for the
    # remote (webhooks, istio-ca-root-cert) and the remote's sidecars cannot start. The
    # remote's mesh_cluster cannot see this setting, so nothing checks it for you.
    external_istiod = true
  }
}

resource "mesh_eastwest_gateway" "cluster1" {
  namespace     = mesh_cluster.cluster1.namespace
  network       = mesh_cluster.cluster1.network
  expose_istiod = true

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.cluster1_context
  }
}

resource "mesh_cluster" "cluster2" {
  cluster_name = "cluster2"
  mesh_id      = "mesh1"
  network      = "network2"

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.cluster2_context
  }

  root_ca {
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }

  intermediate {
    key_algorithm = var.key_algorithm
  }

  control_plane {
    version              = var.istio_version
    role                 = "remote"
    remote_pilot_address = mesh_eastwest_gateway.cluster1.address
    primary_cluster_name = mesh_cluster.cluster1.cluster_name
  }
}

resource "mesh_eastwest_gateway" "cluster2" {
  namespace = mesh_cluster.cluster2.namespace
  network   = mesh_cluster.cluster2.network

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.cluster2_context
  }
}

# Lets istiod in cluster1 discover endpoints in cluster2.
resource "mesh_remote_secret" "cluster2_in_cluster1" {
  namespace = mesh_cluster.cluster1.namespace

  kubernetes {
    config_path    = var.kubeconfig_path
    config_context = var.cluster1_context
  }

  remote {
    cluster_name = mesh_cluster.cluster2.cluster_name
    server       = lookup(var.remote_servers, "cluster2", null)
    kubernetes {
      config_path    = var.kubeconfig_path
      config_context = var.cluster2_context
    }
  }
}

output "control_plane_versions" {
  description = "Istio version running per cluster."
  value       = { cluster1 = mesh_cluster.cluster1.control_plane_version, cluster2 = mesh_cluster.cluster2.control_plane_version }
}
