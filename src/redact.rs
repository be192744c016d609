//! Keeps secrets out of every output: logs, errors, events, `inspect` and
//! manifests all pass through [`scrub`].
//!
//! A process-wide registry is deliberate: a secret must be hidden wherever
//! it ends up, including error messages built deep inside a library call.

use std::sync::RwLock;

pub const MASK: &str = "<sensitive>";

/// Shorter values would mask ordinary text everywhere; they are refused by
/// template validation instead (see `template::vars`).
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret and the forms it takes when quoted for a shell or JSON.
pub fn register(secret: &str) {
    if secret.chars().count() < MIN_LEN {
        return;
    }
    let mut forms = vec![secret.to_string(), secret.replace('\'', "'\\''")];
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Replaces every registered secret in `text` by [`MASK`].
pub fn scrub(text: &str) -> String {
    let Ok(secrets) = SECRETS.read() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// True when any secret is registered (lets hot paths skip the scan).
pub fn any() -> bool {
    SECRETS.read().map(|s| !s.is_empty()).unwrap_or(false)
}

/// Scrubs every string inside a JSON value.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => *s = scrub(s),
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => map.values_mut().for_each(scrub_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secret_inside_longer_text_and_quoted_forms() {
        register("hunter2'x");
        assert_eq!(scrub("echo 'hunter2'\\''x' done"), "echo '<sensitive>' done");
        assert_eq!(scrub("pw=hunter2'x;"), "pw=<sensitive>;");
    }

    #[test]
    fn ignores_too_short_values() {
        register("ab");
        assert_eq!(scrub("abc"), "abc");
    }
}
