terraform {
  required_providers {
    mesh = {
      source = "registry.terraform.io/tfmesh/mesh"
    }
  }
}

# The provider block takes no settings: every resource that talks to a cluster
# carries its own `kubernetes` connection block.
provider "mesh" {}
