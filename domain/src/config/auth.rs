//! The authentication part of the configuration: the keys bearer tokens are verified with
//! (`JWT_*`) and the named service tokens (`SERVICE_TOKENS`).
//!
//! Public keys are parsed here, once, into `jsonwebtoken` keys pinned to one algorithm each (an
//! RSA key verifies RS256 only, an EC P-256 key ES256 only), so a bad PEM stops the start with a
//! line naming its variable instead of failing every request later. No error here quotes a value:
//! a misplaced `:` could make part of a token look like a name, and a PEM may be a private key
//! pasted by mistake.

use super::{ConfigError, Env};
use crate::secret::Secret;
use jsonwebtoken::{Algorithm, DecodingKey};
use std::fmt;
use std::time::Duration;

/// How bearer tokens are verified (besides `JWT_SECRET`, kept on [`super::Config::jwt_secret`]).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// Whether HS256 tokens signed with `JWT_SECRET` are accepted (`JWT_HS256_ENABLED`).
    pub hs256_enabled: bool,
    /// `JWT_PUBLIC_KEY` or `JWT_PUBLIC_KEY_FILE`: one or more PEM public keys.
    pub public_keys: Vec<PublicKey>,
    /// `JWT_JWKS_URL`: the identity provider's key set.
    pub jwks: Option<JwksSettings>,
    /// `JWT_ISSUER`: when not empty, every token must carry one of these as `iss`.
    pub issuers: Vec<String>,
    /// `JWT_AUDIENCE`: when not empty, every token's `aud` must name one of these.
    pub audiences: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub url: String,
    /// A fetch taking longer is abandoned (and the cached keys kept).
    pub timeout: Duration,
    /// Cached keys older than this are fetched again, so a key the provider withdrew stops working.
    pub max_age: Duration,
    /// At most one fetch per this interval, whatever tokens arrive (unknown `kid`s included).
    pub min_refresh_interval: Duration,
}

/// A configured public key and the one algorithm it verifies.
#[derive(Clone)]
pub struct PublicKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// One entry of `SERVICE_TOKENS`: `name:token`, or a bare `token` named `service`.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    /// Who calls with this token: what logs and the audit log record for its calls.
    pub name: String,
    pub token: Secret<String>,
}

/// The name given to a `SERVICE_TOKENS` entry without one.
pub const DEFAULT_SERVICE_NAME: &str = "service";

pub(super) fn service_tokens(env: &Env<'_>) -> Result<Vec<ServiceToken>, ConfigError> {
    const VAR: &str = "SERVICE_TOKENS";
    let raw = env.get(VAR).or_else(|| env.get("SERVICE_TOKEN")).unwrap_or_default();
    let mut tokens: Vec<ServiceToken> = Vec::new();
    for (i, entry) in raw.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let n = i + 1;
        let (name, token) = match entry.split_once(':') {
            Some((name, token)) => (name.trim(), token.trim()),
            None => (DEFAULT_SERVICE_NAME, entry),
        };
        if !valid_service_name(name) {
            return Err(ConfigError::new(
                VAR,
                format!("entry {n}: the name before `:` must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`"),
            ));
        }
        if token.len() < 16 {
            return Err(ConfigError::new(VAR, format!("entry {n}: the token must be at least 16 characters")));
        }
        if let Some(m) = tokens.iter().position(|t| t.token.expose() == token && t.name != name) {
            return Err(ConfigError::new(
                VAR,
                format!("entries {} and {n} give one token two names; a token must identify one service", m + 1),
            ));
        }
        tokens.push(ServiceToken { name: name.to_owned(), token: Secret::new(token.to_owned()) });
    }
    if tokens.is_empty() {
        return Err(ConfigError::new(VAR, "required: one or more comma-separated `name:token` or `token` entries"));
    }
    Ok(tokens)
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(super) fn jwt_settings(env: &Env<'_>) -> Result<JwtSettings, ConfigError> {
    let public_keys = match (env.get("JWT_PUBLIC_KEY"), env.get("JWT_PUBLIC_KEY_FILE")) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new("JWT_PUBLIC_KEY_FILE", "set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both"));
        }
        // Environment files often carry a PEM on one line with `\n` escapes.
        (Some(pem), None) => parse_public_keys("JWT_PUBLIC_KEY", &pem.replace("\\n", "\n"))?,
        (None, Some(path)) => {
            let pem = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError::new("JWT_PUBLIC_KEY_FILE", format!("cannot read {path:?}: {}", err.kind()))
            })?;
            parse_public_keys("JWT_PUBLIC_KEY_FILE", &pem)?
        }
        (None, None) => Vec::new(),
    };
    let jwks = match env.url("JWT_JWKS_URL")? {
        None => None,
        Some(url) => Some(JwksSettings {
            url,
            timeout: Duration::from_millis(env.parse_in("JWT_JWKS_TIMEOUT_MS", 2000, 100..=30_000)?),
            max_age: Duration::from_secs(env.parse_in("JWT_JWKS_MAX_AGE_SECS", 600, 10..=86_400)?),
            min_refresh_interval: Duration::from_secs(env.parse_in("JWT_JWKS_MIN_REFRESH_SECS", 30, 1..=3600)?),
        }),
    };
    let hs256_enabled = env.parse_bool("JWT_HS256_ENABLED", true)?;
    if !hs256_enabled && public_keys.is_empty() && jwks.is_none() {
        return Err(ConfigError::new(
            "JWT_HS256_ENABLED",
            "false leaves no way to verify a token: set JWT_PUBLIC_KEY, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL",
        ));
    }
    Ok(JwtSettings {
        hs256_enabled,
        public_keys,
        jwks,
        issuers: comma_list(env.get("JWT_ISSUER")),
        audiences: comma_list(env.get("JWT_AUDIENCE")),
    })
}

fn comma_list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// DER of the named curve P-256 (1.2.840.10045.3.1.7), as it appears in an EC public key.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Every PEM block of `text`, each an RSA (RS256) or EC P-256 (ES256) public key.
fn parse_public_keys(var: &'static str, text: &str) -> Result<Vec<PublicKey>, ConfigError> {
    let blocks = pem_blocks(text);
    if blocks.is_empty() {
        return Err(ConfigError::new(var, "expected one or more PEM blocks (`-----BEGIN PUBLIC KEY-----`)"));
    }
    let mut keys = Vec::with_capacity(blocks.len());
    for (i, (label, block)) in blocks.iter().enumerate() {
        let n = i + 1;
        if label.contains("PRIVATE") {
            return Err(ConfigError::new(var, format!("PEM block {n} is a private key; give the public key only")));
        }
        if !matches!(label.as_str(), "PUBLIC KEY" | "RSA PUBLIC KEY") {
            return Err(ConfigError::new(
                var,
                format!("PEM block {n}: expected `PUBLIC KEY` or `RSA PUBLIC KEY` (certificates are not read)"),
            ));
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(block.as_bytes()) {
            keys.push(PublicKey { alg: Algorithm::RS256, key });
        } else if let Ok(key) = DecodingKey::from_ec_pem(block.as_bytes()) {
            if !pem_der(block).is_some_and(|der| der.windows(P256_OID.len()).any(|w| w == P256_OID)) {
                return Err(ConfigError::new(var, format!("PEM block {n}: EC keys must be on P-256 (ES256)")));
            }
            keys.push(PublicKey { alg: Algorithm::ES256, key });
        } else {
            return Err(ConfigError::new(var, format!("PEM block {n} is not a valid RSA or EC P-256 public key")));
        }
    }
    Ok(keys)
}

/// `(label, block)` for every `-----BEGIN label----- … -----END label-----` in `text`.
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else { break };
        let label = after[..label_end].trim().to_owned();
        let end_marker = format!("-----END {label}-----");
        let Some(end) = rest[start..].find(&end_marker) else { break };
        let stop = start + end + end_marker.len();
        blocks.push((label, rest[start..stop].to_owned()));
        rest = &rest[stop..];
    }
    blocks
}

/// The DER inside one PEM block.
fn pem_der(block: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = block.lines().filter(|l| !l.starts_with("-----")).flat_map(|l| l.trim().chars()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_with(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn tokens(raw: &str) -> Result<Vec<ServiceToken>, ConfigError> {
        let vars = env_with(&[("SERVICE_TOKENS", raw)]);
        let lookup = |k: &str| vars.get(k).cloned();
        service_tokens(&Env(&lookup))
    }

    fn jwt(vars: &[(&str, &str)]) -> Result<JwtSettings, ConfigError> {
        let vars = env_with(vars);
        let lookup = |k: &str| vars.get(k).cloned();
        jwt_settings(&Env(&lookup))
    }

    #[test]
    fn service_tokens_are_named_or_default_to_service() {
        let t = tokens("billing:tok-billing-0123456789, tok-plain-0123456789,search:a:b-0123456789abcdef").expect("ok");
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["billing", "service", "search"]);
        assert_eq!(t[0].token.expose(), "tok-billing-0123456789");
        assert_eq!(t[2].token.expose(), "a:b-0123456789abcdef");
        // the same service under two tokens: a rotation
        assert_eq!(tokens("billing:old-token-0123456789,billing:new-token-0123456789").expect("ok").len(), 2);
    }

    #[test]
    fn bad_service_tokens_are_refused_without_echoing_them() {
        for (raw, expect) in [
            ("bad name:tok-secret-0123456789", "entry 1: the name"),
            (":tok-secret-0123456789", "entry 1: the name"),
            ("billing:tok-secret-0123456789,search:short-secret", "entry 2: the token must be at least 16"),
            ("a:tok-secret-0123456789,b:tok-secret-0123456789", "entries 1 and 2 give one token two names"),
            (&format!("{}:tok-secret-0123456789", "n".repeat(65)), "entry 1: the name"),
            (" , ", "required"),
        ] {
            let err = tokens(raw).expect_err(raw);
            assert_eq!(err.var, "SERVICE_TOKENS");
            assert!(err.message.contains(expect), "{raw}: {err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn jwt_settings_need_some_way_to_verify_and_a_real_public_key() {
        let s = jwt(&[("JWT_ISSUER", "https://idp.example"), ("JWT_AUDIENCE", "tenants, admin")]).expect("ok");
        assert!(s.hs256_enabled && s.public_keys.is_empty() && s.jwks.is_none());
        assert_eq!(s.audiences, ["tenants", "admin"]);

        assert_eq!(jwt(&[("JWT_HS256_ENABLED", "false")]).expect_err("nothing left").var, "JWT_HS256_ENABLED");
        let s = jwt(&[("JWT_HS256_ENABLED", "false"), ("JWT_JWKS_URL", "https://idp.example/jwks")]).expect("ok");
        assert_eq!(s.jwks.expect("jwks").min_refresh_interval, Duration::from_secs(30));
        assert_eq!(jwt(&[("JWT_JWKS_URL", "ftp://idp")]).expect_err("url").var, "JWT_JWKS_URL");

        let private = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----";
        let err = jwt(&[("JWT_PUBLIC_KEY", private)]).expect_err("private");
        assert!(err.var == "JWT_PUBLIC_KEY" && err.message.contains("private key"), "{err}");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        let garbage = "-----BEGIN PUBLIC KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PUBLIC KEY-----";
        let err = jwt(&[("JWT_PUBLIC_KEY", garbage)]).expect_err("garbage");
        assert!(err.message.contains("not a valid RSA or EC P-256 public key"), "{err}");
        assert!(jwt(&[("JWT_PUBLIC_KEY", "not a pem")]).expect_err("no pem").message.contains("PEM blocks"));
        let err = jwt(&[("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")]).expect_err("no file");
        assert_eq!(err.var, "JWT_PUBLIC_KEY_FILE");
    }

    // Public keys only (their private halves were never kept).
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofHw5JOISwPMfcmlAQp2
H3YWN7c+iJ/So4okSEI/g63u8RazQ03G7spLZHNq97+RdAuS41S0Y1kwj0kCcuIG
Pc15+FgLMMGpvde/l1gs7zp19rG271bTYaHHYSCyQtfDUNNDUlVHEfQmhzELKHq2
WrkXxMBp+TGkbjVAcofulc3Wf6WVP5gWP3jo5KmsZy1H4cHZpsh9RW6aSeSjilNY
rm8TTREa1EdVWPallsOk6PtLh7mz4zdcnjRmFHVCk5OCZnqFgX+sgy37GuipCn0r
thqChJxgoAKQ8rVxgUKdrnTlQv3J8Cp4PardDJUhlHI7AFphqK8AL6Im5bihqV0x
IQIDAQAB
-----END PUBLIC KEY-----";
    const P256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEW7ri/8Q9oX8AtPnmY4HK55i3AwiJ
TRE5FATWn/YRI+jhsqBYnMpjtc80rNSuGDKgHKWHtU4HNENsR5gJYQSzUw==
-----END PUBLIC KEY-----";
    const P384_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEZQiSn3Tqfru3+jZYV/fVRsvsRUfCmx3j
Ta+Pb75Sz7YJsvI2YscPuaTAc9cTXFjSAkf3WYS3AphLZsIEIgrE2gCd3j2Rynml
f8XUW0mrN1YvorQER1vdFycZj39XRVR9
-----END PUBLIC KEY-----";

    #[test]
    fn public_keys_are_pinned_to_their_algorithm() {
        let both = format!("{RSA_PUBLIC}\n{P256_PUBLIC}");
        let s = jwt(&[("JWT_PUBLIC_KEY", &both)]).expect("ok");
        let algs: Vec<Algorithm> = s.public_keys.iter().map(|k| k.alg).collect();
        assert_eq!(algs, [Algorithm::RS256, Algorithm::ES256]);
        // one line with `\n` escapes, as environment files carry it
        let escaped = P256_PUBLIC.replace('\n', "\\n");
        assert_eq!(jwt(&[("JWT_PUBLIC_KEY", &escaped)]).expect("ok").public_keys[0].alg, Algorithm::ES256);
        let err = jwt(&[("JWT_PUBLIC_KEY", P384_PUBLIC)]).expect_err("P-384");
        assert!(err.message.contains("P-256"), "{err}");
        assert!(!format!("{s:?}").contains("MIIB"));
    }
}
