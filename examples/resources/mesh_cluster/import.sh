# mesh_cluster cannot be imported yet: import carries no connection settings, and the
# intermediate CA's key would have to be read back from the cluster. Re-running
# `terraform apply` with the resource in configuration adopts an existing namespace
# and cacerts secret instead (server-side apply).
