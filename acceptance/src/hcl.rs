//! Configuration shared by scenarios: the pieces every mesh test writes the same way.

/// An ECDSA `mesh_root_ca` named `root` (fast to generate).
pub fn root_ca() -> String {
    "resource \"mesh_root_ca\" \"root\" {\n  key_algorithm = \"ECDSA\"\n}\n".to_string()
}

/// A `mesh_cluster` named and labelled `name` on `network`, reached through context `name` of
/// `kubeconfig`, its intermediate (ECDSA) issued from `mesh_root_ca.root`. `body` adds lines
/// inside the resource (a `control_plane` block, `timeouts`, ...).
pub fn mesh_cluster(name: &str, network: &str, kubeconfig: &str, body: &str) -> String {
    format!(
        r#"
resource "mesh_cluster" "{name}" {{
  cluster_name = "{name}"
  mesh_id      = "mesh1"
  network      = "{network}"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "{name}"
  }}
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
  intermediate {{
    key_algorithm = "ECDSA"
  }}
{body}
}}
"#
    )
}
