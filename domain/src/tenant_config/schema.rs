//! The schema of the writable `tenant` configuration layer: its categories, every key with its
//! type, range and default, and which values are secrets. A change is validated here leaf by
//! leaf, and a bad one is refused naming its path (`security.sessionTimeoutMinutes`).

use serde_json::{Map, Value, json};

pub const CATEGORIES: [&str; 4] = ["branding", "notifications", "security", "integrations"];

/// What a leaf may hold.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// `#rgb` or `#rrggbb`.
    Color,
    /// An `https://` (or `http://`) URL, or empty.
    Url,
    /// An email address, or empty.
    Email,
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Text {
        max: usize,
    },
    /// CIDR blocks such as `10.0.0.0/8` or `2001:db8::/32`, at most `max`.
    CidrList {
        max: usize,
    },
}

pub struct Leaf {
    pub key: &'static str,
    pub kind: Kind,
    pub default: fn() -> Value,
}

/// The fixed leaves of each category (integrations are open-ended, see [`integration_field`]).
pub fn leaves(category: &str) -> &'static [Leaf] {
    match category {
        "branding" => &[
            Leaf { key: "primaryColor", kind: Kind::Color, default: || json!("#1f6feb") },
            Leaf { key: "secondaryColor", kind: Kind::Color, default: || json!("#0d1117") },
            Leaf { key: "logoUrl", kind: Kind::Url, default: || json!("") },
            Leaf { key: "faviconUrl", kind: Kind::Url, default: || json!("") },
            Leaf { key: "companyName", kind: Kind::Text { max: 100 }, default: || json!("") },
        ],
        "notifications" => &[
            Leaf { key: "emailEnabled", kind: Kind::Bool, default: || json!(true) },
            Leaf { key: "quotaAlerts", kind: Kind::Bool, default: || json!(true) },
            Leaf { key: "weeklyReport", kind: Kind::Bool, default: || json!(false) },
            Leaf { key: "alertEmail", kind: Kind::Email, default: || json!("") },
        ],
        "security" => &[
            Leaf { key: "sessionTimeoutMinutes", kind: Kind::Int { min: 5, max: 1440 }, default: || json!(60) },
            Leaf { key: "mfaRequired", kind: Kind::Bool, default: || json!(false) },
            Leaf { key: "passwordMinLength", kind: Kind::Int { min: 8, max: 128 }, default: || json!(12) },
            Leaf { key: "allowedIpRanges", kind: Kind::CidrList { max: 50 }, default: || json!([]) },
            Leaf { key: "ssoClientSecret", kind: Kind::Text { max: 500 }, default: || json!("") },
        ],
        _ => &[],
    }
}

/// Fields an integration (`integrations.<name>.<field>`) may have.
pub fn integration_field(field: &str) -> Option<Kind> {
    Some(match field {
        "enabled" => Kind::Bool,
        "webhookUrl" | "endpoint" => Kind::Url,
        "apiKey" | "token" | "secret" | "clientSecret" | "password" => Kind::Text { max: 500 },
        "clientId" | "username" | "accountId" => Kind::Text { max: 200 },
        _ => return None,
    })
}

pub const MAX_INTEGRATIONS: usize = 20;

/// Whether the value at `category`/`key` is a secret: in `integrations` and `security`, keys
/// ending in `apiKey` or containing `secret`, `password` or `token` (any case).
pub fn is_secret(category: &str, key: &str) -> bool {
    if !matches!(category, "integrations" | "security") {
        return false;
    }
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    last.ends_with("apikey") || last.contains("secret") || last.contains("password") || last.contains("token")
}

/// A validation failure, with the offending path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

fn invalid(path: &str, reason: impl Into<String>) -> Invalid {
    Invalid { path: path.to_owned(), reason: reason.into() }
}

/// One leaf to set (`Some`) or reset to its default (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub category: &'static str,
    pub key: String,
    pub value: Option<Value>,
}

/// An integration removed as a whole (`integrations.<name>: null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    pub integration: String,
}

/// Validates a `PUT …/config` body (a partial tenant layer) into leaf changes.
pub fn parse_changes(body: &Value) -> Result<(Vec<Change>, Vec<Removal>), Invalid> {
    let Some(categories) = body.as_object() else { return Err(invalid("", "expected an object of categories")) };
    if categories.is_empty() {
        return Err(invalid("", "nothing to change"));
    }
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    for (category, content) in categories {
        if matches!(category.as_str(), "system" | "plan") {
            return Err(invalid(category, "read-only layer"));
        }
        let Some(category) = CATEGORIES.iter().copied().find(|c| c == category) else {
            return Err(invalid(category, "unknown category"));
        };
        let Some(map) = content.as_object() else { return Err(invalid(category, "expected an object")) };
        if category == "integrations" {
            parse_integrations(map, &mut changes, &mut removals)?;
            continue;
        }
        for (key, value) in map {
            let path = format!("{category}.{key}");
            let Some(leaf) = leaves(category).iter().find(|l| l.key == key) else {
                return Err(invalid(&path, "unknown key"));
            };
            let value = if value.is_null() { None } else { Some(check(&path, leaf.kind, value)?) };
            changes.push(Change { category, key: key.clone(), value });
        }
    }
    Ok((changes, removals))
}

fn parse_integrations(
    map: &Map<String, Value>,
    changes: &mut Vec<Change>,
    removals: &mut Vec<Removal>,
) -> Result<(), Invalid> {
    if map.len() > MAX_INTEGRATIONS {
        return Err(invalid("integrations", format!("at most {MAX_INTEGRATIONS} integrations")));
    }
    for (name, fields) in map {
        let path = format!("integrations.{name}");
        let name_ok = name.len() <= 40
            && name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(invalid(
                &path,
                "integration names are 1-40 letters, digits, - or _, starting with a lowercase letter",
            ));
        }
        if fields.is_null() {
            removals.push(Removal { integration: name.clone() });
            continue;
        }
        let Some(fields) = fields.as_object() else { return Err(invalid(&path, "expected an object")) };
        for (field, value) in fields {
            let path = format!("{path}.{field}");
            let Some(kind) = integration_field(field) else { return Err(invalid(&path, "unknown key")) };
            let value = if value.is_null() { None } else { Some(check(&path, kind, value)?) };
            changes.push(Change { category: "integrations", key: format!("{name}.{field}"), value });
        }
    }
    Ok(())
}

/// Checks one value against its kind; returns it normalised.
pub fn check(path: &str, kind: Kind, value: &Value) -> Result<Value, Invalid> {
    match kind {
        Kind::Bool => value.as_bool().map(Value::Bool).ok_or_else(|| invalid(path, "expected true or false")),
        Kind::Int { min, max } => match value.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(json!(n)),
            Some(_) => Err(invalid(path, format!("must be from {min} to {max}"))),
            None => Err(invalid(path, "expected a whole number")),
        },
        Kind::Text { max } => match value.as_str() {
            Some(s) if s.chars().count() <= max => Ok(json!(s)),
            Some(_) => Err(invalid(path, format!("at most {max} characters"))),
            None => Err(invalid(path, "expected a string")),
        },
        Kind::Color => match value.as_str() {
            Some(s) if is_color(s) => Ok(json!(s.to_ascii_lowercase())),
            _ => Err(invalid(path, "expected a colour such as #1f6feb")),
        },
        Kind::Url => match value.as_str() {
            Some("") => Ok(json!("")),
            Some(s) if is_url(s) => Ok(json!(s)),
            _ => Err(invalid(path, "expected an http(s) URL")),
        },
        Kind::Email => match value.as_str() {
            Some("") => Ok(json!("")),
            Some(s) if is_email(s) => Ok(json!(s)),
            _ => Err(invalid(path, "expected an email address")),
        },
        Kind::CidrList { max } => {
            let Some(items) = value.as_array() else { return Err(invalid(path, "expected a list of CIDR blocks")) };
            if items.len() > max {
                return Err(invalid(path, format!("at most {max} entries")));
            }
            for (i, item) in items.iter().enumerate() {
                if !item.as_str().is_some_and(is_cidr) {
                    return Err(invalid(&format!("{path}[{i}]"), "expected a CIDR block such as 10.0.0.0/8"));
                }
            }
            Ok(value.clone())
        }
    }
}

fn is_color(s: &str) -> bool {
    let hex = s.strip_prefix('#').unwrap_or("");
    matches!(hex.len(), 3 | 6) && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_url(s: &str) -> bool {
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && s.len() <= 2048 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    })
}

fn is_email(s: &str) -> bool {
    s.len() <= 320
        && !s.chars().any(char::is_whitespace)
        && s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else { return false };
    let Ok(bits) = bits.parse::<u8>() else { return false };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

/// The data type recorded with a row.
pub fn data_type(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        _ => "string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_with_their_path() {
        let cases = [
            (json!({ "branding": { "primaryColor": "red" } }), "branding.primaryColor"),
            (json!({ "security": { "sessionTimeoutMinutes": -5 } }), "security.sessionTimeoutMinutes"),
            (json!({ "security": { "sessionTimeoutMinutes": "60" } }), "security.sessionTimeoutMinutes"),
            (json!({ "security": { "allowedIpRanges": ["10.0.0.0/8", "nope"] } }), "security.allowedIpRanges[1]"),
            (json!({ "branding": { "colour": "#fff" } }), "branding.colour"),
            (json!({ "integrations": { "slack": { "apiKey": 42 } } }), "integrations.slack.apiKey"),
            (json!({ "integrations": { "slack": { "webhookUrl": "ftp://x" } } }), "integrations.slack.webhookUrl"),
            (json!({ "integrations": { "Bad Name": { "enabled": true } } }), "integrations.Bad Name"),
            (json!({ "plan": { "maxUsers": 1 } }), "plan"),
            (json!({ "appearance": {} }), "appearance"),
        ];
        for (body, path) in cases {
            let err = parse_changes(&body).expect_err("invalid");
            assert_eq!(err.path, path, "{body}");
        }
    }

    #[test]
    fn good_changes_are_normalised_and_nulls_reset() {
        let body = json!({
            "branding": { "primaryColor": "#FF0000", "logoUrl": null },
            "integrations": { "slack": { "enabled": true, "apiKey": "xoxb-123" }, "old": null },
        });
        let (changes, removals) = parse_changes(&body).expect("valid");
        assert!(changes.contains(&Change {
            category: "branding",
            key: "primaryColor".into(),
            value: Some(json!("#ff0000"))
        }));
        assert!(changes.contains(&Change { category: "branding", key: "logoUrl".into(), value: None }));
        assert!(changes.contains(&Change {
            category: "integrations",
            key: "slack.apiKey".into(),
            value: Some(json!("xoxb-123"))
        }));
        assert_eq!(removals, [Removal { integration: "old".into() }]);
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        assert!(is_secret("integrations", "slack.apiKey"));
        assert!(is_secret("integrations", "github.clientSecret"));
        assert!(is_secret("integrations", "smtp.password"));
        assert!(is_secret("integrations", "bot.token"));
        assert!(is_secret("security", "ssoClientSecret"));
        assert!(!is_secret("integrations", "slack.webhookUrl"));
        assert!(!is_secret("branding", "apiKey"), "only integrations and security hold secrets");
    }
}
