//! Renders the registry docs (`docs/`) from the provider schema and the examples.
//! `mesh-docs write` regenerates them; `mesh-docs check` fails when the committed files are stale
//! or a type lacks one of its hand-written parts: `examples/resources/<type>/` needs
//! `resource.tf`, `import.sh`, `limitations.md`; `examples/data-sources/<type>/` needs
//! `data-source.tf`, `limitations.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use terraform_provider_mesh::plugin::docs::{self, PageExtras};

/// The files every resource page is made from, besides the schema.
const RESOURCE_PARTS: [&str; 3] = ["resource.tf", "import.sh", "limitations.md"];

/// The files every data source page is made from, besides the schema.
const DATA_SOURCE_PARTS: [&str; 2] = ["data-source.tf", "limitations.md"];

/// Where the hand-written parts of each kind of page live, and which they are.
struct Kind {
    examples: &'static str,
    parts: &'static [&'static str],
}

const RESOURCES: Kind = Kind {
    examples: "examples/resources",
    parts: &RESOURCE_PARTS,
};

const DATA_SOURCES: Kind = Kind {
    examples: "examples/data-sources",
    parts: &DATA_SOURCE_PARTS,
};

fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `<examples>/<type>/<part>` paths (relative to `root`) of `kind` that are missing or empty.
fn missing_parts<'a>(
    root: &Path,
    kind: &Kind,
    types: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut missing = Vec::new();
    for name in types {
        for part in kind.parts {
            let rel = format!("{}/{name}/{part}", kind.examples);
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
    let resources: Vec<_> = provider
        .resources
        .iter()
        .map(|r| (r.type_name(), r.schema()))
        .collect();
    let data_sources: Vec<_> = provider
        .data_sources
        .iter()
        .map(|d| (d.type_name(), d.schema()))
        .collect();
    let mut files = vec![(
        root.join("docs/index.md"),
        docs::index_page(
            provider.description,
            read_optional(&root.join("examples/provider/provider.tf")).as_deref(),
            &resources,
            &data_sources,
        ),
    )];
    let short = |name: &'static str| name.strip_prefix("mesh_").unwrap_or(name);
    for (name, schema) in &resources {
        let dir = root.join(RESOURCES.examples).join(name);
        let [example, import, limitations] = RESOURCE_PARTS.map(|p| read_optional(&dir.join(p)));
        files.push((
            root.join("docs/resources")
                .join(format!("{}.md", short(name))),
            docs::resource_page(
                name,
                schema,
                PageExtras {
                    example: example.as_deref(),
                    import: import.as_deref(),
                    limitations: limitations.as_deref(),
                },
            ),
        ));
    }
    for (name, schema) in &data_sources {
        let dir = root.join(DATA_SOURCES.examples).join(name);
        let [example, limitations] = DATA_SOURCE_PARTS.map(|p| read_optional(&dir.join(p)));
        files.push((
            root.join("docs/data-sources")
                .join(format!("{}.md", short(name))),
            docs::data_source_page(
                name,
                schema,
                PageExtras {
                    example: example.as_deref(),
                    import: None,
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

/// The hand-written parts missing for any resource or data source of `provider`.
fn all_missing_parts(
    root: &Path,
    provider: &terraform_provider_mesh::plugin::Provider,
) -> Vec<String> {
    let mut missing = missing_parts(
        root,
        &RESOURCES,
        provider.resources.iter().map(|r| r.type_name()),
    );
    missing.extend(missing_parts(
        root,
        &DATA_SOURCES,
        provider.data_sources.iter().map(|d| d.type_name()),
    ));
    missing
}

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mode = std::env::args().nth(1).unwrap_or_default();
    let files = render(&root);
    let provider = terraform_provider_mesh::provider();
    let missing = all_missing_parts(&root, &provider);
    if !missing.is_empty() && (mode == "write" || mode == "check") {
        eprintln!("docs are incomplete, write: {}", missing.join(", "));
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
    fn every_type_needs_its_hand_written_parts() {
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
            missing_parts(&root, &RESOURCES, ["mesh_thing", "mesh_other"]),
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
        assert!(missing_parts(&root, &RESOURCES, ["mesh_thing"]).is_empty());

        // Data sources need their example and limitations, never an import.
        let dir = root.join("examples/data-sources/mesh_thing");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("data-source.tf"), "data \"mesh_thing\" \"x\" {}\n").unwrap();
        assert_eq!(
            missing_parts(&root, &DATA_SOURCES, ["mesh_thing"]),
            ["examples/data-sources/mesh_thing/limitations.md"]
        );
        std::fs::write(dir.join("limitations.md"), "- none\n").unwrap();
        assert!(missing_parts(&root, &DATA_SOURCES, ["mesh_thing"]).is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_committed_examples_are_complete() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let provider = terraform_provider_mesh::provider();
        assert_eq!(all_missing_parts(root, &provider), Vec::<String>::new());
    }
}
