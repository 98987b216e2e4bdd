//! Where the API URL and the token come from. Each is taken separately from the first of: its
//! flag (`--url`, `--token`), the environment (`TENANT_API_URL`, `TENANT_API_TOKEN`), the config
//! file — `--config`, else `$TENANTCTL_CONFIG`, else `$XDG_CONFIG_HOME/tenantctl/config.toml`
//! (`~/.config/tenantctl/config.toml`):
//!
//! ```toml
//! url = "https://tenants.internal.example"
//! token = "eyJ…"
//! ```
//!
//! A missing URL or token is a usage error (exit 2). The token is a [`Token`]: its `Debug`
//! prints `[redacted]`, it has no `Display`, and no message here ever quotes it — a config
//! file's syntax error is reported by line and column, never with the offending line.

use crate::args::Global;
use crate::error::{Failure, Result};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Settings {
    /// Without a trailing slash.
    pub url: String,
    pub token: Token,
}

/// A bearer token that can't be printed by accident.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    url: Option<String>,
    token: Option<String>,
}

/// Resolves the settings from the flags, `env` (the process environment in the program) and
/// the config file.
pub fn resolve(global: &Global, env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (path, named) = match (&global.config, env("TENANTCTL_CONFIG")) {
        (Some(path), _) => (Some(path.clone()), true),
        (None, Some(path)) => (Some(PathBuf::from(path)), true),
        (None, None) => (default_path(&env), false),
    };
    let file = match &path {
        Some(path) => read_file(path, named)?,
        None => FileConfig::default(),
    };
    let from_file = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    let url =
        global.url.clone().or_else(|| env("TENANT_API_URL")).or_else(|| from_file(file.url)).ok_or_else(|| {
            Failure::Usage("no API URL: set TENANT_API_URL, pass --url, or put `url` in the config file".into())
        })?;
    let token = global.token.clone().or_else(|| env("TENANT_API_TOKEN")).or_else(|| from_file(file.token)).ok_or_else(
        || Failure::Usage("no token: set TENANT_API_TOKEN, pass --token, or put `token` in the config file".into()),
    )?;
    Ok(Settings { url: check_url(&url)?, token: Token(token.trim().to_owned()) })
}

fn default_path(env: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base =
        env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("tenantctl").join("config.toml"))
}

/// The file's settings; a file named explicitly must exist, the default one may not.
fn read_file(path: &Path, named: bool) -> Result<FileConfig> {
    let shown = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !named => return Ok(FileConfig::default()),
        Err(err) => return Err(Failure::Usage(format!("cannot read the config file {shown}: {err}"))),
    };
    let config: FileConfig = toml::from_str(&text).map_err(|err| {
        // The message only, with the position: toml's full report quotes the line, which may
        // hold the token.
        let at = err.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        });
        Failure::Usage(format!("config file {shown}{}: {}", at.unwrap_or_default(), err.message()))
    })?;
    if config.token.is_some() {
        warn_if_readable(path);
    }
    Ok(config)
}

#[cfg(unix)]
fn warn_if_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!("tenantctl: warning: {} holds a token and is readable by others; chmod 600 it", path.display());
    }
}

#[cfg(not(unix))]
fn warn_if_readable(_path: &Path) {}

fn check_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let bad = || Failure::Usage("the API URL must be an http:// or https:// URL, e.g. http://localhost:3004".into());
    let url = reqwest::Url::parse(trimmed).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn global(url: Option<&str>, token: Option<&str>, config: Option<PathBuf>) -> Global {
        Global {
            url: url.map(Into::into),
            token: token.map(Into::into),
            config,
            json: false,
            compact: false,
            request_timeout: 30,
        }
    }

    fn file(body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tenantctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{}.toml", body.len()));
        std::fs::write(&path, body).expect("write");
        path
    }

    #[test]
    fn flags_override_env_override_file() {
        let path = file("url = \"http://file:1\"\ntoken = \"file-token\"\n");
        let env: HashMap<&str, String> = HashMap::from([("TENANT_API_URL", "http://env:2/".to_owned())]);
        let lookup = |k: &str| env.get(k).cloned();
        let s = resolve(&global(None, None, Some(path.clone())), lookup).expect("settings");
        assert_eq!((s.url.as_str(), s.token.expose()), ("http://env:2", "file-token"));
        let s = resolve(&global(Some("http://flag:3"), Some("flag-token"), Some(path)), lookup).expect("settings");
        assert_eq!((s.url.as_str(), s.token.expose()), ("http://flag:3", "flag-token"));
    }

    #[test]
    fn missing_values_and_bad_files_are_usage_errors_that_never_quote_the_token() {
        let none = |_: &str| None;
        let err = resolve(&global(Some("http://x"), None, None), none).expect_err("no token");
        assert!(matches!(err, Failure::Usage(ref m) if m.contains("TENANT_API_TOKEN")), "{err}");
        let err = resolve(&global(Some("ftp://x"), Some("t"), None), none).expect_err("bad url");
        assert_eq!(err.exit_code(), 2);
        let path = file("url = \"http://x\"\ntoken = s3cr3t-unquoted\n");
        let err = resolve(&global(None, None, Some(path)), none).expect_err("bad toml");
        let text = err.to_string();
        assert!(text.contains("line 2") && !text.contains("s3cr3t"), "{text}");
        let err = resolve(&global(None, None, Some(PathBuf::from("/nonexistent/c.toml"))), none).expect_err("missing");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(format!("{:?}", Token("s3cr3t".into())), "[redacted]");
    }
}
