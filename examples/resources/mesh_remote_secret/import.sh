# mesh_remote_secret cannot be imported: import carries no connection settings
# for either cluster, and the token secret it would adopt is one it minted.
# Re-running `terraform apply` with the resource in configuration adopts an
# existing istio-remote-secret-<cluster_name> (server-side apply) and mints a
# fresh token; delete any token secret an earlier `istioctl
# create-remote-secret` created yourself.
