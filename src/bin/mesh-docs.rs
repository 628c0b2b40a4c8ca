//! Renders the registry docs (`docs/`) from the provider schema and the examples.
//! `mesh-docs write` regenerates them; `mesh-docs check` fails when the committed files are stale
//! or a resource lacks one of its hand-written parts (`examples/resources/<type>/`:
//! `resource.tf`, `import.sh`, `limitations.md`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use terraform_provider_mesh::plugin::docs::{self, PageExtras};

/// The files every resource page is made from, besides the schema.
const RESOURCE_PARTS: [&str; 3] = ["resource.tf", "import.sh", "limitations.md"];

fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `examples/resources/<type>/<part>` paths (relative to `root`) that are missing or empty.
fn missing_parts<'a>(root: &Path, types: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut missing = Vec::new();
    for name in types {
        for part in RESOURCE_PARTS {
            let rel = format!("examples/resources/{name}/{part}");
            if read_optional(&root.join(&rel)).is_none_or(|t| t.trim().is_empty()) {
                missing.push(rel);
            }
        }
    }
    missing
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
        let [example, import, limitations] = RESOURCE_PARTS.map(|p| read_optional(&dir.join(p)));
        files.push((
            root.join("docs/resources").join(format!("{short}.md")),
            docs::resource_page(
                name,
                &r.schema(),
                PageExtras {
                    example: example.as_deref(),
                    import: import.as_deref(),
                    limitations: limitations.as_deref(),
                },
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
    let provider = terraform_provider_mesh::provider();
    let missing = missing_parts(&root, provider.resources.iter().map(|r| r.type_name()));
    if !missing.is_empty() && (mode == "write" || mode == "check") {
        eprintln!(
            "resource docs are incomplete, write: {}",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_needs_its_example_import_and_limitations() {
        let root = std::env::temp_dir().join(format!("mesh-docs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("examples/resources/mesh_thing");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resource.tf"),
            "resource \"mesh_thing\" \"x\" {}\n",
        )
        .unwrap();
        std::fs::write(dir.join("import.sh"), "  \n").unwrap();
        assert_eq!(
            missing_parts(&root, ["mesh_thing", "mesh_other"]),
            [
                "examples/resources/mesh_thing/import.sh",
                "examples/resources/mesh_thing/limitations.md",
                "examples/resources/mesh_other/resource.tf",
                "examples/resources/mesh_other/import.sh",
                "examples/resources/mesh_other/limitations.md",
            ]
        );
        std::fs::write(dir.join("import.sh"), "# cannot be imported\n").unwrap();
        std::fs::write(dir.join("limitations.md"), "- none\n").unwrap();
        assert!(missing_parts(&root, ["mesh_thing"]).is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_committed_examples_are_complete() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let provider = terraform_provider_mesh::provider();
        assert_eq!(
            missing_parts(root, provider.resources.iter().map(|r| r.type_name())),
            Vec::<String>::new()
        );
    }
}
