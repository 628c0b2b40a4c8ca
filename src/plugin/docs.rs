//! Registry documentation rendered from schemas, in the layout the Terraform and OpenTofu
//! registries read (`docs/index.md`, `docs/resources/<name>.md`, `docs/data-sources/<name>.md`).
//! The descriptions in the schemas are the single source; CI fails when the committed files are
//! stale.

use std::fmt::Write as _;

use super::schema::{Attribute, Block, Mode, NestedBlock, Nesting, Schema};
use super::value::{Type, Value};

/// The hand-written parts of a resource page (from `examples/resources/<type>/`) or a data
/// source page (from `examples/data-sources/<type>/`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PageExtras<'a> {
    /// `resource.tf` or `data-source.tf`: the example configuration.
    pub example: Option<&'a str>,
    /// `import.sh`: how to import (or why not). Resources only.
    pub import: Option<&'a str>,
    /// `limitations.md`: what the resource does not do, as Markdown.
    pub limitations: Option<&'a str>,
}

/// Front matter + body of a resource page.
pub fn resource_page(type_name: &str, schema: &Schema, extras: PageExtras<'_>) -> String {
    type_page("Resource", type_name, schema, extras)
}

/// Front matter + body of a data source page (data sources have no import section).
pub fn data_source_page(type_name: &str, schema: &Schema, extras: PageExtras<'_>) -> String {
    let extras = PageExtras {
        import: None,
        ..extras
    };
    type_page("Data Source", type_name, schema, extras)
}

/// A resource or data source page; `kind` is how the registry names the page's type.
fn type_page(kind: &str, type_name: &str, schema: &Schema, extras: PageExtras<'_>) -> String {
    let PageExtras {
        example,
        import,
        limitations,
    } = extras;
    let mut out = String::new();
    let summary = first_paragraph(&schema.block.description);
    let _ = writeln!(out, "---");
    let _ = writeln!(
        out,
        "page_title: \"{type_name} {kind} - terraform-provider-mesh\""
    );
    let _ = writeln!(out, "subcategory: \"\"");
    let _ = writeln!(out, "description: |-");
    for line in summary.lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "---\n");
    let _ = writeln!(out, "# {type_name} ({kind})\n");
    let _ = writeln!(out, "{}\n", schema.block.description.trim());
    if let Some(example) = example {
        let _ = writeln!(out, "## Example Usage\n");
        let _ = writeln!(out, "```terraform\n{}\n```\n", example.trim_end());
    }
    if let Some(limitations) = limitations {
        let _ = writeln!(out, "## Limitations\n");
        let _ = writeln!(out, "{}\n", limitations.trim());
    }
    let _ = writeln!(
        out,
        "<!-- generated from the provider schema by `make docs` -->"
    );
    let _ = writeln!(out, "## Schema\n");
    render_block(&mut out, &schema.block, "");
    if let Some(import) = import {
        let _ = writeln!(out, "## Import\n");
        let _ = writeln!(out, "```shell\n{}\n```", import.trim_end());
    }
    out
}

/// The provider's index page: its description, the example, and the types it serves (each as
/// `(type name, schema)`, listed with the first paragraph of its description).
pub fn index_page(
    description: &str,
    example: Option<&str>,
    resources: &[(&str, Schema)],
    data_sources: &[(&str, Schema)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "page_title: \"mesh Provider\"");
    let _ = writeln!(out, "description: |-");
    for line in first_paragraph(description).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(out, "---\n");
    let _ = writeln!(out, "# mesh Provider\n");
    let _ = writeln!(out, "{}\n", description.trim());
    if let Some(example) = example {
        let _ = writeln!(out, "## Example Usage\n");
        let _ = writeln!(out, "```terraform\n{}\n```", example.trim_end());
    }
    for (title, types) in [("Resources", resources), ("Data Sources", data_sources)] {
        if types.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {title}\n");
        for (name, schema) in types {
            let summary = first_sentence(&first_paragraph(&schema.block.description));
            let _ = writeln!(out, "- `{name}`: {summary}");
        }
    }
    out
}

/// A guide page: front matter, the example's README, and its configuration.
pub fn guide_page(title: &str, readme: &str, config: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "page_title: \"{title}\"");
    let _ = writeln!(out, "subcategory: \"Guides\"");
    let _ = writeln!(out, "---\n");
    // The README's own title becomes the page's.
    let body = readme.trim().strip_prefix('#').map_or(readme.trim(), |r| {
        r.split_once('\n').map_or("", |(_, rest)| rest)
    });
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(out, "{}\n", body.trim());
    let _ = writeln!(out, "## Configuration\n");
    let _ = writeln!(out, "```terraform\n{}\n```", config.trim_end());
    out
}

fn first_paragraph(s: &str) -> String {
    s.trim().split("\n\n").next().unwrap_or("").to_string()
}

/// The first sentence on one line: up to the first full stop followed by a capital letter or
/// the end, so abbreviations such as "e.g. a" stay inside it.
fn first_sentence(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let end = one_line
        .match_indices(". ")
        .find(|(i, _)| {
            one_line[i + 2..]
                .chars()
                .next()
                .is_some_and(char::is_uppercase)
        })
        .map_or(one_line.len(), |(i, _)| i + 1);
    sentence(&one_line[..end])
}

/// A section title and which attributes belong in it.
type Section = (&'static str, fn(&Attribute) -> bool);

fn render_block(out: &mut String, block: &Block, anchor_prefix: &str) {
    let sections: [Section; 3] = [
        ("Required", |a| a.mode == Mode::Required),
        ("Optional", |a| {
            matches!(a.mode, Mode::Optional | Mode::OptionalComputed)
        }),
        ("Read-Only", |a| a.mode == Mode::Computed),
    ];
    for (title, pick) in sections {
        let attrs: Vec<&Attribute> = block.attributes.iter().filter(|a| pick(a)).collect();
        // Blocks with min_items >= 1 must be written: list them as required.
        let blocks: Vec<&NestedBlock> = match title {
            "Required" => block.blocks.iter().filter(|b| b.min_items > 0).collect(),
            "Optional" => block.blocks.iter().filter(|b| b.min_items == 0).collect(),
            _ => vec![],
        };
        if attrs.is_empty() && blocks.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {title}\n");
        for b in &blocks {
            let anchor = format!("{anchor_prefix}{}", b.name);
            // Single blocks are list blocks on the wire: references need `[0]`.
            let kind = match b.nesting {
                Nesting::Set => "Block Set".to_string(),
                _ if b.max_items > 0 => format!("Block List, Max: {}", b.max_items),
                _ => "Block List".to_string(),
            };
            let _ = writeln!(
                out,
                "- `{}` ({kind}) {} (see [below for nested schema](#nestedblock--{}))",
                b.name,
                sentence(&b.block.description),
                anchor.replace('.', "--")
            );
        }
        for a in attrs {
            let _ = writeln!(out, "- `{}` ({}) {}", a.name, type_label(a), attr_text(a));
        }
        let _ = writeln!(out);
    }
    for b in &block.blocks {
        let anchor = format!("{anchor_prefix}{}", b.name);
        let _ = writeln!(
            out,
            "<a id=\"nestedblock--{}\"></a>",
            anchor.replace('.', "--")
        );
        let _ = writeln!(out, "### Nested Schema for `{anchor}`\n");
        render_block(out, &b.block, &format!("{anchor}."));
    }
}

fn type_label(a: &Attribute) -> String {
    let base = match &a.ty {
        Type::String => "String".to_string(),
        Type::Number => "Number".to_string(),
        Type::Bool => "Boolean".to_string(),
        Type::List(t) => format!("List of {}", inner_label(t)),
        Type::Set(t) => format!("Set of {}", inner_label(t)),
        Type::Map(t) => format!("Map of {}", inner_label(t)),
        Type::Object(_) => "Object".to_string(),
    };
    let mut label = base;
    if a.sensitive {
        label.push_str(", Sensitive");
    }
    if a.write_only {
        label.push_str(", Write-only");
    }
    label
}

fn inner_label(t: &Type) -> &'static str {
    match t {
        Type::String => "String",
        Type::Number => "Number",
        Type::Bool => "Boolean",
        _ => "Object",
    }
}

fn attr_text(a: &Attribute) -> String {
    let mut s = sentence(&a.description);
    if let Some(d) = &a.default {
        let _ = write!(s, " Defaults to `{}`.", literal(d));
    }
    if a.force_new {
        s.push_str(" Changing this forces a new resource.");
    }
    if a.write_only {
        s.push_str(" Write-only: never stored in the plan or state; needs Terraform 1.11 or later (OpenTofu 1.11 or later)");
        match &a.stored_alternative {
            Some(alt) => {
                let _ = write!(s, ", older versions use `{alt}`.");
            }
            None => s.push('.'),
        }
    }
    s
}

fn literal(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "null".into(),
    }
}

fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() || s.ends_with('.') || s.ends_with(')') {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::resource::timeouts_block;

    #[test]
    fn pages_list_attributes_by_role_with_defaults_and_replacement() {
        let schema = Schema::new(
            0,
            Block::new("Makes a thing.\n\nMore words.")
                .attr(Attribute::string("name", "The name").required().force_new())
                .attr(Attribute::number("size", "The size").default(3))
                .attr(
                    Attribute::string("secret", "The key")
                        .computed()
                        .sensitive(),
                )
                .attr(Attribute::string("token", "The token").sensitive())
                .attr(
                    Attribute::string("token_wo", "The token, not stored")
                        .sensitive()
                        .write_only()
                        .stored_alternative("token"),
                )
                .block(timeouts_block(&[("create", "10m")])),
        );
        let page = resource_page(
            "mesh_thing",
            &schema,
            PageExtras {
                example: Some("resource \"x\" {}"),
                import: Some("# cannot be imported"),
                limitations: Some("- Does one thing only.\n"),
            },
        );
        assert!(page.contains("description: |-\n  Makes a thing.\n---"));
        assert!(page.contains(
            "### Required\n\n- `name` (String) The name. Changing this forces a new resource."
        ));
        assert!(page.contains("- `size` (Number) The size. Defaults to `3`."));
        assert!(page.contains("### Read-Only\n\n- `secret` (String, Sensitive) The key."));
        assert!(page.contains("- `token_wo` (String, Sensitive, Write-only) The token, not stored. Write-only: never stored in the plan or state; needs Terraform 1.11 or later (OpenTofu 1.11 or later), older versions use `token`.\n"), "{page}");
        assert!(page.contains("### Nested Schema for `timeouts`"));
        assert!(page.contains("```terraform\nresource \"x\" {}\n```"));
        // Limitations after the example, before the schema; import last.
        let at = |needle: &str| page.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(at("## Example Usage") < at("## Limitations\n\n- Does one thing only.\n\n"));
        assert!(at("## Limitations") < at("## Schema"));
        assert!(at("## Schema") < at("## Import\n\n```shell\n# cannot be imported\n```"));
        let bare = resource_page("mesh_thing", &schema, PageExtras::default());
        assert!(!bare.contains("## Limitations") && !bare.contains("## Import"));
    }

    #[test]
    fn data_source_pages_and_the_index_list_data_sources() {
        let schema = Schema::new(
            0,
            Block::new("Reports a thing, e.g. this one. Not more.\n\nMore words.")
                .attr(Attribute::string("name", "The name").required())
                .attr(Attribute::bool("healthy", "Whether it is healthy").computed())
                .block(timeouts_block(&[("read", "1m")])),
        );
        let page = data_source_page(
            "mesh_thing",
            &schema,
            PageExtras {
                example: Some("data \"mesh_thing\" \"x\" {}"),
                import: Some("# never shown"),
                limitations: Some("- Reads one thing.\n"),
            },
        );
        assert!(page.contains("page_title: \"mesh_thing Data Source - terraform-provider-mesh\""));
        assert!(page.contains("# mesh_thing (Data Source)\n\nReports a thing, e.g. this one."));
        assert!(page.contains("```terraform\ndata \"mesh_thing\" \"x\" {}\n```"));
        assert!(page.contains("## Limitations\n\n- Reads one thing."));
        assert!(page.contains("### Read-Only\n\n- `healthy` (Boolean) Whether it is healthy."));
        assert!(!page.contains("## Import"), "{page}");

        let index = index_page(
            "The provider.",
            None,
            &[("mesh_other", Schema::new(0, Block::new("Makes another.")))],
            &[("mesh_thing", schema.clone())],
        );
        assert!(index.contains("## Resources\n\n- `mesh_other`: Makes another.\n"));
        assert!(
            index.contains("## Data Sources\n\n- `mesh_thing`: Reports a thing, e.g. this one.\n")
        );
        let none = index_page("The provider.", None, &[], &[]);
        assert!(!none.contains("## Data Sources") && !none.contains("## Resources"));
    }
}
