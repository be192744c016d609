//! `boot_command` keys as QMP `send-key` presses (QKeyCode names, US
//! keyboard layout). The key syntax itself is the template's
//! ([`crate::template::keys`]); this maps parsed keys to QEMU's codes.

use std::time::Duration;

pub use crate::template::keys::KeyError;
use crate::template::keys::{self, Key, KeyAction, Modifier, NamedKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keys pressed together (modifiers first).
    Press(Vec<&'static str>),
    /// A modifier held for the following presses (`<leftShiftOn>`).
    Hold(&'static str),
    Release(&'static str),
    Wait(Duration),
}

/// The QKeyCode and whether Shift is needed for a printable character.
pub fn char_key(c: char) -> Option<(&'static str, bool)> {
    const LETTERS: [&str; 26] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r", "s", "t", "u", "v",
        "w", "x", "y", "z",
    ];
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    // Shifted digits on a US keyboard, in the order of their digit keys 0..9.
    const SHIFTED_DIGITS: &str = ")!@#$%^&*(";
    if c.is_ascii_lowercase() {
        return Some((LETTERS[(c as u8 - b'a') as usize], false));
    }
    if c.is_ascii_uppercase() {
        return Some((LETTERS[(c as u8 - b'A') as usize], true));
    }
    if c.is_ascii_digit() {
        return Some((DIGITS[(c as u8 - b'0') as usize], false));
    }
    if let Some(i) = SHIFTED_DIGITS.find(c) {
        return Some((DIGITS[i], true));
    }
    let key = match c {
        ' ' => ("spc", false),
        '\n' => ("ret", false),
        '\t' => ("tab", false),
        '-' => ("minus", false),
        '_' => ("minus", true),
        '=' => ("equal", false),
        '+' => ("equal", true),
        '[' => ("bracket_left", false),
        '{' => ("bracket_left", true),
        ']' => ("bracket_right", false),
        '}' => ("bracket_right", true),
        '\\' => ("backslash", false),
        '|' => ("backslash", true),
        ';' => ("semicolon", false),
        ':' => ("semicolon", true),
        '\'' => ("apostrophe", false),
        '"' => ("apostrophe", true),
        '`' => ("grave_accent", false),
        '~' => ("grave_accent", true),
        ',' => ("comma", false),
        '<' => ("comma", true),
        '.' => ("dot", false),
        '>' => ("dot", true),
        '/' => ("slash", false),
        '?' => ("slash", true),
        _ => return None,
    };
    Some(key)
}

/// The QKeyCode of a named key.
fn named_qcode(key: NamedKey) -> &'static str {
    const FUNCTION: [&str; 12] = ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12"];
    match key {
        NamedKey::Backspace => "backspace",
        NamedKey::Delete => "delete",
        NamedKey::Enter => "ret",
        NamedKey::Esc => "esc",
        NamedKey::Tab => "tab",
        NamedKey::Space => "spc",
        NamedKey::Up => "up",
        NamedKey::Down => "down",
        NamedKey::Left => "left",
        NamedKey::Right => "right",
        NamedKey::Insert => "insert",
        NamedKey::Home => "home",
        NamedKey::End => "end",
        NamedKey::PageUp => "pgup",
        NamedKey::PageDown => "pgdn",
        NamedKey::Function(f) => FUNCTION[usize::from(f.number()) - 1],
        NamedKey::Modifier(m) => modifier_qcode(m),
    }
}

fn modifier_qcode(m: Modifier) -> &'static str {
    match m {
        Modifier::LeftAlt => "alt",
        Modifier::RightAlt => "alt_r",
        Modifier::LeftCtrl => "ctrl",
        Modifier::RightCtrl => "ctrl_r",
        Modifier::LeftShift => "shift",
        Modifier::RightShift => "shift_r",
        Modifier::LeftSuper => "meta_l",
        Modifier::RightSuper => "meta_r",
    }
}

/// The QMP presses for one parsed key action.
fn qemu_action(action: KeyAction) -> Result<Action, KeyError> {
    Ok(match action {
        KeyAction::Press(Key::Char(c)) => {
            let (key, shift) = char_key(c).ok_or(KeyError::Untypable(c))?;
            Action::Press(if shift { vec!["shift", key] } else { vec![key] })
        }
        KeyAction::Press(Key::Named(k)) => Action::Press(vec![named_qcode(k)]),
        KeyAction::Hold(m) => Action::Hold(modifier_qcode(m)),
        KeyAction::Release(m) => Action::Release(modifier_qcode(m)),
        KeyAction::Wait(d) => Action::Wait(d),
    })
}

/// Parses one `boot_command` entry (syntax: [`crate::template::keys`]) into QMP key presses.
pub fn parse(line: &str) -> Result<Vec<Action>, KeyError> {
    keys::parse(line)?.into_iter().map(qemu_action).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_typable_character_has_a_key() {
        let typable: Vec<char> = (0u8..=0x7f).map(char::from).filter(|c| keys::typable(*c)).collect();
        assert_eq!(typable.len(), 0x7e - 0x20 + 1 + 2, "printable ASCII, tab and newline");
        for c in &typable {
            assert!(char_key(*c).is_some(), "{c:?}");
        }
        let printable: std::collections::HashSet<_> = (0x20u8..=0x7e).map(|b| char_key(b as char).unwrap()).collect();
        assert_eq!(printable.len(), 0x7e - 0x20 + 1, "two characters share a key and shift state");
    }

    #[test]
    fn maps_parsed_keys_to_qcodes() {
        let actions = parse("aB<enter><wait5><leftCtrlOn>c<leftCtrlOff><f12><wait500ms><rightSuper><lt>").unwrap();
        assert_eq!(
            actions,
            [
                Action::Press(vec!["a"]),
                Action::Press(vec!["shift", "b"]),
                Action::Press(vec!["ret"]),
                Action::Wait(Duration::from_secs(5)),
                Action::Hold("ctrl"),
                Action::Press(vec!["c"]),
                Action::Release("ctrl"),
                Action::Press(vec!["f12"]),
                Action::Wait(Duration::from_millis(500)),
                Action::Press(vec!["meta_r"]),
                Action::Press(vec!["shift", "comma"]),
            ]
        );
        assert_eq!(parse("<f1>").unwrap(), [Action::Press(vec!["f1"])]);
        assert!(matches!(parse("é"), Err(KeyError::Untypable('é'))));
    }
}
