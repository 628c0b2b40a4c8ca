# A multi-primary Istio mesh over any number of clusters, on one or several networks:
# one root CA, then per cluster its trust and control plane, an east-west gateway when
# the mesh spans networks, and a full mesh of remote secrets (every istiod reads every
# other cluster's API server). One provider block serves all clusters: each resource
# carries its own connection, given once to the cluster's `mesh_cluster` and handed to the
# others as its `connection` output.

terraform {
  required_providers {
    mesh = {
      source = "registry.terraform.io/tfmesh/mesh"
    }
  }
}

locals {
  # One normalised entry per cluster, every attribute of the provider's `kubernetes` block
  # present (null when unset, and left out of the cluster's connection JSON): the entries of
  # var.clusters may each have their own shape, and Terraform 1.0 has no optional() object
  # attributes (1.3+). `context` and `kubeconfig_path` are shorthand for the connection's
  # config_context and config_path.
  clusters = {
    for name, c in var.clusters : name => {
      network = c.network
      server  = try(c.server, null)
      connection = {
        host                   = try(c.connection.host, null)
        cluster_ca_certificate = try(c.connection.cluster_ca_certificate, null)
        token                  = try(c.connection.token, null)
        client_certificate     = try(c.connection.client_certificate, null)
        client_key             = try(c.connection.client_key, null)
        insecure               = try(c.connection.insecure, null)
        tls_server_name        = try(c.connection.tls_server_name, null)
        proxy_url              = try(c.connection.proxy_url, null)
        config_path            = try(c.connection.config_path, c.kubeconfig_path, var.kubeconfig_path)
        config_context         = try(c.connection.config_context, c.context, null)
        exec                   = try(c.connection.exec, null)
      }
    }
  }

  networks      = distinct([for c in local.clusters : c.network])
  multi_network = length(local.networks) > 1

  # "<target>/<remote>": the secret in <target> that lets its istiod read <remote>.
  pairs = {
    for pair in setproduct(keys(local.clusters), keys(local.clusters)) :
    "${pair[0]}/${pair[1]}" => { target = pair[0], remote = pair[1] }
    if pair[0] != pair[1]
  }
}

resource "mesh_root_ca" "root" {
  key_algorithm         = var.root_ca_key_algorithm
  validity_period_hours = var.root_ca_validity_hours
}

resource "mesh_cluster" "this" {
  for_each = local.clusters

  cluster_name = each.key
  mesh_id      = var.mesh_id
  network      = each.value.network

  # The `kubernetes` block's attributes as one JSON value, the ones that are set: what every
  # other resource of this cluster is then handed (mesh_cluster.connection), a few bytes in
  # each of their states.
  connection = jsonencode({ for k, v in each.value.connection : k => v if v != null })

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

# What the gateways, remote secrets and status reads take from each cluster's resource: one
# small map, built once. (A reference like `mesh_cluster.this[each.key].namespace` hands every
# instance that makes it the whole `mesh_cluster.this` map, every cluster's full object decoded
# from state, so N² remote secrets would decode N² · N cluster objects.) Depending on it orders
# them after the clusters exactly as that reference did. `connection` is the cluster's
# `kubernetes` block as one value: each of the N·(N−1) remote secrets stores two of them, a
# few bytes each instead of two blocks of eleven attributes.
locals {
  joined = {
    for name, c in mesh_cluster.this : name => {
      namespace    = c.namespace
      network      = c.network
      cluster_name = c.cluster_name
      connection   = c.connection
    }
  }
}

resource "mesh_eastwest_gateway" "this" {
  # A filtered for, not `cond ? local.clusters : {}`: Terraform 1.0 cannot unify an
  # object with {} in a conditional.
  for_each = { for name, c in local.clusters : name => c if local.multi_network }

  # Referencing the cluster (through local.joined) orders the gateway after its control plane.
  namespace        = local.joined[each.key].namespace
  network          = local.joined[each.key].network
  service_type     = var.gateway_service_type
  wait_for_address = var.gateway_wait_for_address
  connection       = local.joined[each.key].connection
}

resource "mesh_remote_secret" "this" {
  for_each = local.pairs

  namespace         = local.joined[each.value.target].namespace
  connection        = local.joined[each.value.target].connection
  remote_connection = local.joined[each.value.remote].connection

  remote {
    cluster_name = local.joined[each.value.remote].cluster_name
    # The address the target's istiod dials; null: the remote connection's host.
    server = local.clusters[each.value.remote].server
  }
}

# What each cluster's istiod reports once the mesh is built: its replicas, the remote
# clusters it reads with their sync status, the gateways it routes through. depends_on
# defers the read to apply while any remote secret is still being written.
data "mesh_status" "this" {
  for_each = local.clusters

  namespace  = local.joined[each.key].namespace
  connection = local.joined[each.key].connection

  depends_on = [mesh_remote_secret.this, mesh_eastwest_gateway.this]
}

# The guides' last step: traffic from every cluster reaches every cluster's HelloWorld,
# across networks through the east-west gateways. Runs again when a remote secret changes.
resource "mesh_verification" "this" {
  count = var.verify ? 1 : 0

  hub = var.verify_hub
  triggers = {
    remote_secrets = join(",", sort([for k, s in mesh_remote_secret.this : "${k}=${s.kubeconfig_sha256}"]))
  }

  dynamic "cluster" {
    for_each = local.clusters
    content {
      name            = local.joined[cluster.key].cluster_name
      istio_namespace = local.joined[cluster.key].namespace
      connection      = local.joined[cluster.key].connection
    }
  }

  depends_on = [mesh_remote_secret.this, mesh_eastwest_gateway.this]
}
