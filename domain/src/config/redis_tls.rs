//! TLS to Redis: `rediss://` URLs (in `REDIS_URL`, `QUOTA_REDIS_URL`, or a cluster's nodes) are
//! verified against the system's root certificates, or — with `REDIS_TLS_CA_FILE` — against that
//! PEM file's certificates only (a private CA, as managed Redis services and self-run servers
//! use). `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE` (both or neither) present a client
//! certificate, for servers that require one (`tls-auth-clients yes`).

use super::{ConfigError, Env};
use crate::secret::Secret;

#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// PEM: the roots a `rediss://` server's certificate must chain to, instead of the system's.
    pub ca: Option<Vec<u8>>,
    /// PEM: a client certificate chain and its private key.
    pub client: Option<(Vec<u8>, Secret<Vec<u8>>)>,
}

impl RedisTls {
    /// The certificates for the redis client, or `None` to use the system's roots.
    pub fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.ca.is_none() && self.client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.expose().clone(),
            }),
            root_cert: self.ca.clone(),
        })
    }
}

pub(super) fn parse(env: &Env<'_>, urls: &[&str]) -> Result<RedisTls, ConfigError> {
    let ca = read_pem(env, "REDIS_TLS_CA_FILE", "CERTIFICATE")?;
    let client = match (
        read_pem(env, "REDIS_TLS_CERT_FILE", "CERTIFICATE")?,
        read_pem(env, "REDIS_TLS_KEY_FILE", "PRIVATE KEY")?,
    ) {
        (Some(cert), Some(key)) => Some((cert, Secret::new(key))),
        (None, None) => None,
        (Some(_), None) => return Err(ConfigError::new("REDIS_TLS_KEY_FILE", "required with REDIS_TLS_CERT_FILE")),
        (None, Some(_)) => return Err(ConfigError::new("REDIS_TLS_CERT_FILE", "required with REDIS_TLS_KEY_FILE")),
    };
    let tls = RedisTls { ca, client };
    if tls.certificates().is_some() && !urls.iter().any(|u| u.contains("rediss://") || u.contains("rediss+cluster://"))
    {
        let var = if tls.ca.is_some() { "REDIS_TLS_CA_FILE" } else { "REDIS_TLS_CERT_FILE" };
        return Err(ConfigError::new(var, "is set, but no Redis URL uses TLS (rediss://)"));
    }
    Ok(tls)
}

/// The file named by `var`, which must hold at least one PEM block whose label ends with
/// `label` (`CERTIFICATE`; `PRIVATE KEY` also matches `RSA PRIVATE KEY` and `EC PRIVATE KEY`).
fn read_pem(env: &Env<'_>, var: &'static str, label: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = env.get(var) else { return Ok(None) };
    let pem =
        std::fs::read(&path).map_err(|err| ConfigError::new(var, format!("cannot read {path:?}: {}", err.kind())))?;
    let text = String::from_utf8_lossy(&pem);
    let found = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .any(|l| l.ends_with(label));
    if !found {
        return Err(ConfigError::new(var, format!("{path:?} holds no PEM {label}")));
    }
    Ok(Some(pem))
}
