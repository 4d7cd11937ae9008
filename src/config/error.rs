//! The one error of the config: the file, the key at fault and what is wrong, each
//! said once.
//!
//! Every section's `validate` returns an [`Invalid`] (a full dotted key and the problem,
//! without the key in it); the loader adds the file, giving a [`ConfigError`]. Errors of
//! the policies' and contention models' own `validate` (strings that start with the key
//! relative to their table, `contention: max_slowdown must be ...`) and of the engines'
//! settings (`SettingsError`, a key relative to the unit) are converted here, as are the
//! `config` crate's parse errors (whose key and file are taken out of the text, so that
//! neither appears twice).

use std::path::Path;

use thiserror::Error;

/// A config that cannot be used: `config/x.toml: units[0] (cuda).streams: must be
/// between 1 and 64, got 0`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The key at fault (`units[2] (dla0).streams`, `scheduler.policy.latency_margin`,
    /// `pipeline.gpu`); `(file)`, `(syntax)` or `(structure)` when the fault is not
    /// one key's.
    pub key: String,
    /// What is wrong, without the key.
    pub problem: String,
}

/// A bad value at a key, before the file is known: what each section's `validate`
/// returns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    /// The full dotted key (`server.http_workers`).
    pub key: String,
    /// What is wrong, without the key.
    pub problem: String,
}

impl Invalid {
    /// The value at `key` is wrong: `problem`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// A message of a validator that names keys relative to the table at `key`
    /// (`contention: max_slowdown must be at least 1`): its leading `name: ` segments
    /// join the key, the rest is the problem.
    pub fn under(key: &str, message: &str) -> Self {
        let mut key = key.to_string();
        let mut rest = message;
        while let Some((head, tail)) = rest.split_once(": ") {
            let key_like = !head.is_empty()
                && head
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c));
            if !key_like {
                break;
            }
            if !head.starts_with('[') {
                key.push('.');
            }
            key.push_str(head);
            rest = tail;
        }
        Self::new(key, rest)
    }

    /// The error in `file`.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError {
            file: file.display().to_string(),
            key: self.key,
            problem: self.problem,
        }
    }
}

/// The key and the problem of a parse error of the `config` crate, without the key,
/// the file and the quoted source lines it puts into its text. A bad value under
/// `[admin]` may be the token itself: it is never echoed.
pub(super) fn parse_error(error: &config::ConfigError) -> Invalid {
    let (key, problem) = split(error);
    let key = key.unwrap_or_else(|| "(structure)".to_string());
    if key.starts_with("admin") {
        return Invalid::new(key, "invalid value (not shown: it may be a secret)");
    }
    Invalid::new(key, problem)
}

fn split(error: &config::ConfigError) -> (Option<String>, String) {
    match error {
        config::ConfigError::FileParse { cause, .. } => (
            Some("(syntax)".to_string()),
            without_source_lines(&cause.to_string()),
        ),
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key.as_deref().map(dotted),
            format!("invalid type: {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => {
            let (inner, problem) = split(error);
            (key.as_deref().map(dotted).or(inner), problem)
        }
        config::ConfigError::Message(message) => {
            // serde's missing field, as the config crate words it, names the full key.
            let missing = message
                .strip_prefix("missing configuration field \"")
                .and_then(|rest| rest.strip_suffix('"'));
            match missing {
                Some(key) => (Some(dotted(key)), "missing: this key is required".into()),
                None => (None, without_source_lines(message)),
            }
        }
        other => (None, without_source_lines(&other.to_string())),
    }
}

/// A parse error without the lines of the file it quotes (the TOML parser shows the
/// offending line with a caret under it): the line may hold a secret such as the admin
/// token, and the error goes to the log and to `mica check`'s output. The line and
/// column numbers and the parser's explanation stay.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let rest = line
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|')
        })
        .map(str::trim_end)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// `units[0]engine` (as the config crate spells a key inside an array) as
/// `units[0].engine`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '.' && c != '[' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_keys_join_the_key() {
        let e = Invalid::under(
            "scheduler.policy",
            "contention: max_slowdown must be at least 1, got 0.5",
        );
        assert_eq!(e.key, "scheduler.policy.contention");
        assert_eq!(e.problem, "max_slowdown must be at least 1, got 0.5");
        let e = Invalid::under("platform.contention", "measured[0]: needs units");
        assert_eq!(e.key, "platform.contention.measured[0]");
        let e = Invalid::under("x", "base: a b: c");
        assert_eq!((e.key.as_str(), e.problem.as_str()), ("x.base", "a b: c"));
    }

    #[test]
    fn array_keys_are_dotted() {
        assert_eq!(dotted("units[0]engine"), "units[0].engine");
        assert_eq!(dotted("a.b[1][2]c"), "a.b[1][2].c");
    }
}
