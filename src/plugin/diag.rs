//! Diagnostics with attribute paths, so Terraform can point at the offending line of HCL.

use std::fmt;

use super::proto::tfplugin6 as pb;

/// One step into a value: an attribute, a map key or a list index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Attr(String),
    Key(String),
    Index(i64),
}

/// Where in a resource's configuration something is, e.g. `intermediate.rsa_bits`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributePath(pub Vec<Step>);

impl AttributePath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// A path of attribute names, e.g. `AttributePath::attrs(&["root_ca", "cert_pem"])`.
    pub fn attrs(names: &[&str]) -> Self {
        Self(names.iter().map(|n| Step::Attr(n.to_string())).collect())
    }

    pub fn attr(mut self, name: &str) -> Self {
        self.push_attr(name);
        self
    }

    pub fn push_attr(&mut self, name: &str) {
        self.0.push(Step::Attr(name.to_string()));
    }

    pub fn push_key(&mut self, key: &str) {
        self.0.push(Step::Key(key.to_string()));
    }

    pub fn push_index(&mut self, i: i64) {
        self.0.push(Step::Index(i));
    }

    pub fn pop(&mut self) {
        self.0.pop();
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_proto(&self) -> pb::AttributePath {
        use pb::attribute_path::step::Selector;
        pb::AttributePath {
            steps: self
                .0
                .iter()
                .map(|s| pb::attribute_path::Step {
                    selector: Some(match s {
                        Step::Attr(n) => Selector::AttributeName(n.clone()),
                        Step::Key(k) => Selector::ElementKeyString(k.clone()),
                        Step::Index(i) => Selector::ElementKeyInt(*i),
                    }),
                })
                .collect(),
        }
    }

    pub fn from_proto(p: &pb::AttributePath) -> Self {
        use pb::attribute_path::step::Selector;
        Self(
            p.steps
                .iter()
                .filter_map(|s| match s.selector.as_ref()? {
                    Selector::AttributeName(n) => Some(Step::Attr(n.clone())),
                    Selector::ElementKeyString(k) => Some(Step::Key(k.clone())),
                    Selector::ElementKeyInt(i) => Some(Step::Index(*i)),
                })
                .collect(),
        )
    }
}

impl fmt::Display for AttributePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Attr(n) if i == 0 => f.write_str(n)?,
                Step::Attr(n) => write!(f, ".{n}")?,
                Step::Key(k) => write!(f, "[{k:?}]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A message for the user. Details must never contain secret material.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub summary: String,
    pub detail: String,
    pub path: Option<AttributePath>,
}

/// Diagnostics collected by one RPC, errors and warnings alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn error(&mut self, summary: impl Into<String>, detail: impl Into<String>) {
        self.push(Severity::Error, summary, detail, None);
    }

    pub fn error_at(
        &mut self,
        path: AttributePath,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.push(Severity::Error, summary, detail, Some(path));
    }

    pub fn warning(&mut self, summary: impl Into<String>, detail: impl Into<String>) {
        self.push(Severity::Warning, summary, detail, None);
    }

    pub fn warning_at(
        &mut self,
        path: AttributePath,
        summary: impl Into<String>,
        detail: impl Into<String>,
    ) {
        self.push(Severity::Warning, summary, detail, Some(path));
    }

    fn push(
        &mut self,
        severity: Severity,
        summary: impl Into<String>,
        detail: impl Into<String>,
        path: Option<AttributePath>,
    ) {
        self.0.push(Diagnostic {
            severity,
            summary: summary.into(),
            detail: detail.into(),
            path: path.filter(|p| !p.is_root()),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An error diagnostic from an error chain: the outermost context is the summary, the causes
    /// the detail. Backtraces are never included.
    pub fn from_error(err: &anyhow::Error) -> Self {
        let mut d = Self::new();
        let mut chain = err.chain();
        let summary = chain.next().map(|e| e.to_string()).unwrap_or_default();
        let detail: Vec<String> = chain.map(|e| e.to_string()).collect();
        d.error(summary, detail.join(": "));
        d
    }

    pub(crate) fn to_proto(&self) -> Vec<pb::Diagnostic> {
        self.0
            .iter()
            .map(|d| pb::Diagnostic {
                severity: match d.severity {
                    Severity::Error => pb::diagnostic::Severity::Error as i32,
                    Severity::Warning => pb::diagnostic::Severity::Warning as i32,
                },
                summary: d.summary.clone(),
                detail: d.detail.clone(),
                attribute: d.path.as_ref().map(AttributePath::to_proto),
            })
            .collect()
    }
}

impl From<anyhow::Error> for Diagnostics {
    fn from(err: anyhow::Error) -> Self {
        Self::from_error(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_hcl_references() {
        let mut p = AttributePath::attrs(&["control_plane", "values"]);
        p.push_key("k");
        p.push_index(2);
        assert_eq!(p.to_string(), r#"control_plane.values["k"][2]"#);
        assert_eq!(AttributePath::from_proto(&p.to_proto()), p);
    }

    #[test]
    fn error_chains_become_summary_and_detail() {
        let err = anyhow::anyhow!("connection refused")
            .context("reading secret cacerts")
            .context("cluster east");
        let d = Diagnostics::from_error(&err);
        assert_eq!(d.0[0].summary, "cluster east");
        assert_eq!(d.0[0].detail, "reading secret cacerts: connection refused");
        assert!(d.has_errors());
    }
}
