# mesh_root_ca cannot be imported: a root CA's private key cannot be read back
# from anywhere. To keep an existing root, pass its certificate and key to the
# `root_ca` block of each mesh_cluster, or bring your own intermediates with the
# `ca` block.
