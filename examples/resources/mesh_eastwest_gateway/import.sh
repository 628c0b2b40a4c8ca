# mesh_eastwest_gateway cannot be imported: import carries no connection settings.
# Re-running `terraform apply` with the resource in configuration adopts existing
# gateway objects of the same name instead (server-side apply).
