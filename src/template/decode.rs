//! Strict decoding of the span-keeping JSON tree into typed template structs.
//!
//! Every problem is recorded (not only the first) with its JSON path and
//! span. A field that failed to decode gets a placeholder so decoding can go
//! on; the placeholders never escape, because any recorded error fails the
//! whole template.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::diag::{Diagnostic, SourceFile, did_you_mean};
use super::interp::{Interpolator, Mode};
use super::jsonc::{Key, Node, NodeKind, Span};

#[derive(Debug, Clone)]
enum Segment {
    Field(String),
    Index(usize),
}

pub struct Cx<'a> {
    file: Arc<SourceFile>,
    path: Vec<Segment>,
    pub errors: Vec<Diagnostic>,
    pub interp: &'a Interpolator,
    mode: Mode,
}

impl<'a> Cx<'a> {
    pub fn new(file: Arc<SourceFile>, interp: &'a Interpolator) -> Self {
        Cx { file, path: Vec::new(), errors: Vec::new(), interp, mode: Mode::Eager }
    }

    pub fn file(&self) -> &Arc<SourceFile> {
        &self.file
    }

    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Segment::Field(name) if out.is_empty() => out.push_str(name),
                Segment::Field(name) => {
                    out.push('.');
                    out.push_str(name);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.error_with_help(span, message, None);
    }

    pub fn error_with_help(&mut self, span: Span, message: impl Into<String>, help: Option<String>) {
        self.errors.push(Diagnostic {
            file: self.file.clone(),
            span,
            path: self.path_string(),
            message: message.into(),
            help,
        });
    }

    /// Runs `f` with `field` appended to the JSON path.
    pub fn in_field<T>(&mut self, field: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(Segment::Field(field.to_string()));
        let out = f(self);
        self.path.pop();
        out
    }

    pub fn in_index<T>(&mut self, index: usize, f: impl FnOnce(&mut Self) -> T) -> T {
        self.path.push(Segment::Index(index));
        let out = f(self);
        self.path.pop();
        out
    }

    /// Decodes strings below this point with runtime (`http.*`) placeholders kept.
    pub fn with_mode<T>(&mut self, mode: Mode, f: impl FnOnce(&mut Self) -> T) -> T {
        let previous = std::mem::replace(&mut self.mode, mode);
        let out = f(self);
        self.mode = previous;
        out
    }

    pub fn type_error(&mut self, node: &Node, expected: &str) {
        self.error(node.span, format!("expected {expected}, found {}", node.kind.type_name()));
    }

    /// Interpolates a string value, recording errors at the node's span.
    pub fn render(&mut self, node: &Node, raw: &str) -> Option<String> {
        match self.interp.render(raw, self.mode) {
            Ok(s) => Some(s),
            Err(e) => {
                let help = e.help();
                self.error_with_help(node.span, e.to_string(), help);
                None
            }
        }
    }

    pub fn object<'n>(&mut self, node: &'n Node) -> Option<ObjectReader<'n>> {
        match &node.kind {
            NodeKind::Object(members) => {
                Some(ObjectReader { span: node.span, members, used: vec![false; members.len()], known: Vec::new() })
            }
            _ => {
                self.type_error(node, "an object");
                None
            }
        }
    }
}

/// A type that can be decoded from a template value.
pub trait Decode: Sized {
    /// Records errors in `cx` and returns `None` when the value is unusable.
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self>;
}

/// Reads the members of one JSON object and reports the ones nobody asked for.
pub struct ObjectReader<'n> {
    pub span: Span,
    members: &'n [(Key, Node)],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> ObjectReader<'n> {
    /// Marks `key` as a known field and returns its node, if present.
    pub fn node(&mut self, key: &'static str) -> Option<&'n Node> {
        self.known.push(key);
        let index = self.members.iter().position(|(k, _)| k.name == key)?;
        self.used[index] = true;
        Some(&self.members[index].1)
    }

    pub fn has(&self, key: &str) -> bool {
        self.members.iter().any(|(k, _)| k.name == key)
    }

    /// An optional field: `None` when absent or invalid (the error is recorded).
    pub fn opt<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        let node = self.node(key)?;
        cx.in_field(key, |cx| T::decode(node, cx))
    }

    /// A field with a default value.
    pub fn or<T: Decode>(&mut self, cx: &mut Cx, key: &'static str, default: T) -> T {
        self.opt(cx, key).unwrap_or(default)
    }

    pub fn or_default<T: Decode + Default>(&mut self, cx: &mut Cx, key: &'static str) -> T {
        self.opt(cx, key).unwrap_or_default()
    }

    /// A required field; a missing one is reported at the object.
    pub fn req<T: Decode>(&mut self, cx: &mut Cx, key: &'static str) -> Option<T> {
        if !self.has(key) {
            self.known.push(key);
            cx.in_field(key, |cx| cx.error(self.span, format!("missing required field `{key}`")));
            return None;
        }
        self.opt(cx, key)
    }

    /// Reports every member that no `opt`/`req`/`node` call asked for.
    pub fn finish(self, cx: &mut Cx) {
        for ((key, _), used) in self.members.iter().zip(&self.used) {
            if *used || key.name == "$schema" && cx.path_string().is_empty() {
                continue;
            }
            let help = match did_you_mean(&key.name, self.known.iter().copied()) {
                Some(name) => Some(format!("did you mean `{name}`?")),
                None => Some(format!("known fields here: {}", self.known.join(", "))),
            };
            let name = key.name.clone();
            cx.in_field(&name, |cx| cx.error_with_help(key.span, format!("unknown field `{name}`"), help));
        }
    }
}

impl Decode for String {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.kind {
            NodeKind::String(s) => cx.render(node, s),
            _ => {
                cx.type_error(node, "a string");
                None
            }
        }
    }
}

impl Decode for bool {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        match &node.kind {
            NodeKind::Bool(b) => Some(*b),
            NodeKind::String(s) if s.contains("{{") => {
                let rendered = cx.render(node, s)?;
                match rendered.as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    other => {
                        cx.error(node.span, format!("expected `true` or `false`, got `{other}`"));
                        None
                    }
                }
            }
            _ => {
                cx.type_error(node, "a boolean");
                None
            }
        }
    }
}

/// Integers accept JSON numbers, or strings that interpolate to a number.
fn decode_integer(node: &Node, cx: &mut Cx, min: i128, max: i128) -> Option<i128> {
    let value = match &node.kind {
        NodeKind::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        NodeKind::String(s) if s.contains("{{") => cx.render(node, s)?.trim().parse::<i128>().ok(),
        _ => {
            cx.type_error(node, "an integer");
            return None;
        }
    };
    match value {
        Some(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            cx.error(node.span, format!("expected an integer from {min} to {max}"));
            None
        }
    }
}

macro_rules! decode_int {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
                decode_integer(node, cx, <$t>::MIN as i128, <$t>::MAX as i128).map(|v| v as $t)
            }
        }
    )*};
}
decode_int!(u16, u32, u64, i32, i64);

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let NodeKind::Array(items) = &node.kind else {
            cx.type_error(node, "an array");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match cx.in_index(i, |cx| T::decode(item, cx)) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// String maps (`env`, `tags`, `http_content`): keys are kept as written.
impl<T: Decode> Decode for BTreeMap<String, T> {
    fn decode(node: &Node, cx: &mut Cx) -> Option<Self> {
        let NodeKind::Object(members) = &node.kind else {
            cx.type_error(node, "an object");
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in members {
            match cx.in_field(&key.name, |cx| T::decode(value, cx)) {
                Some(v) => {
                    out.insert(key.name.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Decodes a string and maps it through `parse`, reporting its error at the node.
pub fn parse_string<T, E: std::fmt::Display>(
    node: &Node,
    cx: &mut Cx,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    let s = String::decode(node, cx)?;
    match parse(&s) {
        Ok(v) => Some(v),
        Err(e) => {
            cx.error(node.span, e.to_string());
            None
        }
    }
}

/// Decodes one of a fixed set of string values, with a suggestion on typos.
pub fn one_of<T: Copy>(node: &Node, cx: &mut Cx, choices: &[(&'static str, T)]) -> Option<T> {
    let s = String::decode(node, cx)?;
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let help = did_you_mean(&s, names.iter().copied()).map(|n| format!("did you mean `{n}`?"));
    cx.error_with_help(node.span, format!("expected one of {}, got `{s}`", quote_list(&names)), help);
    None
}

pub fn quote_list(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Reads the `type` tag of a tagged object (`builder`, `source`, provisioners).
pub fn type_tag(node: &Node, cx: &mut Cx, reader: &mut ObjectReader, choices: &[&'static str]) -> Option<String> {
    let Some(tag_node) = reader.node("type") else {
        cx.in_field("type", |cx| {
            cx.error_with_help(
                node.span,
                "missing required field `type`",
                Some(format!("one of {}", quote_list(choices))),
            )
        });
        return None;
    };
    let tag = cx.in_field("type", |cx| String::decode(tag_node, cx))?;
    if choices.contains(&tag.as_str()) {
        return Some(tag);
    }
    let help = did_you_mean(&tag, choices.iter().copied()).map(|n| format!("did you mean `{n}`?"));
    cx.in_field("type", |cx| {
        cx.error_with_help(
            tag_node.span,
            format!("unknown type `{tag}`, expected one of {}", quote_list(choices)),
            help,
        )
    });
    None
}
