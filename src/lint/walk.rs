//! Helpers over the raw (span-keeping) template tree: JSON paths, walking
//! every value, and the `{{ ... }}` expressions inside strings.

use crate::template::jsonc::{Key, Node, NodeKind};

/// Appends a field to a JSON path in the decoder's style (`builder.ssh.password`).
pub fn field(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

/// Appends an index to a JSON path (`provisioners[2]`).
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The items of an array node (empty for anything else).
pub fn items(node: Option<&Node>) -> &[Node] {
    match node.map(|n| &n.kind) {
        Some(NodeKind::Array(items)) => items,
        _ => &[],
    }
}

/// The members of an object node (empty for anything else).
pub fn members(node: Option<&Node>) -> &[(Key, Node)] {
    match node.map(|n| &n.kind) {
        Some(NodeKind::Object(members)) => members,
        _ => &[],
    }
}

pub fn as_bool(node: Option<&Node>) -> Option<bool> {
    match node.map(|n| &n.kind) {
        Some(NodeKind::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// Calls `f(node, key, path)` for every value in the tree, parents first.
/// `key` is the member name when the value is an object member.
pub fn visit<'a>(node: &'a Node, f: &mut impl FnMut(&'a Node, Option<&'a Key>, &str)) {
    fn go<'a>(node: &'a Node, key: Option<&'a Key>, path: &str, f: &mut impl FnMut(&'a Node, Option<&'a Key>, &str)) {
        f(node, key, path);
        match &node.kind {
            NodeKind::Object(members) => {
                for (k, v) in members {
                    go(v, Some(k), &field(path, &k.name), f);
                }
            }
            NodeKind::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    go(v, None, &index(path, i), f);
                }
            }
            _ => {}
        }
    }
    go(node, None, "", f);
}

/// The JSON path of the innermost value (or key) whose span contains `offset`.
pub fn path_at(root: &Node, offset: usize) -> String {
    let mut path = String::new();
    let mut node = root;
    loop {
        let inside = |n: &Node| n.span.start <= offset && offset < n.span.end;
        let next = match &node.kind {
            NodeKind::Object(members) => members
                .iter()
                .find(|(k, v)| inside(v) || (k.span.start <= offset && offset < k.span.end))
                .map(|(k, v)| (field(&path, &k.name), v)),
            NodeKind::Array(items) => {
                items.iter().enumerate().find(|(_, v)| inside(v)).map(|(i, v)| (index(&path, i), v))
            }
            _ => None,
        };
        match next {
            Some((p, n)) => {
                path = p;
                node = n;
            }
            None => return path,
        }
    }
}

pub use crate::template::interp::expressions;

/// `s` with every `{{ ... }}` placeholder removed (the literal text around them).
pub fn literal_text(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => rest = &after[end + 2..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::jsonc::parse;

    #[test]
    fn path_at_finds_innermost_value() {
        let text = r#"{"a": {"b": [1, "xyz"]}, "c": 2}"#;
        let root = parse(text).unwrap();
        assert_eq!(path_at(&root, text.find("xyz").unwrap() + 1), "a.b[1]");
        assert_eq!(path_at(&root, text.find("\"c\"").unwrap()), "c");
        assert_eq!(path_at(&root, 0), "");
    }

    #[test]
    fn expressions_and_literal_text() {
        assert_eq!(expressions("a {{ var.x }} b {{env.Y}}"), vec!["var.x", "env.Y"]);
        assert_eq!(literal_text("a {{ var.x }} b"), "a  b");
        assert_eq!(literal_text("{{ var.x }}"), "");
    }
}
