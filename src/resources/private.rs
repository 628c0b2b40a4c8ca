//! Private state that does not repeat the state saved beside it. Terraform rewrites its whole
//! state file after every resource it applies, so a private field that usually equals an
//! attribute is left out when it does, and read back from that attribute. A field that differs
//! is written, `null` included, so nothing is lost.

use crate::plugin::Value;

type Fields = serde_json::Map<String, serde_json::Value>;

/// A private field, and the path of the state attribute it usually equals.
pub type Mirror = (&'static str, &'static [&'static str]);

fn attribute<'a>(state: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(state, |v, k| v.get(k))
}

/// Gives each mirrored field the saved fields leave out its attribute's value (null when the
/// attribute is not a string).
pub fn restore(fields: &mut Fields, state: &Value, mirrored: &[Mirror]) {
    for (field, path) in mirrored {
        if !fields.contains_key(*field) {
            let value = attribute(state, path).as_str().map(serde_json::Value::from);
            fields.insert((*field).into(), value.unwrap_or_default());
        }
    }
}

/// Leaves out each mirrored field that equals its attribute (a null field equals a null or
/// missing attribute, which restores it as null).
pub fn leave_out(fields: &mut Fields, state: &Value, mirrored: &[Mirror]) {
    for (field, path) in mirrored {
        if fields.get(*field).and_then(|v| v.as_str()) == attribute(state, path).as_str() {
            fields.remove(*field);
        }
    }
}
