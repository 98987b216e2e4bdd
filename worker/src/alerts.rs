//! Quota alert mails. The quota engine's script writes `quota.threshold_crossed` events to the
//! events stream itself (atomically with the decision); this consumer group reads them and mails
//! the tenant's owner at 90 % and above. An entry is acknowledged only once handled; entries a
//! dead worker left pending are claimed after a minute. The mail is recorded under the event's id,
//! so a re-read never mails twice.

use redis::Value as RedisValue;
use std::collections::HashMap;
use std::time::Duration;
use tenant_domain::mail::{self, OutgoingMail};
use tenant_domain::{TenantId, kv};
use tenant_jobs::JobContext;

const GROUP: &str = "tenant-service-alert-mailer";

pub async fn run(ctx: JobContext) {
    // A connection of its own: XREADGROUP blocks, and must not hold up other commands.
    let mut conn = match kv::connect(&ctx.config) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::error!(error = %err, "alert mailer cannot connect to Redis");
            return;
        }
    };
    let stream = ctx.config.events_stream.clone();
    let mut shutdown = ctx.shutdown.clone();
    let mut last_claim = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => {
                tracing::warn!(error = %e, "alert mailer: cannot create its consumer group");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(2)) => continue, _ = shutdown.changed() => return }
            }
        }
        let read = if last_claim.elapsed() > Duration::from_secs(30) {
            last_claim = tokio::time::Instant::now();
            redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(GROUP)
                .arg(&ctx.worker_id)
                .arg(60_000)
                .arg("0-0")
                .arg("COUNT")
                .arg(50)
                .query_async::<RedisValue>(&mut conn)
                .await
                .map(|v| autoclaim_entries(&v))
        } else {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&ctx.worker_id)
                .arg("COUNT")
                .arg(50)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async::<RedisValue>(&mut conn)
                .await
                .map(|v| readgroup_entries(&v))
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, "alert mailer: read failed");
                tokio::select! { _ = tokio::time::sleep(Duration::from_secs(1)) => continue, _ = shutdown.changed() => return }
            }
        };
        for (entry_id, fields) in entries {
            match handle(&ctx, &fields).await {
                Ok(()) => {
                    let _: redis::RedisResult<()> =
                        redis::cmd("XACK").arg(&stream).arg(GROUP).arg(&entry_id).query_async(&mut conn).await;
                }
                // Left pending: claimed again later.
                Err(err) => tracing::warn!(entry = entry_id, error = %err, "alert mail not sent yet"),
            }
        }
    }
}

async fn handle(ctx: &JobContext, fields: &HashMap<String, String>) -> anyhow::Result<()> {
    if fields.get("type").map(String::as_str) != Some("quota.threshold_crossed") {
        return Ok(());
    }
    let data: serde_json::Value = serde_json::from_str(fields.get("data").map_or("{}", String::as_str))?;
    let threshold = data["threshold"].as_i64().unwrap_or(0);
    if threshold < 90 {
        return Ok(());
    }
    let Some(tenant) = fields.get("tenantId").and_then(|t| t.parse::<TenantId>().ok()) else { return Ok(()) };
    let event_id = fields.get("id").cloned().unwrap_or_default();
    let owner: Option<(String, Option<String>)> = sqlx::query_as("select name, owner_email from tenants where id = $1")
        .bind(tenant)
        .fetch_optional(&ctx.db)
        .await?;
    let Some((name, Some(to))) = owner else { return Ok(()) };
    let resource = data["resource"].as_str().unwrap_or("a resource");
    let mail = OutgoingMail {
        to,
        subject: format!("{name}: {resource} usage reached {threshold} %"),
        text: format!(
            "Your tenant \"{name}\" has used {} of its {} {resource} quota ({threshold} %).\n",
            data["used"], data["limit"]
        ),
        message_id: format!("{}@tenant-service", event_id.replace(':', ".")),
    };
    mail::send_once(&ctx.db, ctx.mailer.as_ref(), &event_id, Some(tenant), "quota_alert", &mail).await?;
    Ok(())
}

type Entry = (String, HashMap<String, String>);

fn entry(value: &RedisValue) -> Option<Entry> {
    let RedisValue::Array(parts) = value else { return None };
    let id = redis::from_redis_value::<String>(parts.first()?.clone()).ok()?;
    let RedisValue::Array(kv) = parts.get(1)? else { return Some((id, HashMap::new())) };
    let mut fields = HashMap::new();
    for pair in kv.chunks(2) {
        if let [k, v] = pair
            && let (Ok(k), Ok(v)) =
                (redis::from_redis_value::<String>(k.clone()), redis::from_redis_value::<String>(v.clone()))
        {
            fields.insert(k, v);
        }
    }
    Some((id, fields))
}

/// `XREADGROUP` reply: `[[stream, [[id, [k, v, …]], …]]]` (or nil on timeout).
fn readgroup_entries(value: &RedisValue) -> Vec<Entry> {
    let RedisValue::Array(streams) = value else { return Vec::new() };
    streams
        .iter()
        .filter_map(|s| match s {
            RedisValue::Array(parts) => parts.get(1),
            _ => None,
        })
        .flat_map(|entries| match entries {
            RedisValue::Array(list) => list.iter().filter_map(entry).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// `XAUTOCLAIM` reply: `[next-id, [[id, [k, v, …]], …], [deleted ids]]`.
fn autoclaim_entries(value: &RedisValue) -> Vec<Entry> {
    match value {
        RedisValue::Array(parts) => match parts.get(1) {
            Some(RedisValue::Array(list)) => list.iter().filter_map(entry).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
