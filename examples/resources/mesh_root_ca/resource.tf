# The mesh's shared root of trust. Each mesh_cluster issues its own
# intermediate CA from it.
resource "mesh_root_ca" "root" {
  common_name           = "Root CA"
  organization          = "Istio"
  key_algorithm         = "RSA"
  rsa_bits              = 4096
  validity_period_hours = 87600 # 10 years
  early_renewal_hours   = 720   # replace it 30 days before it expires
}

output "root_cert_pem" {
  value = mesh_root_ca.root.cert_pem
}
