//! Renders the registry docs (`docs/`) from the provider schema and the examples.
//! `mesh-docs write` regenerates them; `mesh-docs check` fails when the committed files are stale.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use terraform_provider_mesh::plugin::docs;

fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Every generated file with its expected content.
fn render(root: &Path) -> Vec<(PathBuf, String)> {
    let provider = terraform_provider_mesh::provider();
    let mut files = vec![(
        root.join("docs/index.md"),
        docs::index_page(
            provider.description,
            read_optional(&root.join("examples/provider/provider.tf")).as_deref(),
        ),
    )];
    for r in &provider.resources {
        let name = r.type_name();
        let dir = root.join("examples/resources").join(name);
        let short = name.strip_prefix("mesh_").unwrap_or(name);
        files.push((
            root.join("docs/resources").join(format!("{short}.md")),
            docs::resource_page(
                name,
                &r.schema(),
                read_optional(&dir.join("resource.tf")).as_deref(),
                read_optional(&dir.join("import.sh")).as_deref(),
            ),
        ));
    }
    for (name, title) in GUIDES {
        let dir = root.join("examples").join(name);
        let readme = read_optional(&dir.join("README.md")).unwrap_or_default();
        let main = read_optional(&dir.join("main.tf")).unwrap_or_default();
        files.push((
            root.join("docs/guides").join(format!("{name}.md")),
            docs::guide_page(title, &readme, &main),
        ));
    }
    files
}

/// One guide per topology example: its README and its configuration.
const GUIDES: &[(&str, &str)] = &[
    ("multi-primary", "Multi-primary"),
    (
        "multi-primary-multi-network",
        "Multi-primary on different networks",
    ),
    ("primary-remote", "Primary-remote"),
    (
        "primary-remote-multi-network",
        "Primary-remote on different networks",
    ),
    ("topology", "Any number of clusters from one map"),
];

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mode = std::env::args().nth(1).unwrap_or_default();
    let files = render(&root);
    match mode.as_str() {
        "write" => {
            for (path, content) in files {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("create docs directory");
                }
                std::fs::write(&path, content).expect("write doc");
                println!(
                    "wrote {}",
                    path.strip_prefix(&root).unwrap_or(&path).display()
                );
            }
            ExitCode::SUCCESS
        }
        "check" => {
            let stale: Vec<_> = files
                .iter()
                .filter(|(path, content)| read_optional(path).as_deref() != Some(content))
                .map(|(path, _)| {
                    path.strip_prefix(&root)
                        .unwrap_or(path)
                        .display()
                        .to_string()
                })
                .collect();
            if stale.is_empty() {
                println!("docs are up to date");
                ExitCode::SUCCESS
            } else {
                eprintln!("docs are stale (run `make docs`): {}", stale.join(", "));
                ExitCode::FAILURE
            }
        }
        _ => {
            eprintln!("usage: mesh-docs write|check");
            ExitCode::from(2)
        }
    }
}
