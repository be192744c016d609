//! A small JSON-with-comments parser that keeps the byte span of every value
//! and key, so that every later error can point at `file:line:column`.
//!
//! serde_json drops positions once a value is parsed, and strict decoding
//! needs them for unknown-field and type errors deep inside the tree.

use std::fmt;

/// Byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(Key, Node)>),
}

impl NodeKind {
    /// The JSON type name used in "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Number(_) => "a number",
            NodeKind::String(_) => "a string",
            NodeKind::Array(_) => "an array",
            NodeKind::Object(_) => "an object",
        }
    }
}

impl Node {
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Object(members) => members.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::String(s) => Some(s),
            _ => None,
        }
    }

    /// Plain JSON without spans, for `inspect` and digests.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Number(n) => Value::Number(n.clone()),
            NodeKind::String(s) => Value::String(s.clone()),
            NodeKind::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Object(members) => {
                Value::Object(members.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect())
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Parses JSON with `//` and `/* */` comments and trailing commas.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut parser = Parser { text, bytes: text.as_bytes(), pos: 0, depth: 0 };
    // A UTF-8 byte order mark is common in files saved by Windows editors; only at the start.
    if text.starts_with('\u{feff}') {
        parser.pos = '\u{feff}'.len_utf8();
    }
    parser.skip_trivia()?;
    let node = parser.value()?;
    parser.skip_trivia()?;
    if parser.pos < parser.bytes.len() {
        return Err(parser.error_here("unexpected content after the end of the document"));
    }
    Ok(node)
}

const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error_here(&self, message: impl Into<String>) -> SyntaxError {
        let end = (self.pos + 1).min(self.bytes.len()).max(self.pos);
        SyntaxError { span: Span::new(self.pos, end), message: message.into() }
    }

    fn error_at(&self, span: Span, message: impl Into<String>) -> SyntaxError {
        SyntaxError { span, message: message.into() }
    }

    fn found(&self) -> String {
        match self.text[self.pos..].chars().next() {
            None => "the end of the file".to_string(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') => self.comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn comment(&mut self) -> Result<(), SyntaxError> {
        let start = self.pos;
        match self.bytes.get(self.pos + 1) {
            Some(b'/') => {
                while let Some(b) = self.peek() {
                    if b == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
                Ok(())
            }
            Some(b'*') => {
                self.pos += 2;
                match self.text[self.pos..].find("*/") {
                    Some(offset) => {
                        self.pos += offset + 2;
                        Ok(())
                    }
                    None => Err(self.error_at(Span::new(start, start + 2), "unterminated `/*` comment")),
                }
            }
            _ => Err(self.error_here("unexpected `/` (comments start with `//` or `/*`)")),
        }
    }

    fn value(&mut self) -> Result<Node, SyntaxError> {
        match self.peek() {
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => {
                let (s, span) = self.string()?;
                Ok(Node { span, kind: NodeKind::String(s) })
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true", NodeKind::Bool(true)),
            Some(b'f') => self.literal("false", NodeKind::Bool(false)),
            Some(b'n') => self.literal("null", NodeKind::Null),
            Some(b'\'') => Err(self.error_here("strings must use double quotes `\"`")),
            _ => Err(self.error_here(format!("expected a value, found {}", self.found()))),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Node, SyntaxError>) -> Result<Node, SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here("nesting is too deep"));
        }
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn literal(&mut self, word: &str, kind: NodeKind) -> Result<Node, SyntaxError> {
        let start = self.pos;
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            if !matches!(self.peek(), Some(b) if b.is_ascii_alphanumeric() || b == b'_') {
                return Ok(Node { span: Span::new(start, self.pos), kind });
            }
        }
        let end = self.bytes[start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map_or(self.bytes.len(), |n| start + n);
        Err(self.error_at(
            Span::new(start, end.max(start + 1)),
            format!("expected a value, found `{}` (strings need double quotes)", &self.text[start..end]),
        ))
    }

    fn number(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E') {
                self.pos += 1;
            } else {
                break;
            }
        }
        let span = Span::new(start, self.pos);
        let raw = &self.text[start..self.pos];
        match serde_json::from_str::<serde_json::Number>(raw) {
            Ok(n) => Ok(Node { span, kind: NodeKind::Number(n) }),
            Err(_) => Err(self.error_at(span, format!("invalid number `{raw}`"))),
        }
    }

    fn string(&mut self) -> Result<(String, Span), SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error_at(Span::new(start, start + 1), "unterminated string"));
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok((out, Span::new(start, self.pos)));
                }
                b'\\' => out.push(self.escape()?),
                b'\n' | b'\r' => {
                    return Err(self.error_here("line break inside a string (use `\\n`)"));
                }
                _ => {
                    let c = self.text[self.pos..].chars().next().unwrap_or('\u{FFFD}');
                    if (c as u32) < 0x20 {
                        return Err(self.error_here("control character inside a string"));
                    }
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let Some(b) = self.peek() else {
            return Err(self.error_at(Span::new(start, start + 1), "unterminated escape"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => return self.unicode_escape(start),
            _ => {
                return Err(self.error_at(Span::new(start, self.pos), format!("invalid escape `\\{}`", b as char)));
            }
        })
    }

    fn hex4(&mut self, start: usize) -> Result<u32, SyntaxError> {
        let digits = self.text.get(self.pos..self.pos + 4).unwrap_or("");
        match u32::from_str_radix(digits, 16) {
            Ok(v) if digits.len() == 4 => {
                self.pos += 4;
                Ok(v)
            }
            _ => Err(self.error_at(Span::new(start, self.pos), "`\\u` needs four hex digits")),
        }
    }

    fn unicode_escape(&mut self, start: usize) -> Result<char, SyntaxError> {
        let high = self.hex4(start)?;
        let code = if (0xD800..0xDC00).contains(&high) && self.bytes[self.pos..].starts_with(b"\\u") {
            self.pos += 2;
            let low = self.hex4(start)?;
            if !(0xDC00..0xE000).contains(&low) {
                let message =
                    "invalid unicode escape: a high surrogate must be followed by a low one (`\\uDC00`-`\\uDFFF`)";
                return Err(self.error_at(Span::new(start, self.pos), message));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.error_at(Span::new(start, self.pos), "invalid unicode escape"))
    }

    fn object(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut members: Vec<(Key, Node)> = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node { span: Span::new(start, self.pos), kind: NodeKind::Object(members) });
                }
                Some(b'"') => {}
                None => return Err(self.error_at(Span::new(start, start + 1), "unclosed `{`")),
                _ => {
                    return Err(self.error_here(format!(
                        "expected a field name in double quotes or `}}`, found {}",
                        self.found()
                    )));
                }
            }
            let (name, key_span) = self.string()?;
            if members.iter().any(|(k, _)| k.name == name) {
                return Err(self.error_at(key_span, format!("duplicate field `{name}`")));
            }
            self.skip_trivia()?;
            if self.peek() != Some(b':') {
                return Err(self.error_here(format!("expected `:` after field name, found {}", self.found())));
            }
            self.pos += 1;
            self.skip_trivia()?;
            let value = self.value()?;
            members.push((Key { name, span: key_span }, value));
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => {
                    return Err(self.error_here(format!("expected `,` or `}}` after a field, found {}", self.found())));
                }
            }
        }
    }

    fn array(&mut self) -> Result<Node, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Node { span: Span::new(start, self.pos), kind: NodeKind::Array(items) });
                }
                None => return Err(self.error_at(Span::new(start, start + 1), "unclosed `[`")),
                _ => {}
            }
            items.push(self.value()?);
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                _ => {
                    return Err(
                        self.error_here(format!("expected `,` or `]` after an array item, found {}", self.found()))
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_and_keeps_spans() {
        let text = "{\n  // a comment\n  \"a\": [1, \"x\"], /* b */ \"b\": true,\n}";
        let node = parse(text).unwrap();
        let a = node.get("a").unwrap();
        assert_eq!(&text[a.span.start..a.span.end], "[1, \"x\"]");
        assert!(matches!(node.get("b").unwrap().kind, NodeKind::Bool(true)));
    }

    #[test]
    fn reports_position_of_syntax_errors() {
        let text = "{\"a\": 1 \"b\": 2}";
        let err = parse(text).unwrap_err();
        assert_eq!(err.span.start, 8);
        assert!(err.message.contains("expected `,` or `}`"), "{}", err.message);
    }

    #[test]
    fn rejects_duplicates_and_bad_escapes() {
        assert!(parse("{\"a\":1,\"a\":2}").unwrap_err().message.contains("duplicate"));
        assert!(parse("\"\\q\"").unwrap_err().message.contains("invalid escape"));
        assert!(parse("{\"a\": tru}").unwrap_err().message.contains("tru"));
        assert!(parse("/* open").is_err());
    }

    #[test]
    fn decodes_unicode_escapes() {
        let node = parse("\"\\u00e9\\ud83d\\ude00\"").unwrap();
        assert_eq!(node.as_str(), Some("é😀"));
    }

    #[test]
    fn a_byte_order_mark_is_allowed_only_at_the_start() {
        assert!(parse("\u{feff}{\"a\": 1}").is_ok());
        // Found by tests/fuzz.rs: one between tokens was skipped like a space.
        assert!(parse("{\"a\": [\u{feff}1]}").is_err());
    }

    #[test]
    fn rejects_a_high_surrogate_without_its_low_half() {
        // Found by tests/fuzz.rs: decoded to an arbitrary character where serde_json refuses it.
        let err = parse("[\"\\ud800\\u0041\"]").unwrap_err();
        assert!(err.message.contains("low one"), "{}", err.message);
        assert_eq!(err.span, Span::new(2, 14));
    }
}
