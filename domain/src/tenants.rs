//! Tenants: the store functions behind the tenant API. Platform-wide reads use the owner pool;
//! reads of one tenant's scoped rows go through [`crate::db::begin_tenant`] (see `quota::store`).

use crate::audit::{self, Actor};
use crate::db::TenantTx;
use crate::{Error, PlanId, Result, TenantId, TenantStatus, events};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub domain: Option<String>,
    pub status: TenantStatus,
    pub status_reason: Option<String>,
    pub plan_id: PlanId,
    pub owner_id: Uuid,
    pub owner_email: Option<String>,
    #[schema(value_type = Object)]
    pub settings: Value,
    /// Per-tenant feature overrides on top of the plan's defaults.
    #[schema(value_type = Object)]
    pub features: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, slug, domain, status, status_reason, plan_id, owner_id, owner_email, \
    settings, features, created_at, updated_at, suspended_at, deleted_at, expires_at";

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<TenantStatus>,
    /// Free text; every word must prefix-match the name, slug or domain.
    pub q: Option<String>,
    /// Any version of a plan: tenants on every version of its family match.
    pub plan_id: Option<PlanId>,
    /// Restricts the list to one tenant (for callers that may only see their own).
    pub only: Option<TenantId>,
    pub page: u32,
    pub limit: u32,
}

/// The slug rule of tenants and plans: `^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$`.
pub fn is_valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    (3..=50).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

/// Turns free text into a prefix-matching `tsquery` (`acme corp` → `acme:* & corp:*`), dropping
/// everything but letters and digits so user input can't form tsquery syntax.
pub fn to_prefix_tsquery(q: &str) -> Option<String> {
    let terms: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(16)
        .map(|t| format!("{}:*", t.to_lowercase()))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" & "))
}

/// One page of tenants. On the platform pool it sees every tenant; in a [`TenantTx`] row-level
/// security narrows it to that tenant, whatever the filter says.
pub async fn list(db: &mut PgConnection, filter: &ListFilter) -> Result<(Vec<Tenant>, i64)> {
    let tsquery = filter.q.as_deref().and_then(to_prefix_tsquery);
    let offset = i64::from(filter.page.saturating_sub(1)) * i64::from(filter.limit);
    let conditions = "($1::tenant_status_enum is null or status = $1) \
        and ($2::text is null or search @@ to_tsquery('simple', $2)) \
        and ($3::uuid is null or plan_id in (select v.id from subscription_plans v join subscription_plans p on p.family = v.family where p.id = $3)) \
        and ($4::uuid is null or id = $4)";
    let total: i64 = sqlx::query_scalar(&format!("select count(*) from tenants where {conditions}"))
        .bind(filter.status)
        .bind(&tsquery)
        .bind(filter.plan_id)
        .bind(filter.only)
        .fetch_one(&mut *db)
        .await?;
    let sql = format!(
        "select {COLUMNS} from tenants where {conditions} \
         order by case when $2::text is null then 0 else ts_rank(search, to_tsquery('simple', $2)) end desc, \
                  created_at desc, id desc \
         limit $5 offset $6"
    );
    let rows = sqlx::query_as(&sql)
        .bind(filter.status)
        .bind(&tsquery)
        .bind(filter.plan_id)
        .bind(filter.only)
        .bind(i64::from(filter.limit))
        .bind(offset)
        .fetch_all(db)
        .await?;
    Ok((rows, total))
}

pub async fn get(db: impl PgExecutor<'_>, id: TenantId) -> Result<Tenant> {
    sqlx::query_as(&format!("select {COLUMNS} from tenants where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or_else(Error::tenant_not_found)
}

/// Reads the tenant and locks its row until the transaction ends.
pub async fn get_for_update(conn: &mut PgConnection, id: TenantId) -> Result<Tenant> {
    sqlx::query_as(&format!("select {COLUMNS} from tenants where id = $1 for update"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(Error::tenant_not_found)
}

/// Finds a live (not deleted) tenant by slug or by domain.
pub async fn find_by_slug_or_domain(
    db: impl PgExecutor<'_>,
    slug: Option<&str>,
    domain: Option<&str>,
) -> Result<Tenant> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from tenants where status <> 'deleted' \
         and (slug = $1 or lower(domain) = lower($2)) limit 1"
    ))
    .bind(slug)
    .bind(domain)
    .fetch_optional(db)
    .await?
    .ok_or_else(Error::tenant_not_found)
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: TenantId,
    pub name: String,
    pub slug: String,
    pub domain: Option<String>,
    pub status: TenantStatus,
    pub plan_id: PlanId,
    pub owner_id: Uuid,
    pub owner_email: Option<String>,
    pub settings: Value,
    pub features: Value,
}

pub async fn insert(db: impl PgExecutor<'_>, new: &NewTenant) -> Result<Tenant> {
    sqlx::query_as(&format!(
        "insert into tenants (id, name, slug, domain, status, plan_id, owner_id, owner_email, settings, features) \
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {COLUMNS}"
    ))
    .bind(new.id)
    .bind(&new.name)
    .bind(&new.slug)
    .bind(&new.domain)
    .bind(new.status)
    .bind(new.plan_id)
    .bind(new.owner_id)
    .bind(&new.owner_email)
    .bind(&new.settings)
    .bind(&new.features)
    .fetch_one(db)
    .await
    .map_err(Error::from_db)
}

/// A partial update: `None` leaves a field as it is; `domain: Some(None)` clears the domain.
#[derive(Debug, Clone, Default)]
pub struct TenantUpdate {
    pub name: Option<String>,
    pub domain: Option<Option<String>>,
    pub settings: Option<Value>,
    pub owner_id: Option<Uuid>,
}

/// Who asks for a change and under which request, for the audit log.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    pub actor: Actor,
    pub request_id: Option<String>,
}

impl ChangeContext {
    /// Changes the service makes itself (jobs).
    pub fn system() -> Self {
        ChangeContext { actor: Actor::System, request_id: None }
    }
}

/// Applies `change` to the tenant of `tx` and commits.
pub async fn update(mut tx: TenantTx, change: &TenantUpdate, ctx: &ChangeContext) -> Result<Tenant> {
    let id = tx.tenant();
    let old = get_for_update(&mut tx, id).await?;
    if matches!(old.status, TenantStatus::Deleting | TenantStatus::Deleted) {
        return Err(Error::InvalidState { message: format!("a {} tenant cannot be changed", old.status.as_str()) });
    }
    let new: Tenant = sqlx::query_as(&format!(
        "update tenants set name = coalesce($2, name), \
             domain = case when $3 then $4 else domain end, \
             settings = coalesce($5, settings), owner_id = coalesce($6, owner_id), updated_at = now() \
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(&change.name)
    .bind(change.domain.is_some())
    .bind(change.domain.clone().flatten())
    .bind(&change.settings)
    .bind(change.owner_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(Error::from_db)?;
    let (before, after) = (editable_view(&old), editable_view(&new));
    if before != after {
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant: Some(id),
                actor: &ctx.actor,
                action: "tenant.update",
                resource: Some(format!("tenants/{id}")),
                old_value: Some(before),
                new_value: Some(after.clone()),
                request_id: ctx.request_id.as_deref(),
            },
        )
        .await?;
        events::record(&mut *tx, id, events::TENANT_UPDATED, after).await?;
    }
    tx.commit().await?;
    Ok(new)
}

fn editable_view(t: &Tenant) -> Value {
    json!({ "name": t.name, "domain": t.domain, "settings": t.settings, "ownerId": t.owner_id })
}

/// A change of a tenant's status, with what it records besides.
pub struct Transition<'a> {
    pub to: TenantStatus,
    /// Shown as the tenant's `statusReason` (cleared when `None`).
    pub reason: Option<&'a str>,
    /// The audit action, e.g. `tenant.activate`.
    pub action: &'a str,
    /// The event written with the move: `tenant.status_changed` (`{from, to, reason}` plus these
    /// fields) unless the move has one of its own (`tenant.created`, `tenant.deleted`, …).
    pub event: Option<(&'static str, Value)>,
    /// Extra fields of the default `tenant.status_changed` event and of the audit row's new value.
    pub detail: Value,
}

/// What [`transition`] did.
pub enum Moved {
    /// The tenant moved; its event and audit row are written.
    Now(Tenant),
    /// It already had that status (a repeated step): only the reason was updated, nothing else
    /// written.
    Already(Tenant),
}

/// The one way a tenant's status changes, in the caller's transaction: locks the row, enforces
/// the lifecycle ([`TenantStatus::can_become`], else `INVALID_STATE`), sets the status, its reason
/// and timestamps (`suspended_at`, `deleted_at`), and writes the audit row and the event in the
/// same transaction. Idempotent: a tenant already in `to` is left as it is.
pub async fn transition(
    conn: &mut PgConnection,
    id: TenantId,
    t: Transition<'_>,
    ctx: &ChangeContext,
) -> Result<Moved> {
    let old = get_for_update(conn, id).await?;
    if old.status == t.to {
        let same: Tenant =
            sqlx::query_as(&format!("update tenants set status_reason = $2 where id = $1 returning {COLUMNS}"))
                .bind(id)
                .bind(t.reason)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(Moved::Already(same));
    }
    if !old.status.can_become(t.to) {
        return Err(Error::InvalidState {
            message: format!("cannot move a tenant from {} to {}", old.status.as_str(), t.to.as_str()),
        });
    }
    let new: Tenant = sqlx::query_as(&format!(
        "update tenants set status = $2, status_reason = $3, updated_at = now(), \
             suspended_at = case when $2 = 'suspended'::tenant_status_enum then now() else null end, \
             deleted_at = case when $2 = 'deleted'::tenant_status_enum then coalesce(deleted_at, now()) \
                               when $2 = 'active'::tenant_status_enum then null else deleted_at end \
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(t.to)
    .bind(t.reason)
    .fetch_one(&mut *conn)
    .await
    .map_err(Error::from_db)?;
    let mut new_value = json!({ "status": t.to, "reason": t.reason });
    let mut event_data = json!({ "from": old.status, "to": t.to, "reason": t.reason });
    if let Value::Object(detail) = &t.detail {
        for (k, v) in detail {
            new_value[k] = v.clone();
            event_data[k] = v.clone();
        }
    }
    audit::record(
        &mut *conn,
        audit::Entry {
            tenant: Some(id),
            actor: &ctx.actor,
            action: t.action,
            resource: Some(format!("tenants/{id}")),
            old_value: Some(json!({ "status": old.status })),
            new_value: Some(new_value),
            request_id: ctx.request_id.as_deref(),
        },
    )
    .await?;
    let (event_type, data) = t.event.unwrap_or((events::TENANT_STATUS_CHANGED, event_data));
    events::record(&mut *conn, id, event_type, data).await?;
    Ok(Moved::Now(new))
}

/// An administrator's lifecycle move (suspend / reactivate), in the caller's transaction. Any
/// move the lifecycle or the administrator may not make is [`Error::InvalidState`].
pub async fn set_status(
    tx: &mut PgConnection,
    id: TenantId,
    to: TenantStatus,
    reason: Option<&str>,
    ctx: &ChangeContext,
) -> Result<Tenant> {
    let old = get_for_update(tx, id).await?;
    if old.status == to {
        return Ok(old);
    }
    if !old.status.can_be_set_by_admin(to) {
        return Err(Error::InvalidState {
            message: format!("cannot move a tenant from {} to {}", old.status.as_str(), to.as_str()),
        });
    }
    let t = Transition { to, reason, action: "tenant.status_change", event: None, detail: json!({}) };
    match transition(tx, id, t, ctx).await? {
        Moved::Now(tenant) | Moved::Already(tenant) => Ok(tenant),
    }
}

/// Moves the tenant to `deleting` (from active, suspended or failed), in the caller's
/// transaction; returns the status it had.
pub async fn mark_deleting(
    conn: &mut PgConnection,
    id: TenantId,
    ctx: &ChangeContext,
) -> Result<(TenantStatus, Tenant)> {
    let old = get_for_update(conn, id).await?;
    if !old.status.can_become(TenantStatus::Deleting) {
        return Err(Error::InvalidState { message: format!("a {} tenant cannot be deleted", old.status.as_str()) });
    }
    let tenant = move_status(conn, &old, TenantStatus::Deleting, ctx, "tenant.delete_requested").await?;
    Ok((old.status, tenant))
}

/// Moves a `deleted` tenant back to `provisioning` for a restore, in the caller's transaction.
/// Refused if another live tenant has taken its slug or domain meanwhile.
pub async fn mark_restoring(conn: &mut PgConnection, id: TenantId, ctx: &ChangeContext) -> Result<Tenant> {
    let old = get_for_update(conn, id).await?;
    if old.status != TenantStatus::Deleted {
        return Err(Error::InvalidState {
            message: format!("only a deleted tenant can be restored; this one is {}", old.status.as_str()),
        });
    }
    move_status(conn, &old, TenantStatus::Provisioning, ctx, "tenant.restore_requested").await
}

async fn move_status(
    conn: &mut PgConnection,
    old: &Tenant,
    to: TenantStatus,
    ctx: &ChangeContext,
    action: &str,
) -> Result<Tenant> {
    let t = Transition { to, reason: None, action, event: None, detail: json!({}) };
    match transition(conn, old.id, t, ctx).await? {
        Moved::Now(tenant) | Moved::Already(tenant) => Ok(tenant),
    }
}

#[cfg(test)]
mod tests {
    use super::to_prefix_tsquery;

    #[test]
    fn free_text_becomes_a_safe_prefix_query() {
        assert_eq!(to_prefix_tsquery("Acme corp").as_deref(), Some("acme:* & corp:*"));
        assert_eq!(to_prefix_tsquery("acme-corp.io").as_deref(), Some("acme:* & corp:* & io:*"));
        assert_eq!(to_prefix_tsquery("a' | !b:*").as_deref(), Some("a:* & b:*"));
        assert_eq!(to_prefix_tsquery(" &|! "), None);
    }
}
