//! `QUOTA_REDIS_URL`: where the quota counters live. Unset, they share `REDIS_URL` with the jobs,
//! caches and the events stream (the quota script then writes threshold events straight into the
//! stream). Otherwise another single Redis, or a Redis Cluster — named by several
//! comma-separated nodes (`redis://a:6379,redis://b:6379`) or by the scheme `redis+cluster://`
//! (`rediss+cluster://`), whose host list may be comma-separated too
//! (`redis+cluster://user:pass@a:6379,b:6379`; the first node's credentials apply to all).

use super::ConfigError;
use crate::secret::Secret;

/// Where the quota engine keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaRedis {
    /// On `REDIS_URL`, beside the events stream.
    Shared,
    /// Another single Redis.
    Single(Secret<String>),
    /// A Redis Cluster, reached through these seed nodes (plain `redis://`/`rediss://` URLs).
    Cluster(Secret<Vec<String>>),
}

impl QuotaRedis {
    pub fn is_cluster(&self) -> bool {
        matches!(self, QuotaRedis::Cluster(_))
    }

    /// True when the quota keys live on another Redis than the events stream: threshold events
    /// are then relayed to the stream by the engine instead of written by the script.
    pub fn relays_events(&self) -> bool {
        !matches!(self, QuotaRedis::Shared)
    }
}

const VAR: &str = "QUOTA_REDIS_URL";

/// Parses `QUOTA_REDIS_URL` (`raw`, already trimmed; `None` when unset). Errors never echo the
/// value, which may hold a password.
pub fn parse(raw: Option<&str>, redis_url: &str, key_prefix: &str) -> Result<QuotaRedis, ConfigError> {
    let Some(raw) = raw else { return Ok(QuotaRedis::Shared) };
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| bad("must be a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL"))?;
    let (base_scheme, cluster_scheme) = match scheme {
        "redis" | "rediss" => (scheme, false),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        _ => return Err(bad("must be a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL")),
    };
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    if !cluster_scheme && parts.len() == 1 {
        check_node(raw)?;
        return Ok(if raw == redis_url { QuotaRedis::Shared } else { QuotaRedis::Single(Secret::new(raw.to_owned())) });
    }
    // The first node's user and password, for bare `host:port` entries after it.
    let first_host = parts[0].split('/').next().unwrap_or_default();
    let userinfo = first_host.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    let mut nodes = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(bad("lists an empty node"));
        }
        let node = match part.split_once("://") {
            Some(("redis+cluster", r)) => format!("redis://{r}"),
            Some(("rediss+cluster", r)) => format!("rediss://{r}"),
            Some(_) => (*part).to_owned(),
            None if i == 0 => format!("{base_scheme}://{part}"),
            None => format!("{base_scheme}://{userinfo}{part}"),
        };
        check_node(&node)?;
        nodes.push(node);
    }
    if key_prefix.contains('{') || key_prefix.contains('}') {
        return Err(ConfigError::new(
            "REDIS_KEY_PREFIX",
            "must not contain `{` or `}` with a Redis Cluster: the quota keys put the tenant id in braces (a hash tag)",
        ));
    }
    Ok(QuotaRedis::Cluster(Secret::new(nodes)))
}

fn check_node(url: &str) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return Err(bad("every node must be a redis:// or rediss:// URL"));
    }
    url.into_connection_info().map(|_| ()).map_err(|_| bad("holds a node that is not a valid Redis URL"))
}

fn bad(message: &str) -> ConfigError {
    ConfigError::new(VAR, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS: &str = "redis://127.0.0.1:6379/";

    fn nodes(q: QuotaRedis) -> Vec<String> {
        match q {
            QuotaRedis::Cluster(n) => n.expose().clone(),
            other => panic!("not a cluster: {other:?}"),
        }
    }

    #[test]
    fn unset_or_the_same_url_shares_redis_url() {
        assert_eq!(parse(None, REDIS, "tenant:").expect("ok"), QuotaRedis::Shared);
        assert_eq!(parse(Some(REDIS), REDIS, "tenant:").expect("ok"), QuotaRedis::Shared);
        let other = parse(Some("redis://10.0.0.9:6379/"), REDIS, "tenant:").expect("ok");
        assert!(matches!(&other, QuotaRedis::Single(u) if u.expose() == "redis://10.0.0.9:6379/"));
        assert!(other.relays_events() && !other.is_cluster());
    }

    #[test]
    fn several_nodes_or_the_cluster_scheme_name_a_cluster() {
        assert_eq!(
            nodes(parse(Some("redis://a:7000,redis://b:7001"), REDIS, "tenant:").expect("ok")),
            ["redis://a:7000", "redis://b:7001"]
        );
        assert_eq!(nodes(parse(Some("redis+cluster://a:7000"), REDIS, "tenant:").expect("ok")), ["redis://a:7000"]);
        assert_eq!(
            nodes(parse(Some("redis+cluster://u:pw@a:7000,b:7001, c:7002"), REDIS, "tenant:").expect("ok")),
            ["redis://u:pw@a:7000", "redis://u:pw@b:7001", "redis://u:pw@c:7002"]
        );
    }

    #[test]
    fn bad_values_name_the_variable_without_echoing_it() {
        for raw in ["http://a:1", "redis://a:1,,redis://b:2", "mysql+cluster://a", "redis://a:1,http://b:2"] {
            let err = parse(Some(raw), REDIS, "tenant:").expect_err(raw);
            assert_eq!(err.var, VAR, "{raw}");
        }
        let err = parse(Some("rediss+cluster://user:hunter2@a:port"), REDIS, "tenant:").expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(
            nodes(parse(Some("rediss+cluster://u:pw@a:7000,b:7001"), REDIS, "tenant:").expect("TLS")),
            ["rediss://u:pw@a:7000", "rediss://u:pw@b:7001"]
        );
        let err = parse(Some("redis+cluster://a:1"), REDIS, "{tenant}:").expect_err("braces");
        assert_eq!(err.var, "REDIS_KEY_PREFIX");
    }
}
