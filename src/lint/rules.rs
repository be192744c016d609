//! The rule table: every rule's stable id, severity, title and fix. The
//! checks themselves live in [`super::checks`]; each rule has a page
//! `docs/lint/IBnnn.md`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// Stable identifier, `IB` and three digits; never reused.
    pub id: &'static str,
    pub severity: Severity,
    /// One line: what is wrong.
    pub title: &'static str,
    /// One line: how to fix it.
    pub fix: &'static str,
}

impl Rule {
    /// The rule's page, relative to the repository root.
    pub fn doc_path(&self) -> String {
        format!("docs/lint/{}.md", self.id)
    }
}

pub const IB001: &Rule = &Rule {
    id: "IB001",
    severity: Severity::Error,
    title: "the source is not verified: `checksum` is `none`",
    fix: "set `checksum` to `sha256:<digest>` or `file:<URL of the SHA256SUMS list published with the image>`",
};

pub const IB002: &Rule = &Rule {
    id: "IB002",
    severity: Severity::Error,
    title: "a file or directory the template refers to does not exist",
    fix: "correct the path (relative paths are taken from the template's directory) or add the file",
};

pub const IB003: &Rule = &Rule {
    id: "IB003",
    severity: Severity::Warning,
    title: "a moving source URL (`latest`, `current`, `daily`) is pinned to a fixed digest or not verified",
    fix: "use `checksum: file:<checksum list next to the image>`, or a versioned URL with its digest",
};

pub const IB004: &Rule = &Rule {
    id: "IB004",
    severity: Severity::Error,
    title: "a secret is written in the template",
    fix: "declare a variable with `\"sensitive\": true` and no default, use `{{ var.NAME }}`, and rotate the leaked secret",
};

pub const IB005: &Rule = &Rule {
    id: "IB005",
    severity: Severity::Error,
    title: "a `shell` step reboots the machine without `expect_disconnect: true`",
    fix: "add `\"expect_disconnect\": true` to the step, so the lost connection is expected",
};

pub const IB006: &Rule = &Rule {
    id: "IB006",
    severity: Severity::Warning,
    title: "the template has no `verify` checks",
    fix: "add `verify` checks (services, ports, files, commands) so a broken image is never published",
};

pub const IB007: &Rule = &Rule {
    id: "IB007",
    severity: Severity::Error,
    title: "this version is already published in the store",
    fix: "raise `version`, use `\"version\": \"auto\"`, or build with `--set-version`",
};

pub const IB008: &Rule = &Rule {
    id: "IB008",
    severity: Severity::Warning,
    title: "the `qemu` builder has no `shutdown_command`",
    fix: "add `\"shutdown_command\": \"shutdown -P now\"` (with `sudo` for a non-root user)",
};

pub const IB009: &Rule = &Rule {
    id: "IB009",
    severity: Severity::Warning,
    title: "a download is piped straight into a shell",
    fix: "download to a file, check its digest (`sha256sum -c`), then run it",
};

pub const IB010: &Rule = &Rule {
    id: "IB010",
    severity: Severity::Note,
    title: "the template has no `description`",
    fix: "add a one-line `description` of the image",
};

pub const IB011: &Rule = &Rule {
    id: "IB011",
    severity: Severity::Warning,
    title: "a sensitive variable has a `default`",
    fix: "remove the `default` and mark it `required`; pass the value with `--var`, a var-file or IMGBUILD_VAR_<name>",
};

pub const IB012: &Rule = &Rule {
    id: "IB012",
    severity: Severity::Warning,
    title: "`accelerator: kvm` fails on hosts without KVM",
    fix: "use `\"accelerator\": \"auto\"` (KVM when available, TCG otherwise)",
};

pub const IB013: &Rule = &Rule {
    id: "IB013",
    severity: Severity::Warning,
    title: "the checksum list is fetched over plain HTTP",
    fix: "use an `https://` URL for the checksum list",
};

pub const IB014: &Rule = &Rule {
    id: "IB014",
    severity: Severity::Note,
    title: "a variable is declared but never used",
    fix: "remove the variable, or use it as `{{ var.NAME }}`",
};

pub const IB015: &Rule = &Rule {
    id: "IB015",
    severity: Severity::Warning,
    title: "`verify` checks never run with the `null` builder",
    fix: "remove `verify`, or build with the `qemu` builder",
};

/// Every rule, in id order.
pub const RULES: &[&Rule] =
    &[IB001, IB002, IB003, IB004, IB005, IB006, IB007, IB008, IB009, IB010, IB011, IB012, IB013, IB014, IB015];

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().copied().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sorted_unique_and_well_formed() {
        for pair in RULES.windows(2) {
            assert!(pair[0].id < pair[1].id, "{} before {}", pair[0].id, pair[1].id);
        }
        for r in RULES {
            assert!(r.id.len() == 5 && r.id.starts_with("IB") && r.id[2..].chars().all(|c| c.is_ascii_digit()));
            assert!(!r.title.contains('\n') && !r.fix.contains('\n'));
            assert_eq!(rule(r.id), Some(*r));
        }
    }

    #[test]
    fn every_rule_has_a_page() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for r in RULES {
            let page =
                std::fs::read_to_string(root.join(r.doc_path())).unwrap_or_else(|e| panic!("{}: {e}", r.doc_path()));
            assert!(page.starts_with(&format!("# {}", r.id)), "{} must start with its id", r.doc_path());
        }
    }
}
