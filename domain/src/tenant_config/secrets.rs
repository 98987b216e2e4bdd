//! Secret configuration values, encrypted with AES-256-GCM before they reach PostgreSQL and
//! masked in every response, event and audit record.
//!
//! Stored form: the JSON string `enc:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, with a fresh
//! 12-byte nonce per value. The tenant id, category and key are authenticated as associated data,
//! so a ciphertext copied to another tenant or key does not decrypt. The key id lets keys rotate:
//! new values use the current key, old ones still decrypt with the keys in
//! `CONFIG_ENCRYPTION_OLD_KEYS`.

use crate::Secret;
use crate::TenantId;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const PREFIX: &str = "enc:v1:";

#[derive(Clone)]
pub struct ConfigCipher {
    current_id: String,
    keys: Vec<(String, Secret<[u8; 32]>)>,
}

impl std::fmt::Debug for ConfigCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigCipher").field("current_id", &self.current_id).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("value is not in the encrypted form")]
    Format,
    #[error("encrypted with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("value does not decrypt (wrong key, or moved from another tenant or key)")]
    Decrypt,
}

impl ConfigCipher {
    /// `keys[0]` is the current key; the others only decrypt.
    pub fn new(keys: Vec<(String, Secret<[u8; 32]>)>) -> Self {
        let current_id = keys.first().map(|(id, _)| id.clone()).unwrap_or_default();
        Self { current_id, keys }
    }

    fn aad(tenant: TenantId, category: &str, key: &str) -> Vec<u8> {
        format!("{tenant}/{category}/{key}").into_bytes()
    }

    pub fn encrypt(&self, tenant: TenantId, category: &str, key: &str, plaintext: &str) -> String {
        let Some((id, secret)) = self.keys.first() else { return String::new() };
        let nonce: [u8; 12] = rand::random();
        let aad = Self::aad(tenant, category, key);
        let ciphertext = Aes256Gcm::new(secret.expose().into())
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: &aad })
            .unwrap_or_default();
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!("{PREFIX}{id}:{}", B64.encode(blob))
    }

    pub fn decrypt(&self, tenant: TenantId, category: &str, key: &str, stored: &str) -> Result<String, CipherError> {
        let rest = stored.strip_prefix(PREFIX).ok_or(CipherError::Format)?;
        let (id, blob) = rest.split_once(':').ok_or(CipherError::Format)?;
        let (_, secret) = self.keys.iter().find(|(k, _)| k == id).ok_or_else(|| CipherError::UnknownKey(id.into()))?;
        let blob = B64.decode(blob).map_err(|_| CipherError::Format)?;
        if blob.len() < 12 + 16 {
            return Err(CipherError::Format);
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let aad = Self::aad(tenant, category, key);
        let plain = Aes256Gcm::new(secret.expose().into())
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| CipherError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| CipherError::Decrypt)
    }
}

/// `****` plus at most the last 4 characters (none for short secrets).
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n >= 12 {
        let tail: String = secret.chars().skip(n - 4).collect();
        format!("****{tail}")
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher(id: &str, byte: u8) -> ConfigCipher {
        ConfigCipher::new(vec![(id.into(), Secret::new([byte; 32]))])
    }

    #[test]
    fn values_round_trip_under_their_place_only() {
        let c = cipher("k1", 1);
        let t = TenantId(uuid::Uuid::new_v4());
        let stored = c.encrypt(t, "integrations", "slack.apiKey", "xoxb-very-secret-1234");
        assert!(stored.starts_with("enc:v1:k1:") && !stored.contains("secret"));
        assert_ne!(stored, c.encrypt(t, "integrations", "slack.apiKey", "xoxb-very-secret-1234"), "fresh nonce");
        assert_eq!(c.decrypt(t, "integrations", "slack.apiKey", &stored).as_deref(), Ok("xoxb-very-secret-1234"));
        let other = TenantId(uuid::Uuid::new_v4());
        assert_eq!(c.decrypt(other, "integrations", "slack.apiKey", &stored), Err(CipherError::Decrypt));
        assert_eq!(c.decrypt(t, "integrations", "github.apiKey", &stored), Err(CipherError::Decrypt));
        assert_eq!(cipher("k1", 2).decrypt(t, "integrations", "slack.apiKey", &stored), Err(CipherError::Decrypt));
    }

    #[test]
    fn keys_rotate() {
        let t = TenantId(uuid::Uuid::new_v4());
        let stored = cipher("k1", 1).encrypt(t, "security", "ssoClientSecret", "s3cr3t-value");
        let rotated = ConfigCipher::new(vec![("k2".into(), Secret::new([2; 32])), ("k1".into(), Secret::new([1; 32]))]);
        assert_eq!(rotated.decrypt(t, "security", "ssoClientSecret", &stored).as_deref(), Ok("s3cr3t-value"));
        assert!(rotated.encrypt(t, "security", "ssoClientSecret", "x").starts_with("enc:v1:k2:"));
        assert_eq!(
            cipher("k3", 3).decrypt(t, "security", "ssoClientSecret", &stored),
            Err(CipherError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn masks_show_at_most_four_characters() {
        assert_eq!(mask("xoxb-very-secret-1234"), "****1234");
        assert_eq!(mask("short"), "****");
        assert_eq!(mask(""), "****");
    }
}
