//! Field validation shared by handlers ("parse, don't validate": each returns the cleaned value
//! or a 400 naming the field).

use super::error::{ApiError, Result};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub fn name(raw: &str) -> Result<String> {
    let name = raw.trim();
    match name.chars().count() {
        0 => Err(ApiError::field("name", "must not be empty")),
        n if n > 100 => Err(ApiError::field("name", "at most 100 characters")),
        _ => Ok(name.to_owned()),
    }
}

/// A DNS name: labels of letters, digits and inner hyphens, at least two labels.
pub fn domain(raw: &str) -> Result<String> {
    let domain = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = domain.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if domain.len() > 253 || !labels_ok || !domain.contains('.') {
        return Err(ApiError::field("domain", "must be a DNS name such as acme.example.com"));
    }
    Ok(domain)
}

pub fn settings(value: Value) -> Result<Value> {
    if !value.is_object() {
        return Err(ApiError::field("settings", "must be a JSON object"));
    }
    if value.to_string().len() > 64 * 1024 {
        return Err(ApiError::field("settings", "at most 64 KiB"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(domain(" Acme.Example.com. ").ok().as_deref(), Some("acme.example.com"));
        assert!(domain("localhost").is_err());
        assert!(domain("-bad.example.com").is_err());
        assert!(domain("a..b").is_err());
        assert!(domain("exa mple.com").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name("  Acme ").ok().as_deref(), Some("Acme"));
        assert!(name("   ").is_err());
        assert!(name(&"x".repeat(101)).is_err());
    }
}
