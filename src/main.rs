//! terraform-provider-mesh: serve the provider to Terraform or OpenTofu.

fn main() -> std::process::ExitCode {
    terraform_provider_mesh::plugin::serve::run(terraform_provider_mesh::provider())
}
