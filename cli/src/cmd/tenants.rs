//! `tenantctl tenants …`: list, get, create, suspend, reactivate, delete, restore. Creation,
//! deletion and restore are jobs (202); with `--wait` the command follows the job, prints its
//! steps and exits 1 if it failed. With `--json` a waited command prints `{tenant, job}` as they
//! are once the job finished.

use super::{Ctx, job_finished, job_started, tenant_path, wait_for};
use crate::args::{TenantsCmd, WaitArgs};
use crate::error::{Failure, Result};
use crate::output::{self, Table, print_fields, text, time};
use crate::watch;
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(ctx: &Ctx, cmd: TenantsCmd) -> Result<()> {
    match cmd {
        TenantsCmd::List { status, search, plan, page, limit } => {
            let mut query = vec![("page", page.to_string()), ("limit", limit.to_string())];
            query.extend(status.map(|s| ("status", s.as_str().to_owned())));
            query.extend(search.map(|q| ("q", q)));
            query.extend(plan.map(|p| ("planId", p)));
            list(ctx, &query).await
        }
        TenantsCmd::Get { tenant } => get(ctx, &tenant).await,
        TenantsCmd::Create { name, slug, plan, owner_id, owner_email, domain, features, wait } => {
            let mut body = json!({ "name": name, "slug": slug, "planId": plan, "ownerId": owner_id });
            if let Some(email) = owner_email {
                body["ownerEmail"] = json!(email);
            }
            if let Some(domain) = domain {
                body["domain"] = json!(domain);
            }
            if !features.is_empty() {
                body["features"] = parse_features(&features)?;
            }
            let answer = ctx
                .api
                .send(Method::POST, "/api/v1/tenants", &[], Some(&body), wait.idempotency_key.as_deref())
                .await?;
            accepted(ctx, answer.data, &wait).await
        }
        TenantsCmd::Suspend { tenant, reason } => set_status(ctx, &tenant, "suspended", reason).await,
        TenantsCmd::Reactivate { tenant, reason } => set_status(ctx, &tenant, "active", reason).await,
        TenantsCmd::Delete { tenant, yes, wait } => {
            let path = tenant_path(&tenant, &[])?;
            if !yes {
                confirm_delete(ctx, &path).await?;
            }
            let answer = ctx.api.send(Method::DELETE, &path, &[], None, wait.idempotency_key.as_deref()).await?;
            accepted(ctx, answer.data, &wait).await
        }
        TenantsCmd::Restore { backup, tenant, wait } => {
            let backup = match (backup, tenant) {
                (Some(backup), _) => backup,
                (None, Some(tenant)) => last_backup(ctx, &tenant).await?,
                (None, None) => return Err(Failure::Usage("name a --backup or a --tenant".into())),
            };
            let body = json!({ "backupId": backup });
            let answer = ctx
                .api
                .send(Method::POST, "/api/v1/tenants/restore", &[], Some(&body), wait.idempotency_key.as_deref())
                .await?;
            accepted(ctx, answer.data, &wait).await
        }
    }
}

async fn list(ctx: &Ctx, query: &[(&str, String)]) -> Result<()> {
    let answer = ctx.api.get("/api/v1/tenants", query).await?;
    if ctx.out.json {
        ctx.out.json(&answer.data);
        return Ok(());
    }
    let plans = plan_slugs(ctx).await;
    let mut table = Table::new(&["ID", "SLUG", "NAME", "STATUS", "PLAN", "CREATED"]);
    for t in answer.data.as_array().into_iter().flatten() {
        let plan = text(&t["planId"]);
        table.row(vec![
            text(&t["id"]),
            text(&t["slug"]),
            text(&t["name"]),
            text(&t["status"]),
            plans.get(&plan).cloned().unwrap_or(plan),
            time(&t["createdAt"]),
        ]);
    }
    if table.is_empty() {
        println!("no tenants");
    } else {
        table.print();
    }
    let meta = answer.meta.unwrap_or(Value::Null);
    if let (Some(total), Some(page), Some(limit)) =
        (meta["total"].as_u64(), meta["page"].as_u64(), meta["limit"].as_u64())
    {
        let pages = total.div_ceil(limit.max(1)).max(1);
        println!("page {page} of {pages} ({total} tenants)");
    }
    Ok(())
}

/// Plan version id → slug, for the list; empty if the plans can't be read.
async fn plan_slugs(ctx: &Ctx) -> HashMap<String, String> {
    let Ok(answer) = ctx.api.get("/api/v1/plans", &[]).await else { return HashMap::new() };
    answer.data.as_array().into_iter().flatten().map(|p| (text(&p["id"]), text(&p["slug"]))).collect()
}

async fn get(ctx: &Ctx, tenant: &str) -> Result<()> {
    let t = ctx.api.get(&tenant_path(tenant, &[])?, &[]).await?.data;
    if ctx.out.json {
        ctx.out.json(&t);
        return Ok(());
    }
    print_tenant(&t);
    let mut quotas = Table::new(&["RESOURCE", "LIMIT", "UNIT", "RESET"]).right(&["LIMIT"]);
    for q in t["quotas"].as_array().into_iter().flatten() {
        quotas.row(vec![text(&q["resourceType"]), text(&q["limitValue"]), text(&q["unit"]), text(&q["resetPeriod"])]);
    }
    if !quotas.is_empty() {
        println!();
        quotas.print();
    }
    if let Some(features) = t["effectiveFeatures"].as_object() {
        let on: Vec<&str> =
            features.iter().filter(|(_, v)| v.as_bool() == Some(true)).map(|(k, _)| k.as_str()).collect();
        let off: Vec<&str> =
            features.iter().filter(|(_, v)| v.as_bool() != Some(true)).map(|(k, _)| k.as_str()).collect();
        println!();
        print_fields(&[("features on", on.join(", ")), ("features off", off.join(", "))]);
    }
    Ok(())
}

fn print_tenant(t: &Value) {
    let status = match t["statusReason"].as_str() {
        Some(reason) => format!("{} ({reason})", text(&t["status"])),
        None => text(&t["status"]),
    };
    let plan = match t["plan"]["slug"].as_str() {
        Some(slug) => format!("{} ({slug})", text(&t["plan"]["name"])),
        None => text(&t["planId"]),
    };
    let owner = match t["ownerEmail"].as_str() {
        Some(email) => format!("{} <{email}>", text(&t["ownerId"])),
        None => text(&t["ownerId"]),
    };
    let when = |key: &str| if t[key].is_null() { String::new() } else { time(&t[key]) };
    print_fields(&[
        ("id", text(&t["id"])),
        ("slug", text(&t["slug"])),
        ("name", text(&t["name"])),
        ("status", status),
        ("plan", plan),
        ("domain", output::opt(&t["domain"])),
        ("owner", owner),
        ("created", when("createdAt")),
        ("updated", when("updatedAt")),
        ("suspended", when("suspendedAt")),
        ("deleted", when("deletedAt")),
    ]);
}

async fn set_status(ctx: &Ctx, tenant: &str, status: &str, reason: Option<String>) -> Result<()> {
    let mut body = json!({ "status": status });
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    let answer = ctx.api.send(Method::PATCH, &tenant_path(tenant, &["status"])?, &[], Some(&body), None).await?;
    if ctx.out.json {
        ctx.out.json(&answer.data);
    } else {
        println!(
            "tenant {} ({}) is {}",
            text(&answer.data["slug"]),
            text(&answer.data["id"]),
            text(&answer.data["status"])
        );
    }
    Ok(())
}

/// After a 202 `{tenant, job}`: report, and with `--wait` follow the job to its end.
async fn accepted(ctx: &Ctx, data: Value, wait: &WaitArgs) -> Result<()> {
    let (tenant, job) = (&data["tenant"], &data["job"]);
    if !ctx.out.json {
        println!("tenant {} ({}) is {}", text(&tenant["slug"]), text(&tenant["id"]), text(&tenant["status"]));
        println!("{}", job_started(job));
    }
    let Some(done) = wait_for(ctx, job, wait).await? else {
        if ctx.out.json {
            ctx.out.json(&data);
        }
        return Ok(());
    };
    // The tenant as the job left it (a failed read keeps the accepted copy).
    let now = match tenant["id"].as_str() {
        Some(id) => ctx.api.get(&tenant_path(id, &[])?, &[]).await.map(|a| a.data).unwrap_or_else(|_| tenant.clone()),
        None => tenant.clone(),
    };
    if ctx.out.json {
        ctx.out.json(&json!({ "tenant": now, "job": done }));
    } else {
        println!("{}", job_finished(&done));
        if let (Some("delete_tenant"), Some(backup)) = (done["kind"].as_str(), done["result"]["backupId"].as_str()) {
            println!("backup {backup} (restore: tenantctl tenants restore --backup {backup})");
        }
        println!("tenant {} ({}) is {}", text(&now["slug"]), text(&now["id"]), text(&now["status"]));
    }
    watch::outcome(&done)
}

/// `--feature flag=on|off` pairs as the API's `features` object.
fn parse_features(pairs: &[String]) -> Result<Value> {
    let mut map = Map::new();
    for pair in pairs {
        let (flag, value) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("--feature {pair}: expected FLAG=on or FLAG=off")))?;
        let on = match value.trim() {
            "on" | "true" => true,
            "off" | "false" => false,
            _ => return Err(Failure::Usage(format!("--feature {pair}: the value must be on or off"))),
        };
        map.insert(flag.trim().to_owned(), Value::Bool(on));
    }
    Ok(Value::Object(map))
}

/// Asks for the slug on a terminal; without one, `--yes` is required.
async fn confirm_delete(ctx: &Ctx, path: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage("deleting needs --yes when stdin is not a terminal".into()));
    }
    let t = ctx.api.get(path, &[]).await?.data;
    let slug = text(&t["slug"]);
    eprint!("Delete tenant {slug} ({})? It is backed up, then removed. Type its slug to confirm: ", text(&t["id"]));
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() == slug { Ok(()) } else { Err(Failure::other("not confirmed; nothing was deleted")) }
}

/// The backup of the tenant's last successful deletion, from its jobs (newest first).
async fn last_backup(ctx: &Ctx, tenant: &str) -> Result<String> {
    let jobs = ctx.api.get(&tenant_path(tenant, &["jobs"])?, &[("limit", "100".into())]).await?.data;
    jobs.as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["kind"] == "delete_tenant" && j["status"] == "succeeded")
        .find_map(|j| j["result"]["backupId"].as_str().map(str::to_owned))
        .ok_or_else(|| Failure::other(format!("no finished deletion of {tenant} with a backup; name it with --backup")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::path;

    #[test]
    fn features_parse() {
        let f = parse_features(&["realTimeChat=on".into(), "auditLogs=off".into()]).expect("ok");
        assert_eq!(f, json!({"realTimeChat": true, "auditLogs": false}));
        assert_eq!(parse_features(&["x".into()]).expect_err("bad").exit_code(), 2);
        assert_eq!(parse_features(&["x=maybe".into()]).expect_err("bad").exit_code(), 2);
    }

    #[test]
    fn paths_take_slugs_and_ids() {
        assert_eq!(path(&["api", "v1", "tenants", "acme"]), "/api/v1/tenants/acme");
        assert_eq!(tenant_path("acme", &["status"]).expect("ok"), "/api/v1/tenants/acme/status");
        assert_eq!(tenant_path(" ", &[]).expect_err("empty").exit_code(), 2);
    }
}
