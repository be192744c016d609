//! `boot_command` key syntax (Packer-compatible), independent of how a
//! builder sends keys: the template checks it when it is read, and a builder
//! maps the parsed keys to its own key codes (QEMU: `builder::qemu::keys`).
//!
//! Literal text is typed as written; `<enter>`, `<f1>`, `<leftCtrlOn>` …
//! name special keys; `<wait>`, `<wait5>`, `<wait10s>`, `<wait500ms>`,
//! `<wait1m>` pause. A `<` that starts no known name is typed as `<`;
//! `<lt>` and `<gt>` always type `<` and `>`, so text that looks like a key
//! name (`<lt>enter<gt>` types `<enter>`) is never read as one.

use std::time::Duration;

/// A key the guest receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character typed as on a US keyboard (see [`typable`]).
    Char(char),
    Named(NamedKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedKey {
    Backspace,
    Delete,
    Enter,
    Esc,
    Tab,
    Space,
    Up,
    Down,
    Left,
    Right,
    Insert,
    Home,
    End,
    PageUp,
    PageDown,
    Function(FunctionKey),
    /// A modifier pressed and released like any key (`<leftAlt>`).
    Modifier(Modifier),
}

/// `F1` … `F12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionKey(u8);

impl FunctionKey {
    pub fn new(number: u8) -> Option<Self> {
        (1..=12).contains(&number).then_some(FunctionKey(number))
    }

    /// 1 to 12.
    pub fn number(self) -> u8 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    LeftAlt,
    RightAlt,
    LeftCtrl,
    RightCtrl,
    LeftShift,
    RightShift,
    LeftSuper,
    RightSuper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Press(Key),
    /// A modifier held for the following presses (`<leftShiftOn>`).
    Hold(Modifier),
    Release(Modifier),
    Wait(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("character {0:?} cannot be typed (only printable US-ASCII, tab and newline)")]
    Untypable(char),
    #[error("invalid wait `<{0}>`: use `<wait>`, `<wait5>`, `<wait10s>`, `<wait500ms>` or `<wait1m>`")]
    BadWait(String),
}

/// Characters `boot_command` can type: printable US-ASCII, tab and newline.
pub fn typable(c: char) -> bool {
    c.is_ascii_graphic() || matches!(c, ' ' | '\t' | '\n')
}

fn named_key(name: &str) -> Option<NamedKey> {
    let lower = name.to_ascii_lowercase();
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
        return FunctionKey::new(n).map(NamedKey::Function);
    }
    Some(match lower.as_str() {
        "bs" => NamedKey::Backspace,
        "del" => NamedKey::Delete,
        "enter" | "return" => NamedKey::Enter,
        "esc" => NamedKey::Esc,
        "tab" => NamedKey::Tab,
        "spacebar" => NamedKey::Space,
        "up" => NamedKey::Up,
        "down" => NamedKey::Down,
        "left" => NamedKey::Left,
        "right" => NamedKey::Right,
        "insert" => NamedKey::Insert,
        "home" => NamedKey::Home,
        "end" => NamedKey::End,
        "pageup" => NamedKey::PageUp,
        "pagedown" => NamedKey::PageDown,
        _ => NamedKey::Modifier(modifier(&lower)?),
    })
}

fn modifier(lower: &str) -> Option<Modifier> {
    Some(match lower {
        "leftalt" => Modifier::LeftAlt,
        "rightalt" => Modifier::RightAlt,
        "leftctrl" => Modifier::LeftCtrl,
        "rightctrl" => Modifier::RightCtrl,
        "leftshift" => Modifier::LeftShift,
        "rightshift" => Modifier::RightShift,
        "leftsuper" => Modifier::LeftSuper,
        "rightsuper" => Modifier::RightSuper,
        _ => return None,
    })
}

fn wait(name: &str) -> Option<Result<Duration, KeyError>> {
    let rest = name.to_ascii_lowercase().strip_prefix("wait")?.to_string();
    if rest.is_empty() {
        return Some(Ok(Duration::from_secs(1)));
    }
    let with_unit = if rest.chars().all(|c| c.is_ascii_digit()) { format!("{rest}s") } else { rest };
    Some(with_unit.parse::<super::units::Dur>().map(|d| d.0).map_err(|_| KeyError::BadWait(name.to_string())))
}

fn press_char(c: char) -> Result<KeyAction, KeyError> {
    if typable(c) { Ok(KeyAction::Press(Key::Char(c))) } else { Err(KeyError::Untypable(c)) }
}

/// One `<...>` token: a key, a held/released modifier or a wait.
fn token(name: &str) -> Option<Result<KeyAction, KeyError>> {
    if let Some(w) = wait(name) {
        return Some(w.map(KeyAction::Wait));
    }
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "lt" => return Some(press_char('<')),
        "gt" => return Some(press_char('>')),
        _ => {}
    }
    if let Some(m) = lower.strip_suffix("on").and_then(modifier) {
        return Some(Ok(KeyAction::Hold(m)));
    }
    if let Some(m) = lower.strip_suffix("off").and_then(modifier) {
        return Some(Ok(KeyAction::Release(m)));
    }
    named_key(name).map(|k| Ok(KeyAction::Press(Key::Named(k))))
}

/// Parses one `boot_command` entry.
pub fn parse(line: &str) -> Result<Vec<KeyAction>, KeyError> {
    let mut actions = Vec::new();
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        // A name holds no `<`: looking for its `>` only up to the next `<`
        // keeps a line full of `<` linear, not quadratic.
        if c == '<'
            && let Some(end) = rest[1..].find(['<', '>']).map(|i| i + 1)
            && rest.as_bytes()[end] == b'>'
            && let Some(action) = token(&rest[1..end])
        {
            actions.push(action?);
            rest = &rest[end + 1..];
            continue;
        }
        actions.push(press_char(c)?);
        rest = &rest[c.len_utf8()..];
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(c: char) -> KeyAction {
        KeyAction::Press(Key::Char(c))
    }

    #[test]
    fn parses_packer_syntax() {
        let actions = parse("aB<enter><wait5><leftCtrlOn>c<leftCtrlOff><f12><wait500ms><leftAlt>").unwrap();
        assert_eq!(
            actions,
            [
                ch('a'),
                ch('B'),
                KeyAction::Press(Key::Named(NamedKey::Enter)),
                KeyAction::Wait(Duration::from_secs(5)),
                KeyAction::Hold(Modifier::LeftCtrl),
                ch('c'),
                KeyAction::Release(Modifier::LeftCtrl),
                KeyAction::Press(Key::Named(NamedKey::Function(FunctionKey(12)))),
                KeyAction::Wait(Duration::from_millis(500)),
                KeyAction::Press(Key::Named(NamedKey::Modifier(Modifier::LeftAlt))),
            ]
        );
    }

    #[test]
    fn unknown_angle_brackets_are_literal() {
        assert_eq!(parse("<x>").unwrap(), [ch('<'), ch('x'), ch('>')]);
        assert_eq!(parse("<f13><f0>").unwrap().len(), 9, "only F1 to F12 are keys");
        assert_eq!(parse("<wait10s>").unwrap(), [KeyAction::Wait(Duration::from_secs(10))]);
        assert_eq!(parse("<waitabc>"), Err(KeyError::BadWait("waitabc".into())));
        assert_eq!(parse("é"), Err(KeyError::Untypable('é')));
        assert_eq!(parse("<<enter>").unwrap(), [ch('<'), KeyAction::Press(Key::Named(NamedKey::Enter))]);
    }

    #[test]
    fn many_open_angle_brackets_take_linear_time() {
        // Found by tests/fuzz.rs: every `<` searched the rest of the line for a
        // `>` and lowercased what lay between, so 45 KB took seconds (and
        // this line would take many minutes).
        let line = format!("{}>", "<".repeat(200_000));
        assert_eq!(parse(&line).unwrap().len(), 200_001);
    }

    #[test]
    fn lt_and_gt_type_angle_brackets_even_around_key_names() {
        assert_eq!(parse("<LT><gt>").unwrap(), [ch('<'), ch('>')]);
        // `<enter>` typed as text, not the Enter key.
        let typed = parse("<lt>enter<gt>").unwrap();
        assert_eq!(typed, "<enter>".chars().map(ch).collect::<Vec<_>>());
    }
}
