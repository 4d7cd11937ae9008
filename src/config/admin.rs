//! `[admin]`: the admin endpoint's bearer token (`token` or `token_file`); the
//! endpoint itself is `crate::admin`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::Invalid;

/// `[admin]`: the admin endpoint, off unless a token is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the admin endpoint requires (prefer `token_file`).
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// File holding the token on its first line (relative to the config file), e.g.
    /// `/etc/mica/admin.token` readable only by mica.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin endpoint's bearer token; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminConfig {
    /// The configured token (`None`: admin off), a `token_file` read relative to
    /// `config_file`'s folder. The error names the key at fault, never the token.
    pub fn resolve_token(&self, config_file: &Path) -> Result<Option<AdminToken>, Invalid> {
        let (key, token) = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "admin",
                    "give either token or token_file, not both",
                ))
            }
            (Some(token), None) => ("admin.token", token.trim().to_string()),
            (None, Some(file)) => {
                let file = if file.is_absolute() {
                    file.clone()
                } else {
                    config_file.parent().unwrap_or(Path::new(".")).join(file)
                };
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    Invalid::new("admin.token_file", format!("{}: {e}", file.display()))
                })?;
                (
                    "admin.token_file",
                    text.lines().next().unwrap_or("").trim().to_string(),
                )
            }
            (None, None) => return Ok(None),
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(Invalid::new(
                key,
                format!(
                    "the token must be at least {MIN_TOKEN_LEN} characters, got {}",
                    token.len()
                ),
            ));
        }
        Ok(Some(AdminToken(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rules() {
        let file = Path::new("/nonexistent/mica.toml");
        assert_eq!(AdminConfig::default().resolve_token(file).unwrap(), None);
        let short = AdminConfig {
            token: Some("abc".into()),
            token_file: None,
        };
        let error = short.resolve_token(file).unwrap_err();
        assert_eq!(error.key, "admin.token");
        assert!(error.problem.contains("at least"), "{error}");
        let both = AdminConfig {
            token: Some("a".repeat(20)),
            token_file: Some("t".into()),
        };
        assert!(both.resolve_token(file).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "0123456789abcdef0123\n").unwrap();
        let from_file = AdminConfig {
            token: None,
            token_file: Some("admin.token".into()),
        };
        let token = from_file
            .resolve_token(&dir.path().join("mica.toml"))
            .unwrap()
            .unwrap();
        assert_eq!(token.secret(), "0123456789abcdef0123");
        assert!(!format!("{token:?}").contains("0123"));
        let missing = AdminConfig {
            token: None,
            token_file: Some("absent.token".into()),
        };
        let error = missing
            .resolve_token(&dir.path().join("mica.toml"))
            .unwrap_err();
        assert_eq!(error.key, "admin.token_file");
    }
}
