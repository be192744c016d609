//! `boot_command`: Packer-compatible key syntax turned into QMP `send-key`
//! presses (QKeyCode names, US keyboard layout).
//!
//! Literal text is typed as written; `<enter>`, `<f1>`, `<leftCtrlOn>` …
//! name special keys; `<wait>`, `<wait5>`, `<wait10s>`, `<wait500ms>`,
//! `<wait1m>` pause. A `<` that starts no known name is typed as `<`;
//! `<lt>` and `<gt>` always type `<` and `>`, so text that looks like a key
//! name (`<lt>enter<gt>` types `<enter>`) is never read as one.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keys pressed together (modifiers first).
    Press(Vec<&'static str>),
    /// A modifier held for the following presses (`<leftShiftOn>`).
    Hold(&'static str),
    Release(&'static str),
    Wait(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("character {0:?} cannot be typed (only printable US-ASCII, tab and newline)")]
    Untypable(char),
    #[error("invalid wait `<{0}>`: use `<wait>`, `<wait5>`, `<wait10s>`, `<wait500ms>` or `<wait1m>`")]
    BadWait(String),
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

fn special_key(name: &str) -> Option<&'static str> {
    const FUNCTION: [&str; 12] = ["f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "f10", "f11", "f12"];
    let lower = name.to_ascii_lowercase();
    if let Some(n) = lower.strip_prefix('f').and_then(|n| n.parse::<usize>().ok()) {
        return FUNCTION.get(n.wrapping_sub(1)).copied();
    }
    Some(match lower.as_str() {
        "bs" => "backspace",
        "del" => "delete",
        "enter" | "return" => "ret",
        "esc" => "esc",
        "tab" => "tab",
        "spacebar" => "spc",
        "up" => "up",
        "down" => "down",
        "left" => "left",
        "right" => "right",
        "insert" => "insert",
        "home" => "home",
        "end" => "end",
        "pageup" => "pgup",
        "pagedown" => "pgdn",
        _ => modifier(&lower)?,
    })
}

fn modifier(lower: &str) -> Option<&'static str> {
    Some(match lower {
        "leftalt" => "alt",
        "rightalt" => "alt_r",
        "leftctrl" => "ctrl",
        "rightctrl" => "ctrl_r",
        "leftshift" => "shift",
        "rightshift" => "shift_r",
        "leftsuper" => "meta_l",
        "rightsuper" => "meta_r",
        _ => return None,
    })
}

fn wait(name: &str) -> Option<Result<Duration, KeyError>> {
    let rest = name.to_ascii_lowercase().strip_prefix("wait")?.to_string();
    if rest.is_empty() {
        return Some(Ok(Duration::from_secs(1)));
    }
    let with_unit = if rest.chars().all(|c| c.is_ascii_digit()) { format!("{rest}s") } else { rest };
    Some(with_unit.parse::<crate::template::units::Dur>().map(|d| d.0).map_err(|_| KeyError::BadWait(name.to_string())))
}

/// The press that types a printable character, with Shift if it needs it.
fn press_char(c: char) -> Result<Action, KeyError> {
    let (key, shift) = char_key(c).ok_or(KeyError::Untypable(c))?;
    Ok(Action::Press(if shift { vec!["shift", key] } else { vec![key] }))
}

/// One `<...>` token: a key, a held/released modifier or a wait.
fn token(name: &str) -> Option<Result<Action, KeyError>> {
    if let Some(w) = wait(name) {
        return Some(w.map(Action::Wait));
    }
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "lt" => return Some(press_char('<')),
        "gt" => return Some(press_char('>')),
        _ => {}
    }
    if let Some(m) = lower.strip_suffix("on").and_then(modifier) {
        return Some(Ok(Action::Hold(m)));
    }
    if let Some(m) = lower.strip_suffix("off").and_then(modifier) {
        return Some(Ok(Action::Release(m)));
    }
    special_key(name).map(|k| Ok(Action::Press(vec![k])))
}

/// Parses one `boot_command` entry.
pub fn parse(line: &str) -> Result<Vec<Action>, KeyError> {
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

    #[test]
    fn every_printable_ascii_character_has_a_key() {
        for b in 0x20u8..=0x7e {
            assert!(char_key(b as char).is_some(), "{:?}", b as char);
        }
        let keys: std::collections::HashSet<_> = (0x20u8..=0x7e).map(|b| char_key(b as char).unwrap()).collect();
        assert_eq!(keys.len(), 0x7e - 0x20 + 1, "two characters share a key and shift state");
    }

    #[test]
    fn parses_packer_syntax() {
        let actions = parse("aB<enter><wait5><leftCtrlOn>c<leftCtrlOff><f12><wait500ms>").unwrap();
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
            ]
        );
    }

    #[test]
    fn unknown_angle_brackets_are_literal() {
        assert_eq!(
            parse("<x>").unwrap(),
            [Action::Press(vec!["shift", "comma"]), Action::Press(vec!["x"]), Action::Press(vec!["shift", "dot"])]
        );
        assert_eq!(parse("<wait10s>").unwrap(), [Action::Wait(Duration::from_secs(10))]);
        assert!(matches!(parse("é"), Err(KeyError::Untypable('é'))));
        assert_eq!(parse("<<enter>").unwrap(), [Action::Press(vec!["shift", "comma"]), Action::Press(vec!["ret"])]);
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
        let lt = Action::Press(vec!["shift", "comma"]);
        let gt = Action::Press(vec!["shift", "dot"]);
        let e = Action::Press(vec!["e"]);
        assert_eq!(parse("<LT><gt>").unwrap(), [lt.clone(), gt.clone()]);
        // `<enter>` typed as text, not the Enter key.
        let typed = parse("<lt>enter<gt>").unwrap();
        assert_eq!(typed.len(), 7);
        assert_eq!((&typed[0], &typed[1], &typed[6]), (&lt, &e, &gt));
        assert!(!typed.contains(&Action::Press(vec!["ret"])));
    }
}
