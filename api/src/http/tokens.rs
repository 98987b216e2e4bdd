//! Who is calling: bearer tokens (JWT) on `/api/v1/*`, service tokens on `/internal/*`.
//!
//! **Keys and algorithms.** A bearer token is verified with one of
//! * `JWT_SECRET`, HS256 only — the platform's shared secret, and what `tenant-api dev-token` signs;
//! * a configured public key (`JWT_PUBLIC_KEY` / `JWT_PUBLIC_KEY_FILE`): RSA keys RS256 only, EC
//!   P-256 keys ES256 only (pinned when the configuration is read);
//! * the identity provider's key set (`JWT_JWKS_URL`, see [`super::jwks`]): RS256 or ES256 as each
//!   key says, never HS*.
//!
//! The token's `alg` only chooses which of *our* keys are tried; each key verifies its own
//! algorithm and no other. So an "HS256" token MACed with an RSA public key's PEM (the classic
//! confusion attack) is checked against `JWT_SECRET` and fails, `alg: none` and every other
//! algorithm are refused before any key is looked at, and keys a token carries in its header
//! (`jwk`, `jku`, `x5u`) are never used. A token with a `kid` is tried with the JWKS key of that
//! `kid` and with the configured keys of its algorithm; without a `kid`, with every key of its
//! algorithm. Only a `kid` the cached set lacks waits for a (bounded, rate-limited) JWKS fetch;
//! HS256 and known keys are checked without waiting on anything.
//!
//! **HS256 beside an identity provider.** It stays enabled by default: `JWT_SECRET` is required
//! (it signs dev tokens, and the platform's other services may sign with it), and turning an IdP
//! on must not lock those callers out. A deployment that relies on its IdP alone sets
//! `JWT_HS256_ENABLED=false`: HS256 tokens are then refused, and the secret only signs dev tokens
//! (which then don't verify).
//!
//! **Claims.** `exp` and `sub` are required, `nbf` is checked when present, with 30 s leeway.
//! `JWT_ISSUER` and `JWT_AUDIENCE`, when set, apply to every token whatever its key (the claim is
//! then required); [`TokenVerifier::sign`] stamps them on dev tokens.
//!
//! **Service tokens.** `SERVICE_TOKENS` entries are `name:token`; the name of the token presented
//! is who the caller is (logs, audit). Both sides are hashed with SHA-256 and every configured
//! token is compared in constant time, so neither a token, its length nor its position leaks
//! through timing.

use super::error::{ApiError, Result};
use super::jwks::Jwks;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tenant_domain::Config;
use tenant_domain::config::PublicKey;
use uuid::Uuid;

/// The claims of our bearer tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    /// Unknown roles are ignored rather than refused, so other services may add their own.
    #[serde(default)]
    pub roles: Vec<String>,
    pub exp: i64,
}

/// Verifies bearer tokens and service tokens (and signs dev tokens).
pub struct TokenVerifier {
    /// `None` when `JWT_HS256_ENABLED=false`.
    hs256: Option<DecodingKey>,
    encoding: EncodingKey,
    public_keys: Vec<PublicKey>,
    jwks: Option<Arc<Jwks>>,
    hs256_validation: Validation,
    rs256_validation: Validation,
    es256_validation: Validation,
    /// `iss` and `aud` stamped on signed tokens, when configured.
    stamp: Vec<(&'static str, String)>,
    /// SHA-256 of each service token, with the name it carries.
    service_tokens: Vec<([u8; 32], std::sync::Arc<str>)>,
}

/// What one key made of a token.
enum Attempt {
    Accepted(Claims),
    /// The signature matched but the claims don't pass: no other key will do better.
    Refused(ApiError),
    /// Not this key.
    NoMatch,
}

impl TokenVerifier {
    pub fn new(config: &Config) -> Self {
        let jwt = &config.jwt;
        let secret = config.jwt_secret.expose().as_bytes();
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = 30;
            v.validate_nbf = true;
            let mut required = vec!["exp", "sub"];
            if !jwt.issuers.is_empty() {
                v.set_issuer(&jwt.issuers);
                required.push("iss");
            }
            if !jwt.audiences.is_empty() {
                v.set_audience(&jwt.audiences);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            v
        };
        let stamp = [("iss", jwt.issuers.first()), ("aud", jwt.audiences.first())]
            .into_iter()
            .filter_map(|(claim, value)| value.map(|v| (claim, v.clone())))
            .collect();
        Self {
            hs256: jwt.hs256_enabled.then(|| DecodingKey::from_secret(secret)),
            encoding: EncodingKey::from_secret(secret),
            public_keys: jwt.public_keys.clone(),
            jwks: jwt.jwks.clone().map(|settings| Arc::new(Jwks::new(settings))),
            hs256_validation: validation(Algorithm::HS256),
            rs256_validation: validation(Algorithm::RS256),
            es256_validation: validation(Algorithm::ES256),
            stamp,
            service_tokens: config
                .service_tokens
                .iter()
                .map(|t| (digest(t.token.expose()), t.name.as_str().into()))
                .collect(),
        }
    }

    /// Signs a dev token (HS256, `JWT_SECRET`), with the configured issuer and audience.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut value = serde_json::to_value(claims)?;
        if let Some(object) = value.as_object_mut() {
            for (claim, v) in &self.stamp {
                object.entry(*claim).or_insert_with(|| serde_json::Value::String(v.clone()));
            }
        }
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &value, &self.encoding)?)
    }

    /// Verifies a bearer token: signature with a key pinned to the token's algorithm, then claims.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let kid = header.kid.as_deref();
        let outcome = match header.alg {
            Algorithm::HS256 => match &self.hs256 {
                Some(key) => attempt(token, key, &self.hs256_validation),
                None => Attempt::NoMatch,
            },
            alg @ (Algorithm::RS256 | Algorithm::ES256) => self.verify_asymmetric(token, alg, kid).await,
            _ => Attempt::NoMatch,
        };
        match outcome {
            Attempt::Accepted(claims) => Ok(claims),
            Attempt::Refused(err) => Err(err),
            Attempt::NoMatch => Err(invalid()),
        }
    }

    async fn verify_asymmetric(&self, token: &str, alg: Algorithm, kid: Option<&str>) -> Attempt {
        let validation = if alg == Algorithm::RS256 { &self.rs256_validation } else { &self.es256_validation };
        let cached = self.jwks.as_ref().map(Jwks::snapshot);
        let from_jwks = cached.iter().flat_map(|set| set.candidates(alg, kid)).map(|k| &k.key);
        let configured = self.public_keys.iter().filter(|k| k.alg == alg).map(|k| &k.key);
        let outcome = first_match(token, from_jwks.chain(configured), validation);
        if !matches!(outcome, Attempt::NoMatch) {
            return outcome;
        }
        // A key the cached set lacks may be new at the provider: fetch once (rate-limited) and retry.
        match (&self.jwks, &cached) {
            (Some(jwks), Some(set)) if set.lacks(kid) => {
                let fresh = jwks.refresh().await;
                first_match(token, fresh.candidates(alg, kid).map(|k| &k.key), validation)
            }
            _ => Attempt::NoMatch,
        }
    }

    /// The name of the service whose token this is. Every configured token is compared, in
    /// constant time, whichever matches.
    pub fn service_name(&self, presented: &str) -> Option<&std::sync::Arc<str>> {
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u64;
        for (i, (known, _)) in self.service_tokens.iter().enumerate() {
            let equal = known.ct_eq(&presented);
            found |= equal;
            index.conditional_assign(&(i as u64), equal);
        }
        let found: bool = found.into();
        found.then(|| self.service_tokens.get(index as usize).map(|(_, name)| name)).flatten()
    }
}

fn first_match<'a>(token: &str, keys: impl Iterator<Item = &'a DecodingKey>, validation: &Validation) -> Attempt {
    for key in keys {
        match attempt(token, key, validation) {
            Attempt::NoMatch => continue,
            decided => return decided,
        }
    }
    Attempt::NoMatch
}

fn attempt(token: &str, key: &DecodingKey, validation: &Validation) -> Attempt {
    let err = match jsonwebtoken::decode::<Claims>(token, key, validation) {
        Ok(data) => return Attempt::Accepted(data.claims),
        Err(err) => err,
    };
    // The claims are only read once the signature verified.
    match err.kind() {
        ErrorKind::ExpiredSignature => Attempt::Refused(ApiError::unauthorized("token expired")),
        ErrorKind::ImmatureSignature
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidSubject
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::Json(_) => Attempt::Refused(invalid()),
        _ => Attempt::NoMatch,
    }
}

fn invalid() -> ApiError {
    ApiError::unauthorized("invalid bearer token")
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}
