//! The identity provider's key set (`JWT_JWKS_URL`), fetched with reqwest and cached.
//!
//! Design:
//! * The cached set is an `Arc` swapped whole, so verifying reads a snapshot and holds no lock.
//! * A token naming a `kid` the set lacks (or any token while nothing was fetched yet) makes its
//!   request fetch the set again — that is how a provider's new key is picked up. Fetches are
//!   single-flight and **rate-limited** (`JWT_JWKS_MIN_REFRESH_SECS`, one fetch per interval
//!   whatever triggers it), so a flood of tokens with made-up `kid`s costs the provider at most
//!   one request per interval. A request waits at most one bounded fetch (`JWT_JWKS_TIMEOUT_MS`).
//! * A set older than `JWT_JWKS_MAX_AGE_SECS` is fetched again in the background, so a key the
//!   provider withdrew stops verifying without a restart.
//! * A failed fetch (network, status, JSON) keeps the keys cached before it.
//! * A key's algorithm is pinned: its `alg` (RS256 or ES256 only), else its `kty` (RSA → RS256,
//!   EC P-256 → ES256). Symmetric (`oct`) keys, encryption keys and anything else are skipped, so
//!   the set can never make us accept HS*.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tenant_domain::config::JwksSettings;

/// A key set is at most this large.
const MAX_JWKS_BYTES: usize = 256 * 1024;

pub struct JwksKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The keys of one successful fetch.
#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<JwksKey>,
    /// `None` until a fetch succeeded.
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// The keys a token of `alg` may be verified with: the one named by `kid`, or (no `kid`)
    /// every key of that algorithm.
    pub fn candidates<'a>(&'a self, alg: Algorithm, kid: Option<&'a str>) -> impl Iterator<Item = &'a JwksKey> {
        self.keys.iter().filter(move |k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// Whether fetching again might find the key a token needs.
    pub fn lacks(&self, kid: Option<&str>) -> bool {
        self.fetched_at.is_none() || kid.is_some_and(|kid| !self.keys.iter().any(|k| k.kid.as_deref() == Some(kid)))
    }
}

pub struct Jwks {
    settings: JwksSettings,
    http: Option<reqwest::Client>,
    current: RwLock<Arc<KeySet>>,
    /// Held while a fetch runs: fetches are single-flight.
    in_flight: tokio::sync::Mutex<()>,
    /// When the last fetch began (successful or not): the rate limit.
    last_fetch: Mutex<Option<Instant>>,
    /// A background fetch (of a set past its maximum age) is under way.
    background: AtomicBool,
}

impl Jwks {
    pub fn new(settings: JwksSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(
                |err| tracing::error!(error = %err, "no HTTP client for JWT_JWKS_URL; only configured keys verify"),
            )
            .ok();
        Self {
            settings,
            http,
            current: RwLock::new(Arc::new(KeySet::default())),
            in_flight: tokio::sync::Mutex::new(()),
            last_fetch: Mutex::new(None),
            background: AtomicBool::new(false),
        }
    }

    /// The cached keys; starts a background fetch when they are older than the maximum age.
    pub fn snapshot(self: &Arc<Self>) -> Arc<KeySet> {
        let set = self.read();
        let stale = set.fetched_at.is_some_and(|at| at.elapsed() > self.settings.max_age);
        if stale && !self.fetched_recently() && !self.background.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                this.refresh().await;
                this.background.store(false, Ordering::Release);
            });
        }
        set
    }

    fn read(&self) -> Arc<KeySet> {
        self.current.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Fetches the set unless a fetch began less than the minimum interval ago (waiting for one
    /// under way), and answers the keys as they are then.
    pub async fn refresh(&self) -> Arc<KeySet> {
        let _flight = self.in_flight.lock().await;
        {
            let Ok(mut last) = self.last_fetch.lock() else { return self.read() };
            if last.is_some_and(|at| at.elapsed() < self.settings.min_refresh_interval) {
                return self.read();
            }
            *last = Some(Instant::now());
        }
        match self.fetch().await {
            Ok(set) => {
                tracing::debug!(keys = set.keys.len(), "fetched the JWKS");
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(set);
                }
            }
            // The URL is configuration, not a secret; the keys fetched before stay in use.
            Err(err) => {
                tracing::warn!(url = %self.settings.url, error = %err, "JWKS fetch failed; keeping the cached keys")
            }
        }
        self.read()
    }

    fn fetched_recently(&self) -> bool {
        self.last_fetch
            .lock()
            .map(|last| last.is_some_and(|at| at.elapsed() < self.settings.min_refresh_interval))
            .unwrap_or(true)
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let http = self.http.as_ref().ok_or_else(|| anyhow::anyhow!("no HTTP client"))?;
        let fetch = async {
            let response = http.get(&self.settings.url).send().await?.error_for_status()?;
            if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
                anyhow::bail!("the key set is larger than {MAX_JWKS_BYTES} bytes");
            }
            let body = response.bytes().await?;
            anyhow::ensure!(body.len() <= MAX_JWKS_BYTES, "the key set is larger than {MAX_JWKS_BYTES} bytes");
            Ok(body)
        };
        let body = tokio::time::timeout(self.settings.timeout, fetch)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {:?}", self.settings.timeout))??;
        parse(&body)
    }
}

/// A key set's JSON: keys that can't be read or used are skipped, not fatal.
fn parse(body: &[u8]) -> anyhow::Result<KeySet> {
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| anyhow::anyhow!("not a JWK set: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        match serde_json::from_value::<Jwk>(value).ok().and_then(|jwk| usable(&jwk).map(|k| (jwk, k))) {
            Some((jwk, (alg, key))) => keys.push(JwksKey { kid: jwk.common.key_id, alg, key }),
            None => tracing::debug!("JWKS key skipped: unsupported or not a signing key"),
        }
    }
    Ok(KeySet { keys, fetched_at: Some(Instant::now()) })
}

/// The algorithm a key verifies, if it is one we accept.
fn usable(jwk: &Jwk) -> Option<(Algorithm, DecodingKey)> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return None;
    }
    let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(KeyAlgorithm::RS256) | None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256) | None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    DecodingKey::from_jwk(jwk).ok().map(|key| (alg, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_pinned_and_symmetric_or_unknown_ones_skipped() {
        let set = json!({ "keys": [
            { "kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "kid": "r2", "alg": "RS384", "n": "sXch", "e": "AQAB" },
            { "kty": "RSA", "kid": "r3", "use": "enc", "n": "sXch", "e": "AQAB" },
            { "kty": "EC", "kid": "e1", "crv": "P-256", "x": "AAAA", "y": "AAAA" },
            { "kty": "EC", "kid": "e2", "crv": "P-384", "x": "AAAA", "y": "AAAA" },
            { "kty": "EC", "kid": "e3", "alg": "RS256", "crv": "P-256", "x": "AAAA", "y": "AAAA" },
            { "kty": "oct", "kid": "h1", "alg": "HS256", "k": "c2VjcmV0" },
            { "kty": "OKP", "kid": "x1", "crv": "X25519", "x": "AAAA" },
            { "kty": "weird" },
        ]});
        let set = parse(set.to_string().as_bytes()).expect("parsed");
        let found: Vec<(Option<&str>, Algorithm)> = set.keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        assert_eq!(found, [(Some("r1"), Algorithm::RS256), (Some("e1"), Algorithm::ES256)]);
        assert_eq!(set.candidates(Algorithm::RS256, Some("e1")).count(), 0);
        assert_eq!(set.candidates(Algorithm::ES256, None).count(), 1);
        assert!(set.lacks(Some("r9")) && !set.lacks(Some("r1")) && !set.lacks(None));
        assert!(KeySet::default().lacks(None));
        assert!(parse(b"[1,2]").is_err());
    }
}
